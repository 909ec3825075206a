//! `runlink lint`: check a runbook corpus before it ships. Exits non-zero on errors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use runlink::runbooks::Corpus;
use runlink::runbooks::lint::{Severity, lint};

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Runbook directory (default: `runbooks.dir` from the config).
    #[arg(long)]
    runbooks: Option<PathBuf>,
    /// Config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Fail on warnings too.
    #[arg(long)]
    strict: bool,
    /// One JSON object per finding.
    #[arg(long)]
    json: bool,
}

pub fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let dir = args.runbooks.unwrap_or(config.runbooks_dir);
    let corpus = Corpus::load(&dir, &config.runbooks_base_url)
        .with_context(|| format!("cannot read {}", dir.display()))?;
    let findings = lint(&corpus);
    for finding in &findings {
        if args.json {
            println!("{}", serde_json::to_string(finding)?);
        } else {
            println!("{finding}");
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    eprintln!(
        "{} runbook(s), {errors} error(s), {warnings} warning(s)",
        corpus.runbooks.len() + corpus.errors.len()
    );
    Ok(if errors > 0 || (args.strict && warnings > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
