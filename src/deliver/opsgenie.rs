//! Opsgenie alert notes: `POST {api}/v2/alerts/{id}/notes?identifierType=id` with
//! `Authorization: GenieKey ...`. Opsgenie answers 202: the note is queued on its side, which
//! is as far as any client can see, so 202 counts as delivered.

use async_trait::async_trait;

use super::pacer::Pacer;
use super::retry::RetryPolicy;
use super::{Attempt, Destination, api_url, fetch_json, fit, send, wrong_target};
use crate::config::{OpsgenieDestinationConfig, Secret};
use crate::outbox::OutboxItem;
use crate::ticket::ReplyTarget;

/// Opsgenie's limit on a note.
const MAX_NOTE_CHARS: usize = 25_000;

#[derive(Debug)]
pub struct OpsgenieDestination {
    client: reqwest::Client,
    api_url: url::Url,
    api_key: Secret,
    policy: RetryPolicy,
    pacer: Pacer,
}

#[derive(serde::Serialize)]
struct NewNote<'a> {
    note: &'a str,
    user: &'a str,
    source: &'a str,
}

#[derive(serde::Deserialize)]
struct Notes {
    #[serde(default)]
    data: Vec<ExistingNote>,
}

#[derive(serde::Deserialize)]
struct ExistingNote {
    #[serde(default)]
    note: String,
}

impl OpsgenieDestination {
    pub fn new(
        config: &OpsgenieDestinationConfig,
        client: reqwest::Client,
        policy: RetryPolicy,
    ) -> Self {
        OpsgenieDestination {
            client,
            api_url: config.common.api_url.clone(),
            api_key: config.api_key.clone(),
            policy,
            pacer: Pacer::new(config.common.pacing.clone()),
        }
    }

    fn notes_url(&self, target: &ReplyTarget) -> Option<url::Url> {
        let ReplyTarget::OpsgenieAlert { id } = target else {
            return None;
        };
        let mut url = api_url(&self.api_url, &["v2", "alerts", id, "notes"]).ok()?;
        url.query_pairs_mut().append_pair("identifierType", "id");
        Some(url)
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        self.client.request(method, url).header(
            "Authorization",
            format!("GenieKey {}", self.api_key.expose()),
        )
    }
}

#[async_trait]
impl Destination for OpsgenieDestination {
    fn name(&self) -> &str {
        "opsgenie"
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
        let mut url = self.notes_url(&item.target)?;
        url.query_pairs_mut()
            .append_pair("order", "desc")
            .append_pair("limit", "100");
        let notes: Notes = fetch_json(self.request(reqwest::Method::GET, url)).await?;
        Some(notes.data.iter().any(|n| n.note.contains(marker)))
    }

    async fn post(&self, item: &OutboxItem) -> Attempt {
        let Some(url) = self.notes_url(&item.target) else {
            return wrong_target(self.name(), item);
        };
        let note = fit(&item.body, MAX_NOTE_CHARS);
        let request = self.request(reqwest::Method::POST, url).json(&NewNote {
            note: &note,
            user: "runlink",
            source: "runlink",
        });
        send(&self.policy, request).await
    }
}
