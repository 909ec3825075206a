//! Synthetic probes: tickets sent through the real sources, signed or authenticated exactly
//! as the sender would, carrying the `runlink_probe` label inside the signed body so their
//! comment goes to the built-in `probe` sink. The probe then reads back the decision and the
//! rendered comment (`GET /v1/probes`) and checks each against what its case expects.
//!
//! Secrets come from the environment under the names the server's own configuration uses
//! (`RUNLINK__SOURCES__GITHUB__SECRET`, ...), so a probe job mounts the same secret.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ingest::manual::ManualTicket;
use crate::ingest::sign_hmac_sha256;
use crate::ticket::PROBE_LABEL;

/// One case: a golden test case plus the source to send it through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeCase {
    pub name: String,
    /// `alertmanager`, `github`, `jira` or `opsgenie`.
    pub source: String,
    pub ticket: ManualTicket,
    /// The runbook that must be linked (its id), or `none`.
    pub expect: String,
    /// Whether the answer must be confident; by default it must when a runbook is expected.
    #[serde(default)]
    pub confident: Option<bool>,
}

/// What the probe needs to authenticate, by source.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub github: Option<String>,
    pub alertmanager: Option<String>,
    pub jira: Option<String>,
    pub opsgenie_header: Option<String>,
    pub opsgenie: Option<String>,
}

impl Secrets {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Secrets {
            github: var("RUNLINK__SOURCES__GITHUB__SECRET"),
            alertmanager: var("RUNLINK__SOURCES__ALERTMANAGER__TOKEN"),
            jira: var("RUNLINK__SOURCES__JIRA__SECRET"),
            opsgenie_header: var("RUNLINK__SOURCES__OPSGENIE__HEADER"),
            opsgenie: var("RUNLINK__SOURCES__OPSGENIE__TOKEN"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "case `{case}`: source `{source_name}` cannot be probed (use alertmanager, github, jira or opsgenie)"
    )]
    UnknownSource { case: String, source_name: String },
}

/// A webhook ready to send, and the ticket id the server will give it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub ticket: String,
}

/// Builds the webhook of `case` for run `run`; `n` makes its ticket unique in the run.
pub fn prepare(
    case: &ProbeCase,
    run: &str,
    n: u64,
    secrets: &Secrets,
) -> Result<Prepared, ProbeError> {
    let t = &case.ticket;
    let unique = format!("{run}-{n}");
    let mut labels = t.labels.clone();
    labels.insert(PROBE_LABEL.to_string(), run.to_string());
    let tags: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}:{v}")
            }
        })
        .chain(t.alertname.iter().map(|a| format!("alertname:{a}")))
        .collect();
    let hmac = |secret: &Option<String>, body: &str| {
        secret
            .as_ref()
            .map(|s| format!("sha256={}", sign_hmac_sha256(s.as_bytes(), body.as_bytes())))
    };
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    let prepared = match case.source.as_str() {
        "alertmanager" => {
            let mut alert_labels = labels.clone();
            if let Some(name) = &t.alertname {
                alert_labels.insert("alertname".into(), name.clone());
            }
            let mut annotations = t.annotations.clone();
            annotations.insert("summary".into(), t.title.clone());
            if !t.body.is_empty() {
                annotations.insert("description".into(), t.body.clone());
            }
            let starts_at = chrono::Utc::now().to_rfc3339();
            let body = serde_json::json!({
                "version": "4",
                "groupKey": format!("{{}}:{{probe=\"{unique}\"}}"),
                "status": "firing",
                "receiver": "runlink-probe",
                "alerts": [{
                    "status": "firing",
                    "labels": alert_labels,
                    "annotations": annotations,
                    "startsAt": starts_at,
                    "fingerprint": unique,
                }],
            })
            .to_string();
            if let Some(token) = &secrets.alertmanager {
                headers.push(("Authorization".into(), format!("Bearer {token}")));
            }
            Prepared {
                path: "/webhooks/alertmanager".into(),
                ticket: format!("alertmanager:{unique}@{starts_at}"),
                headers,
                body,
            }
        }
        "github" => {
            let number = probe_number(&unique);
            let body = serde_json::json!({
                "action": "opened",
                "issue": {
                    "number": number,
                    "title": t.title,
                    "body": t.body,
                    "labels": tags.iter().map(|name| serde_json::json!({"name": name})).collect::<Vec<_>>(),
                },
                "repository": {"name": "probe", "owner": {"login": "runlink-probe"}},
            })
            .to_string();
            headers.push(("X-GitHub-Event".into(), "issues".into()));
            headers.push(("X-GitHub-Delivery".into(), unique.clone()));
            if let Some(signature) = hmac(&secrets.github, &body) {
                headers.push(("X-Hub-Signature-256".into(), signature));
            }
            Prepared {
                path: "/webhooks/github".into(),
                ticket: format!("github:runlink-probe/probe#{number}"),
                headers,
                body,
            }
        }
        "jira" => {
            let key = format!("PROBE-{}", probe_number(&unique));
            let body = serde_json::json!({
                "webhookEvent": "jira:issue_created",
                "issue": {"key": key, "fields": {
                    "summary": t.title,
                    "description": t.body,
                    "labels": tags,
                }},
            })
            .to_string();
            headers.push(("X-Atlassian-Webhook-Identifier".into(), unique.clone()));
            if let Some(signature) = hmac(&secrets.jira, &body) {
                headers.push(("X-Hub-Signature".into(), signature));
            }
            Prepared {
                path: "/webhooks/jira".into(),
                ticket: format!("jira:{key}"),
                headers,
                body,
            }
        }
        "opsgenie" => {
            let body = serde_json::json!({
                "action": "Create",
                "alert": {
                    "alertId": unique,
                    "message": t.title,
                    "description": t.body,
                    "tags": tags,
                },
            })
            .to_string();
            if let Some(token) = &secrets.opsgenie {
                let header = secrets
                    .opsgenie_header
                    .clone()
                    .unwrap_or_else(|| "X-Runlink-Token".into());
                headers.push((header, token.clone()));
            }
            Prepared {
                path: "/webhooks/opsgenie".into(),
                ticket: format!("opsgenie:{unique}"),
                headers,
                body,
            }
        }
        other => {
            return Err(ProbeError::UnknownSource {
                case: case.name.clone(),
                source_name: other.to_string(),
            });
        }
    };
    Ok(prepared)
}

