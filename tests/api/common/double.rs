//! A stateful GitHub double: it keeps the comments it accepted (so the marker check can list
//! them), answers each POST as a script says (created, created but too slow, 429 with
//! Retry-After, 500), and records when each POST arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Created,
    /// Stores the comment, then answers after `Duration`: the client may give up first.
    CreatedSlowly(Duration),
    TooMany {
        retry_after_secs: u64,
    },
    ServerError,
}

#[derive(Debug, Default)]
pub struct Log {
    /// (issue path, body) of each stored comment.
    pub comments: Vec<(String, String)>,
    /// When each POST arrived and what it was answered.
    pub posts: Vec<(Instant, Answer)>,
    pub lists: usize,
}

type Script = dyn Fn(usize) -> Answer + Send + Sync;

#[derive(Clone)]
pub struct GithubDouble {
    pub server: Arc<MockServer>,
    pub log: Arc<Mutex<Log>>,
}

struct PostResponder {
    log: Arc<Mutex<Log>>,
    script: Arc<Script>,
}

impl Respond for PostResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut log = self.log.lock().unwrap();
        let n = log.posts.len();
        let answer = (self.script)(n);
        log.posts.push((Instant::now(), answer));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let text = body["body"].as_str().unwrap_or_default().to_string();
        let path = request.url.path().trim_end_matches("/comments").to_string();
        match answer {
            Answer::Created => {
                log.comments.push((path, text));
                ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": n}))
            }
            Answer::CreatedSlowly(delay) => {
                log.comments.push((path, text));
                ResponseTemplate::new(201)
                    .set_body_json(serde_json::json!({"id": n}))
                    .set_delay(delay)
            }
            Answer::TooMany { retry_after_secs } => ResponseTemplate::new(429)
                .insert_header("Retry-After", retry_after_secs.to_string().as_str())
                .set_body_json(serde_json::json!({"message": "slow down"})),
            Answer::ServerError => ResponseTemplate::new(500),
        }
    }
}

struct ListResponder {
    log: Arc<Mutex<Log>>,
}

impl Respond for ListResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut log = self.log.lock().unwrap();
        log.lists += 1;
        let path = request.url.path().trim_end_matches("/comments").to_string();
        let page: usize = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        let bodies: Vec<serde_json::Value> = log
            .comments
            .iter()
            .filter(|(p, _)| *p == path)
            .skip((page - 1) * 100)
            .take(100)
            .map(|(_, b)| serde_json::json!({"body": b}))
            .collect();
        ResponseTemplate::new(200).set_body_json(bodies)
    }
}

impl GithubDouble {
    pub async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        let server = MockServer::start().await;
        let log = Arc::new(Mutex::new(Log::default()));
        let script: Arc<Script> = Arc::new(script);
        Mock::given(method("POST"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/\d+/comments$"))
            .respond_with(PostResponder {
                log: log.clone(),
                script,
            })
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/\d+/comments$"))
            .respond_with(ListResponder { log: log.clone() })
            .mount(&server)
            .await;
        GithubDouble {
            server: Arc::new(server),
            log,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Stored comments per issue path.
    /// Waits until every issue in `numbers` (of acme/ops) has at least one comment; panics
    /// with how far it got when `within` runs out.
    pub async fn wait_for_issues(&self, numbers: &[u64], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let per_issue = self.comments_by_issue();
            let missing = numbers
                .iter()
                .filter(|n| !per_issue.contains_key(&format!("/repos/acme/ops/issues/{n}")))
                .count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} tickets never got their comment",
                numbers.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn comments_by_issue(&self) -> std::collections::HashMap<String, usize> {
        let mut out = std::collections::HashMap::new();
        for (path, _) in &self.log.lock().unwrap().comments {
            *out.entry(path.clone()).or_default() += 1;
        }
        out
    }

    pub fn stored(&self) -> usize {
        self.log.lock().unwrap().comments.len()
    }

    /// Waits until `n` comments are stored or `within` passes.
    pub async fn wait_for(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let got = self.stored();
            if got >= n || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
