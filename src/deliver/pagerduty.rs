//! PagerDuty incident notes: `POST {api}/incidents/{id}/notes` with `{"note": {"content"}}`.
//! The REST API wants `Authorization: Token token=...` and the email of a user in `From`.

use async_trait::async_trait;

use super::pacer::Pacer;
use super::retry::RetryPolicy;
use super::{Attempt, Destination, api_url, fetch_json, fit, send, wrong_target};
use crate::config::{PagerdutyDestinationConfig, Secret};
use crate::outbox::OutboxItem;
use crate::ticket::ReplyTarget;

/// PagerDuty refuses notes longer than this.
const MAX_NOTE_CHARS: usize = 25_000;

#[derive(Debug)]
pub struct PagerdutyDestination {
    client: reqwest::Client,
    api_url: url::Url,
    token: Secret,
    from: String,
    policy: RetryPolicy,
    pacer: Pacer,
}

#[derive(serde::Serialize)]
struct NewNote<'a> {
    note: NoteContent<'a>,
}

#[derive(serde::Serialize)]
struct NoteContent<'a> {
    content: &'a str,
}

#[derive(serde::Deserialize)]
struct Notes {
    #[serde(default)]
    notes: Vec<ExistingNote>,
}

#[derive(serde::Deserialize)]
struct ExistingNote {
    #[serde(default)]
    content: String,
}

impl PagerdutyDestination {
    pub fn new(
        config: &PagerdutyDestinationConfig,
        client: reqwest::Client,
        policy: RetryPolicy,
    ) -> Self {
        PagerdutyDestination {
            client,
            api_url: config.common.api_url.clone(),
            token: config.token.clone(),
            from: config.from.clone(),
            policy,
            pacer: Pacer::new(config.common.pacing.clone()),
        }
    }

    fn notes_url(&self, target: &ReplyTarget) -> Option<url::Url> {
        let ReplyTarget::PagerdutyIncident { id } = target else {
            return None;
        };
        api_url(&self.api_url, &["incidents", id, "notes"]).ok()
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .header("Accept", "application/vnd.pagerduty+json;version=2")
            .header(
                "Authorization",
                format!("Token token={}", self.token.expose()),
            )
            .header("From", &self.from)
    }
}

#[async_trait]
impl Destination for PagerdutyDestination {
    fn name(&self) -> &str {
        "pagerduty"
    }

    fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    fn max_chars(&self) -> usize {
        MAX_NOTE_CHARS
    }

    async fn has_marker(&self, item: &OutboxItem, marker: &str) -> Option<bool> {
        let url = self.notes_url(&item.target)?;
        let notes: Notes = fetch_json(self.request(reqwest::Method::GET, url)).await?;
        Some(notes.notes.iter().any(|n| n.content.contains(marker)))
    }

    async fn post(&self, item: &OutboxItem) -> Attempt {
        let Some(url) = self.notes_url(&item.target) else {
            return wrong_target(self.name(), item);
        };
        let content = fit(&item.body, MAX_NOTE_CHARS);
        let request = self.request(reqwest::Method::POST, url).json(&NewNote {
            note: NoteContent { content: &content },
        });
        send(&self.policy, request).await
    }
}
