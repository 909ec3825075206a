//! The durable queue between "ticket accepted" and "comment posted". A webhook is answered
//! 2xx only after its ticket and its audit events are durable here, with the rendered
//! comment or, on a store that matches behind its log (`Enrich`), everything the comment
//! is made from; the delivery worker then drains it. The store is a trait so the embedded SQLite backend
//! and a shared database backend behave the same for the rest of the program.

mod health;
mod journal;
mod keys;
pub mod postgres;
pub mod sqlite;

pub mod console;
mod decision;
mod sql;

pub use health::{WriteFailure, WritePart, WriteState};

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditRecord};
use crate::feedback::{Feedback, FeedbackRow};
use crate::ticket::{ReplyTarget, Ticket, TicketId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Said with its causes (a refused connection says why), and not chained again.
    #[error("store: {}", with_causes(.0))]
    Postgres(tokio_postgres::Error),
    #[error("store: connection pool: {0}")]
    Pool(String),
    #[error("store: cannot create {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store: stored record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("store: background task failed: {0}")]
    Join(String),
    #[error("store: {0}")]
    Journal(#[from] journal::JournalError),
    #[error(
        "store: the ingest log holds {0} ticket(s) acknowledged before they were matched; \
         open the store with runlink's configuration (its runbooks and templates) to apply them"
    )]
    Unmatched(usize),
    #[error(
        "store: the ingest log holds {records} ticket(s) acknowledged before they were matched, \
         and runlink's runbooks and templates do not load here: {reason}"
    )]
    CannotMatch { records: usize, reason: String },
}

/// One enrichment to post: the key that makes it unique, where it goes, and the exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    pub delivery_key: String,
    pub destination: String,
    pub target: ReplyTarget,
    pub body: String,
    /// The ticket and its runbook in one line, for a comment this one may be folded into.
    pub summary: String,
}

/// Everything one accepted webhook leaves behind, written in one transaction.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub ticket: Ticket,
    pub signature_key: String,
    pub events: Vec<AuditEvent>,
    pub delivery: Option<NewDelivery>,
    /// At most this many enrichments per ticket, whatever its signatures: a ticket whose
    /// text keeps changing must not collect a comment per change.
    pub max_per_ticket: u32,
    pub matching: Matching,
}

/// Whether an accept arrives matched, or leaves the match to the store (see `Enrich`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// The events hold the decision (second, after `received`) and the delivery its
    /// rendered body.
    Done,
    /// Neither yet: the delivery's body is empty. Only for a store whose
    /// `Store::defers_matching` says so.
    Deferred,
}

/// The match and the comment of a ticket that was acknowledged before it was matched.
#[derive(Debug, Clone)]
pub struct Enriched {
    /// The `decided` audit event.
    pub decided: AuditEvent,
    /// The rendered comment, when a delivery was asked for.
    pub body: Option<String>,
    /// Its one-line summary (`NewDelivery::summary`); empty without a delivery.
    pub summary: String,
}

/// Why a ticket could not be matched or rendered, with its cause.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct EnrichError(pub Box<dyn std::error::Error + Send + Sync>);

/// The comment `Enrich` renders: where it goes, and the delivery key its marker carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comment<'a> {
    pub destination: &'a str,
    pub delivery_key: &'a str,
}

/// Matches and renders behind the ingest log. A store that has one answers a webhook as
/// soon as the parsed ticket is durable and completes the record before its tables see it:
/// during a burst the signature, search and rendering wait for spare CPU instead of holding
/// up acknowledgements, and the tables never hold an unmatched ticket.
pub trait Enrich: Send + Sync + std::fmt::Debug {
    /// Whether it can match at all (its runbooks and templates load). A store asks before
    /// it applies unmatched records left from a previous run: one that cannot match leaves
    /// them in the log for a process that can, instead of storing them without a comment.
    fn ready(&self) -> Result<(), EnrichError> {
        Ok(())
    }

    /// `delivery`: the comment to render, if one is queued.
    fn enrich(
        &self,
        ticket: &Ticket,
        delivery: Option<Comment<'_>>,
    ) -> Result<Enriched, EnrichError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Stored; the delivery (if any) is queued.
    Stored,
    /// The sender retried a delivery we already stored; nothing new was written.
    DuplicateDelivery,
    /// A new delivery of a ticket whose enrichment is already queued or posted.
    AlreadyEnriched,
    /// Stored, but the ticket already has its maximum number of enrichments.
    CapReached,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub delivery_key: String,
    pub ticket: TicketId,
    pub destination: String,
    pub target: ReplyTarget,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// An earlier attempt may have reached the destination without us knowing (a timeout,
    /// or a crash after its request started and before its outcome was recorded): look for the marker before posting again.
    pub uncertain: bool,
    pub created_ms: i64,
    /// This claim's lease: after it, another worker (another replica) may claim the item.
    /// It also identifies the claim, so a worker that lost its lease cannot settle over the
    /// one that holds it now.
    pub lease_until_ms: i64,
}

