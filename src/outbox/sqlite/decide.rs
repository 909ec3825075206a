//! The dedup and cap decisions of an accept, made against the tables plus the records
//! logged and not applied yet (the overlay), with a Bloom filter so a new key costs no read.

use super::*;
use crate::outbox::decision::{self, AcceptKeys, Seen};

/// What the tables hold.
pub(super) struct Tables<'a>(pub(super) &'a Connection);

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
pub(super) struct Overlay {
    pub(super) deliveries: HashMap<String, u64>,
    pub(super) keys: HashMap<String, u64>,
    /// Sequence numbers of the queued enrichments of each ticket.
    pub(super) per_ticket: HashMap<String, Vec<u64>>,
}

pub(super) fn delivery_slot(p: &Prepared) -> String {
    format!("{}\u{0}{}", p.source, p.delivery_id)
}

impl Overlay {
    pub(super) fn add(&mut self, seq: u64, p: &Prepared, outcome: AcceptOutcome) {
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

    pub(super) fn forget_from(&mut self, first: u64) {
        self.deliveries.retain(|_, seq| *seq < first);
        self.keys.retain(|_, seq| *seq < first);
        self.per_ticket.retain(|_, seqs| {
            seqs.retain(|seq| *seq < first);
            !seqs.is_empty()
        });
    }

    pub(super) fn remove(&mut self, logged: &Logged) {
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
pub(super) struct Snapshot<'a> {
    pub(super) conn: &'a Connection,
    /// The log's high-water mark as of the snapshot, once begun.
    pub(super) applied: std::cell::Cell<Option<u64>>,
}

impl<'a> Snapshot<'a> {
    pub(super) fn new(conn: &'a Connection) -> Self {
        Snapshot {
            conn,
            applied: std::cell::Cell::new(None),
        }
    }

    pub(super) fn begin(&self) -> Result<(Tables<'a>, u64), StoreError> {
        if let Some(applied) = self.applied.get() {
            return Ok((Tables(self.conn), applied));
        }
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let applied = applied_seq(self.conn)?;
        self.applied.set(Some(applied));
        Ok((Tables(self.conn), applied))
    }

    pub(super) fn end(&self) {
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
pub(super) struct Pending<'a> {
    pub(super) tables: Snapshot<'a>,
    pub(super) overlay: &'a Overlay,
    /// Every key of the tables and the overlay: a key it has never seen needs no lookup.
    pub(super) filter: &'a KeyFilter,
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
pub(super) const SLOT_KEY: u8 = 1;
pub(super) const DELIVERY_KEY: u8 = 2;
pub(super) const TICKET_KEY: u8 = 3;

pub(super) fn remember(filter: &mut KeyFilter, p: &Prepared, outcome: AcceptOutcome) {
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
pub(super) fn build_filter(conn: &Connection, overlay: &Overlay) -> Result<KeyFilter, StoreError> {
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

/// The shared rule (`outbox::decision`) for one prepared accept. The log's appenders and the
/// applier both decide through here, so they cannot disagree.
pub(super) fn decide(
    seen: &impl Seen,
    p: &Prepared,
) -> Result<(AcceptOutcome, Option<AuditEvent>), StoreError> {
    decision::decide(
        seen,
        &AcceptKeys {
            source: &p.source,
            delivery_id: &p.delivery_id,
            ticket_id: &p.ticket_id,
            delivery: p
                .delivery
                .as_ref()
                .map(|d| (d.key.as_str(), d.destination.as_str())),
            max_per_ticket: p.max_per_ticket,
        },
    )
}
