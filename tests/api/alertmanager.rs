//! Alertmanager webhooks (v4) over real sockets: firing alerts become tickets answered on the
//! GitHub issue their `github_issue` annotation names; resolved alerts are recorded only.

use std::time::Duration;

use crate::common::double::{Answer, GithubDouble};
use crate::common::*;

const TOKEN_AM: &str = "am-token";

fn config(dir: &std::path::Path, github: &str) -> runlink::config::Config {
    test_config(
        dir,
        github,
        &format!("[sources.alertmanager]\ntoken = \"{TOKEN_AM}\"\n"),
    )
}

/// The captured firing notification, pointed at a GitHub issue.
fn firing(issue: u64) -> String {
    let mut value: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/alertmanager-firing.json")).unwrap();
    value["alerts"][0]["annotations"]["github_issue"] = format!("acme/ops#{issue}").into();
    value.to_string()
}

#[tokio::test]
async fn a_firing_alert_is_enriched_on_its_github_issue_once() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(config(dir.path(), &github.uri())).await;
    let r = app.post_alertmanager(&firing(77), Some(TOKEN_AM)).await;
    assert_eq!(r.status(), 202);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ack["accepted"], 1);
    // Alertmanager resends the same group: no second comment.
    let r = app.post_alertmanager(&firing(77), Some(TOKEN_AM)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(github.wait_for(1, Duration::from_secs(10)).await, 1);
    app.drained(Duration::from_secs(10)).await;
    let log = github.log.lock().unwrap();
    assert_eq!(log.comments.len(), 1);
    let (path, body) = &log.comments[0];
    assert_eq!(path, "/repos/acme/ops/issues/77");
    assert!(body.contains("service/http-5xx-errors"), "{body}");
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_rejected_with_401() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(config(dir.path(), &github.uri())).await;
    assert_eq!(app.post_alertmanager(&firing(1), None).await.status(), 401);
    assert_eq!(
        app.post_alertmanager(&firing(1), Some("nope"))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn a_malformed_notification_is_rejected_naming_the_field() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(config(dir.path(), &github.uri())).await;
    let mut value: serde_json::Value = serde_json::from_str(&firing(1)).unwrap();
    value["alerts"][0]["labels"] = serde_json::json!(["not", "a", "map"]);
    let r = app
        .post_alertmanager(&value.to_string(), Some(TOKEN_AM))
        .await;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("alerts[0].labels"),
        "{e}"
    );
    let r = app
        .post_alertmanager("{\"version\":\"4\"", Some(TOKEN_AM))
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn resolved_alerts_are_recorded_not_enriched() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(config(dir.path(), &github.uri())).await;
    let mut value: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/alertmanager-resolved.json")).unwrap();
    value["alerts"][0]["annotations"]["github_issue"] = "acme/ops#5".into();
    let r = app
        .post_alertmanager(&value.to_string(), Some(TOKEN_AM))
        .await;
    assert_eq!(r.status(), 200);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ack["resolved"], 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(github.stored(), 0);
}

/// One notification of many alerts that all name one issue: the issue gets at most
/// `outbox.max_per_reply_target` comments, the last listing the alerts folded into it, and
/// the audit log keeps every alert.
#[tokio::test]
async fn a_storm_on_one_issue_is_folded_into_its_last_allowed_comment() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(
        dir.path(),
        &github.uri(),
        &format!(
            "[sources.alertmanager]\ntoken = \"{TOKEN_AM}\"\n\
             [outbox]\nmax_per_reply_target = 3\nfold_wait_ms = 1000\n"
        ),
    ))
    .await;
    let mut value: serde_json::Value = serde_json::from_str(&firing(9)).unwrap();
    let template = value["alerts"][0].clone();
    let alerts: Vec<serde_json::Value> = (0..40)
        .map(|n| {
            let mut alert = template.clone();
            alert["labels"]["instance"] = format!("10.0.0.{n}:8080").into();
            alert["labels"]["alertname"] = format!("HighErrorRate{n}").into();
            alert["fingerprint"] = format!("{n:016x}").into();
            alert
        })
        .collect();
    value["alerts"] = alerts.into();
    let r = app
        .post_alertmanager(&value.to_string(), Some(TOKEN_AM))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["accepted"], 40);
    app.drained(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = github.log.lock().unwrap().comments.clone();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert!(
        log.iter()
            .all(|(path, _)| path == "/repos/acme/ops/issues/9")
    );
    let last = &log[2].1;
    assert!(last.contains("37 more alert(s)"), "{last}");
    assert_eq!(
        last.matches(" → ").count(),
        37,
        "one line per folded alert: {last}"
    );
    assert!(
        last.contains("runlink:delivery="),
        "the marker stays: {last}"
    );
    app.stop().await;
    // Every alert has its trail; the folded ones say which comment lists them.
    let store = runlink::wiring::open_store(
        &runlink::config::StoreUrl::parse(&format!(
            "sqlite://{}",
            dir.path().join("runlink.db").display()
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let trail = store
        .audit_log(runlink::outbox::AuditQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let folded = trail
        .iter()
        .filter(|r| {
            matches!(
                &r.event,
                runlink::audit::AuditEvent::Folded { into: Some(_), .. }
            )
        })
        .count();
    assert_eq!(folded, 37);
    let received = trail
        .iter()
        .filter(|r| matches!(&r.event, runlink::audit::AuditEvent::Received { .. }))
        .count();
    assert_eq!(received, 40);
}
