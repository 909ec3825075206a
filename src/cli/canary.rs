//! `runlink canary status` (the shadow rollout of a corpus change, from a running server)
//! and `runlink canary probe` (synthetic tickets through the real sources, checked end to
//! end; for a cron job or a Kubernetes CronJob in every region).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use runlink::canary::probe::{self, ProbeCase, Secrets};

#[derive(Debug, Args)]
pub struct CanaryArgs {
    #[command(subcommand)]
    action: CanaryAction,
}

#[derive(Debug, Subcommand)]
enum CanaryAction {
    /// The candidate index in shadow, its counts and the decisions it would change. The
    /// admin token is read from `RUNLINK__SERVER__ADMIN_TOKEN`.
    ///
    /// Example: runlink canary status --url http://runlink:8080
    Status {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// Send the cases through their sources, read back each decision and comment from the
    /// probe sink, and exit non-zero if any case fails. Source secrets are read from the
    /// environment under the server's own names (`RUNLINK__SOURCES__GITHUB__SECRET`, ...).
    ///
    /// Example: runlink canary probe --url https://runlink.eu.example.com --cases probes.yaml --textfile /var/lib/node_exporter/runlink.prom
    Probe {
        #[arg(long)]
        url: String,
        /// YAML list of cases: `name`, `source`, `ticket`, `expect` (a runbook id or `none`),
        /// optional `confident`.
        #[arg(long)]
        cases: PathBuf,
        /// How long to wait for each comment.
        #[arg(long, default_value = "30s")]
        timeout: String,
        #[arg(long)]
        json: bool,
        /// Also write the results as a Prometheus textfile.
        #[arg(long)]
        textfile: Option<PathBuf>,
    },
}

pub fn run(args: CanaryArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        CanaryAction::Status { url, json } => status(&url, json),
        CanaryAction::Probe {
            url,
            cases,
            timeout,
            json,
            textfile,
        } => {
            let timeout: Duration = humantime::parse_duration(&timeout)
                .with_context(|| format!("--timeout `{timeout}`: expected a duration like 30s"))?;
            probe_run(&url, &cases, timeout, json, textfile)
        }
    }
}

fn status(url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let token = std::env::var("RUNLINK__SERVER__ADMIN_TOKEN").unwrap_or_default();
    let client = runlink::deliver::http_client(Duration::from_secs(10))?;
    actix_web::rt::System::new().block_on(async move {
        let response = client
            .get(format!("{}/admin/canary", url.trim_end_matches('/')))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let code = response.status();
        let body: serde_json::Value = response.json().await.context("answer is not JSON")?;
        if !code.is_success() {
            anyhow::bail!("{url} answered {code}: {}", body["message"]);
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!("state: {}", body["state"].as_str().unwrap_or("?"));
        println!("live index: {}", body["live_version"].as_str().unwrap_or("?"));
        if let Some(candidate) = body["candidate_version"].as_str() {
            println!(
                "candidate: {candidate} ({}), {} ticket(s) seen, {} changed ({:.1} %; promoted at or below {:.1} % after {} tickets and {} s)",
                body["trigger"].as_str().unwrap_or(""),
                body["seen"],
                body["changed"],
                body["changed_share"].as_f64().unwrap_or(0.0) * 100.0,
                body["max_changed"].as_f64().unwrap_or(0.0) * 100.0,
                body["min_tickets"],
                body["min_secs"],
            );
            for d in body["differences"].as_array().into_iter().flatten() {
                let answer = |a: &serde_json::Value| match (a["runbook"].as_str(), a["confident"].as_bool()) {
                    (Some(r), Some(true)) => r.to_string(),
                    _ => "none".to_string(),
                };
                println!(
                    "  {}  {} -> {}  {}",
                    d["ticket"].as_str().unwrap_or(""),
                    answer(&d["live"]),
                    answer(&d["candidate"]),
                    d["title"].as_str().unwrap_or("")
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn probe_run(
    url: &str,
    cases: &PathBuf,
    timeout: Duration,
    json: bool,
    textfile: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(cases)
        .with_context(|| format!("cannot read {}", cases.display()))?;
    let cases: Vec<ProbeCase> = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not a list of probe cases", cases.display()))?;
    let secrets = Secrets::from_env();
    let run = format!("probe-{}", uuid::Uuid::new_v4().simple());
    let prepared = cases
        .iter()
        .enumerate()
        .map(|(n, case)| probe::prepare(case, &run, n as u64, &secrets))
        .collect::<Result<Vec<_>, _>>()?;
    let client = runlink::deliver::http_client(Duration::from_secs(10))?;
    let url = url.to_string();
    let outcomes = actix_web::rt::System::new().block_on(async {
        let runs = cases
            .iter()
            .zip(&prepared)
            .map(|(case, p)| probe::run_case(&client, &url, case, p, timeout));
        futures::future::join_all(runs).await
    });
    if let Some(path) = textfile {
        // Written beside and renamed, so a collector never reads half a file.
        let partial = path.with_extension("prom.tmp");
        std::fs::write(&partial, probe::textfile(&outcomes, &url))
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        for o in &outcomes {
            let timing = match (o.decision_seconds, o.comment_seconds) {
                (Some(d), Some(c)) => format!(
                    "decision {:.0} ms, comment {:.0} ms",
                    d * 1000.0,
                    c * 1000.0
                ),
                _ => "no answer".to_string(),
            };
            match &o.failure {
                None => println!(
                    "ok    {} [{}] -> {} ({timing})",
                    o.name,
                    o.source,
                    o.runbook.as_deref().unwrap_or("none")
                ),
                Some(why) => println!("FAIL  {} [{}]: {why} ({timing})", o.name, o.source),
            }
        }
        println!("{} case(s), {failed} failed", outcomes.len());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
