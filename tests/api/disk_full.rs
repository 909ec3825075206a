//! A store on a filesystem that fills up: webhooks are refused (never acknowledged and then
//! lost), `/readyz` and `/metrics` say why, everything acknowledged is delivered once space
//! is back, without a restart, and SIGTERM still ends the process while the disk is full.

use std::time::{Duration, Instant};

use crate::common::disk::Tmpfs;
use crate::common::double::{Answer, GithubDouble};
use crate::common::process::*;
use crate::common::*;

/// Big enough that a few webhooks use up what the ingest log wrote ahead.
fn big_issue(number: u64) -> String {
    let body = format!(
        "Logs from the failing node:\n{}",
        "disk io error on sda\n".repeat(15_000)
    );
    issue_opened(
        number,
        &format!("Disk on logs-{number} will fill up within 4 hours"),
        &body,
    )
}

/// Sends issues `numbers` and sorts them into acknowledged (202) and refused (503).
async fn send_all(
    client: &reqwest::Client,
    base: &str,
    numbers: std::ops::Range<u64>,
) -> (Vec<u64>, Vec<u64>) {
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for n in numbers {
        let r = send_github_issue(client, base, &format!("disk-{n}"), &big_issue(n))
            .await
            .unwrap();
        match r.status().as_u16() {
            202 => accepted.push(n),
            503 => {
                // The cause is for the operator (readyz, metrics, log), not the sender.
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["code"], "unavailable", "{body}");
                refused.push(n);
            }
            other => panic!("issue {n}: unexpected status {other}"),
        }
    }
    (accepted, refused)
}

async fn ready(client: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    want: u16,
    within: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = ready(client, base).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_reports_recovers_without_restart_and_lets_sigterm_end_it() {
    let dir = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(&dir.path().join("disk"), 48) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!(
                "skipped: a full disk needs a tmpfs of its own, and it cannot be mounted here ({why})"
            );
            return;
        }
    };
    let github = GithubDouble::start(|_| Answer::Created).await;
    let port = free_port();
    let config = dir.path().join("runlink.toml");
    std::fs::write(
        &config,
        crash_test_config(
            port,
            &format!("sqlite://{}", disk.path().join("runlink.db").display()),
            &github.uri(),
            "",
        )
        .replace("[server]\n", "[server]\nshutdown_timeout_ms = 4000\n"),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    let mut child = start_server(&config);
    wait_healthy(&client, &base).await;
    let (accepted, _) = send_all(&client, &base, 1..2).await;
    assert_eq!(accepted, [1]);
    github.wait_for_issues(&[1], Duration::from_secs(10)).await;

    // Full: webhooks are refused, not acknowledged into a log that cannot hold them, and the
    // replica says it is not ready, and why.
    disk.fill("filler");
    let (mut acknowledged, refused) = send_all(&client, &base, 2..30).await;
    assert!(!refused.is_empty(), "a full disk refused nothing");
    let body = wait_ready(&client, &base, 503, Duration::from_secs(10)).await;
    let failure = &body["store_write_failure"];
    assert!(
        failure["reason"]
            .as_str()
            .is_some_and(|r| r.contains("space") || r.contains("full")),
        "readyz names the cause: {body}"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("runlink_store_writable{part=\"ingest_log\"} 0")
            || metrics.contains("runlink_store_writable{part=\"tables\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("runlink_store_write_failures_total 0\n"),
        "{metrics}"
    );

    // Space is back: ready again, new webhooks taken, and everything acknowledged while the
    // disk was full is delivered, without a restart.
    disk.free("filler");
    wait_ready(&client, &base, 200, Duration::from_secs(20)).await;
    let (later, refused) = send_all(&client, &base, 30..33).await;
    assert!(
        refused.is_empty(),
        "refused after space came back: {refused:?}"
    );
    acknowledged.extend(later);
    acknowledged.push(1);
    github
        .wait_for_issues(&acknowledged, Duration::from_secs(30))
        .await;

    // Full again, with acknowledged records the tables may not have taken: SIGTERM still
    // ends the process in time, and the next start delivers what it acknowledged.
    disk.fill("filler");
    let (last, _) = send_all(&client, &base, 40..50).await;
    let asked = Instant::now();
    // SAFETY: sends a signal to the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "SIGTERM took {took:?} on a full disk"
    );

    disk.free("filler");
    let mut child = start_server(&config);
    wait_healthy(&client, &base).await;
    acknowledged.extend(&last);
    let delivered = tokio::time::timeout(
        Duration::from_secs(40),
        github.wait_for_issues(&acknowledged, Duration::from_secs(30)),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(delivered.is_ok());
    // Nothing posted twice across the failures and the restart.
    let per_issue = github.comments_by_issue();
    assert!(per_issue.values().all(|n| *n == 1), "{per_issue:?}");
}
