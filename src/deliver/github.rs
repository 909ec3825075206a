//! GitHub issue comments: `POST {api}/repos/{owner}/{repo}/issues/{n}/comments`.

use async_trait::async_trait;

use super::pacer::Pacer;
use super::retry::{RetryPolicy, Verdict};
use super::{Attempt, Destination, attempt_from_error};
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
            api_url: config.api_url.clone(),
            token: config.token.clone(),
            policy,
            pacer: Pacer::new(config.pacing.clone()),
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
            None => request,
        }
    }

    fn comments_url(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<url::Url, url::ParseError> {
        let mut url = self.api_url.clone();
        url.path_segments_mut()
            .map_err(|_| url::ParseError::RelativeUrlWithCannotBeABaseBase)?
            .pop_if_empty()
            .extend([
                "repos",
                owner,
                repo,
                "issues",
                &number.to_string(),
                "comments",
            ]);
        Ok(url)
    }
}

#[async_trait]
impl Destination for GithubDestination {
    fn name(&self) -> &'static str {
        "github"
    }

    fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    async fn has_marker(&self, item: &OutboxItem, marker: &str) -> Option<bool> {
        let ReplyTarget::GithubIssue {
            owner,
            repo,
            number,
        } = &item.target;
        let base = self.comments_url(owner, repo, *number).ok()?;
        for page in 1..=MARKER_PAGES {
            let mut url = base.clone();
            url.query_pairs_mut()
                .append_pair("per_page", "100")
                .append_pair("page", &page.to_string());
            let response = self.request(reqwest::Method::GET, url).send().await.ok()?;
            if !response.status().is_success() {
                tracing::warn!(
                    status = response.status().as_u16(),
                    "cannot list comments for the marker check"
                );
                return None;
            }
            let comments: Vec<ExistingComment> = response.json().await.ok()?;
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
        let ReplyTarget::GithubIssue {
            owner,
            repo,
            number,
        } = &item.target;
        let url = match self.comments_url(owner, repo, *number) {
            Ok(url) => url,
            Err(e) => return Attempt::give_up(format!("bad comment URL: {e}")),
        };
        let request = self
            .request(reqwest::Method::POST, url)
            .json(&Comment { body: &item.body });
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let verdict = self.policy.classify(status, response.headers());
                let detail = if verdict == Verdict::Done {
                    String::new()
                } else {
                    // The start of GitHub's error message is what an operator needs.
                    let text = response.text().await.unwrap_or_default();
                    text.chars().take(300).collect()
                };
                Attempt {
                    verdict,
                    status: Some(status.as_u16()),
                    detail,
                    uncertain: false,
                }
            }
            Err(error) => attempt_from_error(&self.policy, &error),
        }
    }
}
