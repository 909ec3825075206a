//! The delivery workers: one per destination, draining the outbox at that destination's
//! pace. Each claimed item is checked against its lease and the shared pause, posted (or,
//! when an earlier attempt may have landed, looked for by its marker first), and settled
//! with its audit event in one write.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::fold::{self, Role};
use super::retry::Verdict;
use super::{Attempt, Destination, Destinations, verdict};
use crate::audit::AttemptOutcome;
use crate::config::OutboxConfig;
use crate::metrics::Metrics;
use crate::outbox::{OutboxItem, Settle, Store, now_ms};

/// Time kept free at the end of a lease, for clock drift between replicas and the settle.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

/// Runs one worker per destination, plus a sweep that dead-letters items nobody can post,
/// until `shutdown` turns true. In-flight posts finish; the rest stay in the store.
/// `shutdown` stops new claims; `cancel` (the shutdown deadline) stops the posts in flight,
/// each given back as uncertain so its next attempt looks for the comment first.
pub async fn run_workers(
    store: Arc<dyn Store>,
    destinations: Arc<Destinations>,
    config: OutboxConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    cancel: watch::Receiver<bool>,
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
            cancel.clone(),
        ));
    }
    while workers.join_next().await.is_some() {}
}

/// Resolves once `cancel` turns true; never when nobody can cancel any more.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
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
    cancel: watch::Receiver<bool>,
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
        let roles = match fold::plan(store.as_ref(), &claimed, &config).await {
            Ok(roles) => roles,
            Err(error) => {
                tracing::error!(%error, "cannot count the comments of reply targets: items released");
                for item in &claimed {
                    if let Err(error) = store.release(item).await {
                        tracing::error!(%error, "cannot release item");
                    }
                }
                continue;
            }
        };
        let mut batch = JoinSet::new();
        for (item, role) in claimed.into_iter().zip(roles) {
            match role {
                Role::Post | Role::Last => {}
                Role::TakenIn => continue,
                Role::Gather => {
                    metrics.delivery(destination.name(), "gathering");
                    if let Err(error) = store.release(&item).await {
                        tracing::error!(%error, "cannot release item");
                    }
                    continue;
                }
                Role::Over => {
                    settle_over_cap(
                        store.as_ref(),
                        destination.as_ref(),
                        &config,
                        &metrics,
                        &item,
                    )
                    .await;
                    continue;
                }
            }
            let store = store.clone();
            let destination = destination.clone();
            let config = config.clone();
            let metrics = metrics.clone();
            let mut cancel = cancel.clone();
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
                // From here a crash leaves the item uncertain; before, it had sent nothing.
                // The target's last comment takes in its other pending alerts at this point.
                let mut item = item;
                let started = if role == Role::Last {
                    store.fold_into(&item, now_ms()).await.map(|fold| {
                        fold.map(|fold| {
                            metrics.add_pending(-(fold.newly_folded as i64));
                            item.body = fold::compose(
                                &item.body,
                                &fold.lines,
                                destination.max_chars(),
                                &config,
                            );
                        })
                        .is_some()
                    })
                } else {
                    store.sending(&item).await
                };
                match started {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(id = item.id, "lease lost before the send: item left to its new owner");
                        return;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot record the send: item released unsent");
                        if let Err(error) = store.release(&item).await {
                            tracing::error!(%error, "cannot release item");
                        }
                        return;
                    }
                }
                let in_flight = item.clone();
                tokio::select! {
                    _ = deliver_one(store.as_ref(), destination.as_ref(), &config, &metrics, item) => {}
                    _ = cancelled(&mut cancel) => {
                        // The request may have reached the destination: the item is given
                        // back due now and uncertain, so its next attempt looks for the
                        // marker before posting. A settle that already landed wins (the
                        // release only touches the lease this claim holds).
                        tracing::warn!(id = in_flight.id, "shutdown deadline: post cancelled, item given back as uncertain");
                        metrics.delivery(destination.name(), "cancelled");
                        let uncertain = OutboxItem { uncertain: true, ..in_flight };
                        if let Err(error) = store.release(&uncertain).await {
                            tracing::error!(%error, "cannot release item");
                        }
                    }
                }
            });
        }
        while batch.join_next().await.is_some() {}
    }
    tracing::info!("delivery worker stopped");
}

/// Records an item whose reply target had all its comments, the last one already out.
#[tracing::instrument(skip_all, fields(ticket = %item.ticket, delivery_key = %item.delivery_key, destination = %item.destination))]
async fn settle_over_cap(
    store: &dyn Store,
    destination: &dyn Destination,
    config: &OutboxConfig,
    metrics: &Metrics,
    item: &OutboxItem,
) {
    let reason = fold::over_reason(config);
    tracing::info!(%reason, "not posted: reply target at its comment cap");
    let event = crate::audit::AuditEvent::Folded {
        delivery_key: item.delivery_key.clone(),
        destination: destination.name().to_string(),
        into: None,
        reason: reason.clone(),
    };
    match store.settle(item, Settle::Folded { reason }, event).await {
        Ok(()) => {
            metrics.delivery(destination.name(), "over_cap");
            metrics.add_pending(-1);
        }
        Err(error) => tracing::error!(%error, "cannot record the item over the cap"),
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
        let marker = crate::render::lookup_token(&item.delivery_key);
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
    destination.pacer().record(verdict::feedback(&attempt));
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

    let settled = verdict::settle(&attempt, &item, destination.policy(), now_ms());
    match &settled.settle {
        Settle::RetryAt { at_ms, error, .. } => tracing::warn!(
            reason = %error,
            attempt = attempt_no,
            delay_ms = at_ms - now_ms(),
            "delivery will be retried"
        ),
        Settle::Dead { error } => {
            tracing::error!(%error, detail = %attempt.detail, "delivery failed permanently: dead-lettered")
        }
        Settle::Delivered => tracing::info!(attempt = attempt_no, "enrichment delivered"),
        Settle::Folded { .. } => {}
    }
    metrics.delivery(destination.name(), settled.outcome.as_str());
    match settled.outcome {
        AttemptOutcome::Delivered => metrics.add_pending(-1),
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
    let verdict::Settled { settle, event, .. } = settled;
    if let Err(error) = store.settle(&item, settle, event).await {
        // The lease will run out and the item will come back flagged uncertain, so the next
        // attempt looks for the marker before posting.
        tracing::error!(%error, "cannot record delivery outcome");
    }
}
