//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a commit is
//! on disk before the webhook is answered.
//!
//! Accepts go through one writer thread that commits them in groups: during a burst, every
//! request that arrived while the previous fsync ran shares the next one. Each request is
//! answered only when its group is durable. Everything else runs on tokio's blocking pool
//! behind a second connection.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    AcceptOutcome, Accepted, AuditQuery, ItemState, OutboxCounts, OutboxItem, OutboxRow, Requeue,
    Settle, Store, StoreError, StoredTicket, now_ms,
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
];

const PAGE_SIZE: i64 = 1024;

/// How many accepts one group commit takes at most.
const GROUP_MAX: usize = 512;

type Job = (Prepared, oneshot::Sender<Result<AcceptOutcome, StoreError>>);

/// An accept with its JSON already serialized: that work happens on the request's own
/// thread, so the single writer thread only runs SQL.
struct Prepared {
    accepted: Accepted,
    ticket_json: String,
    /// The accept's audit events, serialized.
    events: Vec<String>,
    target_json: Option<String>,
}

impl Prepared {
    fn new(accepted: Accepted) -> Result<Self, StoreError> {
        let ticket_json = serde_json::to_string(&accepted.ticket)?;
        let events = accepted
            .events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let target_json = accepted
            .delivery
            .as_ref()
            .map(|d| serde_json::to_string(&d.target))
            .transpose()?;
        Ok(Prepared {
            accepted,
            ticket_json,
            events,
            target_json,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    writer: mpsc::Sender<Job>,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // Takes effect only on a new, empty file. Every commit writes each page it touched to
    // the WAL in full, and the unique indexes (delivery ids, delivery keys, ticket ids) are
    // hit at random: smaller pages mean far fewer bytes written per accepted webhook.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let writer_conn = open_connection(path)?;
        // Checkpoints run beside the writer, not inside its commits: an automatic checkpoint
        // would stall every request of the group that triggered it.
        writer_conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoint_conn = open_connection(path)?;
        let (writer, jobs) = mpsc::channel::<Job>(GROUP_MAX * 4);
        let spawn_err = |source| StoreError::Dir {
            path: "store thread".into(),
            source,
        };
        std::thread::Builder::new()
            .name("runlink-store-writer".into())
            .spawn(move || group_commit_loop(writer_conn, jobs))
            .map_err(spawn_err)?;
        let alive = writer.downgrade();
        std::thread::Builder::new()
            .name("runlink-store-checkpoint".into())
            .spawn(move || {
                // Runs while the store is in use; a PASSIVE checkpoint never blocks writers.
                while alive.upgrade().is_some() {
                    std::thread::sleep(Duration::from_millis(500));
                    if let Err(error) =
                        checkpoint_conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                    {
                        tracing::warn!(%error, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(spawn_err)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            writer,
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another store call must not make the store unusable: the connection
            // itself is still consistent (SQLite rolled back the open transaction).
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }
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

/// Takes every accept that is waiting, writes them in one transaction (each in its own
/// savepoint, so one bad record fails alone), commits once, then answers them all.
fn group_commit_loop(mut conn: Connection, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results = write_group(&mut conn, &group);
        match results {
            Ok(outcomes) => {
                for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                let message = error.to_string();
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Join(format!(
                        "group commit failed: {message}"
                    ))));
                }
            }
        }
    }
}

fn write_group(
    conn: &mut Connection,
    group: &[Job],
) -> Result<Vec<Result<AcceptOutcome, StoreError>>, StoreError> {
    let now = now_ms();
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(group.len());
    for (prepared, _) in group {
        let mut sp = tx.savepoint()?;
        match accept_one(&sp, prepared, now) {
            Ok(outcome) => {
                sp.commit()?;
                outcomes.push(Ok(outcome));
            }
            Err(error) => {
                sp.rollback()?;
                drop(sp);
                outcomes.push(Err(error));
            }
        }
    }
    tx.set_drop_behavior(rusqlite::DropBehavior::Commit);
    tx.commit()?;
    Ok(outcomes)
}

fn accept_one(
    tx: &rusqlite::Savepoint<'_>,
    prepared: &Prepared,
    now: i64,
) -> Result<AcceptOutcome, StoreError> {
    let accepted = &prepared.accepted;
    let ticket = &accepted.ticket;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO tickets (source, delivery_id, ticket_id, signature, received_at, ticket)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (source, delivery_id) DO NOTHING",
        )?
        .execute(params![
            ticket.source.as_str(),
            ticket.delivery.as_str(),
            ticket.id.as_str(),
            accepted.signature_key,
            now,
            prepared.ticket_json,
        ])?;
    let ticket_id = Some(ticket.id.as_str());
    if inserted == 0 {
        insert_audit(
            tx,
            now,
            ticket_id,
            &AuditEvent::DuplicateDelivery {
                source: ticket.source.to_string(),
                delivery: ticket.delivery.to_string(),
            },
        )?;
        return Ok(AcceptOutcome::DuplicateDelivery);
    }
    let (outcome, last) = enqueue(tx, accepted, prepared, now)?;
    // The events of one accept go in one audit row: fewer rows and index entries per
    // webhook is what keeps the single writer fast. `audit_log` reads them back one by one.
    let mut batch =
        String::with_capacity(prepared.events.iter().map(|d| d.len() + 1).sum::<usize>() + 256);
    batch.push('[');
    for (i, detail) in prepared.events.iter().enumerate() {
        if i > 0 {
            batch.push(',');
        }
        batch.push_str(detail);
    }
    if let Some(last) = last {
        if !prepared.events.is_empty() {
            batch.push(',');
        }
        batch.push_str(&serde_json::to_string(&last)?);
    }
    batch.push(']');
    insert_audit_raw(tx, now, ticket_id, BATCH_KIND, &batch)?;
    Ok(outcome)
}

/// The audit `kind` of a row that holds a JSON array of events.
const BATCH_KIND: &str = "batch";

/// Queues the delivery unless it is already queued or the ticket is at its cap; returns the
/// outcome and the event that records it.
fn enqueue(
    tx: &rusqlite::Savepoint<'_>,
    accepted: &Accepted,
    prepared: &Prepared,
    now: i64,
) -> Result<(AcceptOutcome, Option<AuditEvent>), StoreError> {
    let ticket = &accepted.ticket;
    let Some(delivery) = &accepted.delivery else {
        return Ok((AcceptOutcome::Stored, None));
    };
    let exists: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE delivery_key = ?1)")?
        .query_row([&delivery.delivery_key], |r| r.get(0))?;
    if exists {
        let event = AuditEvent::AlreadyEnriched {
            delivery_key: delivery.delivery_key.clone(),
        };
        return Ok((AcceptOutcome::AlreadyEnriched, Some(event)));
    }
    let existing: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM outbox WHERE ticket_id = ?1")?
        .query_row([ticket.id.as_str()], |r| r.get(0))?;
    if existing >= i64::from(accepted.max_per_ticket) {
        let event = AuditEvent::NotEnqueued {
            reason: format!(
                "ticket already has {existing} enrichments (cap {})",
                accepted.max_per_ticket
            ),
        };
        return Ok((AcceptOutcome::CapReached, Some(event)));
    }
    tx.prepare_cached(
        "INSERT INTO outbox (delivery_key, ticket_id, destination, target, body, state,
                             next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6)",
    )?
    .execute(params![
        delivery.delivery_key,
        ticket.id.as_str(),
        delivery.destination,
        prepared.target_json.as_deref().unwrap_or("null"),
        delivery.body,
        now,
    ])?;
    let event = AuditEvent::Enqueued {
        delivery_key: delivery.delivery_key.clone(),
        destination: delivery.destination.clone(),
    };
    Ok((AcceptOutcome::Stored, Some(event)))
}

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
    tx.prepare_cached("INSERT INTO audit (at, ticket_id, kind, detail) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            at,
            ticket,
            event.kind(),
            serde_json::to_string(event)?
        ])?;
    Ok(())
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
    async fn accept(&self, accepted: Accepted) -> Result<AcceptOutcome, StoreError> {
        let prepared = Prepared::new(accepted)?;
        let (reply, answer) = oneshot::channel();
        // The channel is bounded: under a burst, senders wait here for room (backpressure
        // towards the HTTP layer).
        self.writer
            .send((prepared, reply))
            .await
            .map_err(|_| StoreError::Join("store writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Join("store writer stopped".into()))?
    }

    async fn claim_due(
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
        let (id, lease) = (item.id, item.lease_until_ms);
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE outbox SET lease_until = 0, claims = attempts
                 WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
                params![id, lease],
            )?;
            Ok(())
        })
        .await
    }

    async fn record(&self, ticket: Option<&TicketId>, event: AuditEvent) -> Result<(), StoreError> {
        let ticket = ticket.map(|t| t.to_string());
        self.with_conn(move |conn| {
            insert_audit(conn, now_ms(), ticket.as_deref(), &event)?;
            Ok(())
        })
        .await
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
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

    async fn orphans(&self, known: &[&str]) -> Result<Vec<OutboxRow>, StoreError> {
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
    /// The body stored for a delivery key, for tests and `runlink audit`.
    pub async fn body_of(&self, delivery_key: &str) -> Result<Option<String>, StoreError> {
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
