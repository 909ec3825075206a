//! Jira comments: `POST {api}/rest/api/3/issue/{key}/comment` with an Atlassian Document
//! Format body (Cloud), or `/rest/api/2/...` with wiki markup (Server/Data Center). The
//! delivery key travels as the comment property `runlink`, which the marker check reads back;
//! on service-desk projects the comment can be made internal with `sd.public.comment`.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::jira_markup::{to_adf, to_wiki, validate_adf};
use super::pacer::Pacer;
use super::retry::RetryPolicy;
use super::{Attempt, Destination, api_url, fetch_json, send, with_auth, wrong_target};
use crate::config::{HttpAuth, JiraApi, JiraDestinationConfig};
use crate::outbox::OutboxItem;
use crate::ticket::ReplyTarget;

/// The comment property that carries the delivery key.
pub const PROPERTY: &str = "runlink";
const MARKER_PAGES: u32 = 5;
const PAGE_SIZE: usize = 100;
/// Jira refuses a comment body over 32,767 characters.
const MAX_COMMENT_CHARS: usize = 32_767;

#[derive(Debug)]
pub struct JiraDestination {
    client: reqwest::Client,
    api_url: url::Url,
    auth: HttpAuth,
    api: JiraApi,
    internal: bool,
    policy: RetryPolicy,
    pacer: Pacer,
}

#[derive(serde::Deserialize)]
struct CommentPage {
    #[serde(default)]
    comments: Vec<ExistingComment>,
    #[serde(default)]
    total: Option<usize>,
}

#[derive(serde::Deserialize)]
struct ExistingComment {
    #[serde(default)]
    properties: Vec<Property>,
}

#[derive(serde::Deserialize)]
struct Property {
    key: String,
    #[serde(default)]
    value: Value,
}

impl JiraDestination {
    pub fn new(
        config: &JiraDestinationConfig,
        client: reqwest::Client,
        policy: RetryPolicy,
    ) -> Self {
        JiraDestination {
            client,
            api_url: config.common.api_url.clone(),
            auth: config.auth.clone(),
            api: config.api,
            internal: config.internal,
            policy,
            pacer: Pacer::new(config.common.pacing.clone()),
        }
    }

    fn comments_url(&self, target: &ReplyTarget) -> Option<url::Url> {
        let ReplyTarget::JiraIssue { key } = target else {
            return None;
        };
        let version = match self.api {
            JiraApi::V3 => "3",
            JiraApi::V2 => "2",
        };
        api_url(
            &self.api_url,
            &["rest", "api", version, "issue", key, "comment"],
        )
        .ok()
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, url)
            .header("Accept", "application/json");
        with_auth(request, &self.auth)
    }

    /// The request body: the comment in this API's format, plus its properties.
    pub fn body(&self, item: &OutboxItem) -> Value {
        let mut properties =
            vec![json!({"key": PROPERTY, "value": {"delivery": item.delivery_key}})];
        if self.internal {
            properties.push(json!({"key": "sd.public.comment", "value": {"internal": true}}));
        }
        let text = super::fit(&item.body, MAX_COMMENT_CHARS);
        let body = match self.api {
            JiraApi::V3 => {
                let doc = to_adf(&text);
                match validate_adf(&doc) {
                    Ok(()) => doc,
                    Err(error) => {
                        // A template that yields something ADF cannot hold must not cost the
                        // comment: send the text as one paragraph instead.
                        tracing::warn!(%error, "template output is not valid ADF: posting plain text");
                        json!({"type": "doc", "version": 1, "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": text}]}
                        ]})
                    }
                }
            }
            JiraApi::V2 => Value::String(to_wiki(&text)),
        };
        json!({"body": body, "properties": properties})
    }
}

#[async_trait]
impl Destination for JiraDestination {
    fn name(&self) -> &str {
        "jira"
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

    async fn has_marker(&self, item: &OutboxItem, _marker: &str) -> Option<bool> {
        let base = self.comments_url(&item.target)?;
        for page in 0..MARKER_PAGES {
            let mut url = base.clone();
            url.query_pairs_mut()
                .append_pair("expand", "properties")
                .append_pair("maxResults", &PAGE_SIZE.to_string())
                .append_pair("startAt", &(page as usize * PAGE_SIZE).to_string());
            let page_of: CommentPage = fetch_json(self.request(reqwest::Method::GET, url)).await?;
            let found = page_of.comments.iter().any(|c| {
                c.properties
                    .iter()
                    .any(|p| p.key == PROPERTY && p.value["delivery"] == item.delivery_key.as_str())
            });
            if found {
                return Some(true);
            }
            let seen = (page as usize + 1) * PAGE_SIZE;
            if page_of.comments.len() < PAGE_SIZE || page_of.total.is_some_and(|t| t <= seen) {
                break;
            }
        }
        Some(false)
    }

    async fn post(&self, item: &OutboxItem) -> Attempt {
        let Some(url) = self.comments_url(&item.target) else {
            return wrong_target(self.name(), item);
        };
        let request = self
            .request(reqwest::Method::POST, url)
            .json(&self.body(item));
        send(&self.policy, request).await
    }
}
