//! Match latency over a generated corpus:
//! `cargo bench --bench match [-- [--pages PAGES] RUNBOOKS QUERIES]`.
//! Builds RUNBOOKS (default 5,000) synthetic runbooks, one per file or, with `--pages`, as
//! the sections of PAGES big pages (each section with its own subsections, read by the
//! section detection), then times QUERIES (default 2,000) free-text decisions (no alert
//! name, so the full-text path runs every time) and prints the median, p90 and p99.
//! Targets: median under 1 ms one per file, 1.5 ms as sections of 50 pages.
//!
//! With `--semantic` (and the model in `models/`, see `scripts/fetch-model.sh`) the
//! decisions include the ticket's embedding and the fusion: it also reports building the
//! runbook embeddings cold and again from the on-disk cache (kept in `target/bench-cache`,
//! so a second run starts warm; delete it to measure cold). Targets: p50 ≤ 15 ms, p99 ≤
//! 40 ms, from cache ≤ 3 s.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use runlink::matcher::{Matcher, MatcherSettings};
use runlink::runbooks::Runbook;
use runlink::search::RunbookIndex;
use runlink::semantic::{Embedder, SemanticIndex, SemanticSetup};
use runlink::signature::{AlarmSignature, Normalizer};
use runlink::ticket::{DeliveryId, SourceKind, Ticket, TicketId};

const WORDS: &[&str] = &[
    "disk",
    "filesystem",
    "inode",
    "memory",
    "cpu",
    "latency",
    "error",
    "certificate",
    "node",
    "pod",
    "container",
    "replica",
    "queue",
    "backlog",
    "consumer",
    "database",
    "connection",
    "network",
    "dns",
    "timeout",
    "restart",
    "crash",
    "throttle",
    "quota",
    "volume",
    "space",
    "expire",
    "leader",
    "election",
    "shard",
    "index",
    "cache",
    "eviction",
    "scheduler",
    "deployment",
    "rollout",
    "ingress",
    "gateway",
    "proxy",
    "upstream",
    "kafka",
    "redis",
    "postgres",
    "mysql",
    "etcd",
    "prometheus",
    "alertmanager",
    "grafana",
    "scrape",
    "target",
    "rule",
    "evaluation",
    "slow",
    "high",
    "low",
    "full",
    "down",
    "unreachable",
    "degraded",
    "failing",
    "saturated",
    "lag",
    "behind",
    "missing",
    "stale",
    "flapping",
    "burst",
];

