//! `runlink eval`: match-quality figures over a file of labelled alerts (the evaluation
//! corpus format: `alertname`, `labels`, `annotations`, `expected_runbook` or
//! `related_runbook`, null meaning no runbook applies). This is what drives matcher work:
//! every ranking change is judged by these numbers, not by single examples.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use runlink::signature::AlarmSignature;
use runlink::ticket::{DeliveryId, SourceKind, Ticket, TicketId};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Runbook directory to match against.
    #[arg(long)]
    runbooks: PathBuf,
    /// JSON-lines file of labelled alerts.
    #[arg(long)]
    cases: PathBuf,
    /// Remove the alert name everywhere (field, labels, annotations): only the text is left.
    #[arg(long)]
    drop_alertname: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    json: bool,
    /// List every case whose top answer is wrong.
    #[arg(long)]
    failures: bool,
    /// A label for the printed block.
    #[arg(long)]
    name: Option<String>,
    /// Config file for matcher settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Append the text-ranking features of each case's winner as CSV (set, outcome, score,
    /// runner-up score, name coverage, coverage, title coverage, BM25, the runner-up's name
    /// coverage and coverage): the data the
    /// confidence weights are fitted on.
    #[arg(long)]
    dump_features: Option<PathBuf>,
    /// Match on words alone, without the embedding model (to compare the two).
    #[arg(long)]
    no_semantic: bool,
}

#[derive(Debug, Deserialize)]
struct Case {
    #[serde(default)]
    alertname: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    expr: Option<String>,
    #[serde(default)]
    expected_runbook: Option<String>,
    #[serde(default)]
    related_runbook: Option<String>,
}

impl Case {
    fn expected(&self) -> Option<&str> {
        self.expected_runbook
            .as_deref()
            .or(self.related_runbook.as_deref())
    }

