//! What an attacker or an unlucky day sends, and what runlink must do instead: each test
//! here reproduces one finding of the hardening review.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::*;
use crate::common::*;

/// Control characters in a title reach neither the comment nor the logs, and a request
/// path cannot forge a log line.
#[tokio::test]
async fn control_characters_reach_neither_comments_nor_log_lines() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = format!("sqlite://{}", dir.path().join("runlink.db").display());
    let config = dir.path().join("runlink.toml");
    std::fs::write(&config, crash_test_config(port, &store, &github.uri(), "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runlink starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    wait_healthy(&client, &base).await;

    let forged = client
        .post(format!(
            "{base}/webhooks/generic/x%0A2026-01-01T00:00:00Z%20ERROR%20forged"
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);

    let title = "Disk \u{7}on logs-1\u{1b}[31m will fill up\u{0} within 4 hours";
    let body = issue_opened(5, title, "Filesystem \u{1b}[0m/ is 91% full.");
    let r = send_github_issue(&client, &base, "ctl-1", &body)
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = wait_for_comments(&github, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let comment = comment_body(&got[0]);
    assert!(
        !comment.chars().any(|c| c.is_control() && c != '\n'),
        "{comment:?}"
    );

    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("ERROR forged"), "the path is logged: {log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line: {log}"
    );
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "{log:?}");
}

/// A megabyte of title makes a comment GitHub still takes, with its link and marker.
#[tokio::test]
async fn a_huge_title_still_fits_the_destination_with_its_links() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(
        dir.path(),
        &github.uri(),
        "[server]\nmax_body_bytes = 4000000\n",
    ))
    .await;
    let title = format!(
        "Disk on logs-1 will fill up within 4 hours {}",
        "x".repeat(1 << 20)
    );
    let body = issue_opened(9, &title, "");
    assert_eq!(
        app.post_github_signed("issues", "big-1", &body)
            .await
            .status(),
        202
    );
    let got = wait_for_comments(&github, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let comment = comment_body(&got[0]);
    assert!(comment.chars().count() <= 65_536, "{}", comment.len());
    assert!(
        comment.contains("https://runbooks.example.com/host/disk-full"),
        "{comment}"
    );
    assert!(comment.contains("<!-- runlink:delivery="), "{comment}");
    app.stop().await;
}

/// Senders that announce a body and trickle it are cut off at the body deadline with 408,
/// and past the connection cap they wait instead of taking the server's descriptors: the
/// server keeps answering others all along.
#[tokio::test]
async fn trickling_bodies_are_cut_off_and_others_are_still_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(
        dir.path(),
        &github.uri(),
        "[server]\nbody_timeout_ms = 500\nmax_connections = 8\n",
    ))
    .await;
    let addr = app.address.trim_start_matches("http://").to_string();
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                stream
                    .write_all(
                        b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let mut answer = Vec::new();
                // One byte every 100 ms, for longer than any deadline; stop when answered.
                for _ in 0..100 {
                    if stream.write_all(b"{").await.is_err() {
                        break;
                    }
                    let mut buf = [0u8; 512];
                    match tokio::time::timeout(
                        Duration::from_millis(100),
                        stream.read(&mut buf),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => {
                            answer.extend_from_slice(&buf[..n]);
                            break;
                        }
                        Err(_) => {}
                    }
                }
                String::from_utf8_lossy(&answer).to_string()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = tokio::time::timeout(Duration::from_secs(10), app.healthz())
        .await
        .expect("healthz answers during the attack");
    assert_eq!(health.status(), 200);
    let mut cut_off = 0;
    for task in slow {
        let answer = task.await.unwrap();
        if answer.starts_with("HTTP/1.1 408") {
            assert!(answer.contains("body_timeout"), "{answer}");
            cut_off += 1;
        }
    }
    assert!(cut_off > 0, "no slow sender was answered 408");
    app.stop().await;
}

