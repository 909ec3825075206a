//! Operators' feedback and the replies it causes: small, rare writes that go straight to the
//! tables (durable when the call returns), not through the ingest log.

use super::*;
use crate::feedback::{Feedback, FeedbackRow};
use crate::outbox::{NewDelivery, sql};

impl SqliteStore {
    pub(super) async fn insert_feedback(
        &self,
        feedback: &Feedback,
    ) -> Result<Option<i64>, StoreError> {
        let record = serde_json::to_string(feedback)?;
        let feedback = feedback.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let id: Option<i64> = tx
                .prepare_cached(sql::INSERT_FEEDBACK.sqlite())?
                .query_row(
                    params![
                        feedback.at_ms,
                        feedback.source,
                        feedback.delivery,
                        feedback.ticket,
                        feedback.kind.as_str(),
                        record
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = id {
                insert_audit(
                    &tx,
                    feedback.at_ms,
                    Some(&feedback.ticket),
                    &crate::feedback::audit_event(&feedback, id),
                )?;
            }
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    pub(super) async fn select_feedback(
        &self,
        since_ms: i64,
    ) -> Result<Vec<FeedbackRow>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(sql::FEEDBACK_SINCE.sqlite())?;
            let rows = stmt.query_map(params![since_ms], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, record, forgotten) = row?;
                out.push(sql::feedback_row(id, &record, forgotten)?);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn set_feedback_aside(&self, id: i64) -> Result<bool, StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now_ms();
            let changed = tx
                .prepare_cached(sql::FORGET_FEEDBACK.sqlite())?
                .execute(params![id, now])?;
            if changed > 0 {
                insert_audit(&tx, now, None, &AuditEvent::FeedbackForgotten { id })?;
            }
            tx.commit()?;
            Ok(changed > 0)
        })
        .await
    }

    pub(super) async fn select_ticket(
        &self,
        id: &TicketId,
    ) -> Result<Option<StoredTicket>, StoreError> {
        self.caught_up().await;
        let id = id.to_string();
        self.with_conn(move |conn| {
            let row = conn
                .prepare_cached(sql::TICKET_BY_ID.sqlite())?
                .query_row(params![id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?;
            row.map(|(received_ms, json)| {
                Ok(StoredTicket {
                    received_ms,
                    ticket: serde_json::from_str(&json)?,
                })
            })
            .transpose()
        })
        .await
    }

    pub(super) async fn insert_reply(
        &self,
        ticket: &TicketId,
        delivery: NewDelivery,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        let ticket = ticket.to_string();
        let target = serde_json::to_string(&delivery.target)?;
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now_ms();
            let inserted = tx
                .prepare_cached(sql::INSERT_REPLY.sqlite())?
                .execute(params![
                    delivery.delivery_key,
                    ticket,
                    delivery.destination,
                    target,
                    delivery.body,
                    now,
                    delivery.summary
                ])?;
            if inserted > 0 {
                insert_audit(&tx, now, Some(&ticket), &event)?;
            }
            tx.commit()?;
            Ok(inserted > 0)
        })
        .await
    }
}

/// The canary's shared state and the probe sink's reads: rare, small, straight to the tables.
impl SqliteStore {
    pub(super) async fn select_canary(&self, version: &str) -> Result<Option<String>, StoreError> {
        let version = version.to_string();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(sql::CANARY_STATE.sqlite())?
                .query_row(params![version], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    pub(super) async fn upsert_canary(&self, version: &str, state: &str) -> Result<(), StoreError> {
        let (version, state) = (version.to_string(), state.to_string());
        self.with_conn(move |conn| {
            conn.prepare_cached(sql::CANARY_MARK.sqlite())?
                .execute(params![version, state, now_ms()])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn select_delivery(
        &self,
        key: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        self.caught_up().await;
        let key = key.to_string();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(sql::DELIVERY_BY_KEY.sqlite())?
                .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })
        .await
    }
}