/// A ticket as it was received and stored.
#[derive(Debug, Clone)]
pub struct StoredTicket {
    pub received_ms: i64,
    pub ticket: Ticket,
}

/// An outbox row as the operator tools show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub delivery_key: String,
    pub ticket: String,
    pub destination: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    Pending,
    Delivered,
    Dead,
    Folded,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Delivered => "delivered",
            ItemState::Dead => "dead",
            ItemState::Folded => "folded",
        }
    }
}

/// Which dead letters to put back in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    One(i64),
    AllDead,
}

/// What became of one attempt; the store records it with its audit event atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Delivered,
    RetryAt {
        at_ms: i64,
        error: String,
        /// The attempt may have landed (timeout, connection lost after sending).
        uncertain: bool,
    },
    Dead {
        error: String,
    },
    /// Not posted: its reply target had its comments, the last one already sent.
    Folded {
        reason: String,
    },
}

/// What a reply target has had, for the cap on comments per target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetLoad {
    /// Comments posted to it in the window, or possibly posted (in flight, or unknown),
    /// not counting the item asked about.
    pub comments: u32,
    /// Whether alerts were folded into the item asked about (it is the target's last).
    pub holds_folds: bool,
}

/// What a reply target's last comment lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    /// Every alert folded into it, oldest first.
    pub lines: Vec<FoldedLine>,
    /// How many of them this call folded (they leave the pending count).
    pub newly_folded: usize,
}

/// An alert folded into another's comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldedLine {
    pub ticket: String,
    pub summary: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// Listed in another comment of their reply target, or over its cap.
    pub folded: u64,
}

impl OutboxCounts {
    /// Counts one `state, COUNT(*)` row.
    fn add(&mut self, state: &str, n: i64) {
        let n = n.max(0) as u64;
        match state {
            "pending" => self.pending = n,
            "delivered" => self.delivered = n,
            "dead" => self.dead = n,
            "folded" => self.folded = n,
            _ => {}
        }
    }
}

/// Totals of an ingest log since the start: records per write is how well group commit
/// gathers, fsync time per write is how the disk is doing (the first thing to look at when
/// acknowledgements slow down during a burst).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogStats {
    /// Writes, each followed by one fsync.
    pub writes: u64,
    pub records: u64,
    pub fsync_seconds: f64,
    /// Fsyncs by duration: `fsyncs[i]` took at most `FSYNC_BUCKETS[i]` seconds (and more
    /// than the bound before it); the last counts those longer than every bound. A mean
    /// hides the stalls that make an acknowledgement's p99.
    pub fsyncs: [u64; FSYNC_BUCKETS.len() + 1],
}

