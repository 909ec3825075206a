//! The contract every source keeps, over real sockets, with realistic payloads: a valid
//! delivery is accepted and its enrichment reaches the destination the ticket came from (or
//! the one a route names), a bad signature gets 401, a malformed body gets 400 naming the
//! field, a repeated delivery is not enriched twice, and events runlink caused itself are
//! ignored.

use std::time::Duration;

use crate::common::*;
use runlink::ingest::sign_hmac_sha256;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

type Headers = Vec<(String, String)>;

struct Case {
    path: &'static str,
    /// Config for the source and its destination, given the destination double's URL.
    config: String,
    body: String,
    /// Headers that authenticate `body` (and carry its delivery id).
    sign: fn(&str) -> Headers,
    bad: fn(&str) -> Headers,
    malformed: String,
    malformed_field: &'static str,
    /// What the destination double must receive: method and path.
    expect: (&'static str, String),
}

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn hub_sig(secret: &str, body: &str) -> String {
    format!(
        "sha256={}",
        sign_hmac_sha256(secret.as_bytes(), body.as_bytes())
    )
}

async fn double() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "1"})))
        .mount(&server)
        .await;
    server
}

async fn posts(server: &MockServer, method: &str, path: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == method && r.url.path() == path)
        .count()
}

async fn send(app: &TestApp, case: &Case, body: &str, headers: Headers) -> reqwest::Response {
    app.webhook(case.path, body, &headers).await
}

async fn run_contract(case: Case) {
    let dest = double().await;
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let config = case.config.replace("{DEST}", &dest.uri());
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), &config)).await;

    // Bad signature: 401, nothing stored.
    let r = send(&app, &case, &case.body, (case.bad)(&case.body)).await;
    assert_eq!(
        r.status(),
        401,
        "{}: {}",
        case.path,
        r.text().await.unwrap()
    );
    // Malformed: 400 naming the field.
    let r = send(&app, &case, &case.malformed, (case.sign)(&case.malformed)).await;
    assert_eq!(r.status(), 400, "{}", case.path);
    let error: serde_json::Value = r.json().await.unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(case.malformed_field),
        "{}: {error}",
        case.path
    );
    // Valid: accepted once, then the sender's retry is a duplicate.
    let r = send(&app, &case, &case.body, (case.sign)(&case.body)).await;
    assert_eq!(
        r.status(),
        202,
        "{}: {}",
        case.path,
        r.text().await.unwrap()
    );
    let r = send(&app, &case, &case.body, (case.sign)(&case.body)).await;
    assert_eq!(r.status(), 200, "{}", case.path);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert!(
        ack["status"] == "duplicate" || ack["duplicates"] == 1,
        "{}: {ack}",
        case.path
    );

    let (method, path) = &case.expect;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while posts(&dest, method, path).await == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let received = dest.received_requests().await.unwrap();
    assert_eq!(
        posts(&dest, method, path).await,
        1,
        "{}: {:?}",
        case.path,
        received
            .iter()
            .map(|r| format!("{} {}", r.method, r.url))
            .collect::<Vec<_>>()
    );
    assert!(comments(&github).await.is_empty(), "nothing goes to GitHub");
    app.stop().await;
}

#[tokio::test]
async fn grafana_alerts_are_answered_where_a_route_points() {
    run_contract(Case {
        path: "/webhooks/grafana",
        config: r#"
[sources.grafana]
secret = "gf-secret"
[destinations.jira]
api_url = "{DEST}"
email = "bot@example.com"
token = "jira-token"
[[routes]]
source = "grafana"
destination = "jira"
annotation = "ticket"
"#
        .into(),
        body: include_str!("../fixtures/grafana-firing.json").into(),
        sign: |b| {
            h(&[(
                "X-Grafana-Alerting-Signature",
                &sign_hmac_sha256(b"gf-secret", b.as_bytes()),
            )])
        },
        bad: |b| {
            h(&[(
                "X-Grafana-Alerting-Signature",
                &sign_hmac_sha256(b"wrong", b.as_bytes()),
            )])
        },
        malformed: r#"{"version":"1","groupKey":"g","alerts":[{"status":"firing","labels":{},"startsAt":7,"fingerprint":"f"}]}"#.into(),
        malformed_field: "alerts[0].startsAt",
        expect: ("POST", "/rest/api/3/issue/OPS-481/comment".into()),
    })
    .await;
}

