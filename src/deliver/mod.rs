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
pub mod pacer;
pub mod pagerduty;
pub mod retry;
pub mod servicenow;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::RngExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::audit::{AttemptOutcome, AuditEvent};
use crate::config::OutboxConfig;
use crate::metrics::Metrics;
use crate::outbox::{OutboxItem, Settle, Store, now_ms};
use pacer::{Feedback, Pacer};
use retry::{RetryPolicy, Verdict};

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
    async fn post(&self, item: &OutboxItem) -> Attempt;
    /// Whether the ticket already carries a comment with `marker` (see
    /// `render::marker_token`): `None` when the API cannot tell (then an uncertain item is
    /// retried later rather than posted blindly).
    async fn has_marker(&self, item: &OutboxItem, marker: &str) -> Option<bool>;
}

pub type Destinations = HashMap<String, Arc<dyn Destination>>;

/// `base` with path segments appended, each percent-encoded: ids from tickets can never
/// escape into another path.
pub fn api_url(base: &url::Url, segments: &[&str]) -> Result<url::Url, String> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|_| format!("`{base}` cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

pub fn with_auth(
    request: reqwest::RequestBuilder,
    auth: &crate::config::HttpAuth,
) -> reqwest::RequestBuilder {
    use crate::config::HttpAuth;
    match auth {
        HttpAuth::None => request,
        HttpAuth::Basic { username, password } => {
            request.basic_auth(username, Some(password.expose()))
        }
        HttpAuth::Bearer(token) => request.bearer_auth(token.expose()),
    }
}

/// Sends one request and lets the policy judge the answer. The start of an error body is
/// kept, because that is what an operator needs to read in the dead-letter list.
pub async fn send(policy: &RetryPolicy, request: reqwest::RequestBuilder) -> Attempt {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let verdict = policy.classify(status, response.headers());
            let detail = if verdict == Verdict::Done {
                String::new()
            } else {
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
        Err(error) => attempt_from_error(policy, &error),
    }
}

/// Notes have a length limit: cuts `text` to at most `max` characters, keeping its last
/// line, which is where the marker is.
pub fn fit(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let count = text.chars().count();
    if count <= max {
        return text.into();
    }
    let tail: String = text.lines().last().unwrap_or_default().to_string();
    let room = max.saturating_sub(tail.chars().count() + 5);
    let head: String = text.chars().take(room).collect();
    format!("{head}\n…\n{tail}").into()
}

/// GETs a JSON document for a marker check; `None` (cannot tell) on any failure.
pub async fn fetch_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Option<T> {
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        tracing::warn!(
            status = response.status().as_u16(),
            "cannot list comments for the marker check"
        );
        return None;
    }
    response.json().await.ok()
}

/// The reply target an item addresses, when it is of the kind this destination posts to.
/// Anything else is a bug in routing, and giving up says so instead of retrying forever.
pub fn wrong_target(destination: &str, item: &OutboxItem) -> Attempt {
    Attempt::give_up(format!(
        "{destination} cannot post to a {} target",
        item.target.destination()
    ))
}

/// Time kept free at the end of a lease, for clock drift between replicas and the settle.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

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

/// A network failure after the request may have been written counts as uncertain; a refused
/// connection does not.
pub fn attempt_from_error(policy: &RetryPolicy, error: &reqwest::Error) -> Attempt {
    Attempt {
        verdict: policy.classify_error(error),
        status: None,
        detail: String::new(),
        uncertain: !error.is_connect() && !error.is_builder(),
    }
}

