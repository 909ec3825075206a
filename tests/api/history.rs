//! `runlink audit`, `coverage` and `replay` over a store filled by the real server.

use std::process::Command;
use std::time::Duration;

use crate::common::double::{Answer, GithubDouble};
use crate::common::*;

fn runlink(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn audit_coverage_and_replay_read_what_the_server_recorded() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let titles = [
        "Disk on logs-1 will fill up within 4 hours",
        "[FIRING:1] KubePodCrashLooping",
        "Invoice PDFs for shop-3 have the wrong logo",
        "Invoice PDFs for shop-7 have the wrong logo",
    ];
    for (n, title) in titles.iter().enumerate() {
        let status = app
            .post_github_signed(
                "issues",
                &format!("d-{n}"),
                &issue_opened(n as u64 + 1, title, ""),
            )
            .await
            .status();
        assert_eq!(status, 202);
    }
    github.wait_for(4, Duration::from_secs(10)).await;
    app.stop().await;

    let config = dir.path().join("runlink.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n",
            dir.path().join("runlink.db").display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let (ok, out) = runlink(&["audit", "--config", config, "--ticket", "github:acme/ops#1"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("received from github: Disk on logs-1 will fill up"),
        "{out}"
    );
    assert!(
        out.contains("decided confidently: host/disk-full.md"),
        "{out}"
    );
    assert!(out.contains("queued for github"), "{out}");
    assert!(
        out.contains("delivery attempt 1: Delivered HTTP 201"),
        "{out}"
    );

    let (ok, out) = runlink(&["coverage", "--config", config]);
    assert!(ok, "{out}");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.contains("2  Invoice PDFs for <host> have the wrong logo"),
        "{out}"
    );
    assert!(
        out.contains("1 alarm signature(s) without a confident runbook"),
        "{out}"
    );

    // A candidate corpus without the disk runbook changes exactly the disk ticket's answer.
    let candidate = dir.path().join("candidate");
    copy_dir(&repo_path("index/runbooks"), &candidate);
    std::fs::remove_file(candidate.join("host/disk-full.md")).unwrap();
    let (ok, out) = runlink(&[
        "replay",
        "--config",
        config,
        "--runbooks",
        candidate.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("github:acme/ops#1  host/disk-full.md -> "),
        "{out}"
    );
    assert!(
        out.contains("replayed 4 ticket(s): 1 decision(s) would change"),
        "{out}"
    );

    let (ok, out) = runlink(&[
        "replay",
        "--config",
        config,
        "--runbooks",
        repo_path("index/runbooks").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("replayed 4 ticket(s): 0 decision(s) would change"),
        "{out}"
    );
}
