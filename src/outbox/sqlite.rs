//! The embedded store: one SQLite file in WAL mode, with an ingest log in front of it.
//!
//! A webhook is answered 2xx once its record is in the ingest log and fsync'd (`journal`):
//! one thread takes every request that is waiting, makes the dedup and cap decisions against
//! the tables plus the records not applied yet (the overlay), appends the whole group with
//! one sequential write and one fsync, and answers. A second thread applies the records to
//! the tables in transactions of thousands, so a burst costs a few B-tree commits instead of
//! one per group of requests. Opened with an `Enrich`, the store takes tickets that are not
//! matched yet: the second thread matches and renders them before it applies them, so a
//! burst is acknowledged at the cost of parsing and logging, and the tables only ever hold
//! matched tickets. Reads wait until the tables hold everything acknowledged
//! before them. Everything else runs on tokio's blocking pool behind its own connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{oneshot, watch};

use super::journal::{self, FieldReader, Fields, Journal, JournalError};
use super::keys::KeyFilter;
use super::{
    AcceptOutcome, Accepted, AuditQuery, Comment, Enrich, EnrichError, FSYNC_BUCKETS, ItemState,
    LogStats, Matching, OutboxCounts, OutboxItem, OutboxRow, Requeue, Settle, Store, StoreError,
    StoredTicket, fsync_bucket, now_ms,
};
use crate::audit::{AuditEvent, AuditRecord};
use crate::ticket::TicketId;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    ticket TEXT NOT NULL,
    UNIQUE (source, delivery_id)
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    delivery_key TEXT NOT NULL UNIQUE,
    ticket_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    ticket_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_ticket ON audit (ticket_id);
CREATE INDEX audit_at ON audit (at);
"#,
    // Crash and timeout bookkeeping: a claim that was never settled, or an attempt that timed
    // out, may have posted; the next attempt checks for the marker first.
    r#"
ALTER TABLE outbox ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_ticket ON outbox (ticket_id);
CREATE INDEX outbox_dest_due ON outbox (destination, state, next_attempt_at);
"#,
    // A destination's Retry-After, for every worker that shares the store.
    r#"
CREATE TABLE pauses (
    destination TEXT PRIMARY KEY,
    until INTEGER NOT NULL
);
"#,
    // Claims use outbox_dest_due; this one only cost a write per accepted webhook.
    r#"
DROP INDEX IF EXISTS outbox_due;
"#,
    // The ingest log's high-water mark: every record up to it is in the tables.
    r#"
CREATE TABLE journal_applied (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO journal_applied (id, seq) VALUES (1, 0);
"#,
    // `CHECK (state IN (...))` built a temporary B-tree for its list on every insert and
    // state change (a third of the applier's work per webhook); a chain of `=` does not.
    r#"
CREATE TABLE outbox_new (
    id INTEGER PRIMARY KEY,
    delivery_key TEXT NOT NULL UNIQUE,
    ticket_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'pending' OR state = 'delivered' OR state = 'dead'),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    claims INTEGER NOT NULL DEFAULT 0,
    uncertain INTEGER NOT NULL DEFAULT 0
);
INSERT INTO outbox_new (id, delivery_key, ticket_id, destination, target, body, state,
                        attempts, next_attempt_at, lease_until, last_error, created_at,
                        updated_at, claims, uncertain)
SELECT id, delivery_key, ticket_id, destination, target, body, state, attempts,
       next_attempt_at, lease_until, last_error, created_at, updated_at, claims, uncertain
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_ticket ON outbox (ticket_id);
CREATE INDEX outbox_dest_due ON outbox (destination, state, next_attempt_at);
"#,
];

const PAGE_SIZE: i64 = 4096;

/// How many records may wait for the log's flusher; past it senders wait for room.
const PENDING_MAX: usize = 4096;
/// How many logged records one apply transaction takes at most.
const APPLY_MAX: usize = 4096;
/// Logged records queued for the applier while it is applying, at most; past it the log's
/// flusher waits for it, and so do the requests behind it (backpressure, not unbounded
/// memory). While it gathers, it takes them off the queue as they come.
const APPLY_QUEUE: usize = 65_536;
/// After a group of at least this many records the flusher waits `LINGER` before taking
/// the next one...
const LINGER_AFTER: usize = 4;
/// ...which adds this much to a burst's acknowledgements and takes two thirds of its fsyncs
/// away (bench/HISTORY.md).
const LINGER: Duration = Duration::from_micros(300);
/// Applied records taken out of the overlay per hold of its lock.
const OVERLAY_SLICE: usize = 64;
/// The applier thread's nice value (0 is normal, 19 the lowest).
const APPLY_NICE: libc::c_int = 19;
/// The applier starts once no record has arrived for this long (unless a reader waits)...
const APPLY_QUIET: Duration = Duration::from_millis(50);
/// ...or once this many records wait (their keys are held in memory by the overlay)...
const DEFER_MAX: usize = 65_536;
/// ...or once the oldest of them has waited this long.
const DEFER_AGE: Duration = Duration::from_secs(5);
/// An fsync this long is a disk stall senders notice (their p99 is a few milliseconds): worth
/// a warning, since nothing else in the log says why acknowledgements paused.
const SLOW_FSYNC: Duration = Duration::from_millis(250);

/// An accept with its JSON already serialized, on the request's own thread and outside the
/// log's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prepared {
    at_ms: i64,
    source: String,
    delivery_id: String,
    ticket_id: String,
    signature_key: String,
    ticket_json: String,
    /// The accept's audit events, serialized.
    events: Vec<String>,
    delivery: Option<PreparedDelivery>,
    max_per_ticket: u32,
    /// Decided before it is appended to the log, so applying a record (or replaying it
    /// after a crash) repeats no lookups and cannot come to another answer.
    decided: Option<Decided>,
    /// `false`: acknowledged before it was matched (`Matching::Deferred`); the applier
    /// completes it (`complete`) before the tables see it.
    matched: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Decided {
    outcome: AcceptOutcome,
    /// The audit event that records the outcome, serialized.
    event: Option<String>,
}

fn outcome_code(outcome: AcceptOutcome) -> u64 {
    match outcome {
        AcceptOutcome::Stored => 1,
        AcceptOutcome::DuplicateDelivery => 2,
        AcceptOutcome::AlreadyEnriched => 3,
        AcceptOutcome::CapReached => 4,
    }
}

fn outcome_of(code: u64) -> Option<AcceptOutcome> {
    Some(match code {
        1 => AcceptOutcome::Stored,
        2 => AcceptOutcome::DuplicateDelivery,
        3 => AcceptOutcome::AlreadyEnriched,
        4 => AcceptOutcome::CapReached,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PreparedDelivery {
    key: String,
    destination: String,
    target_json: String,
    body: String,
}

impl Prepared {
    fn new(accepted: Accepted) -> Result<Self, StoreError> {
        let ticket = &accepted.ticket;
        let events = accepted
            .events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let delivery = match accepted.delivery {
            Some(d) => Some(PreparedDelivery {
                target_json: serde_json::to_string(&d.target)?,
                key: d.delivery_key,
                destination: d.destination,
                body: d.body,
            }),
            None => None,
        };
        Ok(Prepared {
            at_ms: now_ms(),
            source: ticket.source.to_string(),
            delivery_id: ticket.delivery.to_string(),
            ticket_id: ticket.id.to_string(),
            signature_key: accepted.signature_key,
            ticket_json: serde_json::to_string(ticket)?,
            events,
            delivery,
            max_per_ticket: accepted.max_per_ticket,
            decided: None,
            matched: accepted.matching == Matching::Done,
        })
    }
}

/// An audit event recorded on its own (not as part of an accept).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AuditRow {
    at_ms: i64,
    ticket: Option<String>,
    kind: String,
    detail: String,
}

impl AuditRow {
    fn new(ticket: Option<&TicketId>, event: &AuditEvent) -> Result<Self, StoreError> {
        Ok(AuditRow {
            at_ms: now_ms(),
            ticket: ticket.map(|t| t.to_string()),
            kind: event.kind().to_string(),
            detail: serde_json::to_string(event)?,
        })
    }
}

/// What one ingest log record holds.
// Nearly every entry is an accept; boxing it would add an allocation per webhook to save
// a few hundred bytes on the rare audit entry.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Accept(Prepared),
    Audit(AuditRow),
}

const ACCEPT_TAG: u64 = 1;
const AUDIT_TAG: u64 = 2;
/// An accept laid out as `ACCEPT_TAG`'s, not matched yet: no decision among its events, and
/// an empty body.
const UNMATCHED_TAG: u64 = 3;

impl Entry {
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut f = Fields::default();
        self.encode_into(&mut f);
        f.0
    }

    fn encode_into(&self, f: &mut Fields) {
        match self {
            Entry::Accept(p) => {
                f.u64(if p.matched { ACCEPT_TAG } else { UNMATCHED_TAG })
                    .u64(p.at_ms as u64)
                    .str(&p.source)
                    .str(&p.delivery_id)
                    .str(&p.ticket_id)
                    .str(&p.signature_key)
                    .str(&p.ticket_json)
                    .u64(p.events.len() as u64);
                for event in &p.events {
                    f.str(event);
                }
                f.flag(p.delivery.is_some());
                if let Some(d) = &p.delivery {
                    f.str(&d.key)
                        .str(&d.destination)
                        .str(&d.target_json)
                        .str(&d.body);
                }
                f.u64(u64::from(p.max_per_ticket));
                f.flag(p.decided.is_some());
                if let Some(d) = &p.decided {
                    f.u64(outcome_code(d.outcome))
                        .flag(d.event.is_some())
                        .str(d.event.as_deref().unwrap_or_default());
                }
            }
            Entry::Audit(a) => {
                f.u64(AUDIT_TAG)
                    .u64(a.at_ms as u64)
                    .flag(a.ticket.is_some())
                    .str(a.ticket.as_deref().unwrap_or_default())
                    .str(&a.kind)
                    .str(&a.detail);
            }
        }
    }

    fn decode(seq: u64, bytes: &[u8]) -> Result<Entry, JournalError> {
        let mut r = FieldReader::new(seq, bytes);
        match r.u64("tag")? {
            tag @ (ACCEPT_TAG | UNMATCHED_TAG) => {
                let at_ms = r.u64("at")? as i64;
                let source = r.str("source")?;
                let delivery_id = r.str("delivery id")?;
                let ticket_id = r.str("ticket id")?;
                let signature_key = r.str("signature")?;
                let ticket_json = r.str("ticket")?;
                let n = r.u64("event count")?;
                let mut events = Vec::new();
                for _ in 0..n {
                    events.push(r.str("event")?);
                }
                let delivery = if r.flag("delivery flag")? {
                    Some(PreparedDelivery {
                        key: r.str("delivery key")?,
                        destination: r.str("destination")?,
                        target_json: r.str("target")?,
                        body: r.str("body")?,
                    })
                } else {
                    None
                };
                let max_per_ticket = r.u64("cap")? as u32;
                let decided = if r.flag("decision flag")? {
                    let code = r.u64("outcome")?;
                    let outcome = outcome_of(code).ok_or_else(|| JournalError::Malformed {
                        seq,
                        message: format!("unknown outcome {code}"),
                    })?;
                    let has_event = r.flag("event flag")?;
                    let event = r.str("decision event")?;
                    Some(Decided {
                        outcome,
                        event: has_event.then_some(event),
                    })
                } else {
                    None
                };
                Ok(Entry::Accept(Prepared {
                    at_ms,
                    source,
                    delivery_id,
                    ticket_id,
                    signature_key,
                    ticket_json,
                    events,
                    delivery,
                    max_per_ticket,
                    decided,
                    matched: tag == ACCEPT_TAG,
                }))
            }
            AUDIT_TAG => {
                let at_ms = r.u64("at")? as i64;
                let has_ticket = r.flag("ticket flag")?;
                let ticket = r.str("ticket")?;
                Ok(Entry::Audit(AuditRow {
                    at_ms,
                    ticket: has_ticket.then_some(ticket),
                    kind: r.str("kind")?,
                    detail: r.str("detail")?,
                }))
            }
            other => Err(JournalError::Malformed {
                seq,
                message: format!("unknown record tag {other}"),
            }),
        }
    }
}

