//! `runlink match`: the stable JSON-lines contract evaluation tools are built on. One output
//! line per input line, in order; a line that cannot be read gets `{"error": ...}` so the
//! output stays aligned with the input.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use runlink::ingest::manual::ManualTicket;
use runlink::matcher::{Matcher, MatcherSettings};
use runlink::semantic::SemanticSetup;
use runlink::signature::{AlarmSignature, Normalizer};
use runlink::ticket::Ticket;
use runlink::wiring::build_matcher_cached_as;

#[derive(Debug, Args)]
pub struct MatchArgs {
    /// Runbook directory to match against.
    #[arg(long)]
    runbooks: PathBuf,
    /// JSON-lines file of tickets; standard input when absent.
    #[arg(long)]
    input: Option<PathBuf>,
    /// How many runbooks to list per ticket.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Config file for matcher settings (confidence threshold, normalization rules).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct MatchOut {
    pub runbook: String,
    pub title: String,
    pub score: f32,
    pub confidence: f32,
    pub confident: bool,
    pub reason: String,
}

/// The matcher and normalizer the server would use with this config, over `runbooks`.
pub fn matcher_for(
    runbooks: &std::path::Path,
    config: Option<&std::path::Path>,
) -> anyhow::Result<(Matcher, Normalizer)> {
    matcher_with(runbooks, config, true)
}

/// `matcher_for`, with the semantic signal only when `semantic` (`eval --no-semantic`
/// compares the two).
pub fn matcher_with(
    runbooks: &std::path::Path,
    config: Option<&std::path::Path>,
    semantic: bool,
) -> anyhow::Result<(Matcher, Normalizer)> {
    matcher_cached_as(runbooks, runbooks, config, semantic)
}

/// `matcher_with` over a copy of the corpus at `cache_as` (see `build_matcher_cached_as`).
pub fn matcher_cached_as(
    runbooks: &std::path::Path,
    cache_as: &std::path::Path,
    config: Option<&std::path::Path>,
    semantic: bool,
) -> anyhow::Result<(Matcher, Normalizer)> {
    let config = super::load_config(config)?;
    let setup = if semantic {
        SemanticSetup::from_config(&config.matcher)?
    } else {
        None
    };
    let (matcher, errors) = build_matcher_cached_as(
        runbooks,
        cache_as,
        &config.runbooks_base_url,
        MatcherSettings {
            top_k: config.matcher.top_k,
            min_confidence: config.matcher.min_confidence,
        },
        setup.as_ref(),
    )
    .with_context(|| format!("cannot load runbooks from {}", runbooks.display()))?;
    for error in errors {
        eprintln!("runlink: warning: {error}");
    }
    Ok((matcher, config.matcher.normalize))
}

pub fn match_one(
    matcher: &Matcher,
    normalizer: &Normalizer,
    ticket: &Ticket,
    top: usize,
) -> anyhow::Result<Vec<MatchOut>> {
    let signature = AlarmSignature::of(ticket, normalizer);
    let decision = matcher.decide(&signature, top)?;
    Ok(decision
        .candidates
        .iter()
        .map(|c| MatchOut {
            runbook: c.runbook.id.to_string(),
            title: c.runbook.title.clone(),
            score: c.score,
            confidence: c.confidence,
            confident: c.confident,
            reason: c.reason.describe(),
        })
        .collect())
}

pub fn run(args: MatchArgs) -> anyhow::Result<ExitCode> {
    let (matcher, normalizer) = matcher_for(&args.runbooks, args.config.as_deref())?;
    let reader: Box<dyn BufRead> = match &args.input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (n, line) in reader.lines().enumerate() {
        let line = line.context("cannot read input")?;
        if line.trim().is_empty() {
            continue;
        }
        let value = match serde_json::from_str::<ManualTicket>(&line) {
            Ok(input) => {
                let ticket = input.into_ticket(n + 1);
                let matches = match_one(&matcher, &normalizer, &ticket, args.top.max(1))?;
                serde_json::json!({ "matches": matches })
            }
            Err(e) => serde_json::json!({ "error": format!("line {}: {e}", n + 1) }),
        };
        serde_json::to_writer(&mut out, &value)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
