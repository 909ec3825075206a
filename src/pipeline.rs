//! The path one ticket takes once a source has parsed it: its delivery key, one durable write,
//! and the signature, match and rendering (`Enricher`) before that write or, with the
//! embedded store, behind it. Sources call `Pipeline::accept` and answer their sender from
//! its outcome.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::audit::AuditEvent;
use crate::matcher::{Decision, MatchReason, Matcher};
use crate::metrics::Metrics;
use crate::outbox::{
    AcceptOutcome, Accepted, Comment, Enrich, EnrichError, Enriched, Matching, NewDelivery, Store,
    StoreError,
};
use crate::render::{RenderError, Renderer};
use crate::reply_routing::ReplyRouter;
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
    #[error("destination `{0}` is not configured")]
    Destination(String),
}

#[derive(Debug)]
pub struct Pipeline {
    pub enricher: Arc<Enricher>,
    pub store: Arc<dyn Store>,
    pub router: ReplyRouter,
    pub max_per_ticket: u32,
}

/// Everything between a ticket and its comment: the signature, the match and the rendering.
/// It runs before the webhook is answered, or behind the store's ingest log when the store
/// can take it there (`Enrich`).
#[derive(Debug)]
pub struct Enricher {
    pub matcher: Arc<MatcherHandle>,
    pub renderer: Arc<Renderer>,
    pub normalizer: Normalizer,
    /// Configured destinations and the template each renders with; a reply to any other is
    /// recorded, not queued.
    pub destinations: HashMap<String, String>,
    pub top_k: usize,
    pub metrics: Arc<Metrics>,
    pub coalescer: Coalescer,
    pub known: KnownKeys,
    /// Answers operators taught (`matcher.learn`); `None` when they do not apply.
    pub lessons: Option<Arc<crate::feedback::LessonBook>>,
    /// The shadow rollout of corpus changes, when `runbooks.canary` is on (set once the
    /// store it shares its state through is open).
    pub canary: std::sync::OnceLock<Arc<crate::canary::Canary>>,
}

/// Delivery keys this process has seen stored: a store that matches before its accept
/// skips the match of an echo (a tracker sending runlink's own enrichment back as a new
/// delivery) without a database round trip. Outbox rows are never removed, so a key seen
/// here stays enriched; one forgotten (past the bound, or seen by another replica) only
/// costs a match.
#[derive(Debug, Default)]
pub struct KnownKeys(Mutex<(HashSet<String>, VecDeque<String>)>);

/// Bound on remembered keys; the oldest are forgotten first.
const KNOWN_KEYS_MAX: usize = 100_000;

impl KnownKeys {
    fn contains(&self, key: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(key)
    }

    fn insert(&self, key: String) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *guard;
        if set.insert(key.clone()) {
            order.push_back(key);
            if order.len() > KNOWN_KEYS_MAX
                && let Some(oldest) = order.pop_front()
            {
                set.remove(&oldest);
            }
        }
    }
}

/// The matcher in force. A reload builds a new one beside it and swaps it in whole; requests
/// already running keep the one they started with.
#[derive(Debug)]
pub struct MatcherHandle(
    std::sync::RwLock<Arc<Matcher>>,
    /// When the matcher in force was put in force (ms since the epoch).
    std::sync::atomic::AtomicI64,
);

impl MatcherHandle {
    pub fn new(matcher: Matcher) -> Self {
        MatcherHandle(
            std::sync::RwLock::new(Arc::new(matcher)),
            std::sync::atomic::AtomicI64::new(crate::outbox::now_ms()),
        )
    }

    /// When the index in force was loaded.
    pub fn loaded_ms(&self) -> i64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn current(&self) -> Arc<Matcher> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn swap(&self, matcher: Matcher) {
        self.swap_arc(Arc::new(matcher));
    }