/// A record in the log with its sequence number.
#[derive(Debug)]
struct Logged {
    seq: u64,
    entry: Entry,
}

impl Logged {
    fn unmatched(&self) -> bool {
        matches!(&self.entry, Entry::Accept(p) if !p.matched)
    }

    /// What the sender of an accept was told (the overlay is keyed on it).
    fn outcome(&self) -> Option<AcceptOutcome> {
        match &self.entry {
            Entry::Accept(p) => p.decided.as_ref().map(|d| d.outcome),
            Entry::Audit(_) => None,
        }
    }
}

/// A record on its way to the applier: where it is in the log, not its bytes, so a burst
/// that outruns the applier waits on disk rather than in memory.
struct Queued {
    seq: u64,
    file: Arc<std::fs::File>,
    offset: u64,
    len: usize,
}

impl Queued {
    fn load(&self) -> Result<Logged, StoreError> {
        let bytes = journal::read_at(&self.file, self.offset, self.len).map_err(|source| {
            JournalError::Io {
                path: format!("record {}", self.seq),
                source,
            }
        })?;
        Ok(Logged {
            seq: self.seq,
            entry: Entry::decode(self.seq, &bytes)?,
        })
    }
}

enum Reply {
    Accept(oneshot::Sender<Result<AcceptOutcome, StoreError>>),
    Audit(oneshot::Sender<Result<(), StoreError>>),
}

impl Reply {
    fn send(self, result: Result<Option<AcceptOutcome>, StoreError>) {
        match self {
            Reply::Accept(tx) => {
                let _ = tx.send(result.and_then(|o| {
                    o.ok_or_else(|| StoreError::Join("accept decided no outcome".into()))
                }));
            }
            Reply::Audit(tx) => {
                let _ = tx.send(result.map(|_| ()));
            }
        }
    }
}

/// What the dedup and cap decisions need to know about what is already stored.
trait Seen {
    fn delivery(&self, source: &str, delivery_id: &str) -> Result<bool, StoreError>;
    fn key(&self, delivery_key: &str) -> Result<bool, StoreError>;
    fn enrichments(&self, ticket_id: &str) -> Result<i64, StoreError>;
}

/// What the tables hold.
struct Tables<'a>(&'a Connection);

impl Seen for Tables<'_> {
    fn delivery(&self, source: &str, delivery_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM tickets WHERE source = ?1 AND delivery_id = ?2)",
            )?
            .query_row([source, delivery_id], |r| r.get(0))?)
    }

    fn key(&self, delivery_key: &str) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE delivery_key = ?1)")?
            .query_row([delivery_key], |r| r.get(0))?)
    }

    fn enrichments(&self, ticket_id: &str) -> Result<i64, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT COUNT(*) FROM outbox WHERE ticket_id = ?1")?
            .query_row([ticket_id], |r| r.get(0))?)
    }
}

/// Accepts that are logged but not yet applied to the tables. Appenders add to it as they
/// decide, the applier removes what it has committed.
#[derive(Debug, Default)]
struct Overlay {
    deliveries: HashMap<String, u64>,
    keys: HashMap<String, u64>,
    /// Sequence numbers of the queued enrichments of each ticket.
    per_ticket: HashMap<String, Vec<u64>>,
}

fn delivery_slot(p: &Prepared) -> String {
    format!("{}\u{0}{}", p.source, p.delivery_id)
}

impl Overlay {
    fn add(&mut self, seq: u64, p: &Prepared, outcome: AcceptOutcome) {
        if outcome == AcceptOutcome::DuplicateDelivery {
            return;
        }
        self.deliveries.insert(delivery_slot(p), seq);
        if let (AcceptOutcome::Stored, Some(d)) = (outcome, &p.delivery) {
            self.keys.insert(d.key.clone(), seq);
            self.per_ticket
                .entry(p.ticket_id.clone())
                .or_default()
                .push(seq);
        }
    }

    fn forget_from(&mut self, first: u64) {
        self.deliveries.retain(|_, seq| *seq < first);
        self.keys.retain(|_, seq| *seq < first);
        self.per_ticket.retain(|_, seqs| {
            seqs.retain(|seq| *seq < first);
            !seqs.is_empty()
        });
    }

    fn remove(&mut self, logged: &Logged) {
        let (Entry::Accept(p), Some(outcome)) = (&logged.entry, logged.outcome()) else {
            return;
        };
        if outcome == AcceptOutcome::DuplicateDelivery {
            return;
        }
        let seq = logged.seq;
        let slot = delivery_slot(p);
        if self.deliveries.get(&slot) == Some(&seq) {
            self.deliveries.remove(&slot);
        }
        if let (AcceptOutcome::Stored, Some(d)) = (outcome, &p.delivery) {
            if self.keys.get(&d.key) == Some(&seq) {
                self.keys.remove(&d.key);
            }
            if let Some(seqs) = self.per_ticket.get_mut(&p.ticket_id) {
                seqs.retain(|s| *s != seq);
                if seqs.is_empty() {
                    self.per_ticket.remove(&p.ticket_id);
                }
            }
        }
    }
}

/// A read transaction on the tables, begun on first use: an accept whose keys the filter
/// has never seen needs no read at all.
struct Snapshot<'a> {
    conn: &'a Connection,
    /// The log's high-water mark as of the snapshot, once begun.
    applied: std::cell::Cell<Option<u64>>,
}

impl<'a> Snapshot<'a> {
    fn new(conn: &'a Connection) -> Self {
        Snapshot {
            conn,
            applied: std::cell::Cell::new(None),
        }
    }

    fn begin(&self) -> Result<(Tables<'a>, u64), StoreError> {
        if let Some(applied) = self.applied.get() {
            return Ok((Tables(self.conn), applied));
        }
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let applied = applied_seq(self.conn)?;
        self.applied.set(Some(applied));
        Ok((Tables(self.conn), applied))
    }

    fn end(&self) {
        if !self.conn.is_autocommit()
            && let Err(error) = self.conn.execute_batch("COMMIT")
        {
            tracing::warn!(%error, "cannot end a read snapshot");
        }
    }
}

/// The tables as of a snapshot plus the overlay's records after it: exactly what the
/// applier will see when it reaches a new one. The caller holds the overlay's lock, so the
/// applier cannot take a record out of the overlay between the two reads.
struct Pending<'a> {
    tables: Snapshot<'a>,
    overlay: &'a Overlay,
    /// Every key of the tables and the overlay: a key it has never seen needs no lookup.
    filter: &'a KeyFilter,
}

impl Seen for Pending<'_> {
    fn delivery(&self, source: &str, delivery_id: &str) -> Result<bool, StoreError> {
        let slot = format!("{source}\u{0}{delivery_id}");
        if self.overlay.deliveries.contains_key(&slot) {
            return Ok(true);
        }
        if !self.filter.may_contain(SLOT_KEY, &slot) {
            return Ok(false);
        }
        self.tables.begin()?.0.delivery(source, delivery_id)
    }

    fn key(&self, delivery_key: &str) -> Result<bool, StoreError> {
        if self.overlay.keys.contains_key(delivery_key) {
            return Ok(true);
        }
        if !self.filter.may_contain(DELIVERY_KEY, delivery_key) {
            return Ok(false);
        }
        self.tables.begin()?.0.key(delivery_key)
    }

    fn enrichments(&self, ticket_id: &str) -> Result<i64, StoreError> {
        // Without a read of the tables every overlay entry counts; with one, an entry at or
        // below the snapshot's mark is already counted there. A ticket the filter has never
        // seen has no entry in either.
        let (stored, applied) = if self.filter.may_contain(TICKET_KEY, ticket_id) {
            let (tables, applied) = self.tables.begin()?;
            (tables.enrichments(ticket_id)?, applied)
        } else {
            (0, 0)
        };
        let logged = self
            .overlay
            .per_ticket
            .get(ticket_id)
            .map(|seqs| seqs.iter().filter(|s| **s > applied).count())
            .unwrap_or(0);
        Ok(logged as i64 + stored)
    }
}

