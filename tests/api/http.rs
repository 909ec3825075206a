//! The HTTP surface as a whole: health and readiness answer, and every refusal, from any
//! route or none, has the one error shape `{message, code, type}`.

use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn health_and_readiness_answer_and_unknown_routes_get_the_error_shape() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;

    let health = app.healthz().await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let ready = app.readyz().await;
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert!(ready["runbooks"].as_u64().unwrap() > 0, "{ready}");
    assert_eq!(ready["shedding"], false);

    for path in ["/no/such/route", "/webhooks/github"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers().contains_key("x-request-id"), "{path}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["code"], "not_found", "{path}: {e}");
        assert_eq!(e["type"], "invalid_request", "{path}: {e}");
        assert!(e["message"].as_str().unwrap().contains(path), "{path}: {e}");
    }

    // A bad body on the preview route is refused in the same shape, naming the field.
    let r = app
        .preview(&serde_json::json!({ "title": "x", "labels": "not a map" }))
        .await;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["code"], "invalid_field", "{e}");
    assert!(e["message"].as_str().unwrap().contains("labels"), "{e}");

    app.drained(Duration::from_secs(5)).await;
    app.stop().await;
}