    pub fn swap_arc(&self, matcher: Arc<Matcher>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = matcher;
        self.1.store(
            crate::outbox::now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Decisions by match key for a short window: during a storm thousands of tickets carry the
/// same alarm, and one search answers them all. The matcher's identity is part of the key
/// (a reloaded corpus never serves an old decision).
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<Decision>)>>,
    /// Decisions being made now: a storm's first tickets of one alarm arrive together, and
    /// without this each would run the search (and the embedding model) before any of them
    /// is remembered. The later ones wait for the first instead.
    in_flight: Mutex<HashMap<String, Flight>>,
}

type Flight = Arc<tokio::sync::OnceCell<Arc<Decision>>>;

/// Bound on remembered decisions; past it the oldest window is simply forgotten.
const COALESCE_MAX: usize = 10_000;

impl Coalescer {
    pub fn new(window: Duration) -> Self {
        Coalescer {
            window,
            entries: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The decision being made for `key`, to join or to make.
    fn flight(&self, key: &str) -> Flight {
        let mut flights = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(key.to_string()).or_default().clone()
    }

    /// The decision of `flight` is made (and remembered): later callers find it in `entries`.
    fn landed(&self, key: &str, flight: &Flight) {
        let mut flights = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
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
/// comment, however often its webhook is delivered. `signature_key` is `AlarmSignature::key`.
pub fn delivery_key(ticket: &Ticket, signature_key: &str) -> String {
    let mut hash = Sha256::new();
    for part in [ticket.source.as_str(), ticket.id.as_str(), signature_key] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    hex::encode(&hash.finalize()[..16])
}

/// What a decision is made with, and the one already made for it, if any.
struct Coalesced {
    matcher: Arc<Matcher>,
    lessons: Option<Arc<crate::feedback::Lessons>>,
    key: String,
    decision: Option<Arc<Decision>>,
}

impl Enricher {
    /// The matcher in force, the coalescing key of `signature` under it, and the decision
    /// already made for that key, if any.
    fn coalesced(&self, signature: &AlarmSignature) -> Coalesced {
        let matcher = self.matcher.current();
        let lessons = self.lessons.as_ref().map(|book| book.current());
        // A new lesson must not be hidden behind a decision remembered before it.
        let key = format!(
            "{}|{}|{}",
            matcher.index().version(),
            lessons.as_ref().map_or(0, |l| l.generation()),
            signature.match_key()
        );
        let decision = self.coalescer.get(&key);
        if decision.is_some() {
            self.metrics.coalesced.inc();
        }
        Coalesced {
            matcher,
            lessons,
            key,
            decision,
        }
    }

    fn remember(&self, key: String, decision: Decision) -> Arc<Decision> {
        let decision = Arc::new(decision);
        self.coalescer.put(key, &decision);
        decision
    }

    /// Shared, not copied: every ticket of a coalesced alarm holds the same decision, which
    /// also lets the renderer reuse the comment it rendered for it.
    pub async fn decide(&self, signature: AlarmSignature) -> Result<Arc<Decision>, PipelineError> {
        let Coalesced {
            matcher,
            lessons,
            key,
            decision: coalesced,
        } = self.coalesced(&signature);
        if let Some(decision) = coalesced {
            return Ok(decision);
        }
        let top_k = self.top_k;
        let make = move || async move {
            tokio::task::spawn_blocking(move || {
                matcher.decide_with(&signature, top_k, lessons.as_deref())
            })
            .await
            .map_err(|e| PipelineError::Join(e.to_string()))?
            .map_err(PipelineError::from)
        };
        if self.coalescer.window.is_zero() {
            return Ok(Arc::new(make().await?));
        }
        let flight = self.coalescer.flight(&key);
        let mut made = false;
        let decision = flight
            .get_or_try_init(|| async {
                made = true;
                make().await.map(Arc::new)
            })
            .await
            .cloned();
        if let Ok(decision) = &decision {
            if made {
                self.coalescer.put(key.clone(), decision);
            } else {
                self.metrics.coalesced.inc();
            }
        }
        self.coalescer.landed(&key, &flight);
        decision
    }

    /// `decide` on the caller's thread, for callers that are not on the async runtime.
    pub fn decide_blocking(
        &self,
        signature: &AlarmSignature,
    ) -> Result<Arc<Decision>, PipelineError> {
        let Coalesced {
            matcher,
            lessons,
            key,
            decision: coalesced,
        } = self.coalesced(signature);
        if let Some(decision) = coalesced {
            return Ok(decision);
        }
        let decision = matcher.decide_with(signature, self.top_k, lessons.as_deref())?;
        Ok(self.remember(key, decision))
    }

    /// The audit event and the comment for a decision; counts the match outcome.
    fn finish(
        &self,
        ticket: &Ticket,
        signature: &AlarmSignature,
        decision: &Arc<Decision>,
        delivery: Option<Comment<'_>>,
    ) -> Result<Enriched, PipelineError> {
        let how = match decision.candidates.first() {
            Some(c) if c.confident => match c.reason {
                MatchReason::Alarm { .. } => "alarm",
                MatchReason::Rule { .. } => "rule",
                MatchReason::Taught { .. } => "taught",
                MatchReason::FullText { .. } => "text",
            },
            _ => "none",
        };
        // Probes are checks, not traffic: they stay out of the figures.
        if !ticket.is_probe() {
            self.metrics
                .matches
                .get_or_create(&crate::metrics::Outcome {
                    outcome: how.to_string(),
                })
                .inc();
        }
        let (body, summary) = match delivery {
            Some(Comment {
                destination,
                delivery_key,
            }) => {
                let template = self
                    .destinations
                    .get(destination)
                    .ok_or_else(|| PipelineError::Destination(destination.to_string()))?;
                let body = self.renderer.render_shared(
                    template,
                    ticket,
                    signature,
                    decision,
                    delivery_key,
                )?;
                (
                    Some(body),
                    self.renderer.summary(template, ticket, decision),
                )
            }
            None => (None, String::new()),
        };
        tracing::info!(
            ticket = %ticket.id,
            signature = %signature,
            confident = decision.is_confident(),
            best = decision.candidates.first().map(|c| c.runbook.id.as_str()).unwrap_or("-"),
            "ticket matched"
        );
        let mut decided = AuditEvent::decided(signature.to_string(), decision);
        if let AuditEvent::Decided { probe, .. } = &mut decided {
            *probe = ticket.is_probe();
        }
        Ok(Enriched {
            decided,
            body,
            summary,
        })
    }

    pub async fn enrich_async(
        &self,
        ticket: &Ticket,
        delivery: Option<Comment<'_>>,
    ) -> Result<Enriched, PipelineError> {
        let signature = AlarmSignature::of(ticket, &self.normalizer);
        let decision = self.decide(signature.clone()).await?;
        if let Some((canary, candidate)) = self.shadowing(ticket) {
            let (ticket, signature, live) = (ticket.clone(), signature.clone(), decision.clone());
            let lessons = self.lessons.as_ref().map(|b| b.current());
            let top_k = self.top_k;
            tokio::task::spawn_blocking(move || {
                match candidate.decide_with(&signature, top_k, lessons.as_deref()) {
                    Ok(shadow) => canary.observe(&ticket, &live, &shadow),
                    Err(error) => tracing::warn!(%error, "candidate index failed to decide"),
                }
            })
            .await
            .map_err(|e| PipelineError::Join(e.to_string()))?;
        }
        self.finish(ticket, &signature, &decision, delivery)
    }

    /// The canary and its candidate index, when a ticket is to be decided in shadow too
    /// (never a probe: probes check the live index).
    fn shadowing(&self, ticket: &Ticket) -> Option<(Arc<crate::canary::Canary>, Arc<Matcher>)> {
        if ticket.is_probe() {
            return None;
        }
        let canary = self.canary.get()?;
        Some((canary.clone(), canary.candidate()?))
    }
}

impl Enrich for Enricher {
    fn enrich(
        &self,
        ticket: &Ticket,
        delivery: Option<Comment<'_>>,
    ) -> Result<Enriched, EnrichError> {
        let run = || {
            let signature = AlarmSignature::of(ticket, &self.normalizer);
            let decision = self.decide_blocking(&signature)?;
            if let Some((canary, candidate)) = self.shadowing(ticket) {
                let lessons = self.lessons.as_ref().map(|b| b.current());
                match candidate.decide_with(&signature, self.top_k, lessons.as_deref()) {
                    Ok(shadow) => canary.observe(ticket, &decision, &shadow),
                    Err(error) => tracing::warn!(%error, "candidate index failed to decide"),
                }
            }
            self.finish(ticket, &signature, &decision, delivery)
        };
        run().map_err(|error| {
            if delivery.is_some() {
                // Counted as pending when it was acknowledged; nothing will be queued now.
                self.metrics.add_pending(-1);
            }
            EnrichError(Box::new(error))
        })
    }
}

impl Pipeline {
    /// Runbooks in the index in force.
    pub fn runbooks(&self) -> usize {
        self.enricher.matcher.current().index().len()
    }

    /// Whether the embedding model takes part in matching.
    pub fn semantic(&self) -> bool {
        self.enricher.matcher.current().semantic().is_some()
    }

    #[tracing::instrument(skip_all, fields(ticket = %ticket.id, delivery = %ticket.delivery))]
    pub async fn accept(&self, ticket: Ticket) -> Result<AcceptOutcome, PipelineError> {
        let enricher = &self.enricher;
        let signature_key = AlarmSignature::key_of(&ticket, &enricher.normalizer);
        let key = delivery_key(&ticket, &signature_key);
        let mut events = vec![AuditEvent::Received {
            source: ticket.source.to_string(),
            delivery: ticket.delivery.to_string(),
            title: ticket.title.clone(),
        }];
        let resolution = match ticket.is_probe() {
            // A synthetic ticket is answered in the probe sink, never where it says.
            true => crate::reply_routing::Resolution {
                target: Some(crate::ticket::ReplyTarget::Probe {
                    id: ticket.id.to_string(),
                }),
                problems: Vec::new(),
            },
            false => self.router.resolve(&ticket),
        };
        for problem in resolution.problems {
            tracing::warn!(%problem, "route skipped");
            events.push(AuditEvent::NotEnqueued { reason: problem });
        }
        let mut delivery = match resolution.target {
            Some(target) if enricher.destinations.contains_key(&target.destination()) => {
                Some(NewDelivery {
                    delivery_key: key,
                    destination: target.destination(),
                    target,
                    body: String::new(),
                    summary: String::new(),
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
        // A store that matches behind its log decides echoes before it matches; the others
        // are told here.
        let inline = !self.store.defers_matching();
        let echo = inline
            && delivery
                .as_ref()
                .is_some_and(|d| enricher.known.contains(&d.delivery_key));
        let matching = if !inline {
            Matching::Deferred
        } else if echo {
            // The store answers `already_enriched` for it; the match would be thrown away.
            Matching::Done
        } else {
            let planned = delivery.as_ref().map(|d| Comment {
                destination: &d.destination,
                delivery_key: &d.delivery_key,
            });
            let enriched = enricher.enrich_async(&ticket, planned).await?;
            events.insert(1, enriched.decided);
            if let (Some(d), Some(body)) = (delivery.as_mut(), enriched.body) {
                d.body = body;
                d.summary = enriched.summary;
            }
            Matching::Done
        };
        let queued = delivery.is_some();
        let key = delivery
            .as_ref()
            .filter(|_| inline)
            .map(|d| d.delivery_key.clone());
        let outcome = self
            .store
            .accept(Accepted {
                signature_key,
                ticket,
                events,
                delivery,
                max_per_ticket: self.max_per_ticket,
                matching,
            })
            .await?;
        if outcome == AcceptOutcome::Stored && queued {
            self.enricher.metrics.add_pending(1);
        }
        if let Some(key) = key
            && matches!(
                outcome,
                AcceptOutcome::Stored | AcceptOutcome::AlreadyEnriched
            )
        {
            self.enricher.known.insert(key);
        }
        tracing::info!(outcome = ?outcome, matching = ?matching, "ticket accepted");
        Ok(outcome)
    }
}
