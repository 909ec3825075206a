//! GitHub issue comments: `POST {api}/repos/{owner}/{repo}/issues/{n}/comments`.

use async_trait::async_trait;

use super::retry::{RetryPolicy, Verdict};
use super::{Attempt, Destination};
use crate::config::{GithubDestinationConfig, Secret};
use crate::outbox::OutboxItem;
use crate::ticket::ReplyTarget;

#[derive(serde::Serialize)]
struct Comment<'a> {
    body: &'a str,
}

#[derive(Debug)]
pub struct GithubDestination {
    client: reqwest::Client,
    api_url: url::Url,
    token: Option<Secret>,
    policy: RetryPolicy,
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
        let mut request = self
            .client
            .post(url)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .json(&Comment { body: &item.body });
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
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
                }
            }
            Err(error) => Attempt {
                verdict: self.policy.classify_error(&error),
                status: None,
                detail: String::new(),
            },
        }
    }
}
