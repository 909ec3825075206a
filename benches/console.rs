//! The web console on a big embedded store.
//!
//!   cargo bench --bench console -- [--tickets 1000000] [--days 30] [--requests 20]
//!
//! Fills an SQLite store with N tickets spread over D days, as the accept path writes them
//! (a ticket row and one audit row of its events, from which the store's triggers fill the
//! console's index), then starts the real server on it and times every page over HTTP:
//! median, p90 and slowest of R requests each. The target is every page under 100 ms.

use std::time::{Duration, Instant};

use runlink::config::Config;
use runlink::startup::Application;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const RUNBOOKS: &[&str] = &[
    "host/disk-full.md",
    "host/high-cpu.md",
    "kubernetes/pod-crash-looping.md",
    "kubernetes/node-down.md",
    "database/replication-lag.md",
];
const WORDS: &[&str] = &[
    "disk",
    "cpu",
    "pod",
    "node",
    "replica",
    "latency",
    "queue",
    "certificate",
    "memory",
    "dns",
];

/// Writes `n` tickets straight into the store's tables, in large transactions.
fn fill(db: &std::path::Path, n: u64, days: u64) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let span = days as i64 * 86_400_000;
    let started = Instant::now();
    let mut i = 0u64;
    while i < n {
        let tx = conn.transaction().unwrap();
        {
            let mut ticket = tx
                .prepare(
                    "INSERT INTO tickets (source, delivery_id, ticket_id, signature, received_at, ticket)
                     VALUES ('github', ?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
            let mut audit = tx
                .prepare(
                    "INSERT INTO audit (at, ticket_id, kind, detail) VALUES (?1, ?2, 'batch', ?3)",
                )
                .unwrap();
            for _ in 0..50_000.min(n - i) {
                let at = now - span + (span * i as i64) / n as i64;
                let id = format!("github:acme/ops#{i}");
                let word = WORDS[(i % WORDS.len() as u64) as usize];
                let title = format!("{word} alarm {} on host-{}", i % 97, i % 13);
                let (confident, reason, runbook) = match i % 10 {
                    0..=3 => (true, "alarm", RUNBOOKS[(i % 5) as usize]),
                    4..=5 => (true, "rule:x", RUNBOOKS[(i % 5) as usize]),
                    6..=7 => (true, "full_text", RUNBOOKS[(i % 5) as usize]),
                    _ => (false, "full_text", RUNBOOKS[(i % 5) as usize]),
                };
                let json = serde_json::to_value(runlink::ticket::Ticket {
                    id: runlink::ticket::TicketId::parse(id.clone()).unwrap(),
                    source: runlink::ticket::SourceKind::Github,
                    delivery: runlink::ticket::DeliveryId::parse(format!("d{i}")).unwrap(),
                    title: title.clone(),
                    body: String::new(),
                    labels: Default::default(),
                    annotations: Default::default(),
                    alertname: None,
                    reply: Some(runlink::ticket::ReplyTarget::GithubIssue {
                        owner: "acme".into(),
                        repo: "ops".into(),
                        number: i,
                    }),
                    query: None,
                })
                .unwrap();
                let events = serde_json::json!([
                    {"event": "received", "source": "github", "delivery": format!("d{i}"), "title": title},
                    {"event": "decided", "signature": format!("{word} alarm <num> on <host>"), "confident": confident,
                     "candidates": [{"runbook": runbook, "score": 1.0, "confidence": if confident {0.9} else {0.3}, "confident": confident, "reason": reason}],
                     "index_version": "bench"},
                    {"event": "enqueued", "delivery_key": format!("k{i}"), "destination": "github"},
                ]);
                ticket
                    .execute(rusqlite::params![
                        format!("d{i}"),
                        id,
                        format!("sig{}", i % 500),
                        at,
                        json.to_string()
                    ])
                    .unwrap();
                audit
                    .execute(rusqlite::params![at, id, events.to_string()])
                    .unwrap();
                i += 1;
            }
        }
        tx.commit().unwrap();
        eprint!("\r{i} tickets written");
    }
    eprintln!(" in {:.1} s", started.elapsed().as_secs_f64());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = arg(&args, "--tickets", 1_000_000);
    let days = arg(&args, "--days", 30);
    let requests = arg(&args, "--requests", 20) as usize;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runlink.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}\"\n[matcher]\nsemantic_weight = 0.0\n[outbox]\nworker = false\n[runbooks]\nwatch = false\ndir = \"{}\"\n[templates]\ndir = \"{}\"\n",
        db.display(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/index/runbooks"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
    );
    let config = Config::from_toml_layers(&[&toml]).unwrap();
    // Create the schema, then fill it while no server holds the file.
    runtime.block_on(async {
        drop(runlink::wiring::open_store(&config.store).await.unwrap());
    });
    fill(&db, n, days);
    runtime.block_on(async move {
        let app = Application::build(config).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.server_handle();
        tokio::spawn(app.run_until_stopped());
        let client = runlink::deliver::http_client(Duration::from_secs(30)).unwrap();
        let pages = [
            "/ui",
            "/ui/tickets",
            "/ui/tickets?outcome=none",
            "/ui/tickets?source=github&outcome=alarm",
            "/ui/tickets?destination=github",
            "/ui/tickets?q=certificate",
            "/ui/tickets?q=latency+host",
            "/ui/tickets?before=500000",
            "/ui/ticket?id=github%3Aacme%2Fops%23123456",
            "/ui/runbooks",
            "/ui/runbook?id=host%2Fdisk-full.md",
            "/ui/coverage",
            "/ui/dead",
        ];
        println!("{n} tickets over {days} days; {requests} requests per page");
        println!(
            "{:<44} {:>9} {:>9} {:>9}",
            "page", "p50 ms", "p90 ms", "max ms"
        );
        for page in pages {
            let mut times = Vec::new();
            for _ in 0..requests {
                let started = Instant::now();
                let response = client.get(format!("{base}{page}")).send().await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{page}: {}",
                    response.status()
                );
                let _ = response.bytes().await.unwrap();
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
            println!(
                "{page:<44} {:>9.1} {:>9.1} {:>9.1}",
                at(0.5),
                at(0.9),
                times[times.len() - 1]
            );
        }
        handle.stop(true).await;
    });
}
