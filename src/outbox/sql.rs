//! The statements and row mappings both stores share, written once. Statements are written
//! with SQLite's numbered parameters (`?1`); PostgreSQL gets the same text with `$1`.
//! Casts are spelled `CAST(x AS T)` and booleans `TRUE`/`FALSE`, which both read alike.

use super::{OutboxItem, OutboxRow, StoreError};
use crate::audit::AuditEvent;
use crate::ticket::TicketId;

/// One statement's text, in SQLite's spelling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Statement(&'static str);

impl Statement {
    pub(crate) const fn new(sql: &'static str) -> Self {
        Statement(sql)
    }

    pub(crate) fn sqlite(self) -> &'static str {
        self.0
    }

    /// `?N` becomes `$N`; nothing else changes.
    pub(crate) fn postgres(self) -> String {
        let mut out = String::with_capacity(self.0.len());
        let mut chars = self.0.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
                out.push('$');
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// The columns `outbox_row` reads, in its order.
macro_rules! row_columns {
    () => {
        "id, delivery_key, ticket_id, destination, state, attempts, next_attempt_at, \
         last_error, created_at"
    };
}

/// The columns `outbox_row` reads, for statements that are not shared.
pub(crate) const ROW_COLUMNS: &str = row_columns!();

/// The columns `claimed_item` reads, in its order.
pub(crate) const CLAIM_COLUMNS: &str = "id, delivery_key, ticket_id, destination, target, body, \
                                        attempts, claims, uncertain, created_at";

pub(crate) const SETTLE_DELIVERED: Statement = Statement(
    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
            claims = attempts + 1, uncertain = FALSE,
            lease_until = 0, last_error = NULL, updated_at = ?2
     WHERE id = ?1",
);

/// Only by the lease holder: a worker whose lease ran out must not undo its successor's.
pub(crate) const SETTLE_RETRY: Statement = Statement(
    "UPDATE outbox SET attempts = attempts + 1, claims = attempts + 1,
            next_attempt_at = ?2, lease_until = 0, last_error = ?3,
            uncertain = (uncertain OR ?5), updated_at = ?4
     WHERE id = ?1 AND lease_until = ?6",
);

pub(crate) const SETTLE_DEAD: Statement = Statement(
    "UPDATE outbox SET state = 'dead', attempts = attempts + 1,
            claims = attempts + 1, lease_until = 0,
            last_error = ?2, updated_at = ?3
     WHERE id = ?1 AND lease_until = ?4",
);

/// The lease holder is about to send: from here until a settle, a crash leaves the item
/// uncertain (more claims than attempts). A claim alone does not, since a worker that dies
/// while waiting for its turn has sent nothing.
pub(crate) const SENDING: Statement = Statement(
    "UPDATE outbox SET claims = attempts + 1
     WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
);

/// Comments the reply target of item ?3 got since ?4, or may have got (a send in flight, or
/// one whose outcome is unknown), other than ?3's own; then whether alerts are folded
/// into ?3 already. ?1 and ?2 are the destination and the target as stored.
pub(crate) const TARGET_LOAD: Statement = Statement(
    "SELECT (SELECT COUNT(*) FROM outbox
             WHERE destination = ?1 AND target = ?2 AND id <> ?3
               AND ((state = 'delivered' AND updated_at >= ?4)
                    OR (state = 'pending' AND (claims > attempts OR uncertain)))),
            EXISTS (SELECT 1 FROM outbox WHERE folded_into = ?3)",
);

/// Folds into ?3 every other pending item of its reply target that no other worker holds
/// (free, or under this claim's lease ?5).
pub(crate) const FOLD: Statement = Statement(
    "UPDATE outbox SET state = 'folded', folded_into = ?3, lease_until = 0, updated_at = ?4,
                       last_error = NULL
     WHERE destination = ?1 AND target = ?2 AND state = 'pending' AND id <> ?3
       AND (lease_until <= ?4 OR lease_until = ?5)
     RETURNING ticket_id, delivery_key",
);

/// The one-line summaries of the alerts folded into ?1, oldest first.
pub(crate) const FOLDED_SUMMARIES: Statement =
    Statement("SELECT summary, ticket_id FROM outbox WHERE folded_into = ?1 ORDER BY id");

/// Not posted: its reply target had its comments and the last one is already out.
pub(crate) const SETTLE_FOLDED: Statement = Statement(
    "UPDATE outbox SET state = 'folded', lease_until = 0, last_error = ?2, updated_at = ?3
     WHERE id = ?1 AND lease_until = ?4",
);

/// The audit event of an alert folded into `into`'s comment.
pub(crate) fn folded_into(delivery_key: String, destination: &str, into: &str) -> AuditEvent {
    AuditEvent::Folded {
        delivery_key,
        destination: destination.to_string(),
        into: Some(into.to_string()),
        reason: "its reply target reached its comment cap; listed in the last comment".into(),
    }
}

/// Given back unsent by this owner, but an earlier owner's unsettled claim may have posted:
/// an item claimed uncertain stays uncertain.
pub(crate) const RELEASE: Statement = Statement(
    "UPDATE outbox SET lease_until = 0, claims = attempts,
                       uncertain = (uncertain OR ?3)
     WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
);

pub(crate) const REQUEUE: Statement = Statement(
    "UPDATE outbox SET state = 'pending', attempts = 0, claims = 0,
            next_attempt_at = ?1, lease_until = 0, updated_at = ?1
     WHERE state = 'dead' AND (CAST(?2 AS BIGINT) IS NULL OR id = ?2)",
);

