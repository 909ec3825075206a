//! Corpus changes rolled out like code. With `runbooks.canary` on, a reloaded corpus does not
//! go live: it runs in shadow beside the live one, every ticket is decided by both, the live
//! decision is the one posted, and every ticket the two decide differently is kept for
//! review. The candidate is promoted by itself once it has seen enough tickets for long
//! enough and changed few enough of them; otherwise it is held until an operator promotes or
//! aborts it. Replicas agree through the store: a promotion or abort any of them makes is
//! applied by all (`sync`).
//!
//! Probes (`probe.rs`) are the other half: synthetic tickets sent through the real sources
//! from outside, whose would-be comment goes to the built-in `probe` sink.

pub mod probe;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audit::AuditEvent;
use crate::matcher::{Decision, Matcher};
use crate::metrics::Metrics;
use crate::outbox::{Store, StoreError, now_ms};
use crate::pipeline::MatcherHandle;
use crate::ticket::Ticket;

/// `[runbooks.canary]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySettings {
    pub enabled: bool,
    /// Tickets the candidate must see before it may be promoted by itself.
    pub min_tickets: u64,
    /// And for how long.
    pub min_secs: Duration,
    /// The largest share of changed decisions that is promoted by itself, in [0, 1].
    pub max_changed: f64,
}

/// How many differing decisions are kept for review; the count goes on past it.
const KEPT_DIFFS: usize = 200;

/// What one index answered for a ticket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub runbook: Option<String>,
    pub confident: bool,
}

impl Answer {
    fn of(decision: &Decision) -> Self {
        let first = decision.candidates.first();
        Answer {
            runbook: first.map(|c| c.runbook.id.to_string()),
            confident: first.is_some_and(|c| c.confident),
        }
    }

    /// What an operator would see differently: another linked runbook, or a link where
    /// there was none (or the reverse).
    fn differs(&self, other: &Answer) -> bool {
        self.confident != other.confident || (self.confident && self.runbook != other.runbook)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub ticket: String,
    pub title: String,
    pub at_ms: i64,
    pub live: Answer,
    pub candidate: Answer,
}

#[derive(Debug)]
struct Shadow {
    candidate: Arc<Matcher>,
    trigger: String,
    started: Instant,
    started_ms: i64,
    seen: u64,
    changed: u64,
    diffs: VecDeque<Difference>,
    /// Enough tickets and time, too many changes: only an operator moves it on.
    held: bool,
}

/// The state `GET /admin/canary` and `runlink canary status` show.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryStatus {
    /// `off` (not enabled), `idle` (nothing in shadow), `shadow`, or `held`.
    pub state: &'static str,
    pub live_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<String>,
    pub seen: u64,
    pub changed: u64,
    pub changed_share: f64,
    pub min_tickets: u64,
    pub min_secs: u64,
    pub max_changed: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// What loaded the candidate (file change, SIGHUP, POST /admin/reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    pub differences: Vec<Difference>,
}

#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("no candidate index is in shadow")]
    NothingInShadow,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What became of a reloaded corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollout {
    /// In shadow beside the live index.
    Shadow,
    /// Live at once: another replica had promoted this version already.
    AlreadyPromoted,
    /// Not loaded: this version was aborted before.
    AlreadyAborted,
}

/// The shared states of a candidate version in the store.
pub const PROMOTED: &str = "promoted";
pub const ABORTED: &str = "aborted";
pub const SHADOW: &str = "shadow";

