//! `runlink test`: golden cases kept next to the runbooks. Each case is a ticket and the
//! runbook it must match (or `none`: runlink must not post a confident answer). Suitable as a
//! CI step in the runbook repository: exits non-zero when a case fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use runlink::ingest::manual::ManualTicket;
use runlink::signature::AlarmSignature;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Case files or folders (default: `runlink-tests.yaml` and `tests/*.yaml` in the runbook
    /// directory).
    cases: Vec<PathBuf>,
    /// Runbook directory (default: `runbooks.dir` from the config).
    #[arg(long)]
    runbooks: Option<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    ticket: ManualTicket,
    /// A runbook path relative to the runbook directory, or `none`.
    expect: String,
}

fn case_files(args: &TestArgs, dir: &Path) -> Vec<PathBuf> {
    let roots: Vec<PathBuf> = if args.cases.is_empty() {
        vec![dir.join("runlink-tests.yaml"), dir.join("tests")]
    } else {
        args.cases.clone()
    };
    let mut files = Vec::new();
    for root in roots {
        if root.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&root) {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                    .collect();
                found.sort();
                files.extend(found);
            }
        } else if root.exists() || !args.cases.is_empty() {
            files.push(root);
        }
    }
    files
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let dir = args.runbooks.clone().unwrap_or(config.runbooks_dir.clone());
    let (matcher, normalizer) = super::match_cmd::matcher_for(&dir, args.config.as_deref())?;
    let files = case_files(&args, &dir);
    if files.is_empty() {
        anyhow::bail!(
            "no golden cases: write {} or pass case files",
            dir.join("runlink-tests.yaml").display()
        );
    }
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let cases: Vec<Case> = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not a list of cases", file.display()))?;
        for (i, case) in cases.into_iter().enumerate() {
            let ticket = case.ticket.into_ticket(i + 1);
            let signature = AlarmSignature::of(&ticket, &normalizer);
            let decision = matcher.decide(&signature, 3)?;
            let got = decision
                .candidates
                .first()
                .filter(|c| c.confident)
                .map(|c| c.runbook.id.to_string());
            let ok = match (case.expect.as_str(), &got) {
                ("none", None) => true,
                (expected, Some(got)) => expected == got,
                _ => false,
            };
            if ok {
                passed += 1;
                println!("ok    {}: {}", file.display(), case.name);
            } else {
                failed += 1;
                println!(
                    "FAIL  {}: {}: expected {}, got {}",
                    file.display(),
                    case.name,
                    case.expect,
                    got.as_deref().unwrap_or("none (no confident runbook)")
                );
                println!("      signature: {signature}");
                for (rank, c) in decision.candidates.iter().enumerate() {
                    println!(
                        "      {}. {} confidence {:.2}{}: {}",
                        rank + 1,
                        c.runbook.id,
                        c.confidence,
                        if c.confident { " (confident)" } else { "" },
                        c.reason.describe()
                    );
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
