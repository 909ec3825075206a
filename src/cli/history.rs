//! Tools over what runlink recorded: `audit` (what it received, decided and posted),
//! `coverage` (alarms that found no confident runbook: the runbooks to write next) and
//! `replay` (what a candidate corpus would decide differently for past tickets: the canary
//! for a rule change).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use runlink::audit::{AuditEvent, AuditRecord};
use runlink::outbox::{AuditQuery, Store, now_ms};
use runlink::signature::AlarmSignature;
use runlink::wiring::open_store_for;

pub(super) fn since_ms(since: Option<&str>) -> anyhow::Result<Option<i64>> {
    since
        .map(|s| {
            humantime::parse_duration(s)
                .map(|d: Duration| now_ms() - d.as_millis() as i64)
                .with_context(|| format!("--since `{s}`: expected a duration like 7d or 12h"))
        })
        .transpose()
}

/// Opens the store inside the runtime that will use it: a PostgreSQL pool's connections
/// live on the runtime that made them.
pub(super) async fn store_for(config: Option<&std::path::Path>) -> anyhow::Result<Arc<dyn Store>> {
    let config = super::load_config(config)?;
    open_store_for(&config)
        .await
        .context("cannot open the store")
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this ticket (e.g. `github:acme/ops#12`).
    #[arg(long)]
    ticket: Option<String>,
    /// Only events newer than this (e.g. `24h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    config: Option<PathBuf>,
}

pub(super) async fn read_audit(
    store: &dyn Store,
    ticket: Option<String>,
    since: Option<i64>,
    limit: Option<usize>,
) -> anyhow::Result<Vec<AuditRecord>> {
    Ok(store
        .audit_log(AuditQuery {
            ticket,
            since_ms: since,
            limit,
        })
        .await?)
}

