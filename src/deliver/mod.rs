//! Posting enrichments to where the tickets live. Each destination is one file with the same
//! parts (build the request, send it, let the retry policy judge the answer, and find an
//! earlier comment by its marker); the workers here drain the outbox, one per destination,
//! paced by that destination's `Pacer`, and write every attempt back to the store so retry
//! state survives a restart.

pub mod generic;
pub mod github;
pub mod jira;
pub mod jira_markup;
pub mod opsgenie;
pub(crate) mod pacer;
pub mod pagerduty;
pub mod probe;
pub mod retry;
pub mod servicenow;

mod fold;
mod request;
mod verdict;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::outbox::OutboxItem;
use pacer::Pacer;
use retry::{RetryPolicy, Verdict};

pub use request::{
    api_url, attempt_from_error, fetch_json, fit, http_client, send, with_auth, wrong_target,
};
pub use worker::run_workers;

/// The result of one attempt at posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: Verdict,
    pub status: Option<u16>,
    pub detail: String,
    /// The request may have reached the destination although we saw no answer.
    pub uncertain: bool,
}

impl Attempt {
    pub fn give_up(reason: impl Into<String>) -> Self {
        Attempt {
            verdict: Verdict::GiveUp {
                reason: reason.into(),
            },
            status: None,
            detail: String::new(),
            uncertain: false,
        }
    }
}

#[async_trait]
pub trait Destination: Send + Sync + std::fmt::Debug {
    /// The key in `destinations` (`github`, `jira`, `generic.chat`).
    fn name(&self) -> &str;
    fn policy(&self) -> &RetryPolicy;
    fn pacer(&self) -> &Pacer;
    /// The longest comment the destination takes, in characters.
    fn max_chars(&self) -> usize;
    async fn post(&self, item: &OutboxItem) -> Attempt;
    /// Whether the ticket already carries a comment with `marker` (see
    /// `render::marker_token`): `None` when the API cannot tell (then an uncertain item is
    /// retried later rather than posted blindly).
    async fn has_marker(&self, item: &OutboxItem, marker: &str) -> Option<bool>;
}

pub type Destinations = HashMap<String, Arc<dyn Destination>>;
