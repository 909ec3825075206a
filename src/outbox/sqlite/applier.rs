//! The applier: takes logged records into the tables in large transactions, at low
//! priority, matching on the way those acknowledged unmatched (`Enrich`).

use super::*;
use crate::outbox::health::{WriteHealth, WritePart};
use crate::outbox::sql;

pub(super) fn applied_seq(conn: &Connection) -> Result<u64, StoreError> {
    // Asked once per group the writer decides and per batch applied: keep it prepared.
    let seq: i64 = conn
        .prepare_cached("SELECT seq FROM journal_applied WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(seq.max(0) as u64)
}

/// Applies logged records in large transactions (a burst costs a few commits, not one per
/// request), then lets the overlay, the read barrier and the log's segments go.
///
/// While webhooks keep arriving the applier only gathers: a failback burst is absorbed by
/// the log alone, and its records are applied once the flood pauses for `APPLY_QUIET`, once
/// `DEFER_MAX` records or `DEFER_AGE` have piled up, or as soon as a reader waits on the
/// tables (the delivery worker, the outbox tools, the audit log). Applying competes with
/// acknowledging for the same cores; after the burst it competes with nothing.
pub(super) struct Applier {
    pub(super) conn: Connection,
    pub(super) overlay: Arc<Mutex<Overlay>>,
    pub(super) applied: watch::Sender<u64>,
    pub(super) hurry: Arc<AtomicBool>,
    pub(super) enrich: Option<Arc<dyn Enrich>>,
    pub(super) closing: Arc<AtomicBool>,
    pub(super) health: Arc<WriteHealth>,
}

/// The first wait before a failed apply is tried again, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Applier {
    pub(super) fn run(mut self, records: std::sync::mpsc::Receiver<Queued>) {
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
                self.hurry.load(Ordering::Acquire),
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
            self.hurry.store(false, Ordering::Release);
            // Read back and applied a transaction at a time: the gathered records stay in
            // the log, not in memory.
            let mut gathered = gathered.into_iter().peekable();
            while gathered.peek().is_some() {
                let chunk: Vec<Queued> = gathered.by_ref().take(APPLY_MAX).collect();
                let Some(mut batch) = self.load_batch(chunk) else {
                    return;
                };
                // Without an `Enrich` the store refuses unmatched accepts: none can be here.
                if let Some(enrich) = self.enrich.as_deref() {
                    complete(enrich, &mut batch);
                }
                let Some(last) = self.apply_until_written(&batch) else {
                    return;
                };
                // A slice at a time: every accept takes this lock, and this thread runs at
                // the lowest priority, so holding it for a whole batch could leave
                // acknowledgements waiting for a thread the scheduler has put last. Records
                // already in the tables but still in the overlay are not counted twice
                // (`Pending::enrichments`).
                for slice in batch.chunks(OVERLAY_SLICE) {
                    let mut overlay = self.overlay.lock().unwrap_or_else(|p| p.into_inner());
                    for record in slice {
                        overlay.remove(record);
                    }
                }
                self.applied.send_replace(last);
            }
            if closed {
                break;
            }
        }
    }

    /// Applies a batch, retrying with growing waits while the tables cannot be written (a
    /// full disk): everything in the batch is in the log, so nothing is lost by waiting, and
    /// the first retry after space comes back succeeds. `None` when the store closes first:
    /// the records stay in the log and are applied at the next start, so shutdown is not
    /// held by a disk that stays full.
    fn apply_until_written(&mut self, batch: &[Logged]) -> Option<u64> {
        let health = self.health.clone();
        let written = until_done(
            &self.closing,
            || apply_batch(&mut self.conn, batch),
            |error| health.failed(WritePart::Tables, &crate::outbox::with_causes(error)),
        );
        match written {
            Some(_) => health.succeeded(WritePart::Tables),
            None => tracing::warn!(
                records = batch.len(),
                "store closing while its tables cannot be written: the ingest log keeps these records for the next start"
            ),
        }
        written
    }

    /// Reads a batch back from the log. The bytes were fsync'd before their senders were
    /// answered, so a record that cannot be read is a disk failure: retried, never skipped.
    /// `None` when the store closes first.
    fn load_batch(&self, queued: Vec<Queued>) -> Option<Vec<Logged>> {
        queued
            .into_iter()
            .map(|q| {
                until_done(&self.closing, || q.load(), |error| {
                    tracing::error!(seq = q.seq, %error, "cannot read back an ingest log record; retrying");
                })
            })
            .collect()
    }
}

