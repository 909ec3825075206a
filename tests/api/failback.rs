//! Failback storms: bursts, sender retries, a destination that throttles and fails, and a
//! server killed mid-burst. Every accepted ticket must produce exactly one comment.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::double::{Answer, GithubDouble};
use crate::common::process::*;
use crate::common::*;
use futures::StreamExt;

const TITLES: &[&str] = &[
    "Disk on logs-{n} will fill up within 4 hours",
    "[FIRING:1] KubePodCrashLooping",
    "Certificate for api-{n}.example.com expires in 5 days",
    "High 5xx error rate on checkout",
];

fn ticket(n: u64) -> String {
    let title = TITLES[n as usize % TITLES.len()].replace("{n}", &n.to_string());
    issue_opened(n, &title, "")
}

const FAST_PACING: &str =
    "[destinations.github]\nrate_per_sec = 500.0\nburst = 50\nconcurrency = 8\n";

#[tokio::test]
async fn sender_retries_of_a_burst_produce_no_second_comment() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), FAST_PACING)).await;
    let app = Arc::new(app);
    let send = |delivery: String, n: u64| {
        let app = app.clone();
        async move {
            app.post_github_signed("issues", &delivery, &ticket(n))
                .await
                .status()
                .as_u16()
        }
    };
    let first: Vec<u16> = futures::stream::iter(0..60u64)
        .map(|n| send(format!("d-{n}"), n))
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(first.iter().all(|s| *s == 202), "{first:?}");
    // Every acknowledged webhook went through the ingest log, in groups.
    let metrics = app.metrics().await;
    let total = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    let writes = total("runlink_ingest_log_writes_total");
    let records = total("runlink_ingest_log_records_total");
    assert!(records >= 60.0, "{metrics}");
    assert!(writes >= 1.0 && writes <= records, "{metrics}");
    // One fsync per write, each counted in exactly one bucket of the histogram.
    assert!(
        total("runlink_ingest_log_fsync_seconds_sum") > 0.0,
        "{metrics}"
    );
    assert_eq!(
        total("runlink_ingest_log_fsync_seconds_count"),
        writes,
        "{metrics}"
    );
    assert_eq!(
        total("runlink_ingest_log_fsync_seconds_bucket{le=\"+Inf\"}"),
        writes,
        "{metrics}"
    );
    // The sender retries every delivery (same id), then redelivers with new ids.
    let again: Vec<u16> = futures::stream::iter(0..60u64)
        .map(|n| send(format!("d-{n}"), n))
        .chain(futures::stream::iter(0..60u64).map(|n| send(format!("redelivery-{n}"), n)))
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(again.iter().all(|s| *s == 200), "{again:?}");
    assert_eq!(github.wait_for(60, Duration::from_secs(20)).await, 60);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_issue = github.comments_by_issue();
    assert_eq!(per_issue.len(), 60);
    assert!(per_issue.values().all(|c| *c == 1), "{per_issue:?}");
}