/// Runs one worker per destination, plus a sweep that dead-letters items nobody can post,
/// until `shutdown` turns true. In-flight posts finish; the rest stay in the store.
pub async fn run_workers(
    store: Arc<dyn Store>,
    destinations: Arc<Destinations>,
    config: OutboxConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    sweep_orphans(store.as_ref(), &destinations, &metrics).await;
    let mut workers = JoinSet::new();
    for destination in destinations.values() {
        workers.spawn(run_destination(
            store.clone(),
            destination.clone(),
            config.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    while workers.join_next().await.is_some() {}
}

async fn sweep_orphans(store: &dyn Store, destinations: &Destinations, metrics: &Metrics) {
    let known: Vec<&str> = destinations.keys().map(String::as_str).collect();
    let orphans = match store.orphans(&known).await {
        Ok(orphans) => orphans,
        Err(error) => {
            tracing::error!(%error, "cannot look for undeliverable items");
            return;
        }
    };
    for row in orphans {
        tracing::warn!(id = row.id, destination = %row.destination, "destination not configured: item stays pending until it is");
        metrics.delivery(&row.destination, "unconfigured");
    }
}

#[tracing::instrument(skip_all, fields(destination = destination.name()))]
async fn run_destination(
    store: Arc<dyn Store>,
    destination: Arc<dyn Destination>,
    config: OutboxConfig,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Restarted replicas must not all start draining in the same millisecond.
    let jitter = rand::rng().random_range(0..=config.poll_interval.as_millis() as u64);
    tokio::time::sleep(Duration::from_millis(jitter)).await;
    tracing::info!("delivery worker started");
    let pacer = destination.pacer();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let wait = pacer.wait_time();
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait.min(config.poll_interval * 4)) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        // Claim a batch even when the bucket is low: `acquire` paces the sends, and a batch
        // in hand keeps the destination busy at its rate instead of one claim per token.
        // No more than the pacer lets through before the lease runs out: an item still
        // waiting for a token when its lease ends could be claimed and posted by another
        // replica while this one posts it too.
        let window = config
            .lease
            .saturating_sub(config.request_timeout + LEASE_MARGIN);
        let room = config.batch_size.min(pacer.sendable_within(window).max(1));
        let claimed = match store
            .claim_due(destination.name(), now_ms(), room, config.lease)
            .await
        {
            Ok(items) => items,
            Err(error) => {
                tracing::error!(%error, "cannot claim outbox items");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut batch = JoinSet::new();
        for item in claimed {
            let store = store.clone();
            let destination = destination.clone();
            let config = config.clone();
            let metrics = metrics.clone();
            batch.spawn(async move {
                let _permit = destination.pacer().acquire().await;
                // Replicas share a destination's Retry-After through the store: one that was
                // told to wait makes every other one wait too.
                if store.shared() {
                    match store.paused_until(destination.name()).await {
                        Ok(until) if until > now_ms() => {
                            let wait = Duration::from_millis((until - now_ms()).max(0) as u64);
                            destination
                                .pacer()
                                .pause_until(tokio::time::Instant::now() + wait);
                            metrics.delivery(destination.name(), "paused");
                            if let Err(error) = store.release(&item).await {
                                tracing::error!(%error, "cannot release item");
                            }
                            return;
                        }
                        Ok(_) => {}
                        Err(error) => tracing::warn!(%error, "cannot read the shared pause"),
                    }
                }
                // The send must finish (or time out) inside the lease; if the waits before it
                // ate the lease, give the item back unsent rather than race its next owner.
                // Checked last, right before the requests: an uncertain item makes two (the
                // marker check, then the post), each bounded by the request timeout.
                let requests = if item.uncertain { 2 } else { 1 };
                let must_end = now_ms()
                    + (config.request_timeout * requests + LEASE_MARGIN).as_millis() as i64;
                if must_end > item.lease_until_ms {
                    tracing::warn!(id = item.id, "lease too short for a send: item released");
                    metrics.delivery(destination.name(), "released");
                    if let Err(error) = store.release(&item).await {
                        tracing::error!(%error, "cannot release item");
                    }
                    return;
                }
                deliver_one(
                    store.as_ref(),
                    destination.as_ref(),
                    &config,
                    &metrics,
                    item,
                )
                .await;
            });
        }
        while batch.join_next().await.is_some() {}
    }
    tracing::info!("delivery worker stopped");
}

fn feedback(attempt: &Attempt) -> Feedback {
    match &attempt.verdict {
        Verdict::Done => Feedback::Success,
        Verdict::Retry { after, .. } => Feedback::Failure { after: *after },
        Verdict::GiveUp { .. } => Feedback::Neutral,
    }
}

#[tracing::instrument(skip_all, fields(ticket = %item.ticket, delivery_key = %item.delivery_key, destination = %item.destination))]
async fn deliver_one(
    store: &dyn Store,
    destination: &dyn Destination,
    config: &OutboxConfig,
    metrics: &Metrics,
    item: OutboxItem,
) {
    let attempt_no = item.attempts + 1;
    let started = std::time::Instant::now();
    let attempt = if now_ms() - item.created_ms > config.max_age.as_millis() as i64 {
        Attempt::give_up(format!(
            "older than outbox.max_age_secs ({}s)",
            config.max_age.as_secs()
        ))
    } else if item.uncertain {
        let marker = crate::render::marker_token(&item.delivery_key);
        match destination.has_marker(&item, &marker).await {
            Some(true) => {
                tracing::info!(
                    "an earlier attempt did post: recording it instead of posting again"
                );
                metrics.delivery(destination.name(), "found_marker");
                Attempt {
                    verdict: Verdict::Done,
                    status: None,
                    detail: "comment with this delivery's marker already present".into(),
                    uncertain: false,
                }
            }
            Some(false) => destination.post(&item).await,
            None => Attempt {
                verdict: Verdict::Retry {
                    reason: "cannot check for an earlier comment".into(),
                    after: None,
                },
                status: None,
                detail: String::new(),
                uncertain: true,
            },
        }
    } else {
        destination.post(&item).await
    };
    destination.pacer().record(feedback(&attempt));
    if let Verdict::Retry {
        after: Some(after), ..
    } = &attempt.verdict
        && store.shared()
        && let Err(error) = store
            .pause(destination.name(), now_ms() + after.as_millis() as i64)
            .await
    {
        tracing::warn!(%error, "cannot share the destination's Retry-After");
    }
    metrics
        .delivery_seconds
        .get_or_create(&crate::metrics::Destination {
            destination: destination.name().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());

    let policy = destination.policy();
    let (settle, outcome, reason) = match &attempt.verdict {
        Verdict::Done => (Settle::Delivered, AttemptOutcome::Delivered, String::new()),
        Verdict::Retry { reason, after } if attempt_no < policy.max_attempts => {
            let delay = policy.delay(attempt_no, *after);
            tracing::warn!(%reason, attempt = attempt_no, delay_ms = delay.as_millis() as u64, "delivery will be retried");
            (
                Settle::RetryAt {
                    at_ms: now_ms() + delay.as_millis() as i64,
                    error: reason.clone(),
                    uncertain: attempt.uncertain,
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
            tracing::error!(%error, detail = %attempt.detail, "delivery failed permanently: dead-lettered");
            (
                Settle::Dead {
                    error: error.clone(),
                },
                AttemptOutcome::Dead,
                error,
            )
        }
    };
    let word = match outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retry => "retry",
        AttemptOutcome::Dead => "dead",
    };
    metrics.delivery(destination.name(), word);
    match outcome {
        AttemptOutcome::Delivered => {
            tracing::info!(attempt = attempt_no, "enrichment delivered");
            metrics.add_pending(-1);
        }
        AttemptOutcome::Dead => {
            metrics
                .dead_letters
                .get_or_create(&crate::metrics::Destination {
                    destination: destination.name().to_string(),
                })
                .inc();
            metrics.add_pending(-1);
        }
        AttemptOutcome::Retry => {}
    }
    let detail = match (reason.is_empty(), attempt.detail.is_empty()) {
        (_, true) => reason,
        (true, false) => attempt.detail.clone(),
        (false, false) => format!("{reason}: {}", attempt.detail),
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
        // The lease will run out and the item will come back flagged uncertain, so the next
        // attempt looks for the marker before posting.
        tracing::error!(%error, "cannot record delivery outcome");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_keep_their_last_line() {
        let text = format!("{}\nref runlink:delivery=abc", "x".repeat(100));
        let cut = fit(&text, 60);
        assert!(cut.chars().count() <= 60, "{cut}");
        assert!(cut.ends_with("ref runlink:delivery=abc"), "{cut}");
        assert_eq!(fit("short", 60), "short");
    }
}
