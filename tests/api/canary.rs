//! Corpus changes in shadow, and probes from outside, over real sockets: the server on a
//! random port with a copy of the bundled corpus, a GitHub double, and `runlink canary
//! probe` as a real process.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

const ADMIN: &str = "admin-token";
const DISK: &str = "Disk on logs-1 will fill up within 4 hours";
const CPU: &str = "CPU usage is high on api-3";

/// A config over `runbooks` with the canary on (or off), an admin token and no file watch.
fn config(dir: &Path, runbooks: &Path, github: &str, canary: &str) -> runlink::config::Config {
    test_config(
        dir,
        github,
        &format!(
            "[server]\nadmin_token = \"{ADMIN}\"\n[runbooks]\ndir = \"{}\"\nwatch = false\n{canary}",
            runbooks.display()
        ),
    )
}

fn corpus(dir: &Path) -> std::path::PathBuf {
    let runbooks = dir.join("runbooks");
    copy_dir(&repo_path("index/runbooks"), &runbooks);
    runbooks
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
    let response = app
        .client
        .request(method, app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn reload(app: &TestApp) -> serde_json::Value {
    let response = app.admin_reload(Some(ADMIN)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Opens issue `n` and returns the comment runlink posted on it.
async fn comment_for(app: &TestApp, github: &wiremock::MockServer, n: u64, title: &str) -> String {
    let before = comments(github).await.len();
    let response = app
        .post_github_signed("issues", &format!("d-{n}"), &issue_opened(n, title, ""))
        .await;
    assert_eq!(response.status(), 202);
    let got = wait_for_comments(github, before + 1, Duration::from_secs(10)).await;
    let request = got
        .iter()
        .find(|r| r.url.path() == format!("/repos/acme/ops/issues/{n}/comments"))
        .unwrap_or_else(|| panic!("no comment on issue {n}"));
    comment_body(request)
}

#[tokio::test]
async fn a_change_that_alters_decisions_stays_in_shadow_until_promoted() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = corpus(dir.path());
    let canary =
        "[runbooks.canary]\nenabled = true\nmin_tickets = 3\nmin_secs = 0\nmax_changed = 0.0\n";
    let app = TestApp::spawn(config(dir.path(), &runbooks, &github.uri(), canary)).await;
    assert!(
        comment_for(&app, &github, 1, DISK)
            .await
            .contains("disk-full")
    );
    let (_, idle) = admin(&app, reqwest::Method::GET, "/admin/canary").await;
    assert_eq!(idle["state"], "idle", "{idle}");
    let live = idle["live_version"].clone();

    // The disk runbook goes away: every disk ticket would change.
    std::fs::remove_file(runbooks.join("host/disk-full.md")).unwrap();
    let report = reload(&app).await;
    assert_eq!(report["rollout"], "shadow", "{report}");

    for (n, title) in [(2, DISK), (3, CPU), (4, DISK)] {
        let comment = comment_for(&app, &github, n, title).await;
        if title == DISK {
            // Live comments are the live index's.
            assert!(comment.contains("disk-full"), "{comment}");
        }
    }
    let (_, status) = admin(&app, reqwest::Method::GET, "/admin/canary").await;
    assert_eq!(status["state"], "held", "{status}");
    assert_eq!(status["seen"], 3, "{status}");
    assert_eq!(status["changed"], 2, "{status}");
    assert_eq!(status["live_version"], live);
    let differences = status["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 2, "{status}");
    assert_eq!(differences[0]["ticket"], "github:acme/ops#4");
    assert_eq!(differences[0]["live"]["runbook"], "host/disk-full.md");
    assert_ne!(differences[0]["candidate"]["runbook"], "host/disk-full.md");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("runlink_canary_decisions_total{outcome=\"changed\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("runlink_canary_decisions_total{outcome=\"same\"} 1"));

    // Without the token nothing moves.
    let refused = app
        .client
        .post(app.url("/admin/canary/promote"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let (code, promoted) = admin(&app, reqwest::Method::POST, "/admin/canary/promote").await;
    assert_eq!(code, 200, "{promoted}");
    assert_eq!(promoted["state"], "idle");
    assert_ne!(promoted["live_version"], live);
    assert!(
        !comment_for(&app, &github, 5, DISK)
            .await
            .contains("disk-full.md")
    );
    let (code, _) = admin(&app, reqwest::Method::POST, "/admin/canary/promote").await;
    assert_eq!(code, 409);

    let audit: Vec<String> = runlink::wiring::open_store(
        &runlink::config::StoreUrl::parse(&format!(
            "sqlite://{}",
            dir.path().join("runlink.db").display()
        ))
        .unwrap(),
    )
    .await
    .unwrap()
    .audit_log(Default::default())
    .await
    .unwrap()
    .iter()
    .map(|r| r.event.kind().to_string())
    .collect();
    assert!(audit.contains(&"canary_started".to_string()), "{audit:?}");
    assert!(audit.contains(&"canary_promoted".to_string()), "{audit:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_harmless_change_is_promoted_by_itself_and_abort_keeps_the_old_index() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = corpus(dir.path());
    let canary =
        "[runbooks.canary]\nenabled = true\nmin_tickets = 2\nmin_secs = 0\nmax_changed = 0.0\n";
    let app = TestApp::spawn(config(dir.path(), &runbooks, &github.uri(), canary)).await;
    let (_, idle) = admin(&app, reqwest::Method::GET, "/admin/canary").await;
    let first = idle["live_version"].clone();

    // A runbook about something else decides no ticket differently.
    std::fs::create_dir_all(runbooks.join("misc")).unwrap();
    std::fs::write(
        runbooks.join("misc/widget-sync.md"),
        "# Widget sync stalled\n\n## Meaning\n\nThe widget synchroniser stopped advancing.\n\n## Diagnosis\n\n- Check the synchroniser's queue.\n",
    )
    .unwrap();
    assert_eq!(reload(&app).await["rollout"], "shadow");
    comment_for(&app, &github, 1, DISK).await;
    comment_for(&app, &github, 2, CPU).await;
    let (_, status) = admin(&app, reqwest::Method::GET, "/admin/canary").await;
    assert_eq!(status["state"], "idle", "{status}");
    assert_ne!(
        status["live_version"], first,
        "promoted by itself: {status}"
    );
    let second = status["live_version"].clone();

    // A change that is aborted never goes live, and stays refused when reloaded again.
    std::fs::remove_file(runbooks.join("host/disk-full.md")).unwrap();
    assert_eq!(reload(&app).await["rollout"], "shadow");
    let (code, aborted) = admin(&app, reqwest::Method::POST, "/admin/canary/abort").await;
    assert_eq!(code, 200, "{aborted}");
    assert_eq!(aborted["live_version"], second);
    assert!(
        comment_for(&app, &github, 3, DISK)
            .await
            .contains("disk-full")
    );
    assert_eq!(reload(&app).await["rollout"], "already_aborted");
    let (_, status) = admin(&app, reqwest::Method::GET, "/admin/canary").await;
    assert_eq!(status["state"], "idle", "{status}");
    app.stop().await;
}

async fn probe(url: &str, cases: &Path, textfile: &Path, secret: Option<&str>) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runlink"));
    command.args([
        "canary",
        "probe",
        "--url",
        url,
        "--cases",
        cases.to_str().unwrap(),
        "--timeout",
        "10s",
        "--textfile",
        textfile.to_str().unwrap(),
    ]);
    command.env_remove("RUNLINK__SOURCES__GITHUB__SECRET");
    if let Some(secret) = secret {
        command.env("RUNLINK__SOURCES__GITHUB__SECRET", secret);
    }
    let out = command.output().await.expect("runlink runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn probes_prove_the_path_end_to_end_and_never_reach_a_real_ticket() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = corpus(dir.path());
    let app = TestApp::spawn(config(dir.path(), &runbooks, &github.uri(), "")).await;
    let cases = dir.path().join("probes.yaml");
    std::fs::write(
        &cases,
        format!(
            "- name: disk through github\n  source: github\n  ticket: {{ title: \"{DISK}\" }}\n  expect: host/disk-full.md\n\
             - name: crash loop through alertmanager\n  source: alertmanager\n  ticket: {{ title: \"Pod keeps restarting\", alertname: KubePodCrashLooping }}\n  expect: kubernetes/pod-crash-looping.md\n\
             - name: nothing covers invoices\n  source: github\n  ticket: {{ title: \"Invoice PDFs have the wrong logo\" }}\n  expect: none\n"
        ),
    )
    .unwrap();
    let textfile = dir.path().join("runlink.prom");

    let (ok, out) = probe(&app.address, &cases, &textfile, Some(SECRET)).await;
    assert!(ok, "{out}");
    assert!(out.contains("3 case(s), 0 failed"), "{out}");
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        metrics.contains("runlink_probe_success{target=")
            && metrics.contains("case=\"disk through github\",source=\"github\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runlink_probe_comment_seconds{"),
        "{metrics}"
    );

    // Unsigned, the GitHub cases are refused like any webhook.
    let (ok, out) = probe(&app.address, &cases, &textfile, None).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  disk through github [github]: webhook answered 401"),
        "{out}"
    );

    // The corpus loses the runbook a case expects: the probe fails and names the case.
    std::fs::remove_file(runbooks.join("host/disk-full.md")).unwrap();
    reload(&app).await;
    let (ok, out) = probe(&app.address, &cases, &textfile, Some(SECRET)).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  disk through github [github]: expected host/disk-full.md"),
        "{out}"
    );
    assert!(out.contains("3 case(s), 1 failed"), "{out}");
    assert!(
        std::fs::read_to_string(&textfile)
            .unwrap()
            .contains("case=\"disk through github\",source=\"github\"} 0")
    );

    // No probe reached a real destination, and none counts as a match.
    app.drained(Duration::from_secs(5)).await;
    assert!(comments(&github).await.is_empty());
    assert!(!app.metrics().await.contains("runlink_matches_total{"));
    app.stop().await;
}

#[tokio::test]
async fn replicas_on_postgres_agree_on_which_index_is_live() {
    let Some(admin_url) = crate::common::pg::admin_url() else {
        return;
    };
    let url = crate::common::pg::fresh_database(&admin_url).await;
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = corpus(dir.path());
    let canary = format!(
        "[store]\nurl = \"{url}\"\n[runbooks.canary]\nenabled = true\nmin_tickets = 1000\nmin_secs = 0\nmax_changed = 0.0\n"
    );
    let a = TestApp::spawn(config(
        &dir.path().join("a"),
        &runbooks,
        &github.uri(),
        &canary,
    ))
    .await;
    let b = TestApp::spawn(config(
        &dir.path().join("b"),
        &runbooks,
        &github.uri(),
        &canary,
    ))
    .await;
    let (_, before) = admin(&a, reqwest::Method::GET, "/admin/canary").await;

    std::fs::remove_file(runbooks.join("host/disk-full.md")).unwrap();
    assert_eq!(reload(&a).await["rollout"], "shadow");
    assert_eq!(reload(&b).await["rollout"], "shadow");
    let (code, promoted) = admin(&a, reqwest::Method::POST, "/admin/canary/promote").await;
    assert_eq!(code, 200, "{promoted}");
    let live = promoted["live_version"].clone();
    assert_ne!(live, before["live_version"]);

    // B learns it from the store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = admin(&b, reqwest::Method::GET, "/admin/canary").await;
        if status["live_version"] == live && status["state"] == "idle" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An abort on one is an abort on both.
    std::fs::write(
        runbooks.join("host/disk-full.md"),
        std::fs::read_to_string(repo_path("index/runbooks/host/disk-full.md")).unwrap(),
    )
    .unwrap();
    assert_eq!(reload(&a).await["rollout"], "shadow");
    assert_eq!(reload(&b).await["rollout"], "shadow");
    let (code, _) = admin(&b, reqwest::Method::POST, "/admin/canary/abort").await;
    assert_eq!(code, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = admin(&a, reqwest::Method::GET, "/admin/canary").await;
        if status["state"] == "idle" {
            assert_eq!(status["live_version"], live);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}