/// The kinds of key in the writer's filter.
const SLOT_KEY: u8 = 1;
const DELIVERY_KEY: u8 = 2;
const TICKET_KEY: u8 = 3;

fn remember(filter: &mut KeyFilter, p: &Prepared, outcome: AcceptOutcome) {
    if outcome == AcceptOutcome::DuplicateDelivery {
        return;
    }
    filter.insert(SLOT_KEY, &delivery_slot(p));
    if let (AcceptOutcome::Stored, Some(d)) = (outcome, &p.delivery) {
        filter.insert(DELIVERY_KEY, &d.key);
        filter.insert(TICKET_KEY, &p.ticket_id);
    }
}

/// A filter holding every key of the tables and the overlay, sized for growth. Another
/// process writing to the tables directly is not seen by it; that is why only one process
/// may own the log (the lock) and replicas need PostgreSQL.
fn build_filter(conn: &Connection, overlay: &Overlay) -> Result<KeyFilter, StoreError> {
    let rows: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM tickets) + 2 * (SELECT COUNT(*) FROM outbox)",
        [],
        |r| r.get(0),
    )?;
    let keys = rows.max(0) as usize + overlay.deliveries.len() + 2 * overlay.keys.len();
    let mut filter = KeyFilter::with_capacity((keys * 2).max(1 << 20));
    let mut stmt = conn.prepare("SELECT source, delivery_id FROM tickets")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (source, id): (String, String) = (row.get(0)?, row.get(1)?);
        filter.insert(SLOT_KEY, &format!("{source}\u{0}{id}"));
    }
    let mut stmt = conn.prepare("SELECT delivery_key, ticket_id FROM outbox")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (key, ticket): (String, String) = (row.get(0)?, row.get(1)?);
        filter.insert(DELIVERY_KEY, &key);
        filter.insert(TICKET_KEY, &ticket);
    }
    for slot in overlay.deliveries.keys() {
        filter.insert(SLOT_KEY, slot);
    }
    for key in overlay.keys.keys() {
        filter.insert(DELIVERY_KEY, key);
    }
    for ticket in overlay.per_ticket.keys() {
        filter.insert(TICKET_KEY, ticket);
    }
    Ok(filter)
}

/// The dedup and cap decisions for one accept, and the audit event that records them. The
/// log's appenders and the applier both decide through here, so they cannot disagree.
fn decide(
    seen: &impl Seen,
    p: &Prepared,
) -> Result<(AcceptOutcome, Option<AuditEvent>), StoreError> {
    if seen.delivery(&p.source, &p.delivery_id)? {
        let event = AuditEvent::DuplicateDelivery {
            source: p.source.clone(),
            delivery: p.delivery_id.clone(),
        };
        return Ok((AcceptOutcome::DuplicateDelivery, Some(event)));
    }
    let Some(delivery) = &p.delivery else {
        return Ok((AcceptOutcome::Stored, None));
    };
    if seen.key(&delivery.key)? {
        let event = AuditEvent::AlreadyEnriched {
            delivery_key: delivery.key.clone(),
        };
        return Ok((AcceptOutcome::AlreadyEnriched, Some(event)));
    }
    let existing = seen.enrichments(&p.ticket_id)?;
    if existing >= i64::from(p.max_per_ticket) {
        let event = AuditEvent::NotEnqueued {
            reason: format!(
                "ticket already has {existing} enrichments (cap {})",
                p.max_per_ticket
            ),
        };
        return Ok((AcceptOutcome::CapReached, Some(event)));
    }
    let event = AuditEvent::Enqueued {
        delivery_key: delivery.key.clone(),
        destination: delivery.destination.clone(),
    };
    Ok((AcceptOutcome::Stored, Some(event)))
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Arc<Mutex<Connection>>,
    /// `None` when another process owns this store's ingest log: accepts then commit
    /// straight to the tables.
    ingest: Option<Ingest>,
    /// Present when the applier matches what was acknowledged unmatched.
    enrich: Option<Arc<dyn Enrich>>,
}

#[derive(Debug)]
struct Ingest {
    log: Arc<SharedLog>,
    /// The highest sequence number acknowledged to a sender.
    logged: Arc<AtomicU64>,
    /// The highest sequence number applied to the tables.
    applied: watch::Receiver<u64>,
    /// Set by a reader that waits for the applier.
    hurry: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _lock: journal::Lock,
}

impl Drop for Inner {
    /// The last handle applies what is logged before the log's lock is let go, so the next
    /// owner (in this process or another) starts from tables that are up to date.
    fn drop(&mut self) {
        if let Some(ingest) = &mut self.ingest {
            {
                let mut state = ingest.log.state.lock().unwrap_or_else(|p| p.into_inner());
                state.closed = true;
            }
            ingest.log.flush.notify_all();
            for thread in ingest.threads.drain(..) {
                let _ = thread.join();
            }
        }
    }
}

/// Stores open in this process, by path: a second `open` of the same file shares the first
/// one's log instead of fighting it for the lock.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = LazyLock::new(Default::default);

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // Takes effect only on a new, empty file.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, None)
    }

    /// With `enrich`, webhooks may be acknowledged before they are matched (`Enrich`): the
    /// applier completes them, here and after a crash. A handle of this process that is
    /// already open is shared, with the `Enrich` it was opened with.
    pub fn open_with(path: &Path, enrich: Option<Arc<dyn Enrich>>) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let closing = match open.get(&key) {
            Some(weak) => match weak.upgrade() {
                Some(inner) => return Ok(SqliteStore { inner }),
                None => true,
            },
            None => false,
        };
        let dir = journal::dir_for(path);
        let mut lock = journal::Lock::try_acquire(&dir)?;
        // A handle of this process that is still applying its last records lets go soon.
        let deadline = Instant::now() + Duration::from_secs(10);
        while closing && lock.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            lock = journal::Lock::try_acquire(&dir)?;
        }
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let ingest = match lock {
            Some(lock) => Some(start_ingest(path, &dir, lock, enrich.clone())?),
            None => {
                tracing::warn!(
                    store = %path.display(),
                    "another runlink process owns this store's ingest log: reading what it has applied, writing straight to the tables"
                );
                None
            }
        };
        let inner = Arc::new(Inner {
            conn: Arc::new(Mutex::new(conn)),
            ingest,
            enrich,
        });
        open.insert(key, Arc::downgrade(&inner));
        Ok(SqliteStore { inner })
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.inner.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another store call must not make the store unusable: the connection
            // itself is still consistent (SQLite rolled back the open transaction).
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Waits until everything acknowledged so far is in the tables, so a read sees every
    /// write that was answered before it.
    async fn caught_up(&self) {
        if let Some(ingest) = &self.inner.ingest {
            let target = ingest.logged.load(Ordering::SeqCst);
            let mut applied = ingest.applied.clone();
            if *applied.borrow() < target {
                ingest.hurry.store(true, Ordering::Release);
            }
            // An error means the applier is gone; nothing more will arrive.
            let _ = applied.wait_for(|a| *a >= target).await;
        }
    }

    fn behind(&self) -> bool {
        self.inner
            .ingest
            .as_ref()
            .is_some_and(|i| *i.applied.borrow() < i.logged.load(Ordering::SeqCst))
    }

    /// Decides and frames the entry on this thread, then leaves it to the flusher, which
    /// answers `reply` once it is on disk.
    async fn submit(&self, entry: Entry, reply: Reply) -> Result<(), StoreError> {
        let log = &self
            .inner
            .ingest
            .as_ref()
            .ok_or_else(|| StoreError::Join("store is closing".into()))?
            .log;
        let mut job = Some((entry, reply));
        // Nearly always there is room at once. Otherwise the sender registers for the
        // flusher's signal before it looks again, so room made in between is not missed.
        if let Some(done) = try_append(log, &mut job) {
            return done;
        }
        loop {
            let room = log.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(done) = try_append(log, &mut job) {
                return done;
            }
            room.await;
        }
    }
}

/// Appends the job unless the pending group is full (`None`: the disk is behind, and the
/// sender waits for room: backpressure towards the HTTP layer, not unbounded memory).
fn try_append(log: &SharedLog, job: &mut Option<(Entry, Reply)>) -> Option<Result<(), StoreError>> {
    let mut state = log.state.lock().unwrap_or_else(|p| p.into_inner());
    if state.closed {
        return Some(Err(StoreError::Join("store is closing".into())));
    }
    if state.pending.waiting.len() >= PENDING_MAX {
        return None;
    }
    if let Some((entry, reply)) = job.take()
        && let Err((reply, error)) = state.append(entry, reply)
    {
        reply.send(Err(error));
        return Some(Ok(()));
    }
    let wake = state.flusher_waiting;
    drop(state);
    if wake {
        log.flush.notify_one();
    }
    Some(Ok(()))
}