/// A client that asks before uploading (`Expect: 100-continue`) is refused 413 at once when
/// its declared body is over the limit, and told to go on when it is not.
#[tokio::test]
async fn expect_continue_is_refused_before_an_oversized_upload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(
        dir.path(),
        &github.uri(),
        "[server]\nmax_body_bytes = 1000\n",
    ))
    .await;
    let addr = app.address.trim_start_matches("http://").to_string();
    let ask = async |length: usize| {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answered before any body byte")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let refused = ask(5_000_000).await;
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    assert!(!refused.contains("100 Continue"), "{refused}");
    assert!(refused.contains("payload_too_large"), "{refused}");
    assert!(refused.contains("1000 bytes"), "{refused}");
    let invited = ask(500).await;
    assert!(invited.starts_with("HTTP/1.1 100 Continue"), "{invited}");
    app.stop().await;
}

/// A destination that takes the request and never answers must not hold SIGTERM past the
/// shutdown timeout; the cut-off post is given back as uncertain, so after the restart the
/// marker check finds the comment that did land and nothing is posted twice.
#[tokio::test]
async fn sigterm_cancels_a_hung_post_in_time_and_the_restart_does_not_post_twice() {
    use crate::common::double::{Answer, GithubDouble};

    let github = GithubDouble::start(|n| {
        if n == 0 {
            Answer::CreatedSlowly(Duration::from_secs(120))
        } else {
            Answer::Created
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("runlink.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_timeout_ms = 4000\n[runbooks]\ndir = \"{}\"\nwatch = false\n[templates]\ndir = \"{}\"\n[store]\nurl = \"sqlite://{}\"\n[matcher]\nsemantic_weight = 0.0\n[outbox]\npoll_interval_ms = 50\nrequest_timeout_ms = 60000\nlease_secs = 150\n[sources.github]\nsecret = \"{SECRET}\"\n[destinations.github]\napi_url = \"{}\"\ntoken = \"{TOKEN}\"\n",
            repo_path("index/runbooks").display(),
            repo_path("templates").display(),
            dir.path().join("runlink.db").display(),
            github.uri(),
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    let mut child = start_server(&config);
    wait_healthy(&client, &base).await;
    let body = issue_opened(3, "Disk on logs-1 will fill up within 4 hours", "");
    let r = send_github_issue(&client, &base, "hung-1", &body)
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(github.wait_for(1, Duration::from_secs(10)).await, 1);

    let asked = std::time::Instant::now();
    // SAFETY: sends a signal to the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let stopped = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(stopped.is_ok());
    let took = asked.elapsed();
    // The hung request would have held it for 60 s (its timeout).
    assert!(took < Duration::from_secs(15), "SIGTERM took {took:?}");

    let mut child = start_server(&config);
    wait_healthy(&client, &base).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while github.log.lock().unwrap().lists == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = child.kill();
    let _ = child.wait();
    let log = github.log.lock().unwrap();
    assert!(log.lists >= 1, "the restart looked for the marker");
    assert_eq!(log.posts.len(), 1, "no second POST");
    assert_eq!(log.comments.len(), 1);
}

/// Senders that can only call a URL authenticate with Basic auth in it or a `?token=`; a
/// sender with none is told every way it could.
#[tokio::test]
async fn a_generic_source_takes_its_token_from_basic_auth_or_the_query() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(
        dir.path(),
        &github.uri(),
        "[sources.generic.desk]\ntoken = \"t0k\"\ntitle = \"/title\"\nid = \"/id\"\n",
    ))
    .await;
    let ticket = |id: u32| serde_json::json!({"id": id, "title": "Disk full on db-1"}).to_string();
    let url = app.url("/webhooks/generic/desk");

    let by_query = app
        .client
        .post(format!("{url}?token=t0k"))
        .body(ticket(1))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 202);
    let by_basic = app
        .client
        .post(&url)
        .basic_auth("helpdesk", Some("t0k"))
        .body(ticket(2))
        .send()
        .await
        .unwrap();
    assert_eq!(by_basic.status(), 202);

    let wrong = app
        .client
        .post(format!("{url}?token=nope"))
        .body(ticket(3))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let e: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(e["code"], "invalid_token", "{e}");
    assert!(e["message"].as_str().unwrap().contains("`token`"), "{e}");

    let wrong_basic = app
        .client
        .post(&url)
        .basic_auth("helpdesk", Some("nope"))
        .body(ticket(4))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_basic.status(), 401);

    let none = app.post_generic("desk", &ticket(5)).await;
    assert_eq!(none.status(), 401);
    let e: serde_json::Value = none.json().await.unwrap();
    let message = e["message"].as_str().unwrap();
    for way in ["Bearer", "Basic auth", "?token="] {
        assert!(message.contains(way), "{message}");
    }
    app.stop().await;
}

