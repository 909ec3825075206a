//! runlink as a real process: start the built binary on a config file, wait until it
//! answers, and kill it with SIGKILL (`Child::kill`) when a test needs a crash.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The config of a runlink process for crash tests: GitHub at `github`, short leases so a
/// killed process's claims come back quickly, fast retries, and `pacing` for the destination
/// (`rate_per_sec = ...` lines).
pub fn crash_test_config(port: u16, store_url: &str, github: &str, pacing: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[runbooks]
dir = "{runbooks}"
watch = false
[templates]
dir = "{templates}"
[store]
url = "{store_url}"
[matcher]
semantic_weight = 0.0
[outbox]
poll_interval_ms = 50
backoff_base_ms = 50
backoff_cap_ms = 500
max_attempts = 100
lease_secs = 3
request_timeout_ms = 1000
[sources.github]
secret = "{secret}"
[destinations.github]
api_url = "{github}"
token = "{token}"
{pacing}
"#,
        runbooks = super::repo_path("index/runbooks").display(),
        templates = super::repo_path("templates").display(),
        secret = super::SECRET,
        token = super::TOKEN,
    )
}

pub fn start_server(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runlink starts")
}

pub async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not become healthy");
}
