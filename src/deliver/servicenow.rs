//! ServiceNow work notes: `PATCH {api}/api/now/table/{table}/{sys_id}` with `work_notes`.
//! A work note is a journal entry, so the marker check asks `sys_journal_field` for an entry
//! on this record whose text holds the marker.

use async_trait::async_trait;

use super::pacer::Pacer;
use super::retry::RetryPolicy;
use super::{Attempt, Destination, api_url, fetch_json, send, with_auth, wrong_target};
use crate::config::{HttpAuth, ServicenowDestinationConfig};
use crate::outbox::OutboxItem;
use crate::ticket::ReplyTarget;

/// What a work note is cut to: ServiceNow journal fields hold far more, but a note this long
/// is already more than anyone reads during an incident.
const MAX_NOTE_CHARS: usize = 32_000;

#[derive(Debug)]
pub struct ServicenowDestination {
    client: reqwest::Client,
    api_url: url::Url,
    auth: HttpAuth,
    policy: RetryPolicy,
    pacer: Pacer,
}

#[derive(serde::Serialize)]
struct WorkNote<'a> {
    work_notes: &'a str,
}

#[derive(serde::Deserialize)]
struct Journal {
    #[serde(default)]
    result: Vec<serde_json::Value>,
}

impl ServicenowDestination {
    pub fn new(
        config: &ServicenowDestinationConfig,
        client: reqwest::Client,
        policy: RetryPolicy,
    ) -> Self {
        ServicenowDestination {
            client,
            api_url: config.common.api_url.clone(),
            auth: config.auth.clone(),
            policy,
            pacer: Pacer::new(config.common.pacing.clone()),
        }
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        with_auth(
            self.client
                .request(method, url)
                .header("Accept", "application/json"),
            &self.auth,
        )
    }
}

#[async_trait]
impl Destination for ServicenowDestination {
    fn name(&self) -> &str {
        "servicenow"
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
        let ReplyTarget::ServicenowRecord { sys_id, .. } = &item.target else {
            return None;
        };
        let mut url = api_url(&self.api_url, &["api", "now", "table", "sys_journal_field"]).ok()?;
        // Encoded queries join conditions with `^`; ids and markers hold no `^`.
        url.query_pairs_mut()
            .append_pair(
                "sysparm_query",
                &format!("element_id={sys_id}^element=work_notes^valueLIKE{marker}"),
            )
            .append_pair("sysparm_fields", "sys_id")
            .append_pair("sysparm_limit", "1");
        let journal: Journal = fetch_json(self.request(reqwest::Method::GET, url)).await?;
        Some(!journal.result.is_empty())
    }

    async fn post(&self, item: &OutboxItem) -> Attempt {
        let ReplyTarget::ServicenowRecord { table, sys_id } = &item.target else {
            return wrong_target(self.name(), item);
        };
        let url = match api_url(&self.api_url, &["api", "now", "table", table, sys_id]) {
            Ok(url) => url,
            Err(e) => return Attempt::give_up(e),
        };
        let request = self.request(reqwest::Method::PATCH, url).json(&WorkNote {
            work_notes: &super::fit(&item.body, MAX_NOTE_CHARS),
        });
        send(&self.policy, request).await
    }
}