#[tokio::test]
async fn grafana_signatures_over_a_timestamp_refuse_stale_requests() {
    let dest = double().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[sources.grafana]\nsecret = \"gf\"\ntimestamp_header = \"X-Grafana-Alerting-Timestamp\"\n[destinations.jira]\napi_url = \"{}\"\nbearer_token = \"t\"\n[[routes]]\ndestination = \"jira\"\nannotation = \"ticket\"\n",
        dest.uri()
    );
    let app = TestApp::spawn(test_config(dir.path(), &dest.uri(), &config)).await;
    let body = include_str!("../fixtures/grafana-firing.json");
    let post = |ts: i64| {
        let signed = format!("{ts}:{body}");
        let headers = vec![
            ("X-Grafana-Alerting-Timestamp".to_string(), ts.to_string()),
            (
                "X-Grafana-Alerting-Signature".to_string(),
                sign_hmac_sha256(b"gf", signed.as_bytes()),
            ),
        ];
        let app = &app;
        async move { app.webhook("/webhooks/grafana", body, &headers).await }
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(post(now - 3600).await.status(), 401);
    assert_eq!(post(now).await.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn pagerduty_incidents_get_a_note_and_either_rotated_secret_verifies() {
    run_contract(Case {
        path: "/webhooks/pagerduty",
        config: r#"
[sources.pagerduty]
secrets = ["old-secret", "new-secret"]
[destinations.pagerduty]
api_url = "{DEST}"
token = "pd-token"
from = "runlink@example.com"
"#
        .into(),
        body: include_str!("../fixtures/pagerduty-incident-triggered.json").into(),
        sign: |b| {
            let sig = format!(
                "v1={},v1={}",
                sign_hmac_sha256(b"not-ours", b.as_bytes()),
                sign_hmac_sha256(b"new-secret", b.as_bytes())
            );
            h(&[
                ("X-PagerDuty-Signature", &sig),
                ("X-Webhook-Id", "b7c2f5e0-8e24-4d0c-9f1d-3c1a2b3c4d5e"),
            ])
        },
        bad: |b| {
            h(&[(
                "X-PagerDuty-Signature",
                &format!("v1={}", sign_hmac_sha256(b"nope", b.as_bytes())),
            )])
        },
        malformed: r#"{"event":{"id":"e1","event_type":"incident.triggered","data":{"id":"P1"}}}"#
            .into(),
        malformed_field: "event.data.title",
        expect: ("POST", "/incidents/Q2WG5V3B7ZPLMS/notes".into()),
    })
    .await;
}

#[tokio::test]
async fn jira_issues_with_adf_descriptions_get_a_comment() {
    run_contract(Case {
        path: "/webhooks/jira",
        config: r#"
[sources.jira]
secret = "jira-secret"
[destinations.jira]
api_url = "{DEST}"
email = "bot@example.com"
token = "jira-token"
"#
        .into(),
        body: include_str!("../fixtures/jira-issue-created.json").into(),
        sign: |b| {
            h(&[
                ("X-Hub-Signature", &hub_sig("jira-secret", b)),
                ("X-Atlassian-Webhook-Identifier", "1795459522169-OPS-481"),
            ])
        },
        bad: |b| h(&[("X-Hub-Signature", &hub_sig("other", b))]),
        malformed: r#"{"webhookEvent":"jira:issue_created","issue":{"key":"OPS-1","fields":{"summary":7}}}"#.into(),
        malformed_field: "issue.fields.summary",
        expect: ("POST", "/rest/api/3/issue/OPS-481/comment".into()),
    })
    .await;
}

#[tokio::test]
async fn opsgenie_alerts_get_a_note() {
    run_contract(Case {
        path: "/webhooks/opsgenie",
        config: r#"
[sources.opsgenie]
header = "X-Runlink-Token"
token = "og-token"
[destinations.opsgenie]
api_url = "{DEST}"
api_key = "genie-key"
"#
        .into(),
        body: include_str!("../fixtures/opsgenie-create.json").into(),
        sign: |_| h(&[("X-Runlink-Token", "og-token")]),
        bad: |_| h(&[("X-Runlink-Token", "guess")]),
        malformed: r#"{"action":"Create","alert":{"alertId":"a1"}}"#.into(),
        malformed_field: "alert",
        expect: (
            "POST",
            "/v2/alerts/8418d193-2dab-4490-b331-8c02cdd196b7-1546442427112/notes".into(),
        ),
    })
    .await;
}

#[tokio::test]
async fn servicenow_incidents_get_a_work_note() {
    run_contract(Case {
        path: "/webhooks/servicenow",
        config: r#"
[sources.servicenow]
username = "snow"
password = "snow-pass"
[destinations.servicenow]
api_url = "{DEST}"
token = "snow-oauth"
"#
        .into(),
        body: include_str!("../fixtures/servicenow-incident.json").into(),
        sign: |_| h(&[("Authorization", "Basic c25vdzpzbm93LXBhc3M=")]),
        bad: |_| h(&[("Authorization", "Basic c25vdzp3cm9uZw==")]),
        malformed: r#"{"sys_id":"abc","number":"INC1","short_description":["x"]}"#.into(),
        malformed_field: "short_description",
        expect: (
            "PATCH",
            "/api/now/table/incident/9d385017c611228701d22104cc95c371".into(),
        ),
    })
    .await;
}

#[tokio::test]
async fn generic_json_is_read_through_configured_pointers() {
    run_contract(Case {
        path: "/webhooks/generic/tracker",
        config: r#"
[sources.generic.tracker]
token = "gen-token"
title = "/ticket/title"
id = "/ticket/id"
body = "/ticket/text"
labels = "/ticket/tags"
delivery = "/delivery"
reply_destination = "generic.chat"
reply_id = "/ticket/room"
[destinations.generic.chat]
api_url = "{DEST}"
path = "/rooms/{{ target.id }}/messages"
"#
        .into(),
        body: include_str!("../fixtures/generic-ticket.json").into(),
        sign: |_| h(&[("Authorization", "Bearer gen-token")]),
        bad: |_| h(&[("Authorization", "Bearer nope")]),
        malformed: r#"{"delivery":"d1","ticket":{"id":1,"title":{"nested":true},"room":"r"}}"#
            .into(),
        malformed_field: "/ticket/title",
        expect: ("POST", "/rooms/ops-alerts/messages".into()),
    })
    .await;
}

#[tokio::test]
async fn an_unknown_generic_source_is_404() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let r = app.post_generic("nothing-here", "{}").await;
    assert_eq!(r.status(), 404);
    let error: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error["code"], "unknown_source");
    assert!(error["message"].as_str().unwrap().contains("nothing-here"));
    app.stop().await;
}

