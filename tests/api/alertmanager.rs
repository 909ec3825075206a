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
