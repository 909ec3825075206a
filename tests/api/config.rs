//! Configuration as an operator on a bad day writes it: secrets from the environment are
//! taken verbatim, and a key runlink does not know stops it, named, instead of being ignored.

use std::process::{Command, Stdio};

use crate::common::process::*;
use crate::common::*;

fn write_config(dir: &std::path::Path, port: u16, github: &str) -> std::path::PathBuf {
    let path = dir.join("runlink.toml");
    let store = format!("sqlite://{}", dir.join("runlink.db").display());
    std::fs::write(&path, crash_test_config(port, &store, github, "")).unwrap();
    path
}

#[tokio::test]
async fn secrets_from_the_environment_are_taken_verbatim() {
    let github = github_double().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &github.uri());
    let mut child = Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUNLINK__SOURCES__ALERTMANAGER__TOKEN", "007")
        .env("RUNLINK__SERVER__ADMIN_TOKEN", "1e3")
        // A number from the environment still reads as a number.
        .env("RUNLINK__SERVER__MAX_BODY_BYTES", "4096")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runlink starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    wait_healthy(&client, &base).await;

    let body = include_str!("../fixtures/alertmanager-firing.json");
    let post = |token: &'static str| {
        client
            .post(format!("{base}/webhooks/alertmanager"))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let refused = post("7").await.unwrap();
    assert_eq!(refused.status(), 401, "coerced token");
    let e: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(e["code"], "invalid_token", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("credentials in `Authorization`"),
        "a bad token is not a bad signature: {e}"
    );
    assert_eq!(post("007").await.unwrap().status(), 202, "verbatim token");

    let reload = |token: &'static str| {
        client
            .post(format!("{base}/admin/reload"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(reload("1000").await.unwrap().status(), 401);
    assert_eq!(reload("1e3").await.unwrap().status(), 200);

    let big = client
        .post(format!("{base}/webhooks/alertmanager"))
        .bearer_auth("007")
        .body("x".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_environment_variable_that_names_no_key_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), "http://127.0.0.1:9");
    let output = Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUNLINK__SOURCES__GITHUB__SECRTE", "s")
        .output()
        .expect("runlink runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "environment variable `RUNLINK__SOURCES__GITHUB__SECRTE` names no configuration key (did you mean `RUNLINK__SOURCES__GITHUB__SECRET`?)"
        ),
        "{stderr}"
    );
    // Said once, not repeated by every layer of the error.
    assert_eq!(
        stderr.matches("names no configuration key").count(),
        1,
        "{stderr}"
    );
}

/// A configuration or connection error is said once, with its reason.
#[test]
fn start_up_errors_say_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runlink.toml");
    std::fs::write(&config, "[sources.generic.desk]\ntitle = \"/t\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("runlink runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sources.generic.desk.id"), "{stderr}");
    assert_eq!(stderr.matches("missing").count(), 1, "{stderr}");

    // Nothing listens on port 1: the error names the refusal, not only "error connecting".
    let output = Command::new(env!("CARGO_BIN_EXE_runlink"))
        .arg("migrate")
        .env(
            "RUNLINK__STORE__URL",
            "postgres://runlink@127.0.0.1:1/runlink?connect_timeout=2",
        )
        .output()
        .expect("runlink runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("refused"), "{stderr}");
}