/// Runs `attempt` until it succeeds, waiting after each failure (reported to `failed`)
/// 0.1 s, then twice as long each time up to 5 s. `None` once `closing` is set: the waits
/// are slept in short steps, so a closing store is noticed at once.
fn until_done<T, E>(
    closing: &AtomicBool,
    mut attempt: impl FnMut() -> Result<T, E>,
    mut failed: impl FnMut(&E),
) -> Option<T> {
    let mut wait = RETRY_FIRST;
    loop {
        match attempt() {
            Ok(done) => return Some(done),
            Err(error) => {
                failed(&error);
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if closing.load(Ordering::Acquire) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20).min(wait));
                }
                if closing.load(Ordering::Acquire) {
                    return None;
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Matches and renders the accepts acknowledged unmatched, outside the apply transaction.
/// One that cannot be matched is still applied: its ticket and audit events are kept, with
/// the reason nothing is queued, rather than stopping the queue behind it.
pub(super) fn complete(enrich: &dyn Enrich, batch: &mut [Logged]) {
    for record in batch.iter_mut() {
        let Entry::Accept(p) = &mut record.entry else {
            continue;
        };
        if p.matched {
            continue;
        }
        let outcome = p.decided.as_ref().map(|d| d.outcome);
        // A retried delivery writes nothing but its audit event, and a new delivery of a
        // ticket already enriched (a tracker echoing runlink's own comment) needs no new
        // decision: neither is matched.
        if matches!(
            outcome,
            Some(AcceptOutcome::DuplicateDelivery | AcceptOutcome::AlreadyEnriched)
        ) {
            p.matched = true;
            continue;
        }
        let queued = matches!(outcome, None | Some(AcceptOutcome::Stored));
        let result = serde_json::from_str::<crate::ticket::Ticket>(&p.ticket_json)
            .map_err(|e| EnrichError(format!("stored ticket is corrupt: {e}").into()))
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
                    .map_err(|e| EnrichError(Box::new(e)))?;
                Ok((decided, enriched.body, enriched.summary))
            });
        match result {
            Ok((decided, body, summary)) => {
                p.events.insert(1.min(p.events.len()), decided);
                if let (Some(d), Some(body)) = (p.delivery.as_mut(), body) {
                    d.body = body;
                    d.summary = summary;
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
pub(super) fn keep_gathering(
    held: usize,
    oldest: Duration,
    quiet: Duration,
    reader_waits: bool,
) -> bool {
    held < DEFER_MAX && !reader_waits && oldest < DEFER_AGE && quiet < APPLY_QUIET
}

/// Acknowledging webhooks comes first: during a burst the applier takes what CPU is left and
/// catches up after (the log holds its backlog). It still gets a share, so deliveries keep
/// flowing while the burst lasts.
pub(super) fn lower_priority() {
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

/// Applies the records after the store's high-water mark in one transaction and moves the
/// mark; returns it. A record that fails on its own is reported and skipped, so one bad
/// record cannot stop the queue.
pub(super) fn apply_batch(conn: &mut Connection, batch: &[Logged]) -> Result<u64, StoreError> {
    match apply_all(conn, batch, false) {
        Ok(last) => Ok(last),
        Err(error) => {
            tracing::warn!(%error, "apply failed; applying the batch record by record");
            apply_all(conn, batch, true)
        }
    }
}

pub(super) fn apply_all(
    conn: &mut Connection,
    batch: &[Logged],
    isolate: bool,
) -> Result<u64, StoreError> {
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied = applied_seq(&tx)?;
    let mut last = applied;
    for record in batch.iter().filter(|r| r.seq > applied) {
        if isolate {
            let sp = tx.savepoint()?;
            match apply_one(&sp, record) {
                Ok(()) => sp.commit()?,
                // A full disk, an I/O error or a lock says nothing about this record: the
                // batch is given up whole and applied again later; nothing acknowledged
                // is ever skipped for it.
                Err(error) if environmental(&error) => return Err(error),
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

/// Whether a failure comes from where the database lives rather than from the record.
pub(super) fn environmental(error: &StoreError) -> bool {
    use rusqlite::ErrorCode::*;
    match error {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
            failure.code,
            DiskFull
                | SystemIoFailure
                | DatabaseBusy
                | DatabaseLocked
                | ReadOnly
                | CannotOpen
                | OutOfMemory
                | FileLockingProtocolFailed
        ),
        _ => false,
    }
}

pub(super) fn apply_one(tx: &Connection, record: &Logged) -> Result<(), StoreError> {
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
pub(super) fn accept_one(tx: &Connection, p: &Prepared) -> Result<AcceptOutcome, StoreError> {
    let (outcome, event) = decide(&Tables(tx), p)?;
    let event = event.as_ref().map(serde_json::to_string).transpose()?;
    write_accept(tx, p, outcome, event.as_deref())?;
    Ok(outcome)
}

/// Writes a decided accept: the ticket (unless it is a duplicate delivery), the queued
/// delivery (if stored) and its audit events.
pub(super) fn write_accept(
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
                                 next_attempt_at, created_at, updated_at, summary)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6, ?7)
             ON CONFLICT (delivery_key) DO NOTHING",
        )?
        .execute(params![
            d.key,
            p.ticket_id,
            d.destination,
            d.target_json,
            d.body,
            p.at_ms,
            d.summary
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
pub(super) const BATCH_KIND: &str = "batch";

pub(super) fn insert_audit_raw(
    tx: &Connection,
    at: i64,
    ticket: Option<&str>,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(sql::INSERT_AUDIT.sqlite())?
        .execute(params![at, ticket, kind, detail])?;
    Ok(())
}

pub(super) fn insert_audit(
    tx: &Connection,
    at: i64,
    ticket: Option<&str>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    insert_audit_raw(tx, at, ticket, event.kind(), &serde_json::to_string(event)?)
}