fn applied_seq(conn: &Connection) -> Result<u64, StoreError> {
    // Asked once per group the writer decides and per batch applied: keep it prepared.
    let seq: i64 = conn
        .prepare_cached("SELECT seq FROM journal_applied WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(seq.max(0) as u64)
}

/// Applies what a previous run logged and did not apply, then starts the log's flusher, the
/// applier and the checkpointer.
fn start_ingest(
    path: &Path,
    dir: &Path,
    lock: journal::Lock,
    enrich: Option<Arc<dyn Enrich>>,
) -> Result<Ingest, StoreError> {
    let mut apply_conn = open_connection(path)?;
    // Checkpoints run beside the applier, not inside its commits.
    apply_conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let records = journal::read_all(dir)?;
    let mut applied = applied_seq(&apply_conn)?;
    let last_logged = records.last().map(|(seq, _)| *seq).unwrap_or(0);
    let mut backlog = records
        .into_iter()
        .filter(|(seq, _)| *seq > applied)
        .map(|(seq, bytes)| {
            Ok(Logged {
                seq,
                entry: Entry::decode(seq, &bytes)?,
            })
        })
        .collect::<Result<Vec<_>, JournalError>>()?;
    let unmatched = backlog.iter().filter(|r| r.unmatched()).count();
    if unmatched > 0 {
        let Some(enrich) = enrich.as_deref() else {
            return Err(StoreError::Unmatched(unmatched));
        };
        enrich.ready().map_err(|error| StoreError::CannotMatch {
            records: unmatched,
            reason: error.0,
        })?;
        complete(enrich, &mut backlog);
    }
    if !backlog.is_empty() {
        for chunk in backlog.chunks(APPLY_MAX) {
            applied = applied.max(apply_batch(&mut apply_conn, chunk)?);
        }
        tracing::info!(
            records = backlog.len(),
            "applied what the ingest log held from the last run"
        );
    }
    let next_seq = applied.max(last_logged) + 1;
    // The segments are deleted next: first make sure everything applied so far is on disk
    // (a checkpoint syncs the WAL before it copies it, and the database after).
    apply_conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")?;
    let (log, retired) = Journal::start(dir, next_seq)?;
    // From here on the log holds every record until a checkpoint has made its application
    // durable, so the applier's commits need no fsync of their own.
    apply_conn.pragma_update(None, "synchronous", "NORMAL")?;

    let overlay = Arc::new(Mutex::new(Overlay::default()));
    let logged = Arc::new(AtomicU64::new(next_seq - 1));
    let (applied_tx, applied_rx) = watch::channel(next_seq - 1);
    let hurry = Arc::new(AtomicBool::new(false));
    let (apply_tx, apply_rx) = std::sync::mpsc::sync_channel::<Queued>(APPLY_QUEUE);
    let reader = open_connection(path)?;
    let checkpoint_conn = open_connection(path)?;
    let spawn_err = |source| StoreError::Dir {
        path: "store thread".into(),
        source,
    };
    let mut threads = Vec::new();
    let filter = build_filter(&reader, &Overlay::default())?;
    let shared = Arc::new(SharedLog {
        state: Mutex::new(LogState {
            reader,
            filter,
            overlay: overlay.clone(),
            next_seq,
            pending: Group::default(),
            flusher_waiting: false,
            closed: false,
        }),
        flush: std::sync::Condvar::new(),
        room: tokio::sync::Notify::new(),
        records: AtomicU64::new(0),
        fsync_nanos: AtomicU64::new(0),
        fsyncs: Default::default(),
    });
    let flusher = Flusher {
        shared: shared.clone(),
        spare: Vec::new(),
        log,
        logged: logged.clone(),
        apply: apply_tx,
        last_group: 0,
    };
    threads.push(
        std::thread::Builder::new()
            .name("runlink-ingest-log".into())
            .spawn(move || flusher.run())
            .map_err(spawn_err)?,
    );
    threads.push(
        std::thread::Builder::new()
            .name("runlink-store-apply".into())
            .spawn({
                let hurry = hurry.clone();
                move || apply_loop(apply_conn, apply_rx, overlay, applied_tx, hurry, enrich)
            })
            .map_err(spawn_err)?,
    );
    let alive = Arc::downgrade(&shared);
    let applied_now = applied_rx.clone();
    std::thread::Builder::new()
        .name("runlink-store-checkpoint".into())
        .spawn(move || {
            // Runs while the store is in use; a PASSIVE checkpoint never blocks writers.
            // It syncs the WAL before copying it back, so every record applied before it
            // started is durable once it returns: the log's segments up to there can go.
            while alive.upgrade().is_some() {
                std::thread::sleep(Duration::from_millis(500));
                let through = *applied_now.borrow();
                match checkpoint_conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                    Ok(()) => retired.delete_through(through),
                    Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
                }
            }
        })
        .map_err(spawn_err)?;
    Ok(Ingest {
        log: shared,
        logged,
        applied: applied_rx,
        hurry,
        threads,
        _lock: lock,
    })
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        [],
    )?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// What the log's appenders share: every accept is decided and framed on the request's own
/// thread under this lock (no hand-off to a writer thread), and waits in `pending` for the
/// flusher, which writes and fsyncs everything that piled up while it flushed the last group.
struct LogState {
    reader: Connection,
    filter: KeyFilter,
    overlay: Arc<Mutex<Overlay>>,
    next_seq: u64,
    pending: Group,
    /// The flusher sleeps on the condition variable: appenders wake it only then.
    flusher_waiting: bool,
    closed: bool,
}

/// Framed records waiting for the flusher, and whom to answer once they are on disk.
#[derive(Default)]
struct Group {
    framed: Vec<u8>,
    waiting: Vec<Waiting>,
    last: u64,
}

struct Waiting {
    reply: Reply,
    seq: u64,
    outcome: Option<AcceptOutcome>,
    start: usize,
    len: usize,
}

/// The log's lock, the flusher's wake-up, and room for appenders held back by a full group.
struct SharedLog {
    state: Mutex<LogState>,
    flush: std::sync::Condvar,
    room: tokio::sync::Notify,
    /// What the flusher has written, for `/metrics` (see `LogStats`); one fsync per write, so
    /// the buckets also count the writes.
    records: AtomicU64,
    fsync_nanos: AtomicU64,
    fsyncs: [AtomicU64; FSYNC_BUCKETS.len() + 1],
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog").finish_non_exhaustive()
    }
}

impl LogState {
    /// Decides one entry and frames it into the pending group; `Err` when it cannot be
    /// decided (answered right away, nothing logged).
    fn append(&mut self, mut entry: Entry, reply: Reply) -> Result<(), (Reply, StoreError)> {
        let seq = self.next_seq;
        let outcome = match &mut entry {
            Entry::Accept(p) => {
                let mut overlay = self.overlay.lock().unwrap_or_else(|p| p.into_inner());
                let seen = Pending {
                    tables: Snapshot::new(&self.reader),
                    overlay: &overlay,
                    filter: &self.filter,
                };
                let decided = decide(&seen, p);
                seen.tables.end();
                match decided.and_then(|(outcome, event)| {
                    p.decided = Some(Decided {
                        outcome,
                        event: event.as_ref().map(serde_json::to_string).transpose()?,
                    });
                    Ok(outcome)
                }) {
                    Ok(outcome) => {
                        overlay.add(seq, p, outcome);
                        remember(&mut self.filter, p, outcome);
                        Some(outcome)
                    }
                    Err(error) => return Err((reply, error)),
                }
            }
            Entry::Audit(_) => None,
        };
        self.next_seq += 1;
        let start = self.pending.framed.len();
        // Encoded straight into the group's buffer, which is reused from group to group.
        journal::frame_with(&mut self.pending.framed, seq, |buf| {
            let mut fields = Fields(std::mem::take(buf));
            entry.encode_into(&mut fields);
            *buf = fields.0;
        });
        self.pending.waiting.push(Waiting {
            reply,
            seq,
            outcome,
            start,
            len: self.pending.framed.len() - start,
        });
        self.pending.last = seq;
        Ok(())
    }

    /// A bigger filter once this one has taken all the keys it was sized for (rare: it is
    /// sized for twice the keys stored, at least a million). Appenders wait meanwhile.
    fn rebuild_filter(&mut self) {
        let rebuilt = (|| {
            let snapshot = self.reader.unchecked_transaction()?;
            let overlay = self.overlay.lock().unwrap_or_else(|p| p.into_inner());
            build_filter(&snapshot, &overlay)
        })();
        match rebuilt {
            Ok(filter) => self.filter = filter,
            Err(error) => tracing::warn!(%error, "cannot rebuild the key filter"),
        }
    }

    /// Takes back what a failed write and everything decided after it (every record from
    /// `first` on) put in the overlay: those senders are refused, and later decisions must
    /// not count on them.
    fn forget_from(&mut self, first: u64) {
        self.overlay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_from(first);
    }
}

/// Writes and fsyncs what the appenders framed, a group at a time, answers its senders and
/// hands the records to the applier. While it flushes, the next group gathers.
struct Flusher {
    shared: Arc<SharedLog>,
    /// The last group's buffer, emptied, for the next group (no regrowing it each time).
    spare: Vec<u8>,
    log: Journal,
    logged: Arc<AtomicU64>,
    apply: std::sync::mpsc::SyncSender<Queued>,
    /// Records in the last group written.
    last_group: usize,
}

impl Flusher {
    fn run(mut self) {
        loop {
            // Senders are queueing (a burst): gather a little longer, so each write and fsync
            // carries about three times the records. The kernel's share of a webhook is mostly
            // its fsync, and a steady trickle (groups of one or two) never waits.
            if self.last_group >= LINGER_AFTER {
                std::thread::sleep(LINGER);
            }
            let group = {
                let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                while state.pending.waiting.is_empty() && !state.closed {
                    state.flusher_waiting = true;
                    state = self
                        .shared
                        .flush
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                    state.flusher_waiting = false;
                }
                if state.pending.waiting.is_empty() {
                    return;
                }
                if state.filter.is_full() {
                    state.rebuild_filter();
                }
                let next = Group {
                    framed: std::mem::take(&mut self.spare),
                    ..Group::default()
                };
                std::mem::replace(&mut state.pending, next)
            };
            self.shared.room.notify_waiters();
            if !self.flush(group) {
                return;
            }
        }
    }

