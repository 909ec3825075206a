//! GitHub issue comments: `POST {api}/repos/{owner}/{repo}/issues/{n}/comments`.

use async_trait::async_trait;

use super::pacer::Pacer;
use super::retry::RetryPolicy;
use super::{Attempt, Destination, api_url, fetch_json, send, wrong_target};
use crate::config::{GithubDestinationConfig, Secret};
use crate::outbox::OutboxItem;
use crate::ticket::ReplyTarget;

#[derive(serde::Serialize)]
struct Comment<'a> {
    body: &'a str,
}

#[derive(serde::Deserialize)]
struct ExistingComment {
    #[serde(default)]
    body: Option<String>,
}

/// How many pages of comments the marker check reads (100 per page); enough for any ticket
/// runlink comments on, bounded so a huge thread cannot stall the worker.
const MARKER_PAGES: u32 = 5;

/// GitHub refuses a comment body over 65,536 characters.
const MAX_COMMENT_CHARS: usize = 65_536;

#[derive(Debug)]
pub struct GithubDestination {
    client: reqwest::Client,
    api_url: url::Url,
    token: Option<Secret>,
    policy: RetryPolicy,
    pacer: Pacer,
}

impl GithubDestination {
    pub fn new(
        config: &GithubDestinationConfig,
        client: reqwest::Client,
        policy: RetryPolicy,
    ) -> Self {
        GithubDestination {
            client,
            api_url: config.common.api_url.clone(),
            token: config.token.clone(),
            policy,
            pacer: Pacer::new(config.common.pacing.clone()),
        }
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, url)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => {
                // Said when GitHub is first used, not at every start of a server that
                // never posts there.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "destinations.github.token is not set: GitHub will refuse comments"
                    )
                });
                request
            }
        }
    }

    fn comments_url(&self, target: &ReplyTarget) -> Option<url::Url> {
        let ReplyTarget::GithubIssue {
            owner,
            repo,
            number,
        } = target
        else {
            return None;
        };
        let number = number.to_string();
        api_url(
            &self.api_url,
            &["repos", owner, repo, "issues", &number, "comments"],
        )
        .ok()
    }

    /// Reacts to an issue comment (`+1`, `confused`): how runlink acknowledges a command
    /// without adding a comment to the thread. Paced like comments; not retried.
    pub async fn react(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        content: &str,
    ) -> Result<(), String> {
        let id = comment_id.to_string();
        let url = api_url(
            &self.api_url,
            &["repos", owner, repo, "issues", "comments", &id, "reactions"],
        )?;
        let _permit = self.pacer.acquire().await;
        let attempt = send(
            &self.policy,
            self.request(reqwest::Method::POST, url)
                .json(&serde_json::json!({ "content": content })),
        )
        .await;
        match attempt.verdict {
            super::retry::Verdict::Done => Ok(()),
            _ => Err(format!(
                "HTTP {}: {}",
                attempt.status.map(|s| s.to_string()).unwrap_or("-".into()),
                attempt.detail
            )),
        }
    }
}

#[async_trait]
impl Destination for GithubDestination {
    fn name(&self) -> &str {
        "github"
    }

    fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    fn max_chars(&self) -> usize {
        MAX_COMMENT_CHARS
    }

    async fn has_marker(&self, item: &OutboxItem, marker: &str) -> Option<bool> {
        let base = self.comments_url(&item.target)?;
        for page in 1..=MARKER_PAGES {
            let mut url = base.clone();
            url.query_pairs_mut()
                .append_pair("per_page", "100")
                .append_pair("page", &page.to_string());
            let comments: Vec<ExistingComment> =
                fetch_json(self.request(reqwest::Method::GET, url)).await?;
            if comments
                .iter()
                .any(|c| c.body.as_deref().is_some_and(|b| b.contains(marker)))
            {
                return Some(true);
            }
            if comments.len() < 100 {
                break;
            }
        }
        Some(false)
    }

    async fn post(&self, item: &OutboxItem) -> Attempt {
        let Some(url) = self.comments_url(&item.target) else {
            return wrong_target(self.name(), item);
        };
        let request = self.request(reqwest::Method::POST, url).json(&Comment {
            body: &super::fit(&item.body, MAX_COMMENT_CHARS),
        });
        send(&self.policy, request).await
    }
}
