//! End to end with the real Prometheus Alertmanager: an alert pushed into Alertmanager's API
//! is grouped, sent to runlink's webhook with a bearer token, matched, and its enrichment is
//! posted to a Jira double on the issue the alert's `ticket` annotation names (a route).
//!
//! Needs the `prometheus-alertmanager` (Debian) or `alertmanager` binary; `.ci/run` installs
//! it and sets `RUNLINK_REQUIRE_EXTERNAL=1`, which turns a missing binary into a failure.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::process::free_port;
use crate::common::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AM_TOKEN: &str = "am-e2e-token";

fn alertmanager_binary() -> Option<String> {
    if let Ok(bin) = std::env::var("RUNLINK_ALERTMANAGER_BIN") {
        return Some(bin);
    }
    ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(String::from)
}

/// Kills Alertmanager however the test ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_alert_pushed_into_alertmanager_is_enriched_on_its_jira_issue() {
    let Some(binary) = alertmanager_binary() else {
        assert!(
            std::env::var("RUNLINK_REQUIRE_EXTERNAL").is_err(),
            "RUNLINK_REQUIRE_EXTERNAL is set but no Alertmanager binary was found"
        );
        eprintln!("skipped: no Alertmanager binary (install prometheus-alertmanager)");
        return;
    };

    let jira = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/OPS-9/comment"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "1"})))
        .mount(&jira)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[sources.alertmanager]
token = "{AM_TOKEN}"
[destinations.jira]
api_url = "{jira}"
email = "bot@example.com"
token = "jira-token"
[[routes]]
source = "alertmanager"
destination = "jira"
annotation = "ticket"
"#,
        jira = jira.uri()
    );
    let github = github_double().await;
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), &extra)).await;

    let am_port = free_port();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            r#"route:
  receiver: runlink
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: runlink
    webhook_configs:
      - url: "{}/webhooks/alertmanager"
        send_resolved: true
        http_config:
          authorization:
            credentials: "{AM_TOKEN}"
"#,
            app.address
        ),
    )
    .unwrap();
    let storage = dir.path().join("am-data");
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager starts");
    let _guard = Guard(child);
    let am = format!("http://127.0.0.1:{am_port}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = app.client.get(format!("{am}/-/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alertmanager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let alert = serde_json::json!([{
        "labels": {
            "alertname": "KubePodCrashLooping",
            "namespace": "shop",
            "pod": "checkout-7d9f8b6c4-x2x9z",
            "container": "app",
            "severity": "warning"
        },
        "annotations": {
            "summary": "Pod is crash looping.",
            "description": "Pod shop/checkout-7d9f8b6c4-x2x9z (app) is in waiting state (reason: \"CrashLoopBackOff\").",
            "ticket": "OPS-9"
        },
        "startsAt": chrono::Utc::now().to_rfc3339(),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=max_over_time%28kube_pod_container_status_waiting_reason%7Breason%3D%22CrashLoopBackOff%22%7D%5B5m%5D%29+%3E%3D+1"
    }]);
    let pushed = app
        .client
        .post(format!("{am}/api/v2/alerts"))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert!(pushed.status().is_success(), "{}", pushed.status());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let comment = loop {
        let requests = jira.received_requests().await.unwrap_or_default();
        if let Some(r) = requests.into_iter().find(|r| r.method.as_str() == "POST") {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no enrichment reached the Jira double"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let body: serde_json::Value = serde_json::from_slice(&comment.body).unwrap();
    runlink::deliver::jira_markup::validate_adf(&body["body"]).unwrap();
    assert!(
        body.to_string().contains("crash"),
        "the crash-looping runbook is linked: {body}"
    );
    assert!(comments(&github).await.is_empty());
    app.stop().await;
}
