//! The spine, end to end over real sockets: a signed GitHub `issues.opened` webhook becomes
//! exactly one comment with the right runbook on a GitHub double.

use std::time::Duration;

use crate::common::*;

const DISK_ISSUE: &str = "Disk on logs-1 will fill up within 4 hours";

#[tokio::test]
async fn signed_issue_opened_gets_exactly_one_comment_with_the_runbook_link() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;

    let body = issue_opened(42, DISK_ISSUE, "Filesystem / on logs-1 is 91% full.");
    let response = app.post_github_signed("issues", "delivery-1", &body).await;
    assert_eq!(response.status(), 202);
    assert!(response.headers().contains_key("x-request-id"));

    let got = wait_for_comments(&github, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "one comment expected");
    let request = &got[0];
    assert_eq!(request.url.path(), "/repos/acme/ops/issues/42/comments");
    assert_eq!(
        request
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {TOKEN}")
    );
    assert_eq!(
        request.headers.get("accept").unwrap().to_str().unwrap(),
        "application/vnd.github+json"
    );
    assert_eq!(
        request
            .headers
            .get("x-github-api-version")
            .unwrap()
            .to_str()
            .unwrap(),
        "2022-11-28"
    );
    let comment = comment_body(request);
    assert!(
        comment.contains("https://runbooks.example.com/host/disk-full"),
        "{comment}"
    );
    assert!(comment.contains("df -hT"), "first steps inline: {comment}");
    assert!(
        comment.contains("<!-- runlink:delivery="),
        "hidden marker: {comment}"
    );

    // Once nothing is pending, a second comment can no longer come.
    app.drained(Duration::from_secs(10)).await;
    assert_eq!(comments(&github).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn bad_signature_is_rejected_with_401_and_no_comment() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let body = issue_opened(1, DISK_ISSUE, "");

    let forged = format!(
        "sha256={}",
        runlink::ingest::sign_hmac_sha256(b"wrong", body.as_bytes())
    );
    let response = app
        .post_github("issues", "d-bad", &body, Some(forged))
        .await;
    assert_eq!(response.status(), 401);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "invalid_signature");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256")
    );

    let response = app.post_github("issues", "d-missing", &body, None).await;
    assert_eq!(response.status(), 401);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(comments(&github).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn replayed_delivery_gets_no_second_comment() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let body = issue_opened(7, "[FIRING:1] KubePodCrashLooping", "");

    let first = app
        .post_github_signed("issues", "same-delivery", &body)
        .await;
    assert_eq!(first.status(), 202);
    let second = app
        .post_github_signed("issues", "same-delivery", &body)
        .await;
    assert_eq!(second.status(), 200);
    let ack: serde_json::Value = second.json().await.unwrap();
    assert_eq!(ack["status"], "duplicate");
    // A redelivery with a new id for the same issue is not a new enrichment either.
    let third = app
        .post_github_signed("issues", "another-delivery", &body)
        .await;
    assert_eq!(third.status(), 200);

    let got = wait_for_comments(&github, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(comment_body(&got[0]).contains("kubernetes/pod-crash-looping"));
    app.drained(Duration::from_secs(10)).await;
    assert_eq!(comments(&github).await.len(), 1);
    // Neither the retry nor the echo of an enriched ticket was matched again.
    let metrics = app.metrics().await;
    assert_eq!(matches_counted(&metrics), 1.0, "{metrics}");
    app.stop().await;
}

/// The sum of `runlink_matches_total` over its outcomes.
fn matches_counted(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("runlink_matches_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn accepted_comment_survives_a_restart_before_delivery() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    // First life: accepts but has no delivery worker, as if it died right after the 2xx.
    let app = TestApp::spawn(test_config(
        dir.path(),
        &github.uri(),
        "[outbox]\nworker = false",
    ))
    .await;
    let body = issue_opened(9, "Certificate for api.example.com expires in 5 days", "");
    assert_eq!(
        app.post_github_signed("issues", "d-restart", &body)
            .await
            .status(),
        202
    );
    app.stop().await;
    assert!(comments(&github).await.is_empty());

    // Second life on the same store: the comment goes out.
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let got = wait_for_comments(&github, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(comment_body(&got[0]).contains("service/certificate-expiry"));
    app.stop().await;
}

#[tokio::test]
async fn other_events_and_actions_are_acknowledged_and_ignored() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;

    let comment_event = serde_json::json!({
        "action": "created",
        "issue": {"number": 3, "title": DISK_ISSUE},
        "comment": {"id": 1, "body": "<!-- runlink:delivery=x -->", "user": {"login": "ana"}},
        "repository": {"name": "ops", "owner": {"login": "acme"}},
    })
    .to_string();
    let r = app
        .post_github_signed("issue_comment", "d-c", &comment_event)
        .await;
    assert_eq!(r.status(), 200);
    let closed = issue_opened(3, DISK_ISSUE, "").replace("\"opened\"", "\"closed\"");
    let r = app.post_github_signed("issues", "d-closed", &closed).await;
    assert_eq!(r.status(), 200);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ack["status"], "ignored");

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(comments(&github).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_problem() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;

    let r = app.post_github_signed("issues", "d-1", "{not json").await;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["code"], "malformed_body");

    let wrong_type = issue_opened(5, DISK_ISSUE, "").replace("\"number\":5", "\"number\":\"five\"");
    let r = app.post_github_signed("issues", "d-2", &wrong_type).await;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("issue.number"),
        "{e}"
    );

    let signature = format!(
        "sha256={}",
        runlink::ingest::sign_hmac_sha256(SECRET.as_bytes(), b"{}")
    );
    let r = app
        .webhook(
            "/webhooks/github",
            "{}",
            &[
                ("X-GitHub-Event".to_string(), "issues".to_string()),
                ("X-Hub-Signature-256".to_string(), signature),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("X-GitHub-Delivery"),
        "{e}"
    );
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(
        dir.path(),
        &github.uri(),
        "[server]\nmax_body_bytes = 1024",
    ))
    .await;
    let body = issue_opened(5, DISK_ISSUE, &"x".repeat(4096));
    let r = app.post_github_signed("issues", "d-big", &body).await;
    assert_eq!(r.status(), 413);
    app.stop().await;
}

#[tokio::test]
async fn client_errors_from_github_are_not_retried() {
    let github = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(404))
        .mount(&github)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let body = issue_opened(11, DISK_ISSUE, "");
    assert_eq!(
        app.post_github_signed("issues", "d-404", &body)
            .await
            .status(),
        202
    );
    wait_for_comments(&github, 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(comments(&github).await.len(), 1, "a 404 is final");
    app.stop().await;
}

#[tokio::test]
async fn server_errors_from_github_are_retried_until_delivered() {
    let github = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(502))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&github)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(201))
        .with_priority(2)
        .mount(&github)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let body = issue_opened(12, DISK_ISSUE, "");
    assert_eq!(
        app.post_github_signed("issues", "d-502", &body)
            .await
            .status(),
        202
    );
    let got = wait_for_comments(&github, 3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "two 502s then a success");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(comments(&github).await.len(), 3);
    app.stop().await;
}
