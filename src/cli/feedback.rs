//! `runlink feedback` (what operators said about runlink's answers, and `forget` to set one
//! aside) and `runlink suggest` (the lessons enough of them agree on, as a diff of the
//! corpus, with what it would change for recent tickets).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use runlink::audit::AuditEvent;
use runlink::config::{Config, StoreUrl};
use runlink::feedback::{Lessons, report, suggest};
use runlink::runbooks::Corpus;

use super::history::{print_changes, read_audit, replay_changes, since_ms, store_for};

#[derive(Debug, Args)]
pub struct FeedbackArgs {
    #[command(subcommand)]
    action: Option<FeedbackAction>,
    /// Look at feedback newer than this (default 30d).
    #[arg(long, default_value = "30d")]
    since: String,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum FeedbackAction {
    /// Set a feedback row aside: a taught answer it made no longer applies.
    ///
    /// Example: runlink feedback forget 12
    Forget {
        /// The row's id (`runlink feedback --json` lists them under `lessons`).
        id: i64,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The lessons in force, read from the configured store if it exists (a tool run on a
/// machine without one teaches nothing, and creates no store).
pub(super) fn lessons_if_stored(config: &Config) -> anyhow::Result<Option<Lessons>> {
    if let StoreUrl::Sqlite(path) = &config.store
        && !path.exists()
    {
        return Ok(None);
    }
    let config = config.clone();
    actix_web::rt::System::new().block_on(async move {
        let store = runlink::wiring::open_store_for(&config)
            .await
            .context("cannot open the store for taught answers (--no-taught skips them)")?;
        let rows = store.feedback_since(0).await?;
        Ok(Some(Lessons::from_rows(&rows, 1)))
    })
}

pub fn run(args: FeedbackArgs) -> anyhow::Result<ExitCode> {
    if let Some(FeedbackAction::Forget { id, config }) = args.action {
        return forget(id, config.or(args.config));
    }
    let since = since_ms(Some(&args.since))?.unwrap_or(0);
    actix_web::rt::System::new().block_on(async move {
        let store = store_for(args.config.as_deref()).await?;
        let all = store.feedback_since(0).await?;
        let lessons = Lessons::from_rows(&all, 1);
        let rows: Vec<_> = all
            .into_iter()
            .filter(|r| r.feedback.at_ms >= since)
            .collect();
        let mut linked: HashMap<String, usize> = HashMap::new();
        for record in read_audit(store.as_ref(), None, Some(since), None).await? {
            if let AuditEvent::Decided {
                candidates,
                probe: false,
                ..
            } = record.event
                && let Some(first) = candidates.first().filter(|c| c.confident)
            {
                *linked.entry(first.runbook.clone()).or_default() += 1;
            }
        }
        let report = report::build(&rows, &linked, &lessons);
        if args.json {
            let lessons: Vec<_> = lessons
                .all()
                .into_iter()
                .map(|(alarm, lesson)| serde_json::json!({ "alarm": alarm, "lesson": lesson }))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "since": args.since,
                    "report": report,
                    "lessons": lessons,
                    "feedback": rows,
                }))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{} command(s) since {}: {}",
            report.commands,
            args.since,
            report
                .by_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!();
        println!("per runbook (linked, confirmed, called wrong, corrected to)");
        for r in report
            .runbooks
            .iter()
            .filter(|r| r.confirmed + r.called_wrong + r.corrected_to.len() > 0)
        {
            let corrected: Vec<String> = r
                .corrected_to
                .iter()
                .map(|(to, n)| format!("{to} ({n})"))
                .collect();
            println!(
                "  {}  linked {}, confirmed {}, wrong {}{}",
                r.runbook,
                r.linked,
                r.confirmed,
                r.called_wrong,
                if corrected.is_empty() {
                    String::new()
                } else {
                    format!(", corrected to {}", corrected.join(", "))
                }
            );
        }
        println!();
        println!("per alarm (corrections; the answer taught now)");
        for a in &report.alarms {
            let votes: Vec<String> = a
                .corrections
                .iter()
                .map(|(to, n)| format!("{to} ({n})"))
                .collect();
            println!(
                "  {}  {}{}{}{}",
                a.signature,
                if votes.is_empty() {
                    "-".to_string()
                } else {
                    votes.join(", ")
                },
                if a.called_wrong > 0 {
                    format!("; called wrong {}", a.called_wrong)
                } else {
                    String::new()
                },
                if a.no_runbook > 0 {
                    format!("; no runbook {}", a.no_runbook)
                } else {
                    String::new()
                },
                a.taught
                    .as_deref()
                    .map(|t| format!("; taught: {t}"))
                    .unwrap_or_default()
            );
        }
        if !lessons.is_empty() {
            println!();
            println!("taught answers in force (`runlink feedback forget <id>` removes one)");
            for (alarm, lesson) in lessons.all() {
                println!(
                    "  #{}  {alarm} -> {}  (by {} in {} on {})",
                    lesson.feedback,
                    lesson.runbook,
                    lesson.author,
                    lesson.ticket,
                    lesson.date()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn forget(id: i64, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    actix_web::rt::System::new().block_on(async move {
        let store = store_for(config.as_deref()).await?;
        if store.forget_feedback(id).await? {
            println!("feedback #{id} forgotten; servers stop applying it within seconds");
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("no feedback #{id} (or it was forgotten already)");
            Ok(ExitCode::from(1))
        }
    })
}

#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// The corpus to change (a checkout of the runbook repository).
    #[arg(long)]
    runbooks: PathBuf,
    /// Count feedback newer than this (default 30d).
    #[arg(long, default_value = "30d")]
    since: String,
    /// Votes a lesson needs before it is suggested.
    #[arg(long, default_value_t = 2)]
    min_votes: usize,
    /// Write the changed files instead of only printing the diff.
    #[arg(long)]
    apply: bool,
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn suggest(args: SuggestArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let since = since_ms(Some(&args.since))?.unwrap_or(0);
    let corpus = Corpus::load(&args.runbooks, &config.runbooks_base_url)
        .with_context(|| format!("cannot load {}", args.runbooks.display()))?;
    let runbooks: Vec<Arc<_>> = corpus.runbooks.into_iter().map(Arc::new).collect();
    actix_web::rt::System::new().block_on(async move {
        let store = store_for(args.config.as_deref()).await?;
        let rows: Vec<_> = store
            .feedback_since(since)
            .await?
            .into_iter()
            .collect();
        let suggestion = suggest::suggest(&rows, &args.runbooks, &runbooks, args.min_votes)?;
        for skipped in &suggestion.skipped {
            eprintln!("skipped: {skipped}");
        }
        if suggestion.files.is_empty() {
            eprintln!(
                "nothing to suggest: no lesson has {} vote(s) since {} that the corpus does not already say",
                args.min_votes, args.since
            );
            return Ok(ExitCode::SUCCESS);
        }
        print!("{}", suggestion.diff());
        for proposal in &suggestion.proposals {
            eprintln!("proposed: {}", serde_json::to_string(proposal)?);
        }
        // What the changed corpus would decide for recent tickets, from a copy of it.
        let copy = tempfile::tempdir()?;
        copy_dir(&args.runbooks, copy.path())?;
        suggestion.apply(copy.path())?;
        let (matcher, normalizer) = super::match_cmd::matcher_cached_as(
            copy.path(),
            &args.runbooks,
            args.config.as_deref(),
            true,
        )?;
        let (replayed, changes) = replay_changes(
            store.as_ref(),
            &matcher,
            &normalizer,
            since,
            10_000,
        )
        .await?;
        println!(
            "# replay: {replayed} ticket(s) since {}: {} decision(s) would change",
            args.since,
            changes.len()
        );
        print_changes(&changes, false, "#   ")?;
        if args.apply {
            suggestion.apply(&args.runbooks)?;
            eprintln!(
                "applied to {} file(s) under {}; run `runlink lint` and `runlink test` before committing",
                suggestion.files.len(),
                args.runbooks.display()
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