#[tokio::test]
async fn an_uncertain_post_is_checked_by_its_marker_not_repeated() {
    // The first POST lands but answers after the client gave up.
    let github = GithubDouble::start(|n| {
        if n == 0 {
            Answer::CreatedSlowly(Duration::from_millis(1500))
        } else {
            Answer::Created
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[outbox]\nrequest_timeout_ms = 300\n{FAST_PACING}");
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), &extra)).await;
    assert_eq!(
        app.post_github_signed("issues", "d-slow", &ticket(1))
            .await
            .status(),
        202
    );
    // Wait until the marker check has run and the item is recorded as delivered.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = app.metrics().await;
        if metrics
            .contains(r#"runlink_deliveries_total{destination="github",outcome="found_marker"} 1"#)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "marker check never recorded the delivery:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = github.log.lock().unwrap();
    assert_eq!(log.comments.len(), 1, "exactly one comment");
    assert_eq!(log.posts.len(), 1, "no second POST");
    assert!(log.lists >= 1, "the comments were listed for the marker");
}

#[tokio::test]
async fn retry_after_stops_every_send_to_that_destination() {
    let github = GithubDouble::start(|n| {
        if n == 0 {
            Answer::TooMany {
                retry_after_secs: 2,
            }
        } else {
            Answer::Created
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // One request at a time, so that every later request starts after the 429 was seen.
    let extra = "[destinations.github]\nrate_per_sec = 500.0\nburst = 50\nconcurrency = 1\n";
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), extra)).await;
    for n in 0..5 {
        assert_eq!(
            app.post_github_signed("issues", &format!("d-{n}"), &ticket(n))
                .await
                .status(),
            202
        );
    }
    assert_eq!(github.wait_for(5, Duration::from_secs(20)).await, 5);
    let log = github.log.lock().unwrap();
    let (throttled_at, _) = log.posts[0];
    let in_window = log.posts[1..]
        .iter()
        .filter(|(at, _)| at.duration_since(throttled_at) < Duration::from_secs(2))
        .count();
    assert_eq!(in_window, 0, "requests sent during the Retry-After window");
}

#[tokio::test]
async fn above_the_high_water_mark_webhooks_get_503_with_retry_after() {
    let github = GithubDouble::start(|_| Answer::Created).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[outbox]\nworker = false\nhigh_water = 3\n";
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), extra)).await;
    for n in 0..3 {
        assert_eq!(
            app.post_github_signed("issues", &format!("d-{n}"), &ticket(n))
                .await
                .status(),
            202
        );
    }
    let shed = app.post_github_signed("issues", "d-3", &ticket(3)).await;
    assert_eq!(shed.status(), 503);
    let retry_after: u64 = shed.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let ready = app.readyz().await;
    assert_eq!(ready.status(), 503, "not ready while shedding");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"runlink_webhooks_total{source="github",outcome="shed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("runlink_outbox_pending 3"), "{metrics}");
    assert_eq!(github.stored(), 0);
}