pub(crate) const LIST: Statement = Statement(concat!(
    "SELECT ",
    row_columns!(),
    " FROM outbox WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1) ORDER BY id LIMIT ?2"
));

pub(crate) const PENDING_ROWS: Statement = Statement(concat!(
    "SELECT ",
    row_columns!(),
    " FROM outbox WHERE state = 'pending' ORDER BY id"
));

pub(crate) const TICKETS_SINCE: Statement = Statement(
    "SELECT received_at, ticket FROM tickets WHERE received_at >= ?1 ORDER BY id LIMIT ?2",
);

/// A retried comment event (same source and delivery) records nothing and returns no row.
pub(crate) const INSERT_FEEDBACK: Statement = Statement(
    "INSERT INTO feedback (at, source, delivery_id, ticket_id, kind, record)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (source, delivery_id) DO NOTHING
     RETURNING id",
);

pub(crate) const FEEDBACK_SINCE: Statement =
    Statement("SELECT id, record, forgotten_at FROM feedback WHERE at >= ?1 ORDER BY id");

pub(crate) const FORGET_FEEDBACK: Statement =
    Statement("UPDATE feedback SET forgotten_at = ?2 WHERE id = ?1 AND forgotten_at IS NULL");

/// The ticket as its latest delivery described it.
pub(crate) const TICKET_BY_ID: Statement = Statement(
    "SELECT received_at, ticket FROM tickets
     WHERE id = (SELECT max(id) FROM tickets WHERE ticket_id = ?1)",
);

/// A comment that answers no webhook: a reply to an operator's command.
pub(crate) const INSERT_REPLY: Statement = Statement(
    "INSERT INTO outbox (delivery_key, ticket_id, destination, target, body, state,
                         next_attempt_at, created_at, updated_at, summary)
     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6, ?7)
     ON CONFLICT (delivery_key) DO NOTHING",
);

pub(crate) const CANARY_STATE: Statement = Statement("SELECT state FROM canary WHERE version = ?1");

pub(crate) const CANARY_MARK: Statement = Statement(
    "INSERT INTO canary (version, state, at) VALUES (?1, ?2, ?3)
     ON CONFLICT (version) DO UPDATE SET state = excluded.state, at = excluded.at",
);

pub(crate) const DELIVERY_BY_KEY: Statement =
    Statement("SELECT state, body FROM outbox WHERE delivery_key = ?1");

/// A feedback row from `FEEDBACK_SINCE`'s columns.
pub(crate) fn feedback_row(
    id: i64,
    record: &str,
    forgotten_ms: Option<i64>,
) -> Result<crate::feedback::FeedbackRow, StoreError> {
    Ok(crate::feedback::FeedbackRow {
        id,
        feedback: serde_json::from_str(record)?,
        forgotten_ms,
    })
}

pub(crate) const INSERT_AUDIT: Statement =
    Statement("INSERT INTO audit (at, ticket_id, kind, detail) VALUES (?1, ?2, ?3, ?4)");

pub(crate) const PAUSED_UNTIL: Statement =
    Statement("SELECT until FROM pauses WHERE destination = ?1");

pub(crate) const COUNTS: Statement = Statement("SELECT state, COUNT(*) FROM outbox GROUP BY state");

/// A row of either database, read by position.
pub(crate) trait Columns {
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn maybe_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn flag(&self, i: usize) -> Result<bool, StoreError>;
}

fn count(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

/// An outbox row as the operator tools show it, from `row_columns!()`.
pub(crate) fn outbox_row(r: &impl Columns) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        id: r.int(0)?,
        delivery_key: r.text(1)?,
        ticket: r.text(2)?,
        destination: r.text(3)?,
        state: r.text(4)?,
        attempts: count(r.int(5)?),
        next_attempt_ms: r.int(6)?,
        last_error: r.maybe_text(7)?,
        created_ms: r.int(8)?,
    })
}

/// A claimed item, from `CLAIM_COLUMNS`. An earlier claim that started sending and was
/// never settled (more claims than attempts, see `SENDING`) may have posted: the item is
/// uncertain.
pub(crate) fn claimed_item(
    r: &impl Columns,
    lease_until_ms: i64,
) -> Result<OutboxItem, StoreError> {
    let attempts = count(r.int(6)?);
    let claims = count(r.int(7)?);
    Ok(OutboxItem {
        id: r.int(0)?,
        delivery_key: r.text(1)?,
        ticket: TicketId::parse(r.text(2)?)
            .map_err(|e| StoreError::Join(format!("stored ticket id {e}")))?,
        destination: r.text(3)?,
        target: serde_json::from_str(&r.text(4)?)?,
        body: r.text(5)?,
        attempts,
        uncertain: r.flag(8)? || claims > attempts,
        created_ms: r.int(9)?,
        lease_until_ms,
    })
}

impl Columns for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.get(i)?)
    }
    fn maybe_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.get(i)?)
    }
}

impl Columns for tokio_postgres::Row {
    /// Counters are `INTEGER` there, ids and times `BIGINT`.
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        if self.columns()[i].type_() == &tokio_postgres::types::Type::INT4 {
            Ok(i64::from(self.try_get::<_, i32>(i)?))
        } else {
            Ok(self.try_get(i)?)
        }
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn maybe_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.try_get(i)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_are_respelled_for_postgres_and_nothing_else() {
        assert_eq!(
            Statement("SELECT '?' FROM t WHERE a = ?1 AND b = ?12").postgres(),
            "SELECT '?' FROM t WHERE a = $1 AND b = $12"
        );
    }
}