    fn into_ticket(mut self, n: usize, drop_alertname: bool) -> Ticket {
        if drop_alertname {
            self.alertname = None;
            self.labels.remove("alertname");
            self.annotations.remove("alertname");
        }
        let title = self
            .annotations
            .get("summary")
            .or_else(|| self.annotations.get("message"))
            .cloned()
            .unwrap_or_default();
        let id = format!("eval:{n}");
        Ticket {
            id: TicketId::parse(id.clone()).expect("non-empty id"),
            source: SourceKind::Manual,
            delivery: DeliveryId::parse(id).expect("non-empty id"),
            title,
            body: String::new(),
            labels: self.labels,
            annotations: self.annotations,
            alertname: self.alertname,
            reply: None,
            query: self.expr,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub name: String,
    /// Whether the embedding model took part (`semantic: on`).
    pub semantic: bool,
    pub cases: usize,
    pub positives: usize,
    pub negatives: usize,
    pub top1: f64,
    pub top3: f64,
    pub mrr: f64,
    /// Of the positives answered right at rank 1, the share runlink would post.
    pub confident_of_correct: f64,
    /// Of the positives answered wrong at rank 1, the share runlink would still post.
    pub confident_of_wrong: f64,
    /// Of the cases no runbook covers, the share with a confident (so wrong) answer.
    pub negatives_confident: f64,
    /// Of all answers runlink would post, the share that is wrong (wrong runbook first, or
    /// a runbook for an alarm none covers): what an operator is misled by.
    pub confident_wrong: usize,
    pub confident_answers: usize,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub line: usize,
    pub summary: String,
    pub expected: Option<String>,
    pub got: Option<String>,
    pub confident: bool,
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let (matcher, normalizer) =
        super::match_cmd::matcher_with(&args.runbooks, args.config.as_deref(), !args.no_semantic)?;
    let file = std::fs::File::open(&args.cases)
        .with_context(|| format!("cannot open {}", args.cases.display()))?;
    let mut report = Report {
        semantic: matcher.semantic().is_some(),
        name: args
            .name
            .clone()
            .unwrap_or_else(|| args.cases.display().to_string()),
        ..Report::default()
    };
    let mut features = match &args.dump_features {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => None,
    };
    let (mut hit1, mut hit3, mut rr, mut correct, mut correct_conf) = (0, 0, 0.0, 0, 0);
    let (mut wrong, mut wrong_conf, mut neg_conf) = (0, 0, 0);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {}", args.cases.display(), n + 1))?;
        let expected = case.expected().map(str::to_string);
        let ticket = case.into_ticket(n + 1, args.drop_alertname);
        let signature = AlarmSignature::of(&ticket, &normalizer);
        let decision = matcher.decide(&signature, 10)?;
        let ranked: Vec<&str> = decision
            .candidates
            .iter()
            .map(|c| c.runbook.id.as_str())
            .collect();
        let top_confident = decision.is_confident();
        if let Some(f) = features.as_mut() {
            use std::io::Write;
            let hits = matcher.rank_text(&signature, 3)?;
            let top = hits.first();
            let second = hits.get(1).map(|h| h.score).unwrap_or(0.0);
            let (second_name, second_coverage) = hits
                .get(1)
                .map_or((0.0, 0.0), |h| (h.name_coverage, h.coverage));
            let label = match (&expected, top) {
                (None, _) => "neg",
                (Some(e), Some(h)) if matcher.index().runbooks()[h.ord].id.as_str() == e => "ok",
                _ => "wrong",
            };
            if let Some(h) = top {
                writeln!(
                    f,
                    "{},{},{},{},{},{},{},{},{},{}",
                    report.name,
                    label,
                    h.score,
                    second,
                    h.name_coverage,
                    h.coverage,
                    h.title_coverage,
                    h.bm25,
                    second_name,
                    second_coverage
                )?;
            }
        }
        report.cases += 1;
        let failure = |got: Option<&str>| Failure {
            line: n + 1,
            summary: ticket.title.chars().take(100).collect(),
            expected: expected.clone(),
            got: got.map(str::to_string),
            confident: top_confident,
        };
        match &expected {
            Some(expected) => {
                report.positives += 1;
                let rank = ranked.iter().position(|r| r == expected);
                if rank == Some(0) {
                    hit1 += 1;
                    correct += 1;
                    correct_conf += usize::from(top_confident);
                } else {
                    wrong += 1;
                    wrong_conf += usize::from(top_confident);
                    report.failures.push(failure(ranked.first().copied()));
                }
                if rank.is_some_and(|r| r < 3) {
                    hit3 += 1;
                }
                if let Some(r) = rank {
                    rr += 1.0 / (r as f64 + 1.0);
                }
            }
            None => {
                report.negatives += 1;
                if top_confident {
                    neg_conf += 1;
                    report.failures.push(failure(ranked.first().copied()));
                }
            }
        }
    }
    report.top1 = ratio(hit1, report.positives);
    report.top3 = ratio(hit3, report.positives);
    report.mrr = if report.positives == 0 {
        0.0
    } else {
        rr / report.positives as f64
    };
    report.confident_of_correct = ratio(correct_conf, correct);
    report.confident_of_wrong = ratio(wrong_conf, wrong);
    report.negatives_confident = ratio(neg_conf, report.negatives);
    report.confident_wrong = wrong_conf + neg_conf;
    report.confident_answers = correct_conf + wrong_conf + neg_conf;

    if args.json {
        if !args.failures {
            report.failures.clear();
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, args.failures);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &Report, failures: bool) {
    println!(
        "{}: {} cases ({} with a runbook, {} without), semantic: {}",
        r.name,
        r.cases,
        r.positives,
        r.negatives,
        if r.semantic { "on" } else { "off" }
    );
    if r.positives > 0 {
        println!(
            "  top-1 {:.3}  top-3 {:.3}  MRR {:.3}",
            r.top1, r.top3, r.mrr
        );
        println!(
            "  confident: {:.1}% of correct top-1, {:.1}% of wrong top-1",
            r.confident_of_correct * 100.0,
            r.confident_of_wrong * 100.0
        );
    }
    if r.negatives > 0 {
        println!(
            "  no-runbook cases answered confidently (wrong): {:.1}%",
            r.negatives_confident * 100.0
        );
    }
    if r.confident_answers > 0 {
        println!(
            "  confident answers that are wrong: {:.1}% ({} of {})",
            r.confident_wrong as f64 * 100.0 / r.confident_answers as f64,
            r.confident_wrong,
            r.confident_answers
        );
    }
    if failures {
        for f in &r.failures {
            println!(
                "  miss line {}: expected {} got {}{} | {}",
                f.line,
                f.expected.as_deref().unwrap_or("none"),
                f.got.as_deref().unwrap_or("none"),
                if f.confident { " (confident)" } else { "" },
                f.summary
            );
        }
    }
}