/// runlink never opens issues: text a user typed that looks like runlink's marker does not
/// switch enrichment off for that issue.
#[tokio::test]
async fn an_issue_quoting_a_marker_is_still_enriched() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(test_config(dir.path(), &github.uri(), "")).await;
    let body = issue_opened(
        11,
        "Disk on logs-1 will fill up within 4 hours",
        "Copied from an old ticket: <!-- runlink:delivery=deadbeef -->",
    );
    let r = app.post_github_signed("issues", "quoted-1", &body).await;
    assert_eq!(r.status(), 202);
    let got = wait_for_comments(&github, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    app.stop().await;
}

/// A generic tracker that echoes runlink's own comment back as a new ticket is not enriched
/// (the marker's tag verifies, also after a restart: the key is kept in the store), while a
/// ticket whose text only looks like a marker, tagged or not, is.
#[tokio::test]
async fn only_a_marker_runlink_signed_marks_a_generic_ticket_as_its_own() {
    let chat = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(201))
        .mount(&chat)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[sources.generic.tracker]
token = "gen-token"
title = "/ticket/title"
id = "/ticket/id"
body = "/ticket/text"
delivery = "/delivery"
reply_destination = "generic.chat"
reply_id = "/ticket/room"
[destinations.generic.chat]
api_url = "{}"
path = "/rooms/{{{{ target.id }}}}/messages"
"#,
        chat.uri()
    );
    let ticket = |n: u32, text: &str| {
        serde_json::json!({
            "delivery": format!("d-{n}"),
            "ticket": {"id": n, "title": "Pods of checkout are crash looping", "text": text, "room": "ops"}
        })
        .to_string()
    };
    let auth = [("Authorization".to_string(), "Bearer gen-token".to_string())];

    let app = TestApp::spawn(test_config(dir.path(), "http://127.0.0.1:9", &extra)).await;
    // Typed by someone: an untagged marker and one with a made-up tag.
    let typed = "see <!-- runlink:delivery=deadbeef --> and runlink:delivery=abc.0123456789abcdef";
    let r = app
        .webhook("/webhooks/generic/tracker", ticket(1, typed), &auth)
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    app.drained(Duration::from_secs(10)).await;
    let sent = chat.received_requests().await.unwrap_or_default();
    assert_eq!(sent.len(), 1);
    let comment = String::from_utf8(sent[0].body.clone()).unwrap();
    let comment: serde_json::Value = serde_json::from_str(&comment).unwrap();
    let comment = comment
        .as_object()
        .unwrap()
        .values()
        .find_map(|v| v.as_str().filter(|s| s.contains("runlink:delivery=")))
        .expect("the posted body carries the comment")
        .to_string();

    // The tracker echoes runlink's comment as a ticket of its own.
    let r = app
        .webhook("/webhooks/generic/tracker", ticket(2, &comment), &auth)
        .await;
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ack["status"], "ignored", "{ack}");
    app.stop().await;

    // After a restart on the same store the same key signs and verifies.
    let app = TestApp::spawn(test_config(dir.path(), "http://127.0.0.1:9", &extra)).await;
    let r = app
        .webhook("/webhooks/generic/tracker", ticket(3, &comment), &auth)
        .await;
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ack["status"], "ignored", "{ack}");
    app.drained(Duration::from_secs(10)).await;
    assert_eq!(
        chat.received_requests().await.unwrap_or_default().len(),
        1,
        "no comment on runlink's own echo"
    );
    app.stop().await;
}
