//! Three runlink processes on one PostgreSQL database, webhooks spread across them (a load
//! balancer's round robin, with the sender retrying a delivery on another replica when the
//! first one fails), one replica killed with SIGKILL mid-burst. The GitHub double throttles
//! and fails now and then. The ledger must hold: every ticket that got a 2xx from any
//! replica has exactly one comment, and no ticket has two.

use std::collections::HashMap;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::double::{Answer, GithubDouble};
use crate::common::process::*;
use crate::common::*;
use futures::StreamExt;

const N: u64 = 240;
const VICTIM: usize = 1;

#[tokio::test]
async fn three_replicas_one_killed_post_each_accepted_ticket_exactly_once() {
    let Some(admin) = pg::admin_url() else {
        return;
    };
    let store = pg::fresh_database(&admin).await;
    let github = GithubDouble::start(|n| match n % 11 {
        4 => Answer::ServerError,
        8 => Answer::TooMany {
            retry_after_secs: 1,
        },
        _ => Answer::Created,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut bases = Vec::new();
    let mut children: Vec<Arc<std::sync::Mutex<Child>>> = Vec::new();
    for i in 0..3 {
        let port = free_port();
        let path = dir.path().join(format!("replica-{i}.toml"));
        std::fs::write(
            &path,
            crash_test_config(
                port,
                &store,
                &github.uri(),
                "rate_per_sec = 60.0\nburst = 10\nconcurrency = 2",
            ),
        )
        .unwrap();
        children.push(Arc::new(std::sync::Mutex::new(start_server(&path))));
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    let client = runlink::deliver::http_client(Duration::from_secs(5)).unwrap();
    for base in &bases {
        wait_healthy(&client, base).await;
    }

    let answered = Arc::new(AtomicUsize::new(0));
    let killer = {
        let answered = answered.clone();
        let victim = children[VICTIM].clone();
        tokio::spawn(async move {
            while answered.load(Ordering::SeqCst) < (N as usize) / 3 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            victim.lock().unwrap().kill().unwrap();
        })
    };
    // Each delivery goes to replica n % 3; a sender whose request fails (connection refused
    // or cut off by the kill) retries the same delivery on the next replica, as senders
    // behind a load balancer do.
    let outcomes: Vec<(u64, Vec<Result<u16, String>>)> = futures::stream::iter(0..N)
        .map(|n| {
            let client = client.clone();
            let bases = bases.clone();
            let answered = answered.clone();
            async move {
                let body = issue_opened(n, &format!("Disk full on host-{n}"), "");
                let mut tries = Vec::new();
                for attempt in 0..3 {
                    let base = &bases[(n as usize + attempt) % bases.len()];
                    let result = send_github_issue(&client, base, &format!("d-{n}"), &body)
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| e.to_string());
                    let done = matches!(result, Ok(s) if s < 500);
                    tries.push(result);
                    if done {
                        break;
                    }
                }
                answered.fetch_add(1, Ordering::SeqCst);
                (n, tries)
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    killer.await.unwrap();
    let _ = children[VICTIM].lock().unwrap().wait();

    let accepted: Vec<u64> = outcomes
        .iter()
        .filter(|(_, tries)| tries.iter().any(|r| matches!(r, Ok(200 | 202))))
        .map(|(n, _)| *n)
        .collect();
    let victim_errors = outcomes
        .iter()
        .filter(|(_, tries)| tries.iter().any(|r| r.is_err()))
        .count();
    assert!(
        victim_errors > 0,
        "the kill came too late: no request failed"
    );
    assert_eq!(
        accepted.len() as u64,
        N,
        "with retries on the surviving replicas every delivery is acknowledged"
    );

    // The survivors drain everything, including what the victim had leased.
    github
        .wait_for_issues(&accepted, Duration::from_secs(90))
        .await;
    // Leases of the victim run out after 2 s; let any late re-claim happen before counting.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (i, child) in children.iter().enumerate() {
        if i != VICTIM {
            let mut child = child.lock().unwrap();
            child.kill().unwrap();
            let _ = child.wait();
        }
    }
    let per_issue: HashMap<String, usize> = github.comments_by_issue();
    for n in &accepted {
        assert_eq!(
            per_issue
                .get(&format!("/repos/acme/ops/issues/{n}"))
                .copied()
                .unwrap_or(0),
            1,
            "accepted ticket {n}"
        );
    }
    assert_eq!(per_issue.len() as u64, N);
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