#[derive(Debug)]
pub struct Canary {
    pub settings: CanarySettings,
    live: Arc<MatcherHandle>,
    shadow: Mutex<Option<Shadow>>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Promotions decided on a thread outside the runtime (the store's applier) record
    /// their audit event through it.
    runtime: tokio::runtime::Handle,
}

impl Canary {
    pub fn new(
        settings: CanarySettings,
        live: Arc<MatcherHandle>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Canary {
            settings,
            live,
            shadow: Mutex::new(None),
            store,
            metrics,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Shadow>> {
        self.shadow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index in shadow, if any.
    pub fn candidate(&self) -> Option<Arc<Matcher>> {
        self.lock().as_ref().map(|s| s.candidate.clone())
    }

    /// A reloaded corpus: into shadow, unless the replicas already decided its fate.
    pub async fn start(&self, matcher: Matcher, trigger: &str) -> Result<Rollout, StoreError> {
        let version = matcher.index().version().to_string();
        match self.store.canary_state(&version).await?.as_deref() {
            Some(PROMOTED) => {
                self.live.swap(matcher);
                *self.lock() = None;
                return Ok(Rollout::AlreadyPromoted);
            }
            Some(ABORTED) => return Ok(Rollout::AlreadyAborted),
            _ => {}
        }
        self.store.canary_mark(&version, SHADOW).await?;
        let runbooks = matcher.index().len();
        *self.lock() = Some(Shadow {
            candidate: Arc::new(matcher),
            trigger: trigger.to_string(),
            started: Instant::now(),
            started_ms: now_ms(),
            seen: 0,
            changed: 0,
            diffs: VecDeque::new(),
            held: false,
        });
        tracing::info!(%version, runbooks, trigger, "candidate runbook index in shadow");
        self.store
            .record(
                None,
                AuditEvent::CanaryStarted {
                    version,
                    live_version: self.live.current().index().version().to_string(),
                    runbooks,
                    trigger: trigger.to_string(),
                },
            )
            .await?;
        Ok(Rollout::Shadow)
    }

    /// Counts one ticket decided by both indexes; promotes the candidate when it has
    /// earned it. Sync: it runs where the match runs.
    pub fn observe(&self, ticket: &Ticket, live: &Decision, candidate: &Decision) {
        let (live, candidate) = (Answer::of(live), Answer::of(candidate));
        let changed = live.differs(&candidate);
        {
            let mut shadow = self.lock();
            let Some(shadow) = shadow.as_mut() else {
                return;
            };
            shadow.seen += 1;
            if changed {
                shadow.changed += 1;
                if shadow.diffs.len() == KEPT_DIFFS {
                    shadow.diffs.pop_front();
                }
                shadow.diffs.push_back(Difference {
                    ticket: ticket.id.to_string(),
                    title: ticket.title.clone(),
                    at_ms: now_ms(),
                    live,
                    candidate,
                });
            }
        }
        self.metrics
            .canary
            .get_or_create(&crate::metrics::Outcome {
                outcome: if changed { "changed" } else { "same" }.to_string(),
            })
            .inc();
        self.evaluate();
    }

    /// Promotes a candidate that has seen enough; holds one that changed too much.
    pub fn evaluate(&self) {
        let promote = {
            let mut guard = self.lock();
            let Some(shadow) = guard.as_mut() else {
                return;
            };
            if shadow.held
                || shadow.seen < self.settings.min_tickets
                || shadow.started.elapsed() < self.settings.min_secs
            {
                return;
            }
            let share = shadow.changed as f64 / shadow.seen.max(1) as f64;
            if share > self.settings.max_changed {
                shadow.held = true;
                tracing::warn!(
                    seen = shadow.seen,
                    changed = shadow.changed,
                    "candidate runbook index held: it changes more decisions than canary.max_changed"
                );
                return;
            }
            true
        };
        if promote {
            let this = self.runtime.clone();
            // The audit write is async; the swap itself happens in `promote`.
            let done = self.take_and_swap("automatic");
            if let Some((version, event)) = done {
                let store = self.store.clone();
                this.spawn(async move {
                    if let Err(error) = store.canary_mark(&version, PROMOTED).await {
                        tracing::warn!(%error, "promotion not shared with replicas");
                    }
                    if let Err(error) = store.record(None, event).await {
                        tracing::warn!(%error, "promotion not audited");
                    }
                });
            }
        }
    }

    /// Makes the candidate live; returns its version and the audit event to record.
    fn take_and_swap(&self, by: &str) -> Option<(String, AuditEvent)> {
        let shadow = self.lock().take()?;
        let version = shadow.candidate.index().version().to_string();
        let event = AuditEvent::CanaryPromoted {
            version: version.clone(),
            seen: shadow.seen,
            changed: shadow.changed,
            by: by.to_string(),
        };
        self.live.swap_arc(shadow.candidate);
        tracing::info!(%version, seen = shadow.seen, changed = shadow.changed, by, "candidate runbook index promoted");
        Some((version, event))
    }

    /// `POST /admin/canary/promote`.
    pub async fn promote(&self, by: &str) -> Result<CanaryStatus, CanaryError> {
        let (version, event) = self.take_and_swap(by).ok_or(CanaryError::NothingInShadow)?;
        self.store.canary_mark(&version, PROMOTED).await?;
        self.store.record(None, event).await?;
        Ok(self.status())
    }

    /// `POST /admin/canary/abort`: the candidate is dropped, the live index never changed.
    pub async fn abort(&self, by: &str) -> Result<CanaryStatus, CanaryError> {
        let shadow = self.lock().take().ok_or(CanaryError::NothingInShadow)?;
        let version = shadow.candidate.index().version().to_string();
        tracing::info!(%version, by, "candidate runbook index aborted");
        self.store.canary_mark(&version, ABORTED).await?;
        self.store
            .record(
                None,
                AuditEvent::CanaryAborted {
                    version,
                    seen: shadow.seen,
                    changed: shadow.changed,
                    by: by.to_string(),
                },
            )
            .await?;
        Ok(self.status())
    }

    /// Applies what another replica decided about this replica's candidate.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let Some(version) = self.candidate().map(|c| c.index().version().to_string()) else {
            return Ok(());
        };
        match self.store.canary_state(&version).await?.as_deref() {
            Some(PROMOTED) => {
                if self.take_and_swap("another replica").is_some() {
                    tracing::info!(%version, "promoted by another replica");
                }
            }
            Some(ABORTED) => {
                let mut shadow = self.lock();
                if shadow
                    .as_ref()
                    .is_some_and(|s| s.candidate.index().version() == version)
                {
                    *shadow = None;
                    tracing::info!(%version, "aborted by another replica");
                }
            }
            _ => self.evaluate(),
        }
        Ok(())
    }

    pub fn status(&self) -> CanaryStatus {
        let live_version = self.live.current().index().version().to_string();
        let shadow = self.lock();
        let base = CanaryStatus {
            state: if !self.settings.enabled {
                "off"
            } else {
                "idle"
            },
            live_version,
            candidate_version: None,
            seen: 0,
            changed: 0,
            changed_share: 0.0,
            min_tickets: self.settings.min_tickets,
            min_secs: self.settings.min_secs.as_secs(),
            max_changed: self.settings.max_changed,
            started_ms: None,
            trigger: None,
            differences: Vec::new(),
        };
        match shadow.as_ref() {
            None => base,
            Some(s) => CanaryStatus {
                state: if s.held { "held" } else { "shadow" },
                candidate_version: Some(s.candidate.index().version().to_string()),
                seen: s.seen,
                changed: s.changed,
                changed_share: s.changed as f64 / s.seen.max(1) as f64,
                started_ms: Some(s.started_ms),
                trigger: Some(s.trigger.clone()),
                differences: s.diffs.iter().rev().cloned().collect(),
                ..base
            },
        }
    }
}

/// Reads the store now and then: promotions and aborts made on other replicas, and a
/// candidate whose time has come although no ticket arrived to say so.
pub async fn keep_in_sync(canary: Arc<Canary>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_secs(2);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(error) = canary.sync().await {
            tracing::warn!(%error, "cannot read the canary state");
        }
    }
}
