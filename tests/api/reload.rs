//! Hot reload: a running server picks up a changed runbook without a restart, and refuses a
//! broken corpus while the old index keeps serving.

use std::time::{Duration, Instant};

use crate::common::double::{Answer, GithubDouble};
use crate::common::*;

const ADMIN: &str = "admin-secret";

async fn best(app: &TestApp, title: &str) -> (String, bool) {
    let v: serde_json::Value = app
        .preview(&serde_json::json!({ "title": title }))
        .await
        .json()
        .await
        .unwrap();
    (
        v["matches"][0]["runbook"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        v["confident"].as_bool().unwrap_or(false),
    )
}

const PAYMENTS: &str = "---\ntitle: Payment gateway declines\nalarms: [PaymentGatewayDeclines]\nmatch: ['payment gateway']\n---\n# Payment gateway declines\n\n## Diagnosis\n\n- Check the provider status page.\n";

#[tokio::test]
async fn a_changed_runbook_is_served_without_restart_and_a_broken_one_is_refused() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = dir.path().join("runbooks");
    copy_dir(&repo_path("index/runbooks"), &runbooks);
    let extra = format!(
        "[runbooks]\ndir = \"{}\"\nwatch_interval_ms = 100\n[server]\nadmin_token = \"{ADMIN}\"\n",
        runbooks.display()
    );
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), &extra)).await;
    let title = "Payment gateway declines every card";
    assert!(!best(&app, title).await.1, "no runbook yet");

    // A new runbook appears on disk: the watcher reloads it.
    std::fs::write(runbooks.join("payments.md"), PAYMENTS).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while best(&app, title).await != ("payments.md".to_string(), true) {
        assert!(Instant::now() < deadline, "the change was never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app
        .post_github_signed("issues", "d-pay", &issue_opened(3, title, ""))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(github.wait_for(1, Duration::from_secs(10)).await, 1);
    let body = github.log.lock().unwrap().comments[0].1.clone();
    assert!(
        body.contains("https://runbooks.example.com/payments"),
        "{body}"
    );

    // A broken change (a second runbook claiming the same alarm) is refused on request...
    std::fs::write(
        runbooks.join("payments-copy.md"),
        PAYMENTS.replace("title: Payment gateway declines", "title: Copy"),
    )
    .unwrap();
    let refused = app.admin_reload(Some(ADMIN)).await;
    assert_eq!(refused.status(), 422);
    let e: serde_json::Value = refused.json().await.unwrap();
    assert!(
        e["findings"][0]
            .as_str()
            .unwrap()
            .contains("claimed by several runbooks"),
        "{e}"
    );
    // ...and by the watcher; the old index keeps serving throughout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(best(&app, title).await, ("payments.md".to_string(), true));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"runlink_runbook_reloads_total{outcome="refused"}"#),
        "{metrics}"
    );

    // The admin endpoint wants its token.
    let r = app.admin_reload(None).await;
    assert_eq!(r.status(), 401);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["code"], "invalid_token");
    assert_eq!(e["type"], "auth");
    app.stop().await;
}

const PAGE: &str = "# Queue runbooks\n\nOne section per alert.\n\n## Alerts\n\n### QueueConsumerLagHigh\n\nConsumers fall behind the producers.\n\n#### How to investigate\n\n- Compare the consumer group's offsets with the head.\n\n```sh\nqueuectl lag --group orders\n```\n\n### QueueBrokerDown\n\nA broker stopped answering.\n\n- Check the broker pod.\n\n### QueueDiskFull\n\nThe broker's disk is full.\n\n- Free the oldest segments.\n";

/// A page of runbooks dropped into the corpus is one runbook per section: the alert is
/// matched to its section by name, and the comment links the anchor with that section's
/// own steps, not the page.
#[tokio::test]
async fn a_page_of_runbooks_answers_each_alert_with_its_section() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = dir.path().join("runbooks");
    copy_dir(&repo_path("index/runbooks"), &runbooks);
    let extra = format!(
        "[runbooks]\ndir = \"{}\"\nwatch_interval_ms = 100\n",
        runbooks.display()
    );
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), &extra)).await;
    std::fs::create_dir_all(runbooks.join("queue")).unwrap();
    std::fs::write(runbooks.join("queue/runbooks.md"), PAGE).unwrap();
    let title = "[FIRING:1] QueueConsumerLagHigh orders";
    let want = ("queue/runbooks.md#queueconsumerlaghigh".to_string(), true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while best(&app, title).await != want {
        assert!(
            Instant::now() < deadline,
            "{:?} {}",
            best(&app, title).await,
            app.readyz().await.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app
        .post_github_signed("issues", "d-queue", &issue_opened(4, title, ""))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(github.wait_for(1, Duration::from_secs(10)).await, 1);
    let body = github.log.lock().unwrap().comments[0].1.clone();
    assert!(
        body.contains("https://runbooks.example.com/queue/runbooks#queueconsumerlaghigh"),
        "{body}"
    );
    assert!(body.contains("Compare the consumer group"), "{body}");
    assert!(body.contains("queuectl lag --group orders"), "{body}");
    assert!(
        !body.contains("Free the oldest segments"),
        "only this section: {body}"
    );
    app.stop().await;
}
