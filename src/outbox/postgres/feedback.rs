//! Operators' feedback and the replies it causes.

use super::*;
use crate::feedback::{Feedback, FeedbackRow};
use crate::outbox::{NewDelivery, sql};

impl PostgresStore {
    pub(super) async fn insert_feedback(
        &self,
        feedback: &Feedback,
    ) -> Result<Option<i64>, StoreError> {
        let record = serde_json::to_string(feedback)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let statement = tx.prepare_cached(&sql::INSERT_FEEDBACK.postgres()).await?;
        let row = tx
            .query_opt(
                &statement,
                &[
                    &feedback.at_ms,
                    &feedback.source,
                    &feedback.delivery,
                    &feedback.ticket,
                    &feedback.kind.as_str(),
                    &record,
                ],
            )
            .await?;
        let id: Option<i64> = row.map(|r| r.get(0));
        if let Some(id) = id {
            insert_audit(
                &tx,
                feedback.at_ms,
                Some(&feedback.ticket),
                &crate::feedback::audit_event(feedback, id),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub(super) async fn select_feedback(
        &self,
        since_ms: i64,
    ) -> Result<Vec<FeedbackRow>, StoreError> {
        let client = self.client().await?;
        let found = rows(&client, &sql::FEEDBACK_SINCE.postgres(), &[&since_ms]).await?;
        found
            .iter()
            .map(|r| sql::feedback_row(r.get(0), r.get::<_, &str>(1), r.get(2)))
            .collect()
    }

    pub(super) async fn set_feedback_aside(&self, id: i64) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = now_ms();
        let changed = exec(&tx, &sql::FORGET_FEEDBACK.postgres(), &[&id, &now]).await?;
        if changed > 0 {
            insert_audit(&tx, now, None, &AuditEvent::FeedbackForgotten { id }).await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    pub(super) async fn select_ticket(
        &self,
        id: &TicketId,
    ) -> Result<Option<StoredTicket>, StoreError> {
        let client = self.client().await?;
        let found = rows(&client, &sql::TICKET_BY_ID.postgres(), &[&id.as_str()]).await?;
        found
            .first()
            .map(|r| {
                Ok(StoredTicket {
                    received_ms: r.get(0),
                    ticket: serde_json::from_str(r.get::<_, &str>(1))?,
                })
            })
            .transpose()
    }

    pub(super) async fn insert_reply(
        &self,
        ticket: &TicketId,
        delivery: NewDelivery,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        let target = serde_json::to_string(&delivery.target)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = now_ms();
        let inserted = exec(
            &tx,
            &sql::INSERT_REPLY.postgres(),
            &[
                &delivery.delivery_key,
                &ticket.as_str(),
                &delivery.destination,
                &target,
                &delivery.body,
                &now,
                &delivery.summary,
            ],
        )
        .await?;
        if inserted > 0 {
            insert_audit(&tx, now, Some(ticket.as_str()), &event).await?;
        }
        tx.commit().await?;
        Ok(inserted > 0)
    }
}

/// The canary's shared state and the probe sink's reads.
impl PostgresStore {
    pub(super) async fn select_canary(&self, version: &str) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let found = rows(&client, &sql::CANARY_STATE.postgres(), &[&version]).await?;
        Ok(found.first().map(|r| r.get(0)))
    }

    pub(super) async fn upsert_canary(&self, version: &str, state: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        exec(
            &client,
            &sql::CANARY_MARK.postgres(),
            &[&version, &state, &now_ms()],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn select_delivery(
        &self,
        key: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let client = self.client().await?;
        let found = rows(&client, &sql::DELIVERY_BY_KEY.postgres(), &[&key]).await?;
        Ok(found.first().map(|r| (r.get(0), r.get(1))))
    }
}