/// Kills the server with SIGKILL in the middle of a burst against a destination that throttles
/// and fails, restarts it on the same store, and checks the ledger: every 2xx has exactly one
/// comment, every error status has none. A request cut off without any answer may or may not
/// have been stored (the kill can land between commit and reply), so it may have at most one.
#[tokio::test]
async fn sigkill_mid_burst_loses_no_accepted_ticket_and_posts_none_twice() {
    let github = GithubDouble::start(|n| match n % 13 {
        3 => Answer::ServerError,
        7 => Answer::TooMany {
            retry_after_secs: 1,
        },
        _ => Answer::Created,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_path = dir.path().join("runlink.toml");
    let store = format!("sqlite://{}", dir.path().join("runlink.db").display());
    std::fs::write(
        &config_path,
        crash_test_config(
            port,
            &store,
            &github.uri(),
            "rate_per_sec = 100.0\nburst = 20\nconcurrency = 4",
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // runlink's own client builder: it installs the TLS crypto provider, which this test
    // must not rely on an earlier test in the process to have done.
    let client = runlink::deliver::http_client(Duration::from_secs(5)).unwrap();
    let server = Arc::new(std::sync::Mutex::new(start_server(&config_path)));
    wait_healthy(&client, &base).await;

    const N: u64 = 300;
    let answered = Arc::new(AtomicUsize::new(0));
    let killer = {
        let answered = answered.clone();
        let server = server.clone();
        tokio::spawn(async move {
            while answered.load(Ordering::SeqCst) < 120 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // `Child::kill` is SIGKILL on Unix: no shutdown hook runs.
            server.lock().unwrap().kill().unwrap();
        })
    };
    let outcomes: Vec<(u64, Result<u16, String>)> = futures::stream::iter(0..N)
        .map(|n| {
            let client = client.clone();
            let base = base.clone();
            let answered = answered.clone();
            async move {
                let body = ticket(n);
                let result = send_github_issue(&client, &base, &format!("d-{n}"), &body)
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string());
                answered.fetch_add(1, Ordering::SeqCst);
                (n, result)
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    killer.await.unwrap();
    let _ = server.lock().unwrap().wait();

    let accepted: Vec<u64> = outcomes
        .iter()
        .filter(|(_, r)| matches!(r, Ok(202)))
        .map(|(n, _)| *n)
        .collect();
    let refused: Vec<u64> = outcomes
        .iter()
        .filter(|(_, r)| matches!(r, Ok(s) if *s >= 400))
        .map(|(n, _)| *n)
        .collect();
    let cut_off: Vec<u64> = outcomes
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| *n)
        .collect();
    assert!(
        accepted.len() >= 100,
        "the kill came too early: {} accepted",
        accepted.len()
    );
    assert!(
        !cut_off.is_empty(),
        "the kill came too late: nothing was cut off"
    );

    // The first life answered from its ingest log and matched behind it: what it had not
    // applied yet is not matched yet. An operator tool whose runbooks do not load refuses
    // to open the store rather than store those tickets without their comments...
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&config_path).unwrap().replace(
            &crate::common::repo_path("index/runbooks")
                .display()
                .to_string(),
            &dir.path().join("missing").display().to_string(),
        ),
    )
    .unwrap();
    let tool = std::process::Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(["audit", "--json", "--config"])
        .arg(&broken)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    // (It refuses when the log holds unmatched tickets, the usual case: the kill lands
    // before the applier's first pause in the burst. Whether it refused or found nothing to
    // match, the check below proves it stored no ticket without its comment.)
    let stderr = String::from_utf8_lossy(&tool.stderr);
    assert!(
        tool.status.success() || stderr.contains("acknowledged before they were matched"),
        "{stderr}"
    );
    // ...and one that has them matches it, and sees every acknowledged ticket matched and
    // queued.
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(["audit", "--json", "--limit", "100000", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let mut kinds: HashMap<String, Vec<String>> = HashMap::new();
    for line in String::from_utf8(audit.stdout).unwrap().lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(ticket) = record["ticket"].as_str() {
            kinds
                .entry(ticket.to_string())
                .or_default()
                .push(record["event"].as_str().unwrap().to_string());
        }
    }
    for n in &accepted {
        let events = kinds
            .get(&format!("github:acme/ops#{n}"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(
            events.starts_with(&["received".into(), "decided".into()])
                && events.contains(&"enqueued".to_string()),
            "accepted ticket {n}: {events:?}"
        );
    }

    // Second life on the same store drains what the first one acknowledged.
    let mut server = start_server(&config_path);
    wait_healthy(&client, &base).await;
    github
        .wait_for_issues(&accepted, Duration::from_secs(90))
        .await;
    // Let stragglers (uncertain items, retries) settle before counting duplicates.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.kill().unwrap();
    let _ = server.wait();

    let per_issue: HashMap<String, usize> = github.comments_by_issue();
    let count = |n: &u64| {
        per_issue
            .get(&format!("/repos/acme/ops/issues/{n}"))
            .copied()
            .unwrap_or(0)
    };
    for n in &accepted {
        assert_eq!(count(n), 1, "accepted ticket {n}");
    }
    for n in &refused {
        assert_eq!(count(n), 0, "refused ticket {n}");
    }
    for n in &cut_off {
        assert!(count(n) <= 1, "cut-off ticket {n}");
    }
    assert!(
        per_issue.values().all(|c| *c == 1),
        "a duplicate comment: {per_issue:?}"
    );
    let throttled = github
        .log
        .lock()
        .unwrap()
        .posts
        .iter()
        .filter(|(_, a)| *a != Answer::Created)
        .count();
    assert!(throttled > 0, "the double never pushed back");
}
