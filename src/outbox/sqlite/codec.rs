//! What an accept becomes before it is logged (`Prepared`, its JSON serialized once), how
//! a log record is framed and read back (`Entry`), and what the flusher hands the applier.

use super::*;

/// An accept with its JSON already serialized, on the request's own thread and outside the
/// log's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prepared {
    pub(super) at_ms: i64,
    pub(super) source: String,
    pub(super) delivery_id: String,
    pub(super) ticket_id: String,
    pub(super) signature_key: String,
    pub(super) ticket_json: String,
    /// The accept's audit events, serialized.
    pub(super) events: Vec<String>,
    pub(super) delivery: Option<PreparedDelivery>,
    pub(super) max_per_ticket: u32,
    /// Decided before it is appended to the log, so applying a record (or replaying it
    /// after a crash) repeats no lookups and cannot come to another answer.
    pub(super) decided: Option<Decided>,
    /// `false`: acknowledged before it was matched (`Matching::Deferred`); the applier
    /// completes it (`complete`) before the tables see it.
    pub(super) matched: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decided {
    pub(super) outcome: AcceptOutcome,
    /// The audit event that records the outcome, serialized.
    pub(super) event: Option<String>,
}

pub(super) fn outcome_code(outcome: AcceptOutcome) -> u64 {
    match outcome {
        AcceptOutcome::Stored => 1,
        AcceptOutcome::DuplicateDelivery => 2,
        AcceptOutcome::AlreadyEnriched => 3,
        AcceptOutcome::CapReached => 4,
    }
}

pub(super) fn outcome_of(code: u64) -> Option<AcceptOutcome> {
    Some(match code {
        1 => AcceptOutcome::Stored,
        2 => AcceptOutcome::DuplicateDelivery,
        3 => AcceptOutcome::AlreadyEnriched,
        4 => AcceptOutcome::CapReached,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PreparedDelivery {
    pub(super) key: String,
    pub(super) destination: String,
    pub(super) target_json: String,
    pub(super) body: String,
    pub(super) summary: String,
}

impl Prepared {
    pub(super) fn new(accepted: Accepted) -> Result<Self, StoreError> {
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
                summary: d.summary,
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
pub(super) struct AuditRow {
    pub(super) at_ms: i64,
    pub(super) ticket: Option<String>,
    pub(super) kind: String,
    pub(super) detail: String,
}

impl AuditRow {
    pub(super) fn new(ticket: Option<&TicketId>, event: &AuditEvent) -> Result<Self, StoreError> {
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
pub(super) enum Entry {
    Accept(Prepared),
    Audit(AuditRow),
}

pub(super) const ACCEPT_TAG: u64 = 1;
pub(super) const AUDIT_TAG: u64 = 2;
/// An accept laid out as `ACCEPT_TAG`'s, not matched yet: no decision among its events, and
/// an empty body.
pub(super) const UNMATCHED_TAG: u64 = 3;

impl Entry {
    #[cfg(test)]
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut f = Fields::default();
        self.encode_into(&mut f);
        f.0
    }

    pub(super) fn encode_into(&self, f: &mut Fields) {
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
                // Last, so records written before it existed still read.
                if let Some(d) = &p.delivery {
                    f.str(&d.summary);
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

    pub(super) fn decode(seq: u64, bytes: &[u8]) -> Result<Entry, JournalError> {
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
                        summary: String::new(),
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
                let mut delivery = delivery;
                if let Some(d) = delivery.as_mut()
                    && r.more()
                {
                    d.summary = r.str("summary")?;
                }
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
pub(super) struct Logged {
    pub(super) seq: u64,
    pub(super) entry: Entry,
}

impl Logged {
    pub(super) fn unmatched(&self) -> bool {
        matches!(&self.entry, Entry::Accept(p) if !p.matched)
    }

    /// What the sender of an accept was told (the overlay is keyed on it).
    pub(super) fn outcome(&self) -> Option<AcceptOutcome> {
        match &self.entry {
            Entry::Accept(p) => p.decided.as_ref().map(|d| d.outcome),
            Entry::Audit(_) => None,
        }
    }
}

/// A record on its way to the applier: where it is in the log, not its bytes, so a burst
/// that outruns the applier waits on disk rather than in memory.
pub(super) struct Queued {
    pub(super) seq: u64,
    pub(super) file: Arc<std::fs::File>,
    pub(super) offset: u64,
    pub(super) len: usize,
}

impl Queued {
    pub(super) fn load(&self) -> Result<Logged, StoreError> {
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

pub(super) enum Reply {
    Accept(oneshot::Sender<Result<AcceptOutcome, StoreError>>),
    Audit(oneshot::Sender<Result<(), StoreError>>),
}

impl Reply {
    pub(super) fn send(self, result: Result<Option<AcceptOutcome>, StoreError>) {
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