pub fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let since = since_ms(args.since.as_deref())?;
    actix_web::rt::System::new().block_on(async move {
        let store = store_for(args.config.as_deref()).await?;
        let records = read_audit(store.as_ref(), args.ticket, since, Some(args.limit)).await?;
        for record in &records {
            if args.json {
                println!("{}", serde_json::to_string(record)?);
            } else {
                let at = chrono::DateTime::from_timestamp_millis(record.at_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default();
                println!(
                    "{at}  {}  {}",
                    record.ticket.as_deref().unwrap_or("-"),
                    record.event.describe()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(Debug, Args)]
pub struct CoverageArgs {
    /// Look at tickets newer than this (default 30d).
    #[arg(long, default_value = "30d")]
    since: String,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Gap {
    signature: String,
    tickets: usize,
    /// `/runlink none` commands: operators saying no runbook covers it, whatever runlink
    /// answered.
    operators_said_none: usize,
    closest: Vec<String>,
}

pub fn coverage(args: CoverageArgs) -> anyhow::Result<ExitCode> {
    let since = since_ms(Some(&args.since))?;
    actix_web::rt::System::new().block_on(async move {
        let store = store_for(args.config.as_deref()).await?;
        let records = read_audit(store.as_ref(), None, since, None).await?;
        let mut gaps: HashMap<String, Gap> = HashMap::new();
        for record in records {
            if let AuditEvent::Decided {
                signature,
                confident: false,
                candidates,
                probe: false,
                ..
            } = record.event
            {
                let gap = gaps.entry(signature.clone()).or_insert_with(|| Gap {
                    signature,
                    tickets: 0,
                    operators_said_none: 0,
                    closest: candidates
                        .iter()
                        .take(3)
                        .map(|c| format!("{} ({:.2})", c.runbook, c.confidence))
                        .collect(),
                });
                gap.tickets += 1;
            }
        }
        let said_none = store.feedback_since(since.unwrap_or(0)).await?;
        for row in said_none.iter().filter(|r| {
            r.forgotten_ms.is_none() && r.feedback.kind == runlink::feedback::FeedbackKind::None
        }) {
            let signature = &row.feedback.signature;
            gaps.entry(signature.clone())
                .or_insert_with(|| Gap {
                    signature: signature.clone(),
                    tickets: 0,
                    operators_said_none: 0,
                    closest: Vec::new(),
                })
                .operators_said_none += 1;
        }
        let mut gaps: Vec<Gap> = gaps.into_values().collect();
        gaps.sort_by(|a, b| {
            (b.tickets + b.operators_said_none)
                .cmp(&(a.tickets + a.operators_said_none))
                .then(a.signature.cmp(&b.signature))
        });
        for gap in &gaps {
            if args.json {
                println!("{}", serde_json::to_string(gap)?);
            } else {
                println!(
                    "{:>6}  {}{}",
                    gap.tickets,
                    gap.signature,
                    if gap.operators_said_none > 0 {
                        format!("  (operators said no runbook fits: {})", gap.operators_said_none)
                    } else {
                        String::new()
                    }
                );
                if !gap.closest.is_empty() {
                    println!("        closest: {}", gap.closest.join(", "));
                }
            }
        }
        if !args.json {
            eprintln!(
                "{} alarm signature(s) without a confident runbook, or that operators said no runbook covers",
                gaps.len()
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Confidence moves smaller than this are noise, not a change worth reviewing.
const CONFIDENCE_SHIFT: f32 = 0.1;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The candidate runbook corpus (e.g. a checkout of the branch to merge).
    #[arg(long)]
    runbooks: PathBuf,
    /// Replay tickets newer than this (default 7d).
    #[arg(long, default_value = "7d")]
    since: String,
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub(super) struct Change {
    ticket: String,
    title: String,
    before: Option<String>,
    after: Option<String>,
    confidence_before: f32,
    confidence_after: f32,
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (matcher, normalizer) =
        super::match_cmd::matcher_for(&args.runbooks, args.config.as_deref())?;
    let since = since_ms(Some(&args.since))?.unwrap_or(0);
    actix_web::rt::System::new().block_on(async move {
        let store = store_for(args.config.as_deref()).await?;
        let (replayed, changes) =
            replay_changes(store.as_ref(), &matcher, &normalizer, since, args.limit).await?;
        print_changes(&changes, args.json, "")?;
        println!(
            "replayed {replayed} ticket(s): {} decision(s) would change",
            changes.len()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Re-decides the tickets received since `since` with `matcher`; returns how many had a
/// recorded decision, and the decisions that would change.
pub(super) async fn replay_changes(
    store: &dyn Store,
    matcher: &runlink::matcher::Matcher,
    normalizer: &runlink::signature::Normalizer,
    since: i64,
    limit: usize,
) -> anyhow::Result<(usize, Vec<Change>)> {
    let tickets = store.tickets_since(since, limit).await?;
    let records = read_audit(store, None, Some(since), None).await?;
    // Answers operators taught stay in force whatever the corpus says, as on the server.
    let lessons = runlink::feedback::Lessons::from_rows(&store.feedback_since(0).await?, 1);
    // The decision recorded for each ticket (its last one).
    let mut recorded: HashMap<String, (Option<String>, f32)> = HashMap::new();
    for record in records {
        if let (Some(ticket), AuditEvent::Decided { candidates, .. }) =
            (record.ticket, record.event)
        {
            let top = candidates.first();
            recorded.insert(
                ticket,
                (
                    top.filter(|c| c.confident).map(|c| c.runbook.clone()),
                    top.map(|c| c.confidence).unwrap_or(0.0),
                ),
            );
        }
    }
    let mut changes = Vec::new();
    let mut replayed = 0;
    for stored in tickets {
        let ticket = stored.ticket;
        let Some((before, confidence_before)) = recorded.get(ticket.id.as_str()).cloned() else {
            continue;
        };
        replayed += 1;
        let signature = AlarmSignature::of(&ticket, normalizer);
        let decision = matcher.decide_with(&signature, 3, Some(&lessons))?;
        let top = decision.candidates.first();
        let after = top
            .filter(|c| c.confident)
            .map(|c| c.runbook.id.to_string());
        let confidence_after = top.map(|c| c.confidence).unwrap_or(0.0);
        // A different answer, or the same answer with a clearly different confidence.
        if after != before || (confidence_after - confidence_before).abs() >= CONFIDENCE_SHIFT {
            changes.push(Change {
                ticket: ticket.id.to_string(),
                title: ticket.title.clone(),
                before,
                after,
                confidence_before,
                confidence_after,
            });
        }
    }
    Ok((replayed, changes))
}

/// One line per change (`prefix` first), or JSON lines.
pub(super) fn print_changes(changes: &[Change], json: bool, prefix: &str) -> anyhow::Result<()> {
    for change in changes {
        if json {
            println!("{}", serde_json::to_string(change)?);
        } else {
            println!(
                "{prefix}{}  {} -> {}  (confidence {:.2} -> {:.2})  {}",
                change.ticket,
                change.before.as_deref().unwrap_or("none"),
                change.after.as_deref().unwrap_or("none"),
                change.confidence_before,
                change.confidence_after,
                change.title
            );
        }
    }
    Ok(())
}