/// Deterministic pseudo-random numbers so every run measures the same corpus.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
    fn word(&mut self) -> &'static str {
        WORDS[self.next() % WORDS.len()]
    }
    /// Mostly domain words, the rest from a long tail of made-up words (skewed towards the
    /// head, as word frequencies are), so postings have realistic lengths.
    fn any_word(&mut self, tail: &[String]) -> String {
        if self.next().is_multiple_of(3) {
            self.word().to_string()
        } else {
            let u = (self.next() % 10_000) as f64 / 10_000.0;
            tail[(u * u * tail.len() as f64) as usize].clone()
        }
    }
    fn sentence(&mut self, n: usize, tail: &[String]) -> String {
        (0..n)
            .map(|_| self.any_word(tail))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// A runbook body with its subsection headings (written in capitals above) at `level`.
fn headed(body: &str, level: &str) -> String {
    ["MEANING", "IMPACT", "DIAGNOSIS", "MITIGATION"]
        .iter()
        .fold(body.to_string(), |text, h| {
            text.replace(h, &format!("{level} {}", capitalized(&h.to_lowercase())))
        })
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let pages: usize = all
        .iter()
        .position(|a| a == "--pages")
        .and_then(|i| all.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let args: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with('-') && (*i == 0 || all[i - 1] != "--pages"))
        .map(|(_, a)| a.clone())
        .collect();
    let n_runbooks: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let n_queries: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let mut rng = Lcg(42);
    const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pra", "sto", "gle",
    ];
    let tail: Vec<String> = (0..4_000)
        .map(|_| {
            (0..3)
                .map(|_| SYLLABLES[rng.next() % SYLLABLES.len()])
                .collect()
        })
        .collect();
    let base = url::Url::parse("https://runbooks.example.com/").unwrap();
    let started = Instant::now();
    let mut sections: Vec<(String, String)> = (0..n_runbooks)
        .map(|i| {
            let name: String =
                (0..3).map(|_| capitalized(rng.word())).collect::<String>() + &i.to_string();
            let body = format!(
                "MEANING\n\n{}.\n\nIMPACT\n\n{}.\n\nDIAGNOSIS\n\n- {}\n- {}\n\nMITIGATION\n\n{}.\n",
                rng.sentence(25, &tail),
                rng.sentence(20, &tail),
                rng.sentence(8, &tail),
                rng.sentence(8, &tail),
                rng.sentence(30, &tail)
            );
            (name, body)
        })
        .collect();
    let runbooks: Vec<Runbook> = if pages == 0 {
        sections
            .drain(..)
            .map(|(name, body)| {
                let src = format!("# {name}\n\n{}", headed(&body, "##"));
                Runbook::parse(Path::new(&format!("gen/{name}.md")), &src, &base).unwrap()
            })
            .collect()
    } else {
        let per_page = n_runbooks.div_ceil(pages);
        sections
            .chunks(per_page)
            .enumerate()
            .flat_map(|(p, chunk)| {
                let mut src = format!("# Runbooks of team {p}\n\n");
                for (name, body) in chunk {
                    src.push_str(&format!("## {name}\n\n{}\n", headed(body, "###")));
                }
                Runbook::parse_file(Path::new(&format!("gen/page-{p}.md")), &src, &base).unwrap()
            })
            .collect()
    };
    assert_eq!(runbooks.len(), n_runbooks, "one runbook per section");
    let index = RunbookIndex::build(runbooks).unwrap();
    let shape = if pages == 0 {
        "one per file".to_string()
    } else {
        format!("as sections of {pages} pages")
    };
    println!(
        "built index of {n_runbooks} runbooks ({shape}) in {:?}",
        started.elapsed()
    );
    let settings = MatcherSettings {
        top_k: 3,
        min_confidence: 0.5,
    };
    let matcher = if all.iter().any(|a| a == "--semantic") {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        let embedder =
            Arc::new(Embedder::load(&model).expect("the model (scripts/fetch-model.sh)"));
        let setup = SemanticSetup {
            embedder,
            cache_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-cache")),
            weight: 0.4,
        };
        let runbooks = index.runbooks().to_vec();
        for pass in ["first build (cold unless the cache is there)", "from cache"] {
            let started = Instant::now();
            let built = SemanticIndex::build(
                setup.embedder.clone(),
                &runbooks,
                setup.cache_dir.as_deref(),
                "bench",
            )
            .unwrap();
            println!(
                "runbook embeddings, {pass}: {} embedded in {:?}",
                built.embedded,
                started.elapsed()
            );
        }
        runlink::wiring::matcher_over(index, settings, Some(&setup), Path::new("bench"))
    } else {
        Matcher::new(Arc::new(index), settings)
    };
    let semantic = if matcher.semantic().is_some() {
        ", semantic on"
    } else {
        ""
    };
    let normalizer = Normalizer::default();
    let signatures: Vec<AlarmSignature> = (0..n_queries)
        .map(|i| {
            let ticket = Ticket {
                id: TicketId::parse(format!("bench:{i}")).unwrap(),
                source: SourceKind::Manual,
                delivery: DeliveryId::parse(format!("bench:{i}")).unwrap(),
                title: format!(
                    "{} on web-{i} at 10.0.0.{}",
                    rng.sentence(5, &tail),
                    i % 255
                ),
                body: rng.sentence(12, &tail),
                labels: Default::default(),
                annotations: Default::default(),
                alertname: None,
                reply: None,
                query: None,
            };
            AlarmSignature::of(&ticket, &normalizer)
        })
        .collect();
    // Warm-up, then measure.
    for s in signatures.iter().take(100) {
        matcher.decide(s, 3).unwrap();
    }
    let mut times: Vec<f64> = signatures
        .iter()
        .map(|s| {
            let t = Instant::now();
            std::hint::black_box(matcher.decide(s, 3).unwrap());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
    println!(
        "match over {n_runbooks} runbooks ({shape}{semantic}), {n_queries} queries: median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
}