/// A number for issue-style ids, from the unique name (stable within a run).
fn probe_number(unique: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(unique.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 1_000_000_000
}

/// What one case came to.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub source: String,
    pub ticket: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub runbook: Option<String>,
    pub confident: bool,
    /// From sending the webhook to the decision being readable, and to the rendered
    /// comment being in the sink.
    pub decision_seconds: Option<f64>,
    pub comment_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ProbeAnswer {
    state: String,
    decided_ms: Option<i64>,
    runbook: Option<String>,
    confident: bool,
    comment: Option<String>,
}

/// Runs one case against the server at `base`.
pub async fn run_case(
    client: &reqwest::Client,
    base: &str,
    case: &ProbeCase,
    prepared: &Prepared,
    timeout: Duration,
) -> Outcome {
    let mut outcome = Outcome {
        name: case.name.clone(),
        source: case.source.clone(),
        ticket: prepared.ticket.clone(),
        passed: false,
        failure: None,
        runbook: None,
        confident: false,
        decision_seconds: None,
        comment_seconds: None,
    };
    let started = Instant::now();
    let mut request = client
        .post(format!("{}{}", base.trim_end_matches('/'), prepared.path))
        .body(prepared.body.clone());
    for (name, value) in &prepared.headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            outcome.failure = Some(format!(
                "webhook answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ));
            return outcome;
        }
        Err(error) => {
            outcome.failure = Some(format!("webhook not sent: {error}"));
            return outcome;
        }
    }
    let mut url = match url::Url::parse(&format!("{}/v1/probes", base.trim_end_matches('/'))) {
        Ok(url) => url,
        Err(error) => {
            outcome.failure = Some(format!("bad --url: {error}"));
            return outcome;
        }
    };
    url.query_pairs_mut()
        .append_pair("ticket", &prepared.ticket);
    let answer = loop {
        let polled = client.get(url.clone()).send().await;
        if let Ok(response) = polled
            && response.status().is_success()
            && let Ok(answer) = response.json::<ProbeAnswer>().await
        {
            if outcome.decision_seconds.is_none() && answer.decided_ms.is_some() {
                outcome.decision_seconds = Some(started.elapsed().as_secs_f64());
            }
            if answer.state == "delivered" && answer.comment.is_some() {
                outcome.comment_seconds = Some(started.elapsed().as_secs_f64());
                break Some(answer);
            }
        }
        if started.elapsed() > timeout {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Some(answer) = answer else {
        outcome.failure = Some(format!(
            "no comment in the probe sink within {} s",
            timeout.as_secs()
        ));
        return outcome;
    };
    outcome.runbook = answer.runbook.clone();
    outcome.confident = answer.confident;
    outcome.failure = judge(case, &answer);
    outcome.passed = outcome.failure.is_none();
    outcome
}

fn judge(case: &ProbeCase, answer: &ProbeAnswer) -> Option<String> {
    let linked = answer.runbook.as_deref().filter(|_| answer.confident);
    if case.expect == "none" {
        return linked.map(|r| format!("expected no confident runbook, got {r}"));
    }
    let must_be_confident = case.confident.unwrap_or(true);
    match (answer.runbook.as_deref(), answer.confident) {
        (Some(r), confident) if r == case.expect && (confident || !must_be_confident) => None,
        (Some(r), false) if r == case.expect => Some(format!(
            "expected {} confidently, got it without confidence",
            case.expect
        )),
        (got, confident) => Some(format!(
            "expected {}, got {}{}",
            case.expect,
            got.unwrap_or("nothing"),
            if confident { "" } else { " (not confident)" }
        )),
    }
}

/// The outcomes as a Prometheus textfile (for node_exporter's textfile collector).
pub fn textfile(outcomes: &[Outcome], target: &str) -> String {
    let mut out = String::new();
    let label = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', " ")
    };
    out.push_str("# HELP runlink_probe_success Whether the probe case passed (1) or failed (0).\n");
    out.push_str("# TYPE runlink_probe_success gauge\n");
    for o in outcomes {
        out.push_str(&format!(
            "runlink_probe_success{{target=\"{}\",case=\"{}\",source=\"{}\"}} {}\n",
            label(target),
            label(&o.name),
            o.source,
            u8::from(o.passed)
        ));
    }
    for (metric, help, pick) in [
        (
            "runlink_probe_decision_seconds",
            "Seconds from sending the webhook to the decision.",
            (|o: &Outcome| o.decision_seconds) as fn(&Outcome) -> Option<f64>,
        ),
        (
            "runlink_probe_comment_seconds",
            "Seconds from sending the webhook to the rendered comment.",
            |o: &Outcome| o.comment_seconds,
        ),
    ] {
        out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} gauge\n"));
        for o in outcomes {
            if let Some(seconds) = pick(o) {
                out.push_str(&format!(
                    "{metric}{{target=\"{}\",case=\"{}\",source=\"{}\"}} {seconds:.3}\n",
                    label(target),
                    label(&o.name),
                    o.source
                ));
            }
        }
    }
    out.push_str(&format!(
        "# HELP runlink_probe_last_run_timestamp_seconds When the probe last ran.\n# TYPE runlink_probe_last_run_timestamp_seconds gauge\nrunlink_probe_last_run_timestamp_seconds{{target=\"{}\"}} {}\n",
        label(target),
        chrono::Utc::now().timestamp()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(source: &str, expect: &str) -> ProbeCase {
        ProbeCase {
            name: "disk".into(),
            source: source.into(),
            ticket: ManualTicket {
                title: "Disk full on db-1".into(),
                ..Default::default()
            },
            expect: expect.into(),
            confident: None,
        }
    }

    #[test]
    fn every_source_marks_the_probe_inside_the_signed_body() {
        let secrets = Secrets {
            github: Some("s".into()),
            jira: Some("j".into()),
            alertmanager: Some("t".into()),
            ..Default::default()
        };
        for source in ["alertmanager", "github", "jira", "opsgenie"] {
            let p = prepare(&case(source, "host/disk-full.md"), "run1", 1, &secrets).unwrap();
            assert!(p.body.contains(PROBE_LABEL), "{source}: {}", p.body);
            assert!(p.ticket.starts_with(source), "{source}: {}", p.ticket);
        }
        let github = prepare(&case("github", "x"), "run1", 1, &secrets).unwrap();
        let signature = &github
            .headers
            .iter()
            .find(|(n, _)| n == "X-Hub-Signature-256")
            .unwrap()
            .1;
        assert!(crate::ingest::verify_hmac_sha256(
            b"s",
            github.body.as_bytes(),
            signature.trim_start_matches("sha256=")
        ));
        assert!(prepare(&case("pagerduty", "x"), "r", 1, &secrets).is_err());
    }

    #[test]
    fn a_case_passes_only_on_the_expected_answer_and_confidence() {
        let answer = |runbook: Option<&str>, confident| ProbeAnswer {
            state: "delivered".into(),
            decided_ms: Some(1),
            runbook: runbook.map(String::from),
            confident,
            comment: Some(String::new()),
        };
        let expect = case("github", "host/disk-full.md");
        assert_eq!(
            judge(&expect, &answer(Some("host/disk-full.md"), true)),
            None
        );
        assert!(judge(&expect, &answer(Some("host/disk-full.md"), false)).is_some());
        assert!(judge(&expect, &answer(Some("host/high-cpu.md"), true)).is_some());
        let none = case("github", "none");
        assert_eq!(judge(&none, &answer(Some("host/high-cpu.md"), false)), None);
        assert!(judge(&none, &answer(Some("host/high-cpu.md"), true)).is_some());
    }
}
