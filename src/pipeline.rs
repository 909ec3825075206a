//! The path one ticket takes once a source has parsed it: signature, match, render, and one
//! durable write. Sources call `Pipeline::accept` and answer their sender from its outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::audit::AuditEvent;
use crate::matcher::{Decision, MatchReason, Matcher};
use crate::metrics::Metrics;
use crate::outbox::{AcceptOutcome, Accepted, NewDelivery, Store, StoreError};
use crate::render::{RenderError, Renderer};
use crate::routes::Router;
use crate::search::SearchError;
use crate::signature::{AlarmSignature, Normalizer};
use crate::ticket::Ticket;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("matcher task failed: {0}")]
    Join(String),
}

#[derive(Debug)]
pub struct Pipeline {
    pub matcher: Arc<MatcherHandle>,
    pub renderer: Arc<Renderer>,
    pub normalizer: Normalizer,
    pub store: Arc<dyn Store>,
    /// Configured destinations and the template each renders with; a reply to any other is
    /// recorded, not queued.
    pub destinations: HashMap<String, String>,
    pub router: Router,
    pub top_k: usize,
    pub max_per_ticket: u32,
    pub metrics: Arc<Metrics>,
    pub coalescer: Coalescer,
}

/// The matcher in force. A reload builds a new one beside it and swaps it in whole; requests
/// already running keep the one they started with.
#[derive(Debug)]
pub struct MatcherHandle(std::sync::RwLock<Arc<Matcher>>);

impl MatcherHandle {
    pub fn new(matcher: Matcher) -> Self {
        MatcherHandle(std::sync::RwLock::new(Arc::new(matcher)))
    }

    pub fn current(&self) -> Arc<Matcher> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn swap(&self, matcher: Matcher) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(matcher);
    }
}

/// Decisions by match key for a short window: during a storm thousands of tickets carry the
/// same alarm, and one search answers them all. The matcher's identity is part of the key
/// (a reloaded corpus never serves an old decision).
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<Decision>)>>,
}

/// Bound on remembered decisions; past it the oldest window is simply forgotten.
const COALESCE_MAX: usize = 10_000;

impl Coalescer {
    pub fn new(window: Duration) -> Self {
        Coalescer {
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Decision>> {
        if self.window.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.window)
            .map(|(_, d)| d.clone())
    }

    fn put(&self, key: String, decision: &Arc<Decision>) {
        if self.window.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= COALESCE_MAX {
            let window = self.window;
            entries.retain(|_, (at, _)| at.elapsed() < window);
            if entries.len() >= COALESCE_MAX {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), decision.clone()));
    }
}

/// The key that makes one enrichment unique: the same ticket with the same alarm gets one
/// comment, however often its webhook is delivered.
pub fn delivery_key(ticket: &Ticket, signature: &AlarmSignature) -> String {
    let mut hash = Sha256::new();
    for part in [ticket.source.as_str(), ticket.id.as_str(), &signature.key()] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    hex::encode(&hash.finalize()[..16])
}

impl Pipeline {
    /// Shared, not copied: every ticket of a coalesced alarm holds the same decision, which
    /// also lets the renderer reuse the comment it rendered for it.
    pub async fn decide(&self, signature: AlarmSignature) -> Result<Arc<Decision>, PipelineError> {
        let matcher = self.matcher.current();
        let key = format!("{}|{}", matcher.index().version(), signature.match_key());
        if let Some(decision) = self.coalescer.get(&key) {
            self.metrics.coalesced.inc();
            return Ok(decision);
        }
        let top_k = self.top_k;
        let decision = tokio::task::spawn_blocking(move || matcher.decide(&signature, top_k))
            .await
            .map_err(|e| PipelineError::Join(e.to_string()))??;
        let decision = Arc::new(decision);
        self.coalescer.put(key, &decision);
        Ok(decision)
    }

    #[tracing::instrument(skip_all, fields(ticket = %ticket.id, delivery = %ticket.delivery, signature))]
    pub async fn accept(&self, ticket: Ticket) -> Result<AcceptOutcome, PipelineError> {
        let signature = AlarmSignature::of(&ticket, &self.normalizer);
        tracing::Span::current().record("signature", tracing::field::display(&signature));
        let decision = self.decide(signature.clone()).await?;
        let how = match decision.candidates.first() {
            Some(c) if c.confident => match c.reason {
                MatchReason::Alarm { .. } => "alarm",
                MatchReason::Rule { .. } => "rule",
                MatchReason::FullText { .. } => "text",
            },
            _ => "none",
        };
        self.metrics
            .matches
            .get_or_create(&crate::metrics::Outcome {
                outcome: how.to_string(),
            })
            .inc();
        let key = delivery_key(&ticket, &signature);
        let mut events = vec![
            AuditEvent::Received {
                source: ticket.source.to_string(),
                delivery: ticket.delivery.to_string(),
                title: ticket.title.clone(),
            },
            AuditEvent::decided(signature.to_string(), &decision),
        ];
        let resolution = self.router.resolve(&ticket);
        for problem in resolution.problems {
            tracing::warn!(%problem, "route skipped");
            events.push(AuditEvent::NotEnqueued { reason: problem });
        }
        let delivery = match &resolution.target {
            Some(target) if self.destinations.contains_key(&target.destination()) => {
                let body = self.renderer.render_shared(
                    &self.destinations[&target.destination()],
                    &ticket,
                    &signature,
                    &decision,
                    &key,
                )?;
                Some(NewDelivery {
                    delivery_key: key,
                    destination: target.destination(),
                    target: target.clone(),
                    body,
                })
            }
            Some(target) => {
                events.push(AuditEvent::NotEnqueued {
                    reason: format!("destination `{}` is not configured", target.destination()),
                });
                None
            }
            None => {
                events.push(AuditEvent::NotEnqueued {
                    reason: "the ticket names no place to reply".into(),
                });
                None
            }
        };
        let queued = delivery.is_some();
        let outcome = self
            .store
            .accept(Accepted {
                signature_key: signature.key(),
                ticket,
                events,
                delivery,
                max_per_ticket: self.max_per_ticket,
            })
            .await?;
        if outcome == AcceptOutcome::Stored && queued {
            self.metrics.add_pending(1);
        }
        tracing::info!(
            outcome = ?outcome,
            confident = decision.is_confident(),
            best = decision.candidates.first().map(|c| c.runbook.id.as_str()).unwrap_or("-"),
            "ticket accepted"
        );
        Ok(outcome)
    }
}
