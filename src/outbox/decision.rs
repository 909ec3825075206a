//! The dedup and cap rule of an accept, and the audit events that record each outcome: what
//! every store decides, written once. The SQLite store runs `decide` against its tables and
//! the records its log holds; PostgreSQL runs the same rule next to the data (one round trip
//! per webhook, in `runlink_accept`) with the event texts made here.

use super::{AcceptOutcome, StoreError};
use crate::audit::AuditEvent;

/// What the rule looks at in one accept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptKeys<'a> {
    pub(crate) source: &'a str,
    pub(crate) delivery_id: &'a str,
    pub(crate) ticket_id: &'a str,
    /// The delivery key and destination, when a comment is to be queued.
    pub(crate) delivery: Option<(&'a str, &'a str)>,
    pub(crate) max_per_ticket: u32,
}

/// What is already stored, as far as the rule needs to know.
pub(crate) trait Seen {
    fn delivery(&self, source: &str, delivery_id: &str) -> Result<bool, StoreError>;
    fn key(&self, delivery_key: &str) -> Result<bool, StoreError>;
    fn enrichments(&self, ticket_id: &str) -> Result<i64, StoreError>;
}

/// A retried delivery stores nothing new; a new delivery of a ticket whose comment is already
/// queued or posted queues nothing; a ticket at its cap of comments queues nothing. Each
/// outcome but a plain store without a comment leaves an audit event.
pub(crate) fn decide(
    seen: &impl Seen,
    keys: &AcceptKeys<'_>,
) -> Result<(AcceptOutcome, Option<AuditEvent>), StoreError> {
    if seen.delivery(keys.source, keys.delivery_id)? {
        return Ok((
            AcceptOutcome::DuplicateDelivery,
            Some(duplicate_delivery(keys)),
        ));
    }
    let Some((key, destination)) = keys.delivery else {
        return Ok((AcceptOutcome::Stored, None));
    };
    if seen.key(key)? {
        return Ok((AcceptOutcome::AlreadyEnriched, Some(already_enriched(key))));
    }
    let existing = seen.enrichments(keys.ticket_id)?;
    if existing >= i64::from(keys.max_per_ticket) {
        return Ok((
            AcceptOutcome::CapReached,
            Some(cap_reached(existing, keys.max_per_ticket)),
        ));
    }
    Ok((AcceptOutcome::Stored, Some(enqueued(key, destination))))
}

pub(crate) fn duplicate_delivery(keys: &AcceptKeys<'_>) -> AuditEvent {
    AuditEvent::DuplicateDelivery {
        source: keys.source.to_string(),
        delivery: keys.delivery_id.to_string(),
    }
}

pub(crate) fn already_enriched(delivery_key: &str) -> AuditEvent {
    AuditEvent::AlreadyEnriched {
        delivery_key: delivery_key.to_string(),
    }
}

/// `existing` is a count, or a placeholder a database fills in (`CAP_EXISTING`).
pub(crate) fn cap_reached(existing: impl std::fmt::Display, cap: u32) -> AuditEvent {
    AuditEvent::NotEnqueued {
        reason: format!("ticket already has {existing} enrichments (cap {cap})"),
    }
}

/// Where `cap_reached` leaves the count for a store that counts in SQL.
pub(crate) const CAP_EXISTING: &str = "{existing}";

pub(crate) fn enqueued(delivery_key: &str, destination: &str) -> AuditEvent {
    AuditEvent::Enqueued {
        delivery_key: delivery_key.to_string(),
        destination: destination.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Stored {
        delivery: bool,
        key: bool,
        enrichments: i64,
    }

    impl Seen for Stored {
        fn delivery(&self, _: &str, _: &str) -> Result<bool, StoreError> {
            Ok(self.delivery)
        }
        fn key(&self, _: &str) -> Result<bool, StoreError> {
            Ok(self.key)
        }
        fn enrichments(&self, _: &str) -> Result<i64, StoreError> {
            Ok(self.enrichments)
        }
    }

    fn keys(delivery: Option<(&'static str, &'static str)>) -> AcceptKeys<'static> {
        AcceptKeys {
            source: "github",
            delivery_id: "d-1",
            ticket_id: "github:acme/ops#1",
            delivery,
            max_per_ticket: 2,
        }
    }

    fn outcome(seen: Stored, delivery: Option<(&'static str, &'static str)>) -> AcceptOutcome {
        decide(&seen, &keys(delivery)).unwrap().0
    }

    #[test]
    fn the_rule_checks_the_delivery_then_the_key_then_the_cap() {
        let fresh = || Stored {
            delivery: false,
            key: false,
            enrichments: 0,
        };
        let comment = Some(("k1", "github"));
        assert_eq!(outcome(fresh(), comment), AcceptOutcome::Stored);
        assert_eq!(outcome(fresh(), None), AcceptOutcome::Stored);
        let retried = Stored {
            delivery: true,
            key: true,
            ..fresh()
        };
        assert_eq!(outcome(retried, comment), AcceptOutcome::DuplicateDelivery);
        let echoed = Stored {
            key: true,
            enrichments: 5,
            ..fresh()
        };
        assert_eq!(outcome(echoed, comment), AcceptOutcome::AlreadyEnriched);
        let capped = Stored {
            enrichments: 2,
            ..fresh()
        };
        assert_eq!(outcome(capped, comment), AcceptOutcome::CapReached);
        let below = Stored {
            enrichments: 1,
            ..fresh()
        };
        assert_eq!(outcome(below, comment), AcceptOutcome::Stored);
    }

    #[test]
    fn the_cap_event_reads_the_same_filled_in_here_or_by_the_database() {
        let here = serde_json::to_string(&cap_reached(3, 3)).unwrap();
        let template = serde_json::to_string(&cap_reached(CAP_EXISTING, 3)).unwrap();
        assert_eq!(here, template.replace(CAP_EXISTING, "3"));
    }
}
