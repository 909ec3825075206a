//! Command-line glue (the one place `anyhow` is used): parse arguments, call the library,
//! print results.

mod canary;
mod eval;
mod explain;
mod feedback;
mod golden;
mod history;
mod lint;
mod match_cmd;
mod outbox;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use runlink::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "runlink",
    version,
    about = "Links alarm-generated tickets to the runbooks that resolve them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server (defaults: bundled runbooks, SQLite under data/, 127.0.0.1:8080).
    ///
    /// Example: runlink serve --config runlink.toml
    Serve {
        /// TOML config file; `RUNLINK__SECTION__KEY` env vars override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Match tickets (JSON lines) against a runbook directory and print the ranked runbooks.
    ///
    /// Example: echo '{"title":"[FIRING:1] KubePodCrashLooping"}' | runlink match --runbooks index/runbooks
    Match(match_cmd::MatchArgs),
    /// Match-quality figures (top-1, top-3, MRR, confidence) over labelled alerts.
    ///
    /// Example: runlink eval --runbooks runbooks/ --cases alerts.jsonl --drop-alertname
    Eval(eval::EvalArgs),
    /// Check runbooks: front matter, regexes, duplicate alarm claims, shadowing rules, missing
    /// first steps, broken relative links, duplicate titles, unverified destructive steps.
    ///
    /// Example: runlink lint --runbooks runbooks/
    Lint(lint::LintArgs),
    /// Why does this ticket match that runbook? Signature, candidates, scores, decision.
    ///
    /// Example: runlink explain ticket.json --runbooks runbooks/   |   runlink explain - --source github < event.json
    Explain(explain::ExplainArgs),
    /// Run golden cases (tickets and the runbook each must match, or `none`).
    ///
    /// Example: runlink test --runbooks runbooks/   (reads runbooks/runlink-tests.yaml)
    Test(golden::TestArgs),
    /// What runlink received, decided and posted.
    ///
    /// Example: runlink audit --ticket 'github:acme/ops#12'   |   runlink audit --since 24h --json
    Audit(history::AuditArgs),
    /// Alarm signatures that got no confident runbook, most tickets first: what to write next.
    ///
    /// Example: runlink coverage --since 30d
    Coverage(history::CoverageArgs),
    /// Re-match recorded tickets against a candidate corpus and list every decision that
    /// would change: the canary for a rule change.
    ///
    /// Example: runlink replay --runbooks ../runbooks-branch --since 7d
    Replay(history::ReplayArgs),
    /// What operators said about runlink's answers (`/runlink right|wrong|use|none` in
    /// their tickets), per runbook and per alarm; `forget <id>` sets a taught answer aside.
    ///
    /// Example: runlink feedback --since 30d   |   runlink feedback forget 12
    Feedback(feedback::FeedbackArgs),
    /// Turn feedback into rules: a diff adding `alarms` for alarms repeatedly taught to a
    /// runbook and `not_alarms` for alarms it was repeatedly called wrong for, followed by
    /// what it would change for recent tickets.
    ///
    /// Example: runlink suggest --runbooks ../runbooks --min-votes 2   (add --apply to write)
    Suggest(feedback::SuggestArgs),
    /// Corpus changes in shadow (`status`), and synthetic tickets through the real sources,
    /// checked end to end (`probe`).
    ///
    /// Example: runlink canary probe --url https://runlink.example.com --cases probes.yaml
    Canary(canary::CanaryArgs),
    /// Inspect the outbox and re-queue dead letters.
    Outbox(outbox::OutboxArgs),
    /// Create or upgrade the store's schema and exit (the server also does this at start;
    /// run it first when replicas start with a database user that may not alter tables).
    ///
    /// Example: RUNLINK__STORE__URL=postgres://runlink@db/runlink runlink migrate
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Exit 0 when the server answers 2xx on its health URL (for container health checks).
    ///
    /// Example: runlink health --url http://127.0.0.1:8080/readyz
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
}

/// Every command but `serve`, which `main` runs itself (the tools never start the server).
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { .. } => unreachable!("`serve` is run by main"),
        Command::Match(args) => match_cmd::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Health { url } => health(&url),
        Command::Migrate { config } => migrate(config),
        Command::Outbox(args) => outbox::run(args),
        Command::Lint(args) => lint::run(args),
        Command::Test(args) => golden::run(args),
        Command::Audit(args) => history::audit(args),
        Command::Coverage(args) => history::coverage(args),
        Command::Replay(args) => history::replay(args),
        Command::Explain(args) => explain::run(args),
        Command::Feedback(args) => feedback::run(args),
        Command::Canary(args) => canary::run(args),
        Command::Suggest(args) => feedback::suggest(args),
    }
}

pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path).context("invalid configuration")
}

fn migrate(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config.as_deref())?;
    actix_web::rt::System::new().block_on(async move {
        runlink::wiring::open_store_for(&config)
            .await
            .context("cannot migrate the store")?;
        println!("store schema is up to date ({:?})", config.store);
        Ok(ExitCode::SUCCESS)
    })
}

fn health(url: &str) -> anyhow::Result<ExitCode> {
    let client = runlink::deliver::http_client(std::time::Duration::from_secs(3))?;
    actix_web::rt::System::new().block_on(async move {
        let response = client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if response.status().is_success() {
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("runlink: {url} answered {}", response.status());
            Ok(ExitCode::FAILURE)
        }
    })
}
