//! `runlink outbox`: what is waiting, what was posted, what was given up, and putting dead
//! letters back in the queue once the cause is fixed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use runlink::outbox::{ItemState, Requeue};
use runlink::wiring::open_store_for;

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// Config file naming the store (`store.url`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// List outbox items (all states unless one is chosen).
    ///
    /// Example: runlink outbox list --dead
    List {
        #[arg(long, conflicts_with_all = ["pending", "delivered"])]
        dead: bool,
        #[arg(long, conflicts_with = "delivered")]
        pending: bool,
        #[arg(long)]
        delivered: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in the queue (attempts reset, due now).
    ///
    /// Example: runlink outbox retry 42   |   runlink outbox retry --all
    Retry {
        /// The outbox id of one dead letter.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

pub fn run(args: OutboxArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    actix_web::rt::System::new().block_on(async move {
        let store = open_store_for(&config)
            .await
            .context("cannot open the store")?;
        match args.command {
            OutboxCommand::List {
                dead,
                pending,
                delivered,
                limit,
                json,
            } => {
                let state = if dead {
                    Some(ItemState::Dead)
                } else if pending {
                    Some(ItemState::Pending)
                } else if delivered {
                    Some(ItemState::Delivered)
                } else {
                    None
                };
                let rows = store.list(state, limit).await?;
                for row in &rows {
                    if json {
                        println!("{}", serde_json::to_string(row)?);
                    } else {
                        let at = chrono::DateTime::from_timestamp_millis(row.created_ms)
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default();
                        println!(
                            "{:>6}  {:<9}  {:<8}  attempts {:<3} {}  {}  {}",
                            row.id,
                            row.state,
                            row.destination,
                            row.attempts,
                            at,
                            row.ticket,
                            row.last_error.as_deref().unwrap_or("")
                        );
                    }
                }
                if !json {
                    eprintln!("{} item(s)", rows.len());
                }
                Ok(ExitCode::SUCCESS)
            }
            OutboxCommand::Retry { id, all } => {
                let which = match (id, all) {
                    (_, true) => Requeue::AllDead,
                    (Some(id), false) => Requeue::One(id),
                    (None, false) => anyhow::bail!("give an outbox id or --all"),
                };
                let n = store.requeue(which).await?;
                println!("requeued {n} dead letter(s)");
                if n == 0 && matches!(which, Requeue::One(_)) {
                    eprintln!("runlink: no dead letter with that id");
                    return Ok(ExitCode::FAILURE);
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