/// runlink's own comments come back as events; none of them may become a ticket.
#[tokio::test]
async fn events_caused_by_runlink_are_ignored() {
    let dest = double().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[destinations.pagerduty]\napi_url = \"{0}\"\ntoken = \"t\"\nfrom = \"a@b.c\"\n[destinations.jira]\napi_url = \"{0}\"\nbearer_token = \"t\"\n[destinations.opsgenie]\napi_url = \"{0}\"\napi_key = \"k\"\n",
        dest.uri()
    );
    let github = github_double().await;
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), &config)).await;
    let annotated = include_str!("../fixtures/pagerduty-incident-annotated.json").to_string();
    let jira_comment = serde_json::json!({
        "webhookEvent": "comment_created",
        "comment": {"id": "10001", "body": "Runbook ... runlink:delivery=abc"},
        "issue": {"key": "OPS-481", "fields": {"summary": "x"}}
    })
    .to_string();
    let mut og_note: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/opsgenie-create.json")).unwrap();
    og_note["action"] = "AddNote".into();
    for (path, body) in [
        ("/webhooks/pagerduty", annotated),
        ("/webhooks/jira", jira_comment),
        ("/webhooks/opsgenie", og_note.to_string()),
    ] {
        let r = app.webhook(path, body, &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        let ack: serde_json::Value = r.json().await.unwrap();
        assert_eq!(ack["status"], "ignored", "{path}: {ack}");
    }
    let r = app
        .webhook(
            "/webhooks/github",
            r#"{"action":"created"}"#,
            &h(&[
                ("X-GitHub-Event", "issue_comment"),
                ("X-GitHub-Delivery", "c1"),
                (
                    "X-Hub-Signature-256",
                    &hub_sig(SECRET, r#"{"action":"created"}"#),
                ),
            ]),
        )
        .await;
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(dest.received_requests().await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_by_every_source() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(
        dir.path(),
        &github.uri(),
        "[server]\nmax_body_bytes = 2048\n",
    ))
    .await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
    for path in [
        "/webhooks/grafana",
        "/webhooks/pagerduty",
        "/webhooks/jira",
        "/webhooks/servicenow",
        "/webhooks/opsgenie",
        "/webhooks/alertmanager",
    ] {
        let r = app.webhook(path, big.clone(), &[]).await;
        assert_eq!(r.status(), 413, "{path}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["code"], "payload_too_large", "{path}");
    }
    app.stop().await;
}