    /// False once the applier is gone (the store is closing).
    fn flush(&mut self, group: Group) -> bool {
        self.last_group = group.waiting.len();
        let (file, base) = match self.log.write(&group.framed, group.last) {
            Ok(written) => written,
            Err(error) => {
                let message = error.to_string();
                let later = {
                    let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    let later = std::mem::take(&mut state.pending);
                    if let Some(first) = group.waiting.first() {
                        state.forget_from(first.seq);
                    }
                    later
                };
                self.shared.room.notify_waiters();
                for w in group.waiting.into_iter().chain(later.waiting) {
                    w.reply.send(Err(StoreError::Join(format!(
                        "ingest log write failed: {message}"
                    ))));
                }
                return true;
            }
        };
        let fsync_started = Instant::now();
        if let Err(error) = file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on
            // disk is unknown, and retrying could report success for data that is gone.
            // Stopping is the only honest answer; the senders see no reply and retry, and
            // the log is read back at the next start.
            tracing::error!(%error, "ingest log fsync failed; stopping");
            std::process::abort();
        }
        let took = fsync_started.elapsed();
        if took >= SLOW_FSYNC {
            tracing::warn!(
                ms = took.as_millis() as u64,
                records = group.waiting.len(),
                "ingest log fsync was slow: these acknowledgements waited for the disk"
            );
        }
        let stats = &self.shared;
        stats.fsync_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        stats.fsyncs[fsync_bucket(took.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
        stats
            .records
            .fetch_add(group.waiting.len() as u64, Ordering::Relaxed);
        self.logged.fetch_max(group.last, Ordering::SeqCst);
        self.spare = group.framed;
        self.spare.clear();
        for w in group.waiting {
            w.reply.send(Ok(w.outcome));
            let queued = Queued {
                seq: w.seq,
                file: file.clone(),
                offset: base + w.start as u64,
                len: w.len,
            };
            if self.apply.send(queued).is_err() {
                tracing::error!("store applier stopped; the ingest log keeps what it missed");
                return false;
            }
        }
        true
    }
}

/// Applies logged records in large transactions (a burst costs a few commits, not one per
/// request), then lets the overlay, the read barrier and the log's segments go.
///
/// While webhooks keep arriving the applier only gathers: a failback burst is absorbed by
/// the log alone, and its records are applied once the flood pauses for `APPLY_QUIET`, once
/// `DEFER_MAX` records or `DEFER_AGE` have piled up, or as soon as a reader waits on the
/// tables (the delivery worker, the outbox tools, the audit log). Applying competes with
/// acknowledging for the same cores; after the burst it competes with nothing.
fn apply_loop(
    mut conn: Connection,
    records: std::sync::mpsc::Receiver<Queued>,
    overlay: Arc<Mutex<Overlay>>,
    applied: watch::Sender<u64>,
    hurry: Arc<AtomicBool>,
    enrich: Option<Arc<dyn Enrich>>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    lower_priority();
    while let Ok(first) = records.recv() {
        let mut gathered = vec![first];
        let started = Instant::now();
        let mut last_arrival = started;
        let mut closed = false;
        while keep_gathering(
            gathered.len(),
            started.elapsed(),
            last_arrival.elapsed(),
            hurry.load(Ordering::Acquire),
        ) {
            // Short waits: a reader's hurry is noticed within a couple of milliseconds.
            match records.recv_timeout(Duration::from_millis(2)) {
                Ok(record) => {
                    gathered.push(record);
                    while gathered.len() < DEFER_MAX {
                        match records.try_recv() {
                            Ok(record) => gathered.push(record),
                            Err(_) => break,
                        }
                    }
                    last_arrival = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        hurry.store(false, Ordering::Release);
        // Read back and applied a transaction at a time: the gathered records stay in the
        // log, not in memory.
        let mut gathered = gathered.into_iter().peekable();
        while gathered.peek().is_some() {
            let chunk: Vec<Queued> = gathered.by_ref().take(APPLY_MAX).collect();
            let mut batch = load_batch(chunk);
            // Without an `Enrich` the store refuses unmatched accepts: none can be here.
            if let Some(enrich) = enrich.as_deref() {
                complete(enrich, &mut batch);
            }
            let last = loop {
                match apply_batch(&mut conn, &batch) {
                    Ok(last) => break last,
                    Err(error) => {
                        // Everything in the batch is in the log: nothing is lost by waiting.
                        tracing::error!(%error, "cannot apply the ingest log to the store; retrying");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            };
            // A slice at a time: every accept takes this lock, and this thread runs at the
            // lowest priority, so holding it for a whole batch could leave acknowledgements
            // waiting for a thread the scheduler has put last. Records already in the tables
            // but still in the overlay are not counted twice (`Pending::enrichments`).
            for slice in batch.chunks(OVERLAY_SLICE) {
                let mut overlay = overlay.lock().unwrap_or_else(|p| p.into_inner());
                for record in slice {
                    overlay.remove(record);
                }
            }
            applied.send_replace(last);
        }
        if closed {
            break;
        }
    }
}

/// Matches and renders the accepts acknowledged unmatched, outside the apply transaction.
/// One that cannot be matched is still applied: its ticket and audit events are kept, with
/// the reason nothing is queued, rather than stopping the queue behind it.
fn complete(enrich: &dyn Enrich, batch: &mut [Logged]) {
    for record in batch.iter_mut() {
        let Entry::Accept(p) = &mut record.entry else {
            continue;
        };
        if p.matched {
            continue;
        }
        let outcome = p.decided.as_ref().map(|d| d.outcome);
        if outcome == Some(AcceptOutcome::DuplicateDelivery) {
            // Nothing of it is written but its audit event.
            p.matched = true;
            continue;
        }
        let queued = matches!(outcome, None | Some(AcceptOutcome::Stored));
        let result = serde_json::from_str::<crate::ticket::Ticket>(&p.ticket_json)
            .map_err(|e| EnrichError(format!("stored ticket is corrupt: {e}")))
            .and_then(|ticket| {
                let delivery = p.delivery.as_ref().filter(|_| queued).map(|d| Comment {
                    destination: &d.destination,
                    delivery_key: &d.key,
                });
                // A panic in the search or a template must cost this ticket its comment,
                // not the store its applier (every read waits on it).
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    enrich.enrich(&ticket, delivery)
                }))
                .unwrap_or_else(|_| Err(EnrichError("matching panicked".into())))
            })
            .and_then(|enriched| {
                let decided = serde_json::to_string(&enriched.decided)
                    .map_err(|e| EnrichError(e.to_string()))?;
                Ok((decided, enriched.body))
            });
        match result {
            Ok((decided, body)) => {
                p.events.insert(1.min(p.events.len()), decided);
                if let (Some(d), Some(body)) = (p.delivery.as_mut(), body) {
                    d.body = body;
                }
            }
            Err(error) => {
                tracing::error!(seq = record.seq, ticket = %p.ticket_id, %error, "cannot match an acknowledged ticket; it is stored, nothing is queued");
                let event = serde_json::to_string(&AuditEvent::NotEnqueued {
                    reason: format!("cannot match or render: {error}"),
                })
                .ok();
                match p.decided.as_mut() {
                    // It stays stored, as its sender was told; the event that would have
                    // said "queued" says why it is not.
                    Some(decided) if decided.outcome == AcceptOutcome::Stored => {
                        decided.event = event;
                    }
                    _ => p.events.extend(event),
                }
                p.delivery = None;
            }
        }
        p.matched = true;
    }
}

/// Whether the applier goes on gathering instead of applying what it holds.
fn keep_gathering(held: usize, oldest: Duration, quiet: Duration, reader_waits: bool) -> bool {
    held < DEFER_MAX && !reader_waits && oldest < DEFER_AGE && quiet < APPLY_QUIET
}

/// Acknowledging webhooks comes first: during a burst the applier takes what CPU is left and
/// catches up after (the log holds its backlog). It still gets a share, so deliveries keep
/// flowing while the burst lasts.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on this thread's own id.
        let result = unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, APPLY_NICE)
        };
        if result != 0 {
            tracing::debug!("cannot lower the store applier's priority");
        }
    }
}