/// Upper bounds, in seconds, of the fsync duration buckets in `LogStats`.
pub const FSYNC_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The bucket of `LogStats::fsyncs` one fsync of `seconds` counts in.
pub fn fsync_bucket(seconds: f64) -> usize {
    FSYNC_BUCKETS
        .iter()
        .position(|bound| seconds <= *bound)
        .unwrap_or(FSYNC_BUCKETS.len())
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub ticket: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: Option<usize>,
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Durably stores a ticket with its delivery and audit events, or reports why not.
    async fn accept(&self, accepted: Accepted) -> Result<AcceptOutcome, StoreError>;

    /// Whether `accept` takes `Matching::Deferred` (it has an `Enrich` and a log to run it
    /// behind).
    fn defers_matching(&self) -> bool {
        false
    }

    /// Leases up to `limit` due items of one destination; a leased item is invisible to other
    /// claims until the lease runs out, so a crashed worker's items come back by themselves.
    async fn claim_due(
        &self,
        destination: &str,
        now_ms: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// Pending items whose destination is not in `known`: nothing will ever post them.
    async fn orphans(&self, known: &[&str]) -> Result<Vec<OutboxRow>, StoreError>;

    async fn list(
        &self,
        state: Option<ItemState>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError>;

    /// Tickets received since `since_ms`, oldest first (for `runlink replay`).
    async fn tickets_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredTicket>, StoreError>;

    /// Puts dead letters back in the queue, due now, with a fresh attempt count; returns how
    /// many were requeued.
    async fn requeue(&self, which: Requeue) -> Result<u64, StoreError>;

    /// Records an attempt. A delivery is recorded whoever holds the lease (the comment is
    /// posted, whatever happens next); a retry or a dead letter only by the lease holder.
    async fn settle(
        &self,
        item: &OutboxItem,
        settle: Settle,
        event: AuditEvent,
    ) -> Result<(), StoreError>;

    /// Records that the request of a claimed item is about to start, so a crash from here on
    /// leaves the item uncertain; `false` when this claim no longer holds the lease (then
    /// nothing may be sent).
    async fn sending(&self, item: &OutboxItem) -> Result<bool, StoreError>;

    /// How many comments `item`'s reply target has had since `since_ms` (see `TargetLoad`).
    async fn target_load(&self, item: &OutboxItem, since_ms: i64)
    -> Result<TargetLoad, StoreError>;

    /// `sending` for the last comment its reply target may get: first every other pending
    /// item of the target that no other worker holds is folded into it (settled `folded`,
    /// each with an audit event). Returns everything folded into it, oldest first, the same
    /// on every attempt once sent; `None` when this claim lost its lease.
    async fn fold_into(&self, holder: &OutboxItem, now_ms: i64)
    -> Result<Option<Fold>, StoreError>;

    /// Gives back a claimed item that was not sent (its lease would run out before the send
    /// could finish): due again at once, and not uncertain, since nothing was sent.
    async fn release(&self, item: &OutboxItem) -> Result<(), StoreError>;

    async fn record(&self, ticket: Option<&TicketId>, event: AuditEvent) -> Result<(), StoreError>;

    /// Whether other processes share this store (replicas): then a destination's
    /// "come back later" must reach their workers too, through `pause` and `paused_until`.
    fn shared(&self) -> bool {
        false
    }

    /// Records that `destination` asked for no requests before `until_ms`.
    async fn pause(&self, destination: &str, until_ms: i64) -> Result<(), StoreError>;

    /// The end of the latest pause of `destination` (0 when it never paused).
    async fn paused_until(&self, destination: &str) -> Result<i64, StoreError>;

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Counts that include every accept answered before the call.
    async fn counts(&self) -> Result<OutboxCounts, StoreError>;

    /// Counts as the tables hold them now, without waiting for accepts that are durable but
    /// still being applied (health checks must not wait out a burst).
    async fn counts_now(&self) -> Result<OutboxCounts, StoreError> {
        self.counts().await
    }

    /// Accepts that are durable but not yet applied to the tables (0 for a store that
    /// applies them as it acknowledges them).
    fn backlog(&self) -> u64 {
        0
    }

    /// What the store's ingest log has written so far (`None` for a store without one).
    fn log_stats(&self) -> Option<LogStats> {
        None
    }

    /// Whether the store can be written now (a full disk, say), and how many writes failed
    /// since the start.
    fn write_state(&self) -> WriteState {
        WriteState::default()
    }

    /// Records an operator's command, with its `feedback` audit event, in one transaction.
    /// `None` when the same comment event was recorded before (a sender's retry).
    async fn record_feedback(&self, feedback: &Feedback) -> Result<Option<i64>, StoreError>;

    /// Feedback since `since_ms`, oldest first, forgotten rows included (marked).
    async fn feedback_since(&self, since_ms: i64) -> Result<Vec<FeedbackRow>, StoreError>;

    /// Sets a feedback row aside (with an audit event); `false` when there is no such row
    /// or it was set aside already.
    async fn forget_feedback(&self, id: i64) -> Result<bool, StoreError>;

    /// The ticket with this id as its latest delivery described it.
    async fn ticket(&self, id: &TicketId) -> Result<Option<StoredTicket>, StoreError>;

    /// Queues a comment that answers no webhook (a reply to a command), with its audit
    /// event; `false` when its delivery key was queued before.
    async fn enqueue_reply(
        &self,
        ticket: &TicketId,
        delivery: NewDelivery,
        event: AuditEvent,
    ) -> Result<bool, StoreError>;

    /// What the replicas decided about a candidate runbook index (`crate::canary`).
    async fn canary_state(&self, version: &str) -> Result<Option<String>, StoreError>;

    /// Records it for every replica.
    async fn canary_mark(&self, version: &str, state: &str) -> Result<(), StoreError>;

    /// The state and body of one delivery (the probe sink's comment).
    async fn delivery(&self, delivery_key: &str) -> Result<Option<(String, String)>, StoreError>;

    /// The web console's ticket list (`console::TicketFilter`), newest first.
    async fn console_tickets(
        &self,
        filter: &console::TicketFilter,
    ) -> Result<Vec<console::IndexedTicket>, StoreError>;

    /// Decisions since `since_ms` by outcome, and per hour.
    async fn console_summary(&self, since_ms: i64) -> Result<console::Summary, StoreError>;

    /// Confident answers per runbook since `since_ms`.
    async fn console_runbooks(&self, since_ms: i64) -> Result<Vec<(String, u64)>, StoreError>;

    /// Signatures without a confident runbook since `since_ms`, most tickets first.
    async fn console_gaps(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<console::Gap>, StoreError>;

    /// Pending deliveries only: what load shedding needs, cheaper than `counts`.
    async fn pending(&self) -> Result<u64, StoreError> {
        Ok(self.counts().await?.pending)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Postgres(error)
    }
}

/// An error with its causes, each said once: a connection error's own text often leaves
/// out the reason its cause gives.
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
