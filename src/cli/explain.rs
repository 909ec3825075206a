//! `runlink explain`: why a ticket matched the runbook it matched. Shows the signature, every
//! candidate with the rule that fired or its ranking features, and the confidence decision.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;

use runlink::ingest::manual::ManualTicket;
use runlink::matcher::MatchReason;
use runlink::signature::AlarmSignature;
use runlink::ticket::Ticket;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Source {
    /// `{"title","body","labels","annotations","alertname"}`
    Manual,
    /// A GitHub `issues` webhook payload.
    Github,
    /// An Alertmanager v4 notification (its first firing alert).
    Alertmanager,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Ticket file, or `-` for standard input.
    ticket: PathBuf,
    /// Runbook directory (default: `runbooks.dir` from the config).
    #[arg(long)]
    runbooks: Option<PathBuf>,
    /// What the ticket file is.
    #[arg(long, value_enum, default_value = "manual")]
    source: Source,
    #[arg(long)]
    config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// How many candidates to show.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Leave out the answers operators taught (`/runlink use`), which are otherwise read
    /// from the configured store when it exists.
    #[arg(long)]
    no_taught: bool,
}

#[derive(Serialize)]
struct Explained {
    signature: AlarmSignature,
    query_terms: Vec<String>,
    confident: bool,
    candidates: Vec<ExplainedCandidate>,
}

#[derive(Serialize)]
struct ExplainedCandidate {
    runbook: String,
    title: String,
    confidence: f32,
    confident: bool,
    reason: MatchReason,
    bm25: Option<f32>,
    name_coverage: Option<f32>,
    coverage: Option<f32>,
    title_coverage: Option<f32>,
}

fn read_ticket(args: &ExplainArgs) -> anyhow::Result<Ticket> {
    let mut body = Vec::new();
    if args.ticket.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body)?;
    } else {
        body = std::fs::read(&args.ticket)
            .with_context(|| format!("cannot read {}", args.ticket.display()))?;
    }
    let ticket = match args.source {
        Source::Manual => runlink::ingest::parse_json::<ManualTicket>(&body)?.into_ticket(0),
        Source::Github => runlink::ingest::github::parse_ticket(&body, "explain")?,
        Source::Alertmanager => runlink::ingest::alertmanager::parse_first_firing(&body)?,
    };
    Ok(ticket)
}

pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let dir = args.runbooks.clone().unwrap_or(config.runbooks_dir.clone());
    let (matcher, normalizer) = super::match_cmd::matcher_for(&dir, args.config.as_deref())?;
    let ticket = read_ticket(&args)?;
    let signature = AlarmSignature::of(&ticket, &normalizer);
    let lessons = if args.no_taught || !config.matcher.learn {
        None
    } else {
        super::feedback::lessons_if_stored(&config)?
    };
    let decision = matcher.decide_with(&signature, args.top.max(1), lessons.as_ref())?;
    let features = matcher.rank_text(&signature, 50)?;
    let query_terms = matcher.index().query_terms(&signature.search_text());
    let candidates: Vec<ExplainedCandidate> = decision
        .candidates
        .iter()
        .map(|c| {
            let f = features
                .iter()
                .find(|h| matcher.index().runbooks()[h.ord].id == c.runbook.id);
            ExplainedCandidate {
                runbook: c.runbook.id.to_string(),
                title: c.runbook.title.clone(),
                confidence: c.confidence,
                confident: c.confident,
                reason: c.reason.clone(),
                bm25: f.map(|h| h.bm25),
                name_coverage: f.map(|h| h.name_coverage),
                coverage: f.map(|h| h.coverage),
                title_coverage: f.map(|h| h.title_coverage),
            }
        })
        .collect();
    let explained = Explained {
        signature,
        query_terms,
        confident: decision.is_confident(),
        candidates,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explained)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = &explained.signature;
    println!("signature");
    println!("  alert name   {}", s.alertname.as_deref().unwrap_or("-"));
    println!("  service      {}", s.service.as_deref().unwrap_or("-"));
    println!("  namespace    {}", s.namespace.as_deref().unwrap_or("-"));
    println!("  instance     {}", s.instance.as_deref().unwrap_or("-"));
    println!("  title        {}", s.title);
    if !s.metrics.is_empty() {
        println!("  metrics      {}", s.metrics.join(", "));
    }
    println!("  query terms  {}", explained.query_terms.join(" "));
    println!();
    match matcher.semantic() {
        Some(s) => println!(
            "semantic: on (meaning similarity weighs {:.2} beside the words; candidates in fused order)",
            s.weight
        ),
        None => println!("semantic: off (words alone)"),
    }
    println!(
        "candidates (threshold {:.2})",
        matcher.settings().min_confidence
    );
    for (i, c) in explained.candidates.iter().enumerate() {
        println!(
            "{}. {} ({}) confidence {:.2}{}",
            i + 1,
            c.runbook,
            c.title,
            c.confidence,
            if c.confident { " CONFIDENT" } else { "" }
        );
        println!("   why: {}", c.reason.describe());
        if let (Some(bm25), Some(name), Some(cov), Some(title)) =
            (c.bm25, c.name_coverage, c.coverage, c.title_coverage)
        {
            println!(
                "   text features: bm25 {bm25:.2}, name words found {:.0}%, ticket explained {:.0}%, title explained {:.0}%",
                name * 100.0,
                cov * 100.0,
                title * 100.0
            );
        }
    }
    println!();
    match explained.candidates.first() {
        Some(c) if c.confident => println!(
            "decision: link {} ({})",
            c.runbook,
            match c.reason {
                MatchReason::Alarm { .. } => "exact alarm name, always wins",
                MatchReason::Rule { .. } => "match rule, wins over text ranking",
                MatchReason::Taught { .. } =>
                    "taught by an operator, wins over text ranking (`runlink suggest` makes it a rule)",
                MatchReason::FullText { .. } => "best text match, above the confidence threshold",
            }
        ),
        Some(_) => println!(
            "decision: no confident runbook; the comment says so and lists these as unverified"
        ),
        None => println!("decision: nothing matched at all"),
    }
    Ok(ExitCode::SUCCESS)
}
