//! Posting enrichments to where the tickets live. Each destination is one file with the same
//! parts (build the request, send it, let the retry policy judge the answer); the worker here
//! drains the outbox and writes every attempt back to the store, so retry state survives a
//! restart.

pub mod github;
pub mod retry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use crate::audit::{AttemptOutcome, AuditEvent};
use crate::config::OutboxConfig;
use crate::outbox::{OutboxItem, Settle, Store, now_ms};
use retry::{RetryPolicy, Verdict};

/// The result of one attempt at posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: Verdict,
    pub status: Option<u16>,
    pub detail: String,
}

impl Attempt {
    pub fn give_up(reason: impl Into<String>) -> Self {
        Attempt {
            verdict: Verdict::GiveUp {
                reason: reason.into(),
            },
            status: None,
            detail: String::new(),
        }
    }
}

#[async_trait]
pub trait Destination: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn policy(&self) -> &RetryPolicy;
    async fn post(&self, item: &OutboxItem) -> Attempt;
}

pub type Destinations = HashMap<&'static str, Arc<dyn Destination>>;

/// One HTTP client for all destinations: connection pools are shared, TLS set up once.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a bundled crypto provider; install ring once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("runlink/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Drains the outbox until `shutdown` turns true. Items in flight finish; the rest stay in
/// the store for the next start.
pub async fn run_worker(
    store: Arc<dyn Store>,
    destinations: Arc<Destinations>,
    config: OutboxConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(destinations = destinations.len(), "delivery worker started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let claimed = match store
            .claim_due(now_ms(), config.batch_size, config.lease)
            .await
        {
            Ok(items) => items,
            Err(error) => {
                tracing::error!(error = %error, "cannot claim outbox items");
                Vec::new()
            }
        };
        let busy = !claimed.is_empty();
        futures::stream::iter(claimed)
            .for_each_concurrent(4, |item| {
                let store = store.clone();
                let destinations = destinations.clone();
                let config = config.clone();
                async move { deliver_one(store.as_ref(), &destinations, &config, item).await }
            })
            .await;
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    tracing::info!("delivery worker stopped");
}

#[tracing::instrument(skip_all, fields(ticket = %item.ticket, delivery_key = %item.delivery_key, destination = %item.destination))]
async fn deliver_one(
    store: &dyn Store,
    destinations: &Destinations,
    config: &OutboxConfig,
    item: OutboxItem,
) {
    let attempt_no = item.attempts + 1;
    let attempt = match destinations.get(item.destination.as_str()) {
        Some(destination) => destination.post(&item).await,
        None => Attempt::give_up(format!(
            "destination `{}` is not configured",
            item.destination
        )),
    };
    let policy = destinations
        .get(item.destination.as_str())
        .map(|d| d.policy().clone())
        .unwrap_or(RetryPolicy {
            base: config.backoff_base,
            cap: config.backoff_cap,
            max_attempts: config.max_attempts,
        });
    let (settle, outcome, detail) = match &attempt.verdict {
        Verdict::Done => (Settle::Delivered, AttemptOutcome::Delivered, String::new()),
        Verdict::Retry { reason, after } if attempt_no < policy.max_attempts => {
            let delay = policy.delay(attempt_no, *after);
            tracing::warn!(reason = %reason, attempt = attempt_no, delay_ms = delay.as_millis() as u64, "delivery will be retried");
            (
                Settle::RetryAt {
                    at_ms: now_ms() + delay.as_millis() as i64,
                    error: reason.clone(),
                },
                AttemptOutcome::Retry,
                reason.clone(),
            )
        }
        Verdict::Retry { reason, .. } | Verdict::GiveUp { reason } => {
            let error = if matches!(attempt.verdict, Verdict::Retry { .. }) {
                format!("{reason} (after {attempt_no} attempts)")
            } else {
                reason.clone()
            };
            tracing::error!(error = %error, detail = %attempt.detail, "delivery failed permanently");
            (
                Settle::Dead {
                    error: error.clone(),
                },
                AttemptOutcome::Dead,
                error,
            )
        }
    };
    if outcome == AttemptOutcome::Delivered {
        tracing::info!(attempt = attempt_no, "enrichment delivered");
    }
    let detail = if attempt.detail.is_empty() {
        detail
    } else {
        format!("{detail}: {}", attempt.detail)
    };
    let event = AuditEvent::DeliveryAttempt {
        delivery_key: item.delivery_key.clone(),
        destination: item.destination.clone(),
        attempt: attempt_no,
        outcome,
        status: attempt.status,
        detail,
    };
    if let Err(error) = store.settle(&item, settle, event).await {
        // The lease will run out and the item will be tried again; the destination may then
        // see the comment twice, which is why the marker exists.
        tracing::error!(error = %error, "cannot record delivery outcome");
    }
}