/// Reads a batch back from the log. The bytes were fsync'd before their senders were
/// answered, so a record that cannot be read is a disk failure: retried, never skipped.
fn load_batch(queued: Vec<Queued>) -> Vec<Logged> {
    let mut batch = Vec::with_capacity(queued.len());
    for q in queued {
        loop {
            match q.load() {
                Ok(logged) => {
                    batch.push(logged);
                    break;
                }
                Err(error) => {
                    tracing::error!(seq = q.seq, %error, "cannot read back an ingest log record; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
    batch
}

/// Applies the records after the store's high-water mark in one transaction and moves the
/// mark; returns it. A record that fails on its own is reported and skipped, so one bad
/// record cannot stop the queue.
fn apply_batch(conn: &mut Connection, batch: &[Logged]) -> Result<u64, StoreError> {
    match apply_all(conn, batch, false) {
        Ok(last) => Ok(last),
        Err(error) => {
            tracing::warn!(%error, "apply failed; applying the batch record by record");
            apply_all(conn, batch, true)
        }
    }
}

fn apply_all(conn: &mut Connection, batch: &[Logged], isolate: bool) -> Result<u64, StoreError> {
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied = applied_seq(&tx)?;
    let mut last = applied;
    for record in batch.iter().filter(|r| r.seq > applied) {
        if isolate {
            let sp = tx.savepoint()?;
            match apply_one(&sp, record) {
                Ok(()) => sp.commit()?,
                Err(error) => {
                    tracing::error!(seq = record.seq, %error, "ingest log record cannot be applied; skipped");
                }
            }
        } else {
            apply_one(&tx, record)?;
        }
        last = last.max(record.seq);
    }
    tx.prepare_cached("UPDATE journal_applied SET seq = ?1 WHERE id = 1")?
        .execute([last as i64])?;
    tx.set_drop_behavior(rusqlite::DropBehavior::Commit);
    tx.commit()?;
    Ok(last)
}

fn apply_one(tx: &Connection, record: &Logged) -> Result<(), StoreError> {
    match &record.entry {
        Entry::Accept(p) => match &p.decided {
            Some(d) => write_accept(tx, p, d.outcome, d.event.as_deref())?,
            None => {
                accept_one(tx, p)?;
            }
        },
        Entry::Audit(a) => insert_audit_raw(tx, a.at_ms, a.ticket.as_deref(), &a.kind, &a.detail)?,
    }
    Ok(())
}

/// Decides against the tables and writes: the path of a store that does not own the log.
fn accept_one(tx: &Connection, p: &Prepared) -> Result<AcceptOutcome, StoreError> {
    let (outcome, event) = decide(&Tables(tx), p)?;
    let event = event.as_ref().map(serde_json::to_string).transpose()?;
    write_accept(tx, p, outcome, event.as_deref())?;
    Ok(outcome)
}

/// Writes a decided accept: the ticket (unless it is a duplicate delivery), the queued
/// delivery (if stored) and its audit events.
fn write_accept(
    tx: &Connection,
    p: &Prepared,
    outcome: AcceptOutcome,
    last: Option<&str>,
) -> Result<(), StoreError> {
    let ticket_id = Some(p.ticket_id.as_str());
    if outcome == AcceptOutcome::DuplicateDelivery {
        if let Some(event) = last {
            insert_audit_raw(tx, p.at_ms, ticket_id, "duplicate_delivery", event)?;
        }
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO tickets (source, delivery_id, ticket_id, signature, received_at, ticket)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (source, delivery_id) DO NOTHING",
    )?
    .execute(params![
        p.source,
        p.delivery_id,
        p.ticket_id,
        p.signature_key,
        p.at_ms,
        p.ticket_json,
    ])?;
    if let (AcceptOutcome::Stored, Some(d)) = (outcome, &p.delivery) {
        tx.prepare_cached(
            "INSERT INTO outbox (delivery_key, ticket_id, destination, target, body, state,
                                 next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6)",
        )?
        .execute(params![
            d.key,
            p.ticket_id,
            d.destination,
            d.target_json,
            d.body,
            p.at_ms
        ])?;
    }
    // The events of one accept go in one audit row: fewer rows and index entries per
    // webhook. `audit_log` reads them back one by one.
    let mut batch =
        String::with_capacity(p.events.iter().map(|d| d.len() + 1).sum::<usize>() + 256);
    batch.push('[');
    for (i, detail) in p.events.iter().enumerate() {
        if i > 0 {
            batch.push(',');
        }
        batch.push_str(detail);
    }
    if let Some(last) = last {
        if !p.events.is_empty() {
            batch.push(',');
        }
        batch.push_str(last);
    }
    batch.push(']');
    insert_audit_raw(tx, p.at_ms, ticket_id, BATCH_KIND, &batch)
}

/// The audit `kind` of a row that holds a JSON array of events.
const BATCH_KIND: &str = "batch";

fn insert_audit_raw(
    tx: &Connection,
    at: i64,
    ticket: Option<&str>,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO audit (at, ticket_id, kind, detail) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![at, ticket, kind, detail])?;
    Ok(())
}

fn insert_audit(
    tx: &Connection,
    at: i64,
    ticket: Option<&str>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    insert_audit_raw(tx, at, ticket, event.kind(), &serde_json::to_string(event)?)
}

const ROW_COLUMNS: &str = "id, delivery_key, ticket_id, destination, state, attempts, \
                           next_attempt_at, last_error, created_at";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        delivery_key: r.get(1)?,
        ticket: r.get(2)?,
        destination: r.get(3)?,
        state: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_ms: r.get(6)?,
        last_error: r.get(7)?,
        created_ms: r.get(8)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn defers_matching(&self) -> bool {
        self.inner.ingest.is_some() && self.inner.enrich.is_some()
    }

    async fn accept(&self, accepted: Accepted) -> Result<AcceptOutcome, StoreError> {
        if accepted.matching == Matching::Deferred && !self.defers_matching() {
            return Err(StoreError::Join(
                "this store cannot take an unmatched ticket".into(),
            ));
        }
        let prepared = Prepared::new(accepted)?;
        if self.inner.ingest.is_none() {
            return self
                .with_conn(move |conn| {
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let outcome = accept_one(&tx, &prepared)?;
                    tx.commit()?;
                    Ok(outcome)
                })
                .await;
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Entry::Accept(prepared), Reply::Accept(reply))
            .await?;
        answer
            .await
            .map_err(|_| StoreError::Join("ingest log writer stopped".into()))?
    }

    async fn claim_due(
        &self,
        destination: &str,
        now: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let items = self.claim(destination, now, limit, lease).await?;
        // Under a burst the applier may be behind: what it has applied is claimed at once,
        // and only an empty claim waits for the rest.
        if items.is_empty() && self.behind() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.caught_up()).await;
            return self.claim(destination, now, limit, lease).await;
        }
        Ok(items)
    }

    async fn settle(
        &self,
        item: &OutboxItem,
        settle: Settle,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let id = item.id;
        let lease = item.lease_until_ms;
        let ticket = item.ticket.to_string();
        self.with_conn(move |conn| {
            let now = now_ms();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            match &settle {
                Settle::Delivered => tx.execute(
                    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
                            claims = attempts + 1, uncertain = 0,
                            lease_until = 0, last_error = NULL, updated_at = ?2
                     WHERE id = ?1",
                    params![id, now],
                )?,
                Settle::RetryAt {
                    at_ms,
                    error,
                    uncertain,
                } => tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, claims = attempts + 1,
                            next_attempt_at = ?2, lease_until = 0, last_error = ?3,
                            uncertain = (uncertain OR ?5), updated_at = ?4
                     WHERE id = ?1 AND lease_until = ?6",
                    params![id, at_ms, error, now, uncertain, lease],
                )?,
                Settle::Dead { error } => tx.execute(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1,
                            claims = attempts + 1, lease_until = 0,
                            last_error = ?2, updated_at = ?3
                     WHERE id = ?1 AND lease_until = ?4",
                    params![id, error, now, lease],
                )?,
            };
            insert_audit(&tx, now, Some(&ticket), &event)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn pause(&self, destination: &str, until_ms: i64) -> Result<(), StoreError> {
        let destination = destination.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO pauses (destination, until) VALUES (?1, ?2)
                 ON CONFLICT (destination) DO UPDATE SET until = MAX(until, excluded.until)",
                params![destination, until_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn paused_until(&self, destination: &str) -> Result<i64, StoreError> {
        let destination = destination.to_string();
        self.with_conn(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT until FROM pauses WHERE destination = ?1",
                    [destination],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn release(&self, item: &OutboxItem) -> Result<(), StoreError> {
        let (id, lease, uncertain) = (item.id, item.lease_until_ms, item.uncertain);
        self.with_conn(move |conn| {
            conn.execute(
                // Given back unsent by this owner, but an earlier owner's unsettled claim
                // may have posted: an item claimed uncertain stays uncertain.
                "UPDATE outbox SET lease_until = 0, claims = attempts,
                                   uncertain = (uncertain OR ?3)
                 WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
                params![id, lease, uncertain],
            )?;
            Ok(())
        })
        .await
    }

    async fn record(&self, ticket: Option<&TicketId>, event: AuditEvent) -> Result<(), StoreError> {
        let row = AuditRow::new(ticket, &event)?;
        if self.inner.ingest.is_none() {
            return self
                .with_conn(move |conn| {
                    insert_audit_raw(
                        conn,
                        row.at_ms,
                        row.ticket.as_deref(),
                        &row.kind,
                        &row.detail,
                    )
                })
                .await;
        }
        // Through the log, so the audit log keeps the order things were acknowledged in.
        let (reply, answer) = oneshot::channel();
        self.submit(Entry::Audit(row), Reply::Audit(reply)).await?;
        answer
            .await
            .map_err(|_| StoreError::Join("ingest log writer stopped".into()))?
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.caught_up().await;
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT at, ticket_id, detail, kind FROM audit
                 WHERE (?1 IS NULL OR ticket_id = ?1) AND at >= ?2
                 ORDER BY id LIMIT ?3",
            )?;
            let limit = query.limit.map(|l| l as i64).unwrap_or(-1);
            let rows = stmt.query_map(
                params![query.ticket, query.since_ms.unwrap_or(0), limit],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (at_ms, ticket, detail, kind) = row?;
                let events: Vec<AuditEvent> = if kind == BATCH_KIND {
                    serde_json::from_str(&detail)?
                } else {
                    vec![serde_json::from_str(&detail)?]
                };
                for event in events {
                    out.push(AuditRecord {
                        at_ms,
                        ticket: ticket.clone(),
                        event,
                    });
                }
            }
            // The limit counted rows; a batch row holds several events.
            if let Some(limit) = query.limit {
                out.truncate(limit);
            }
            Ok(out)
        })
        .await
    }

    async fn counts(&self) -> Result<OutboxCounts, StoreError> {
        self.caught_up().await;
        self.counts_now().await
    }

    async fn counts_now(&self) -> Result<OutboxCounts, StoreError> {
        self.with_conn(|conn| {
            let mut counts = OutboxCounts::default();
            let mut stmt =
                conn.prepare_cached("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (state, n) = row?;
                let n = n.max(0) as u64;
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "delivered" => counts.delivered = n,
                    "dead" => counts.dead = n,
                    _ => {}
                }
            }
            Ok(counts)
        })
        .await
    }

    fn log_stats(&self) -> Option<LogStats> {
        self.inner.ingest.as_ref().map(|i| {
            let fsyncs: [u64; FSYNC_BUCKETS.len() + 1] =
                std::array::from_fn(|b| i.log.fsyncs[b].load(Ordering::Relaxed));
            LogStats {
                writes: fsyncs.iter().sum(),
                records: i.log.records.load(Ordering::Relaxed),
                fsync_seconds: Duration::from_nanos(i.log.fsync_nanos.load(Ordering::Relaxed))
                    .as_secs_f64(),
                fsyncs,
            }
        })
    }

    fn backlog(&self) -> u64 {
        self.inner.ingest.as_ref().map_or(0, |i| {
            i.logged
                .load(Ordering::SeqCst)
                .saturating_sub(*i.applied.borrow())
        })
    }

    async fn orphans(&self, known: &[&str]) -> Result<Vec<OutboxRow>, StoreError> {
        self.caught_up().await;
        let known: Vec<String> = known.iter().map(|k| k.to_string()).collect();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY id"
            ))?;
            let rows = stmt.query_map([], read_row)?;
            let mut out = Vec::new();
            for row in rows {
                let row = row?;
                if !known.contains(&row.destination) {
                    out.push(row);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list(
        &self,
        state: Option<ItemState>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.caught_up().await;
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM outbox WHERE (?1 IS NULL OR state = ?1)
                 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(
                params![state.map(ItemState::as_str), limit as i64],
                read_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn tickets_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredTicket>, StoreError> {
        self.caught_up().await;
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT received_at, ticket FROM tickets WHERE received_at >= ?1
                 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![since_ms, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (received_ms, json) = row?;
                out.push(StoredTicket {
                    received_ms,
                    ticket: serde_json::from_str(&json)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn requeue(&self, which: Requeue) -> Result<u64, StoreError> {
        self.caught_up().await;
        self.with_conn(move |conn| {
            let now = now_ms();
            let sql = "UPDATE outbox SET state = 'pending', attempts = 0, claims = 0,
                              next_attempt_at = ?1, lease_until = 0, updated_at = ?1
                       WHERE state = 'dead' AND (?2 IS NULL OR id = ?2)";
            let id = match which {
                Requeue::One(id) => Some(id),
                Requeue::AllDead => None,
            };
            Ok(conn.execute(sql, params![now, id])? as u64)
        })
        .await
    }
}

impl SqliteStore {
    async fn claim(
        &self,
        destination: &str,
        now: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let destination = destination.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let lease_until = now + lease.as_millis() as i64;
            let items = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, delivery_key, ticket_id, destination, target, body, attempts,
                            claims, uncertain, created_at
                     FROM outbox
                     WHERE destination = ?3 AND state = 'pending'
                       AND next_attempt_at <= ?1 AND lease_until <= ?1
                     ORDER BY next_attempt_at, id
                     LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now, limit as i64, destination], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, u32>(6)?,
                        r.get::<_, u32>(7)?,
                        r.get::<_, bool>(8)?,
                        r.get::<_, i64>(9)?,
                    ))
                })?;
                let mut items = Vec::new();
                for row in rows {
                    let (
                        id,
                        delivery_key,
                        ticket,
                        destination,
                        target,
                        body,
                        attempts,
                        claims,
                        uncertain,
                        created_ms,
                    ) = row?;
                    items.push(OutboxItem {
                        id,
                        delivery_key,
                        ticket: TicketId::parse(ticket)
                            .map_err(|e| StoreError::Join(format!("stored ticket id {e}")))?,
                        destination,
                        target: serde_json::from_str(&target)?,
                        body,
                        attempts,
                        uncertain: uncertain || claims > attempts,
                        created_ms,
                        lease_until_ms: lease_until,
                    });
                }
                items
            };
            for item in &items {
                tx.execute(
                    "UPDATE outbox SET lease_until = ?2, claims = attempts + 1 WHERE id = ?1",
                    params![item.id, lease_until],
                )?;
            }
            tx.commit()?;
            Ok(items)
        })
        .await
    }

    /// The body stored for a delivery key, for tests and `runlink audit`.
    pub async fn body_of(&self, delivery_key: &str) -> Result<Option<String>, StoreError> {
        self.caught_up().await;
        let key = delivery_key.to_string();
        self.with_conn(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT body FROM outbox WHERE delivery_key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Enriched;

    fn prepared(decided: Option<Decided>) -> Prepared {
        Prepared {
            at_ms: 1_764_000_000_000,
            source: "alertmanager".into(),
            delivery_id: "d-1".into(),
            ticket_id: "alertmanager:abc@2026".into(),
            signature_key: "HighErrorRate|checkout|error rate above <pct>".into(),
            ticket_json: r#"{"title":"Error rate above 5%"}"#.into(),
            events: vec![r#"{"event":"received"}"#.into(), "{}".into()],
            delivery: Some(PreparedDelivery {
                key: "k1".into(),
                destination: "github".into(),
                target_json: r#"{"github_issue":"acme/ops#1"}"#.into(),
                body: "Runbook: ünïcode ✓".into(),
            }),
            max_per_ticket: 3,
            decided,
            matched: true,
        }
    }

    #[test]
    fn log_records_read_back_as_written() {
        let entries = [
            Entry::Accept(prepared(None)),
            Entry::Accept(Prepared {
                matched: false,
                ..prepared(None)
            }),
            Entry::Accept(prepared(Some(Decided {
                outcome: AcceptOutcome::CapReached,
                event: Some(r#"{"event":"not_enqueued"}"#.into()),
            }))),
            Entry::Accept(Prepared {
                delivery: None,
                ..prepared(Some(Decided {
                    outcome: AcceptOutcome::Stored,
                    event: None,
                }))
            }),
            Entry::Audit(AuditRow {
                at_ms: 5,
                ticket: None,
                kind: "reloaded".into(),
                detail: "{}".into(),
            }),
        ];
        for (seq, entry) in entries.iter().enumerate() {
            let decoded = Entry::decode(seq as u64, &entry.encode()).unwrap();
            assert_eq!(&decoded, entry);
        }
    }

    #[test]
    fn a_cut_record_is_an_error_naming_its_sequence_number() {
        let bytes = Entry::Accept(prepared(None)).encode();
        let err = Entry::decode(42, &bytes[..bytes.len() - 3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("record 42"), "{err}");
    }

    #[test]
    fn the_overlay_forgets_only_the_record_that_was_applied() {
        let mut overlay = Overlay::default();
        let p = prepared(Some(Decided {
            outcome: AcceptOutcome::Stored,
            event: None,
        }));
        overlay.add(1, &p, AcceptOutcome::Stored);
        overlay.add(2, &p, AcceptOutcome::Stored);
        assert_eq!(overlay.per_ticket[&p.ticket_id], vec![1, 2]);
        overlay.remove(&Logged {
            seq: 1,
            entry: Entry::Accept(p.clone()),
        });
        // The slot and key now belong to record 2, still waiting.
        assert_eq!(overlay.deliveries[&delivery_slot(&p)], 2);
        assert_eq!(overlay.keys["k1"], 2);
        assert_eq!(overlay.per_ticket[&p.ticket_id], vec![2]);
        overlay.remove(&Logged {
            seq: 2,
            entry: Entry::Accept(p.clone()),
        });
        assert!(overlay.deliveries.is_empty() && overlay.keys.is_empty());
        assert!(overlay.per_ticket.is_empty());
    }

    #[test]
    fn a_failed_write_takes_its_records_and_later_ones_out_of_the_overlay() {
        let mut overlay = Overlay::default();
        let p = |n: u32| Prepared {
            delivery_id: format!("d-{n}"),
            delivery: Some(PreparedDelivery {
                key: format!("k{n}"),
                destination: "github".into(),
                target_json: "{}".into(),
                body: "b".into(),
            }),
            ..prepared(None)
        };
        for seq in 1..=4 {
            overlay.add(seq, &p(seq as u32), AcceptOutcome::Stored);
        }
        // Records 3 and 4 were decided, then the write of record 3's group failed.
        overlay.forget_from(3);
        assert_eq!(overlay.deliveries.len(), 2);
        assert!(overlay.keys.contains_key("k2") && !overlay.keys.contains_key("k3"));
        assert_eq!(overlay.per_ticket[&p(1).ticket_id], vec![1, 2]);
        overlay.forget_from(1);
        assert!(overlay.deliveries.is_empty() && overlay.keys.is_empty());
        assert!(overlay.per_ticket.is_empty());
    }

    #[test]
    fn the_applier_gathers_while_a_burst_lasts_and_applies_when_it_pauses() {
        let ms = Duration::from_millis;
        // Records still arriving: gather.
        assert!(keep_gathering(1_000, ms(800), ms(1), false));
        // Quiet for long enough, too many held, held too long, or a reader waiting: apply.
        assert!(!keep_gathering(1_000, ms(800), APPLY_QUIET, false));
        assert!(!keep_gathering(DEFER_MAX, ms(800), ms(1), false));
        assert!(!keep_gathering(1_000, DEFER_AGE, ms(1), false));
        assert!(!keep_gathering(1, ms(0), ms(0), true));
    }

    #[tokio::test]
    async fn the_applier_catches_up_on_its_own_once_the_log_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        for n in 0..3 {
            let event = AuditEvent::Received {
                source: "alertmanager".into(),
                delivery: format!("d-{n}"),
                title: "Error rate above 5%".into(),
            };
            store.record(None, event).await.unwrap();
        }
        // Acknowledged records wait for the applier, which starts once arrivals stop; no
        // read hurries it here.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.backlog() > 0 {
            assert!(Instant::now() < deadline, "never applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            store.audit_log(AuditQuery::default()).await.unwrap().len(),
            3
        );
    }

    #[test]
    fn the_outbox_rebuild_keeps_rows_and_its_state_check() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .unwrap();
        for (i, sql) in MIGRATIONS[..5].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as i64 + 1],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO outbox (delivery_key, ticket_id, destination, target, body, state,
                                 next_attempt_at, created_at, updated_at, claims)
             VALUES ('k1', 't1', 'github', '{}', 'body', 'dead', 7, 7, 7, 2)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let row: (String, String, i64) = conn
            .query_row("SELECT delivery_key, state, claims FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(row, ("k1".to_string(), "dead".to_string(), 2));
        assert!(
            conn.execute("UPDATE outbox SET state = 'lost'", [])
                .is_err()
        );
        // The point of the rebuild: an insert no longer opens a temporary B-tree.
        let ops: Vec<String> = conn
            .prepare(
                "EXPLAIN INSERT INTO outbox (delivery_key, ticket_id, destination, target, body,
                                             state, next_attempt_at, created_at, updated_at)
                 VALUES ('k2', 't2', 'github', '{}', 'b', 'pending', 1, 1, 1)",
            )
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(ops.iter().any(|op| op == "Insert"), "{ops:?}");
        assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{ops:?}");
    }

    #[tokio::test]
    async fn records_left_in_the_log_are_applied_once_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let json = |e: &AuditEvent| serde_json::to_string(e).unwrap();
        let received = AuditEvent::Received {
            source: "alertmanager".into(),
            delivery: "d-1".into(),
            title: "Error rate above 5%".into(),
        };
        let stored = Prepared {
            events: vec![json(&received)],
            decided: Some(Decided {
                outcome: AcceptOutcome::Stored,
                event: Some(json(&AuditEvent::Enqueued {
                    delivery_key: "k1".into(),
                    destination: "github".into(),
                })),
            }),
            ..prepared(None)
        };
        let duplicate = Prepared {
            decided: Some(Decided {
                outcome: AcceptOutcome::DuplicateDelivery,
                event: Some(json(&AuditEvent::DuplicateDelivery {
                    source: "alertmanager".into(),
                    delivery: "d-1".into(),
                })),
            }),
            ..stored.clone()
        };
        // A run that acknowledged both and died before applying either.
        let log_dir = journal::dir_for(&db);
        std::fs::create_dir_all(&log_dir).unwrap();
        let (mut log, _) = Journal::start(&log_dir, 1).unwrap();
        let mut framed = Vec::new();
        journal::frame(&mut framed, 1, &Entry::Accept(stored).encode());
        journal::frame(&mut framed, 2, &Entry::Accept(duplicate).encode());
        log.append(&framed, 2).unwrap();
        drop(log);

        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.counts().await.unwrap().pending, 1);
        let kinds: Vec<&str> = store
            .audit_log(AuditQuery::default())
            .await
            .unwrap()
            .iter()
            .map(|r| r.event.kind())
            .collect();
        assert_eq!(kinds, ["received", "enqueued", "duplicate_delivery"]);
        drop(store);

        // Applied means applied: a second start finds nothing left to do.
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.counts().await.unwrap().pending, 1);
        assert_eq!(
            store.audit_log(AuditQuery::default()).await.unwrap().len(),
            3
        );
    }

    /// Matches every ticket the same way, and renders its title with the delivery key.
    #[derive(Debug)]
    struct StubMatcher {
        fail: bool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl StubMatcher {
        fn new(fail: bool) -> Arc<Self> {
            Arc::new(StubMatcher {
                fail,
                calls: Default::default(),
            })
        }
    }

    impl Enrich for StubMatcher {
        fn enrich(
            &self,
            ticket: &crate::ticket::Ticket,
            delivery: Option<Comment<'_>>,
        ) -> Result<Enriched, EnrichError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(EnrichError("the index is gone".into()));
            }
            if ticket.title.contains("panic") {
                panic!("a template blew up");
            }
            Ok(Enriched {
                decided: AuditEvent::Decided {
                    signature: ticket.title.clone(),
                    confident: false,
                    candidates: Vec::new(),
                    index_version: "v1".into(),
                },
                body: delivery.map(|c| {
                    format!(
                        "{} for {} [{}]",
                        ticket.title, c.destination, c.delivery_key
                    )
                }),
            })
        }
    }

    /// A matcher whose runbooks do not load.
    #[derive(Debug)]
    struct Unready;

    impl Enrich for Unready {
        fn ready(&self) -> Result<(), EnrichError> {
            Err(EnrichError("runbooks.dir: no such directory".into()))
        }

        fn enrich(
            &self,
            _: &crate::ticket::Ticket,
            _: Option<Comment<'_>>,
        ) -> Result<Enriched, EnrichError> {
            Err(EnrichError("runbooks.dir: no such directory".into()))
        }
    }

    fn ticket(n: u32) -> crate::ticket::Ticket {
        use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, TicketId};
        crate::ticket::Ticket {
            id: TicketId::parse(format!("alertmanager:fp{n}")).unwrap(),
            source: SourceKind::Alertmanager,
            delivery: DeliveryId::parse(format!("d-{n}")).unwrap(),
            title: format!("Disk full {n}"),
            body: String::new(),
            labels: Default::default(),
            annotations: Default::default(),
            alertname: None,
            reply: Some(ReplyTarget::GithubIssue {
                owner: "acme".into(),
                repo: "ops".into(),
                number: u64::from(n),
            }),
            query: None,
        }
    }

    fn unmatched(n: u32) -> Accepted {
        let ticket = ticket(n);
        Accepted {
            events: vec![AuditEvent::Received {
                source: "alertmanager".into(),
                delivery: ticket.delivery.to_string(),
                title: ticket.title.clone(),
            }],
            delivery: Some(crate::outbox::NewDelivery {
                delivery_key: format!("k{n}"),
                destination: "github".into(),
                target: ticket.reply.clone().unwrap(),
                body: String::new(),
            }),
            signature_key: format!("sig{n}"),
            ticket,
            max_per_ticket: 3,
            matching: Matching::Deferred,
        }
    }

    async fn kinds(store: &SqliteStore, ticket: &str) -> Vec<String> {
        store
            .audit_log(AuditQuery {
                ticket: Some(ticket.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|r| r.event.kind().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_ticket_acknowledged_unmatched_reaches_the_tables_matched() {
        let dir = tempfile::tempdir().unwrap();
        let enrich = StubMatcher::new(false);
        let store = SqliteStore::open_with(&dir.path().join("s.db"), Some(enrich.clone())).unwrap();
        assert!(store.defers_matching());
        assert_eq!(
            store.accept(unmatched(1)).await.unwrap(),
            AcceptOutcome::Stored
        );
        // A redelivery is decided at once, and never matched: nothing of it is written but
        // its audit event.
        assert_eq!(
            store.accept(unmatched(1)).await.unwrap(),
            AcceptOutcome::DuplicateDelivery
        );
        assert_eq!(
            store.body_of("k1").await.unwrap().as_deref(),
            Some("Disk full 1 for github [k1]")
        );
        assert_eq!(
            kinds(&store, "alertmanager:fp1").await,
            ["received", "decided", "enqueued", "duplicate_delivery"]
        );
        assert_eq!(enrich.calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.counts().await.unwrap().pending, 1);
    }

    #[tokio::test]
    async fn a_ticket_that_cannot_be_matched_is_kept_with_the_reason_and_nothing_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open_with(&dir.path().join("s.db"), Some(StubMatcher::new(true))).unwrap();
        assert_eq!(
            store.accept(unmatched(2)).await.unwrap(),
            AcceptOutcome::Stored
        );
        assert_eq!(store.body_of("k2").await.unwrap(), None);
        assert_eq!(store.counts().await.unwrap().pending, 0);
        let log = store
            .audit_log(AuditQuery {
                ticket: Some("alertmanager:fp2".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let reasons: Vec<&str> = log
            .iter()
            .filter_map(|r| match &r.event {
                AuditEvent::NotEnqueued { reason } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasons.len(), 1, "{log:?}");
        assert!(reasons[0].contains("the index is gone"), "{}", reasons[0]);
        assert_eq!(
            kinds(&store, "alertmanager:fp2").await,
            ["received", "not_enqueued"]
        );
        assert_eq!(store.tickets_since(0, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_panic_while_matching_costs_the_ticket_its_comment_not_the_store_its_applier() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(&dir.path().join("s.db"), Some(StubMatcher::new(false)))
            .unwrap();
        let mut doomed = unmatched(5);
        doomed.ticket.title = "panic at the disco".into();
        assert_eq!(store.accept(doomed).await.unwrap(), AcceptOutcome::Stored);
        assert_eq!(
            store.accept(unmatched(6)).await.unwrap(),
            AcceptOutcome::Stored
        );
        assert_eq!(store.body_of("k5").await.unwrap(), None);
        assert_eq!(
            store.body_of("k6").await.unwrap().as_deref(),
            Some("Disk full 6 for github [k6]")
        );
        assert_eq!(
            kinds(&store, "alertmanager:fp5").await,
            ["received", "not_enqueued"]
        );
    }

    #[tokio::test]
    async fn a_store_without_a_matcher_takes_only_matched_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        assert!(!store.defers_matching());
        assert!(store.accept(unmatched(3)).await.is_err());
        assert_eq!(store.counts().await.unwrap().pending, 0);
    }

    #[tokio::test]
    async fn unmatched_records_left_in_the_log_are_matched_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut record = Prepared::new(unmatched(4)).unwrap();
        record.decided = Some(Decided {
            outcome: AcceptOutcome::Stored,
            event: Some(
                serde_json::to_string(&AuditEvent::Enqueued {
                    delivery_key: "k4".into(),
                    destination: "github".into(),
                })
                .unwrap(),
            ),
        });
        // A run that acknowledged it and died before applying it.
        let log_dir = journal::dir_for(&db);
        std::fs::create_dir_all(&log_dir).unwrap();
        let (mut log, _) = Journal::start(&log_dir, 1).unwrap();
        let mut framed = Vec::new();
        journal::frame(&mut framed, 1, &Entry::Accept(record).encode());
        log.append(&framed, 1).unwrap();
        drop(log);

        // Without the runbooks, or with runbooks that do not load, it cannot be applied,
        // and is left in the log for a start that has them.
        match SqliteStore::open(&db) {
            Err(StoreError::Unmatched(1)) => {}
            other => panic!("expected Unmatched(1), got {other:?}"),
        }
        match SqliteStore::open_with(&db, Some(Arc::new(Unready))) {
            Err(StoreError::CannotMatch { records: 1, reason }) => {
                assert!(reason.contains("no such directory"), "{reason}");
            }
            other => panic!("expected CannotMatch, got {other:?}"),
        }
        let enrich = StubMatcher::new(false);
        let store = SqliteStore::open_with(&db, Some(enrich.clone())).unwrap();
        assert_eq!(
            store.body_of("k4").await.unwrap().as_deref(),
            Some("Disk full 4 for github [k4]")
        );
        assert_eq!(
            kinds(&store, "alertmanager:fp4").await,
            ["received", "decided", "enqueued"]
        );
        assert_eq!(enrich.calls.load(Ordering::SeqCst), 1);
    }
}
