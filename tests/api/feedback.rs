//! Operators correcting runlink from inside their tickets, end to end: GitHub and Jira comment
//! webhooks over real sockets, doubles for both trackers, then the author's tools (`runlink
//! feedback`, `suggest`, `test`) on the same store and a copy of the bundled corpus.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use runlink::config::Config;
use runlink::ingest::sign_hmac_sha256;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

const ALARM: &str = "WidgetSyncStalled";
const TAUGHT: &str = "kubernetes/pod-crash-looping.md";

/// The test's configuration as TOML: the server reads it, and so do the CLI runs after it.
fn config_toml(dir: &Path, runbooks: &Path, github: &str, jira: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[runbooks]
dir = "{runbooks}"
base_url = "https://runbooks.example.com/"
[templates]
dir = "{templates}"
[store]
url = "sqlite://{store}"
[matcher]
semantic_weight = 0.0
[outbox]
poll_interval_ms = 50
backoff_base_ms = 50
backoff_cap_ms = 200
[sources.github]
secret = "{SECRET}"
[sources.jira]
[destinations.github]
api_url = "{github}"
token = "{TOKEN}"
[destinations.jira]
api_url = "{jira}"
email = "bot@example.com"
token = "jira-token"
"#,
        runbooks = runbooks.display(),
        templates = repo_path("templates").display(),
        store = dir.join("runlink.db").display(),
    )
}

fn issue(number: u64, title: &str) -> String {
    serde_json::json!({
        "action": "opened",
        "issue": {
            "number": number,
            "title": title,
            "body": "Sync of widgets has not advanced for 20 minutes.",
            "labels": [{"name": format!("alertname={ALARM}")}],
        },
        "repository": {"name": "ops", "owner": {"login": "acme"}},
    })
    .to_string()
}

fn comment_event(number: u64, comment_id: u64, author: &str, text: &str) -> String {
    serde_json::json!({
        "action": "created",
        "issue": {
            "number": number,
            "title": "Widget sync stalled",
            "body": "",
            "labels": [{"name": format!("alertname={ALARM}")}],
        },
        "comment": {"id": comment_id, "body": text, "user": {"login": author}},
        "repository": {"name": "ops", "owner": {"login": "acme"}},
    })
    .to_string()
}

async fn github_with_reactions() -> MockServer {
    let server = github_double().await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/repos/acme/ops/issues/comments/\d+/reactions$",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 9})))
        .mount(&server)
        .await;
    server
}

async fn jira_double() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/rest/api/3/issue/[^/]+/comment$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "1"})))
        .mount(&server)
        .await;
    server
}

/// The comments posted to one GitHub issue, oldest first.
async fn issue_comments(server: &MockServer, number: u64) -> Vec<String> {
    comments(server)
        .await
        .iter()
        .filter(|r| r.url.path() == format!("/repos/acme/ops/issues/{number}/comments"))
        .map(comment_body)
        .collect()
}

