//! Shared helpers: start the real application on a random port with a temp store and a
//! wiremock standing in for GitHub, and talk to it over real sockets.

pub mod disk;
pub mod double;
pub mod pg;
pub mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use runlink::config::Config;
use runlink::ingest::sign_hmac_sha256;
use runlink::startup::Application;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const SECRET: &str = "test-webhook-secret";
pub const TOKEN: &str = "ghp_test_token";

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub struct TestApp {
    pub address: String,
    pub handle: ServerHandle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub client: reqwest::Client,
}

/// A config for tests: loopback, random port, the bundled runbooks and templates, a store
/// under `store_dir`, GitHub at `github_url`, fast polling. `extra` is appended TOML.
pub fn test_config(store_dir: &Path, github_url: &str, extra: &str) -> Config {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[runbooks]
dir = "{runbooks}"
base_url = "https://runbooks.example.com/"
[templates]
dir = "{templates}"
[store]
url = "sqlite://{store}"
# Words alone: these tests are about the service; tests/api/semantic.rs covers the model.
[matcher]
semantic_weight = 0.0
[outbox]
poll_interval_ms = 50
backoff_base_ms = 50
backoff_cap_ms = 200
[sources.github]
secret = "{SECRET}"
[destinations.github]
api_url = "{github_url}"
token = "{TOKEN}"
"#,
        runbooks = repo_path("index/runbooks").display(),
        templates = repo_path("templates").display(),
        store = store_dir.join("runlink.db").display(),
    );
    Config::from_toml_layers(&[&toml, extra]).expect("test config is valid")
}

impl TestApp {
    pub async fn spawn(config: Config) -> TestApp {
        let app = Application::build(config).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.server_handle();
        let task = tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            handle,
            task,
            client: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET` any path (for the error shape of unknown routes).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the app")
    }

    pub async fn healthz(&self) -> reqwest::Response {
        self.get("/healthz").await
    }

    pub async fn readyz(&self) -> reqwest::Response {
        self.get("/readyz").await
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics are text")
    }

    /// `POST /admin/reload`, with the admin token when one is given.
    pub async fn admin_reload(&self, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.url("/admin/reload"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request reaches the app")
    }

    /// `POST /v1/match` with a hand-written ticket.
    pub async fn preview(&self, ticket: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/match"))
            .json(ticket)
            .send()
            .await
            .expect("request reaches the app")
    }

    /// `POST` a webhook body to `path` (`/webhooks/jira`) with the sender's headers.
    pub async fn webhook(
        &self,
        path: &str,
        body: impl Into<String>,
        headers: &[(String, String)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body.into());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await.expect("request reaches the app")
    }

    /// `POST /webhooks/alertmanager`, with the bearer token when one is given.
    pub async fn post_alertmanager(&self, body: &str, token: Option<&str>) -> reqwest::Response {
        let headers: Vec<(String, String)> = token
            .map(|t| ("Authorization".to_string(), format!("Bearer {t}")))
            .into_iter()
            .collect();
        self.webhook("/webhooks/alertmanager", body, &headers).await
    }

    /// `POST /webhooks/generic/{name}`.
    pub async fn post_generic(&self, name: &str, body: &str) -> reqwest::Response {
        self.webhook(&format!("/webhooks/generic/{name}"), body, &[])
            .await
    }

    /// Waits until everything accepted so far is applied and no delivery is pending (each
    /// one posted or dead-lettered), so a test can count what reached a destination without
    /// guessing how long to sleep. Panics when that takes longer than `within`.
    pub async fn drained(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ready: serde_json::Value = self
                .readyz()
                .await
                .json()
                .await
                .expect("readyz answers JSON");
            if ready["outbox"]["pending"] == 0 && ready["ingest_backlog"] == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "outbox not drained within {within:?}: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops accepting, lets in-flight requests and deliveries finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    pub async fn post_github(
        &self,
        event: &str,
        delivery: &str,
        body: &str,
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhooks/github", self.address))
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .body(body.to_string());
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        request.send().await.expect("request reaches the app")
    }

    /// Posts with a valid signature.
    pub async fn post_github_signed(
        &self,
        event: &str,
        delivery: &str,
        body: &str,
    ) -> reqwest::Response {
        let signature = format!(
            "sha256={}",
            sign_hmac_sha256(SECRET.as_bytes(), body.as_bytes())
        );
        self.post_github(event, delivery, body, Some(signature))
            .await
    }
}

/// A signed GitHub `issues` webhook to the runlink at `base` (a process, or any replica).
pub async fn send_github_issue(
    client: &reqwest::Client,
    base: &str,
    delivery: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    let signature = format!(
        "sha256={}",
        sign_hmac_sha256(SECRET.as_bytes(), body.as_bytes())
    );
    client
        .post(format!("{base}/webhooks/github"))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "issues")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", signature)
        .body(body.to_string())
        .send()
        .await
}

/// Copies a directory tree (a runbook corpus to modify in a test).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// An HTTP client for tests. Built by runlink's own helper, which installs the TLS crypto
/// provider that reqwest (built without a default one) needs before any client exists.
pub fn client() -> reqwest::Client {
    runlink::deliver::http_client(Duration::from_secs(10)).expect("client builds")
}

pub fn issue_opened(number: u64, title: &str, body: &str) -> String {
    serde_json::json!({
        "action": "opened",
        "issue": {
            "number": number,
            "title": title,
            "body": body,
            "labels": [{"name": "alert"}],
            "user": {"login": "alertbot", "type": "Bot"},
            "html_url": format!("https://github.com/acme/ops/issues/{number}")
        },
        "repository": {
            "name": "ops",
            "full_name": "acme/ops",
            "owner": {"login": "acme"}
        },
        "sender": {"login": "alertbot", "type": "Bot"}
    })
    .to_string()
}

/// A GitHub double that accepts comments.
pub async fn github_double() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/\d+/comments$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
        .mount(&server)
        .await;
    server
}

pub async fn comments(server: &MockServer) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().ends_with("/comments") && r.method.as_str() == "POST")
        .collect()
}

/// Polls until `n` comments have arrived (or the deadline passes) and returns them.
pub async fn wait_for_comments(
    server: &MockServer,
    n: usize,
    within: Duration,
) -> Vec<wiremock::Request> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = comments(server).await;
        if got.len() >= n || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn comment_body(request: &wiremock::Request) -> String {
    let value: serde_json::Value = serde_json::from_slice(&request.body).expect("comment is JSON");
    value["body"]
        .as_str()
        .expect("comment has a body")
        .to_string()
}