async fn wait_issue_comments(server: &MockServer, number: u64, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = issue_comments(server, number).await;
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn reactions(server: &MockServer) -> Vec<serde_json::Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().ends_with("/reactions"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn command(app: &TestApp, delivery: &str, body: String) -> serde_json::Value {
    let response = app
        .post_github_signed("issue_comment", delivery, &body)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

fn runlink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(args)
        .output()
        .expect("runlink runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn operators_teach_an_answer_in_the_ticket_and_authors_turn_it_into_a_rule() {
    let github = github_with_reactions().await;
    let jira = jira_double().await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = dir.path().join("runbooks");
    copy_dir(&repo_path("index/runbooks"), &runbooks);
    let toml = config_toml(dir.path(), &runbooks, &github.uri(), &jira.uri());
    let config_path = dir.path().join("runlink.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let app = TestApp::spawn(Config::from_toml_layers(&[&toml]).unwrap()).await;

    // An alarm no runbook covers: runlink says so.
    let response = app
        .post_github_signed(
            "issues",
            "d-1",
            &issue(1, "Widget sync stalled on worker-7"),
        )
        .await;
    assert_eq!(response.status(), 202);
    let first = wait_issue_comments(&github, 1, 1).await;
    assert_eq!(first.len(), 1);
    assert!(!first[0].contains(TAUGHT), "{}", first[0]);

    // An operator says which runbook it was; runlink records it and reacts.
    let ack = command(
        &app,
        "c-1",
        comment_event(
            1,
            501,
            "ana",
            &format!("/runlink use {TAUGHT}\nthat fixed it"),
        ),
    )
    .await;
    assert_eq!(ack["status"], "recorded", "{ack}");
    assert_eq!(ack["kind"], "use");
    // The sender's retry of the same event records nothing twice.
    let again = command(
        &app,
        "c-1",
        comment_event(1, 501, "ana", &format!("/runlink use {TAUGHT}")),
    )
    .await;
    assert_eq!(again["status"], "duplicate", "{again}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reactions(&github).await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        reactions(&github).await,
        vec![serde_json::json!({"content": "+1"})]
    );

    // The next ticket of the same alarm gets the taught runbook, confidently, with who
    // taught it.
    app.post_github_signed(
        "issues",
        "d-2",
        &issue(2, "Widget sync stalled on worker-9"),
    )
    .await;
    let second = wait_issue_comments(&github, 2, 1).await;
    assert_eq!(second.len(), 1);
    assert!(second[0].contains("Pod crash looping"), "{}", second[0]);
    assert!(
        second[0].contains("taught by ana in github:acme/ops#1 on "),
        "{}",
        second[0]
    );

    // runlink's own comment, even one whose first line is a command, never counts.
    let marker = second[0]
        .lines()
        .find(|l| l.contains("runlink:delivery="))
        .unwrap()
        .to_string();
    let own = command(
        &app,
        "c-own",
        comment_event(2, 502, "runlink-bot", &format!("/runlink wrong\n{marker}")),
    )
    .await;
    assert_eq!(own["status"], "ignored", "{own}");
    let echoed = command(
        &app,
        "c-echo",
        comment_event(2, 503, "runlink-bot", &second[0]),
    )
    .await;
    assert_eq!(echoed["status"], "ignored", "{echoed}");

    // An unknown runbook is not recorded; the reply names the closest ids.
    let unknown = command(
        &app,
        "c-typo",
        comment_event(2, 504, "bo", "/runlink use kubernetes/pod-crashloop.md"),
    )
    .await;
    assert_eq!(unknown["status"], "unknown_runbook", "{unknown}");
    assert_eq!(unknown["closest"][0], TAUGHT, "{unknown}");
    let replies = wait_issue_comments(&github, 2, 2).await;
    assert_eq!(replies.len(), 2);
    assert!(
        replies[1].contains("no runbook `kubernetes/pod-crashloop.md`"),
        "{}",
        replies[1]
    );
    assert!(replies[1].contains(TAUGHT), "{}", replies[1]);

    // Called wrong on the taught answer: the lesson is gone for the next ticket.
    let wrong = command(&app, "c-2", comment_event(2, 505, "bo", "/RUNLINK Wrong")).await;
    assert_eq!(wrong["kind"], "wrong", "{wrong}");
    app.post_github_signed(
        "issues",
        "d-3",
        &issue(3, "Widget sync stalled on worker-3"),
    )
    .await;
    let third = wait_issue_comments(&github, 3, 1).await;
    assert!(!third[0].contains("taught by"), "{}", third[0]);
    // Taught again, by someone else: two votes for the same answer.
    command(
        &app,
        "c-3",
        comment_event(3, 506, "cy", &format!("/runlink use {TAUGHT}")),
    )
    .await;

    // "No runbook fits" feeds coverage, whatever runlink answered.
    let none = command(&app, "c-4", comment_event(3, 507, "cy", "/runlink none")).await;
    assert_eq!(none["kind"], "none", "{none}");

    // Jira: the same commands through `comment_created`, for a ticket known by its title.
    let created = serde_json::json!({
        "webhookEvent": "jira:issue_created",
        "issue": {"key": "OPS-1", "fields": {"summary": "Ledger export lagging behind"}},
    });
    let response = app
        .webhook("/webhooks/jira", created.to_string(), &[])
        .await;
    assert_eq!(response.status(), 202);
    let note = serde_json::json!({
        "webhookEvent": "comment_created",
        "comment": {"body": "/runlink use database/replication-lag.md", "author": {"displayName": "Dee"}},
        "issue": {"key": "OPS-1"},
    });
    let response = app.webhook("/webhooks/jira", note.to_string(), &[]).await;
    assert_eq!(response.status(), 202);
    let ack: serde_json::Value = response.json().await.unwrap();
    assert_eq!(ack["ticket"], "jira:OPS-1", "{ack}");
    let created = serde_json::json!({
        "webhookEvent": "jira:issue_created",
        "issue": {"key": "OPS-2", "fields": {"summary": "Ledger export lagging behind"}},
    });
    app.webhook("/webhooks/jira", created.to_string(), &[])
        .await;
    app.drained(Duration::from_secs(10)).await;
    let jira_comments: Vec<String> = jira
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/rest/api/3/issue/OPS-2/comment")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(jira_comments.len(), 1);
    assert!(
        jira_comments[0].contains("taught by Dee in jira:OPS-1 on "),
        "{}",
        jira_comments[0]
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("runlink_feedback_total{kind=\"use\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("runlink_feedback_total{kind=\"refused\"} 1"));
    app.stop().await;

    // The authors' side, on the same store.
    let config = config_path.to_str().unwrap();
    let out = runlink(&["feedback", "--json", "--config", config]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lessons = report["lessons"].as_array().unwrap();
    let alarm_lesson = lessons
        .iter()
        .find(|l| l["alarm"] == "alert:widgetsyncstalled")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(alarm_lesson["lesson"]["runbook"], TAUGHT);
    assert_eq!(alarm_lesson["lesson"]["author"], "cy");
    let crash = report["report"]["runbooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["runbook"] == TAUGHT)
        .unwrap();
    assert_eq!(crash["called_wrong"], 1, "{crash}");

    let out = runlink(&["coverage", "--json", "--config", config]);
    assert!(out.status.success(), "{out:?}");
    let gaps = stdout(&out);
    let said_none = gaps
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|g| g["operators_said_none"] == 1)
        .unwrap_or_else(|| panic!("{gaps}"));
    assert!(
        said_none["signature"].as_str().unwrap().starts_with(ALARM),
        "{said_none}"
    );

    let out = runlink(&[
        "suggest",
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--min-votes",
        "2",
        "--config",
        config,
    ]);
    assert!(out.status.success(), "{out:?}");
    let diff = stdout(&out);
    assert!(
        diff.contains("+++ b/kubernetes/pod-crash-looping.md"),
        "{diff}"
    );
    assert!(diff.contains(&format!("+  - {ALARM}")), "{diff}");
    assert!(diff.contains("# replay: "), "{diff}");
    // One vote is not enough for the Jira lesson.
    let patch = diff.split("# replay").next().unwrap();
    assert!(!patch.contains("replication-lag"), "{diff}");

    let out = runlink(&[
        "suggest",
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--min-votes",
        "2",
        "--apply",
        "--config",
        config,
    ]);
    assert!(out.status.success(), "{out:?}");
    let changed = std::fs::read_to_string(runbooks.join(TAUGHT)).unwrap();
    assert!(changed.contains(&format!("  - {ALARM}\n")), "{changed}");
    let out = runlink(&[
        "test",
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--config",
        config,
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = runlink(&["lint", "--runbooks", runbooks.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // Once it is a rule, the alarm is answered by name, and there is nothing left to suggest.
    let out = runlink(&[
        "suggest",
        "--runbooks",
        runbooks.to_str().unwrap(),
        "--min-votes",
        "2",
        "--config",
        config,
    ]);
    assert!(stdout(&out).is_empty(), "{out:?}");

    // Forgetting the lesson takes it out of force.
    let id = alarm_lesson["lesson"]["feedback"]
        .as_i64()
        .unwrap()
        .to_string();
    let out = runlink(&["feedback", "forget", &id, "--config", config]);
    assert!(out.status.success(), "{out:?}");
    let out = runlink(&["feedback", "--json", "--config", config]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["lessons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["alarm"] != "alert:widgetsyncstalled"),
        "{report:#}"
    );
    let out = runlink(&["feedback", "forget", &id, "--config", config]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_command_from_an_unsigned_sender_is_refused_like_any_webhook() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let body = comment_event(1, 1, "mallory", "/runlink use host/disk-full.md");
    let bad = format!("sha256={}", sign_hmac_sha256(b"wrong", body.as_bytes()));
    let response = app
        .post_github("issue_comment", "c-x", &body, Some(bad))
        .await;
    assert_eq!(response.status(), 401);
    let metrics = app.metrics().await;
    assert!(!metrics.contains("runlink_feedback_total{"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn commands_arrive_from_every_source_that_sends_comment_events() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(
        dir.path(),
        &github.uri(),
        "[sources.generic.desk]\ntitle = \"/title\"\nid = \"/id\"\ncomment = \"/note/text\"\ncomment_author = \"/note/by\"\n",
    );
    let store_url = config.store.clone();
    let app = TestApp::spawn(config).await;
    let sends = [
        (
            "/webhooks/pagerduty",
            serde_json::json!({"event": {
                "id": "ev-1", "event_type": "incident.annotated",
                "agent": {"summary": "Pat"},
                "data": {"id": "note-1", "content": "/runlink right", "incident": {"id": "PX1"}},
            }}),
            "pagerduty:PX1",
        ),
        (
            "/webhooks/opsgenie",
            serde_json::json!({"action": "AddNote", "alert": {
                "alertId": "og-1", "message": "Disk full on db-1",
                "note": "/runlink none", "username": "oli@example.com",
            }}),
            "opsgenie:og-1",
        ),
        (
            "/webhooks/servicenow",
            serde_json::json!({
                "sys_id": "abc", "number": "INC1", "short_description": "Disk full on db-1",
                "operation": "update", "work_notes": "/runlink wrong", "sys_updated_by": "sam",
            }),
            "servicenow:incident/abc",
        ),
        (
            "/webhooks/generic/desk",
            serde_json::json!({"id": "T-9", "note": {"text": "/runlink use host/disk-full.md", "by": "gus"}}),
            "generic.desk:T-9",
        ),
    ];
    for (path, body, ticket) in &sends {
        let response = app.webhook(path, body.to_string(), &[]).await;
        assert_eq!(response.status(), 202, "{path}");
        let ack: serde_json::Value = response.json().await.unwrap();
        assert_eq!(ack["status"], "recorded", "{path}: {ack}");
        assert_eq!(ack["ticket"], *ticket, "{path}: {ack}");
    }
    // An ordinary note and an unreadable command are acknowledged and not recorded.
    let plain = serde_json::json!({"event": {
        "id": "ev-2", "event_type": "incident.annotated",
        "data": {"content": "looking into it", "incident": {"id": "PX1"}},
    }});
    let ack: serde_json::Value = app
        .webhook("/webhooks/pagerduty", plain.to_string(), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ack["status"], "ignored", "{ack}");
    let typo = serde_json::json!({"id": "T-9", "note": {"text": "/runlink maybe"}});
    let ack: serde_json::Value = app
        .webhook("/webhooks/generic/desk", typo.to_string(), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ack["status"], "bad_command", "{ack}");

    let store = runlink::wiring::open_store(&store_url).await.unwrap();
    let rows = store.feedback_since(0).await.unwrap();
    let said: Vec<(String, String, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.feedback.ticket.clone(),
                r.feedback.author.clone(),
                r.feedback.kind.as_str(),
            )
        })
        .collect();
    assert_eq!(
        said,
        vec![
            ("pagerduty:PX1".into(), "Pat".into(), "right"),
            ("opsgenie:og-1".into(), "oli@example.com".into(), "none"),
            ("servicenow:incident/abc".into(), "sam".into(), "wrong"),
            ("generic.desk:T-9".into(), "gus".into(), "use"),
        ]
    );
    app.stop().await;
}
