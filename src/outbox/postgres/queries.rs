//! The `Store` operations: the accept (one call of `runlink_accept`), claims, settles and
//! the operator listings.

use super::*;
use crate::outbox::decision::{self, AcceptKeys};
use crate::outbox::sql::{self, Columns};
use crate::outbox::{Fold, FoldedLine, TargetLoad};

#[async_trait]
impl Store for PostgresStore {
    async fn console_tickets(
        &self,
        filter: &crate::outbox::console::TicketFilter,
    ) -> Result<Vec<crate::outbox::console::IndexedTicket>, StoreError> {
        self.select_tickets(filter).await
    }

    async fn console_summary(
        &self,
        since_ms: i64,
    ) -> Result<crate::outbox::console::Summary, StoreError> {
        self.select_summary(since_ms).await
    }

    async fn console_runbooks(&self, since_ms: i64) -> Result<Vec<(String, u64)>, StoreError> {
        self.select_runbook_counts(since_ms).await
    }

    async fn console_gaps(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<crate::outbox::console::Gap>, StoreError> {
        self.select_gaps(since_ms, limit).await
    }

    async fn canary_state(&self, version: &str) -> Result<Option<String>, StoreError> {
        self.select_canary(version).await
    }

    async fn canary_mark(&self, version: &str, state: &str) -> Result<(), StoreError> {
        self.upsert_canary(version, state).await
    }

    async fn delivery(&self, delivery_key: &str) -> Result<Option<(String, String)>, StoreError> {
        self.select_delivery(delivery_key).await
    }

    async fn record_feedback(
        &self,
        feedback: &crate::feedback::Feedback,
    ) -> Result<Option<i64>, StoreError> {
        self.insert_feedback(feedback).await
    }

    async fn feedback_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<crate::feedback::FeedbackRow>, StoreError> {
        self.select_feedback(since_ms).await
    }

    async fn forget_feedback(&self, id: i64) -> Result<bool, StoreError> {
        self.set_feedback_aside(id).await
    }

    async fn ticket(&self, id: &TicketId) -> Result<Option<StoredTicket>, StoreError> {
        self.select_ticket(id).await
    }

    async fn enqueue_reply(
        &self,
        ticket: &TicketId,
        delivery: crate::outbox::NewDelivery,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        self.insert_reply(ticket, delivery, event).await
    }

    async fn accept(&self, accepted: Accepted) -> Result<AcceptOutcome, StoreError> {
        if accepted.matching == Matching::Deferred {
            // Replicas share the tables with no log in front of them: nothing here could
            // match the ticket later.
            return Err(StoreError::Join(
                "this store cannot take an unmatched ticket".into(),
            ));
        }
        let ticket = &accepted.ticket;
        let ticket_json = serde_json::to_string(ticket)?;
        let kinds: Vec<&str> = accepted.events.iter().map(AuditEvent::kind).collect();
        let details = accepted
            .events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let delivery = accepted.delivery.as_ref();
        let keys = AcceptKeys {
            source: ticket.source.as_str(),
            delivery_id: ticket.delivery.as_str(),
            ticket_id: ticket.id.as_str(),
            delivery: delivery.map(|d| (d.delivery_key.as_str(), d.destination.as_str())),
            max_per_ticket: accepted.max_per_ticket,
        };
        let duplicate = serde_json::to_string(&decision::duplicate_delivery(&keys))?;
        let (key, destination, body) = match delivery {
            Some(d) => (
                Some(d.delivery_key.as_str()),
                Some(d.destination.as_str()),
                Some(d.body.as_str()),
            ),
            None => (None, None, None),
        };
        let target = delivery
            .map(|d| serde_json::to_string(&d.target))
            .transpose()?;
        let summary = delivery.map(|d| d.summary.as_str());
        // The rule runs in `runlink_accept`; its audit texts are made here, the same ones
        // the SQLite store writes.
        let (already, cap, enqueued) = match keys.delivery {
            Some((key, destination)) => (
                Some(serde_json::to_string(&decision::already_enriched(key))?),
                Some(serde_json::to_string(&decision::cap_reached(
                    decision::CAP_EXISTING,
                    keys.max_per_ticket,
                ))?),
                Some(serde_json::to_string(&decision::enqueued(
                    key,
                    destination,
                ))?),
            ),
            None => (None, None, None),
        };
        let client = self.client().await?;
        let outcome: String = one(
            &client,
            "SELECT runlink_accept($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                   $14, $15, $16, $17, $18)",
            &[
                &ticket.source.as_str(),
                &ticket.delivery.as_str(),
                &ticket.id.as_str(),
                &accepted.signature_key,
                &now_ms(),
                &ticket_json,
                &kinds,
                &details,
                &duplicate,
                &key,
                &destination,
                &target,
                &body,
                &i64::from(accepted.max_per_ticket),
                &already,
                &cap,
                &enqueued,
                &summary,
            ],
        )
        .await?
        .get(0);
        match outcome.as_str() {
            "stored" => Ok(AcceptOutcome::Stored),
            "duplicate" => Ok(AcceptOutcome::DuplicateDelivery),
            "already_enriched" => Ok(AcceptOutcome::AlreadyEnriched),
            "cap_reached" => Ok(AcceptOutcome::CapReached),
            other => Err(StoreError::Pool(format!(
                "runlink_accept answered `{other}`"
            ))),
        }
    }

    async fn claim_due(
        &self,
        destination: &str,
        now: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let client = self.client().await?;
        let lease_until = now + lease.as_millis() as i64;
        // Rows another replica is claiming right now are skipped, not waited for.
        let rows = rows(
            &client,
            "WITH due AS (
                     SELECT id FROM outbox
                     WHERE destination = $1 AND state = 'pending'
                       AND next_attempt_at <= $2 AND lease_until <= $2
                     ORDER BY next_attempt_at, id
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE outbox o SET lease_until = $4
                 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.delivery_key, o.ticket_id, o.destination, o.target, o.body,
                           o.attempts, o.claims, o.uncertain, o.created_at,
                           o.next_attempt_at",
            // The columns of `sql::CLAIM_COLUMNS`, then the due time to order by.
            &[&destination, &now, &(limit as i64), &lease_until],
        )
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            items.push((r.int(10)?, sql::claimed_item(&r, lease_until)?));
        }
        // RETURNING gives no order; keep the oldest-due first, as the SQLite store does.
        items.sort_by_key(|(due, item)| (*due, item.id));
        Ok(items.into_iter().map(|(_, item)| item).collect())
    }

    async fn orphans(&self, known: &[&str]) -> Result<Vec<OutboxRow>, StoreError> {
        let client = self.client().await?;
        let known: Vec<String> = known.iter().map(|k| k.to_string()).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM outbox
                     WHERE state = 'pending' AND NOT (destination = ANY($1)) ORDER BY id",
                    sql::ROW_COLUMNS
                ),
                &[&known],
            )
            .await?;
        rows.iter().map(sql::outbox_row).collect()
    }

    async fn list(
        &self,
        state: Option<ItemState>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let client = self.client().await?;
        let state = state.map(ItemState::as_str);
        let rows = rows(&client, &sql::LIST.postgres(), &[&state, &(limit as i64)]).await?;
        rows.iter().map(sql::outbox_row).collect()
    }

    async fn tickets_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredTicket>, StoreError> {
        let client = self.client().await?;
        let rows = rows(
            &client,
            &sql::TICKETS_SINCE.postgres(),
            &[&since_ms, &(limit as i64)],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let json: String = r.get(1);
            out.push(StoredTicket {
                received_ms: r.get(0),
                ticket: serde_json::from_str(&json)?,
            });
        }
        Ok(out)
    }

    async fn requeue(&self, which: Requeue) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let id = match which {
            Requeue::One(id) => Some(id),
            Requeue::AllDead => None,
        };
        exec(&client, &sql::REQUEUE.postgres(), &[&now_ms(), &id]).await
    }

    async fn settle(
        &self,
        item: &OutboxItem,
        settle: Settle,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = now_ms();
        match &settle {
            Settle::Delivered => {
                exec(&tx, &sql::SETTLE_DELIVERED.postgres(), &[&item.id, &now]).await?
            }
            Settle::RetryAt {
                at_ms,
                error,
                uncertain,
            } => {
                exec(
                    &tx,
                    &sql::SETTLE_RETRY.postgres(),
                    &[
                        &item.id,
                        at_ms,
                        error,
                        &now,
                        uncertain,
                        &item.lease_until_ms,
                    ],
                )
                .await?
            }
            Settle::Dead { error } => {
                exec(
                    &tx,
                    &sql::SETTLE_DEAD.postgres(),
                    &[&item.id, error, &now, &item.lease_until_ms],
                )
                .await?
            }
            Settle::Folded { reason } => {
                exec(
                    &tx,
                    &sql::SETTLE_FOLDED.postgres(),
                    &[&item.id, reason, &now, &item.lease_until_ms],
                )
                .await?
            }
        };
        insert_audit(&tx, now, Some(item.ticket.as_str()), &event).await?;
        tx.commit().await?;
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    async fn pause(&self, destination: &str, until_ms: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        exec(
            &client,
            "INSERT INTO pauses (destination, until) VALUES ($1, $2)
             ON CONFLICT (destination) DO UPDATE SET until = GREATEST(pauses.until, EXCLUDED.until)",
            &[&destination, &until_ms],
        )
        .await?;
        Ok(())
    }

    async fn paused_until(&self, destination: &str) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let found = rows(&client, &sql::PAUSED_UNTIL.postgres(), &[&destination]).await?;
        Ok(found.first().map(|r| r.get(0)).unwrap_or(0))
    }

    async fn target_load(
        &self,
        item: &OutboxItem,
        since_ms: i64,
    ) -> Result<TargetLoad, StoreError> {
        let target = serde_json::to_string(&item.target)?;
        let client = self.client().await?;
        let row = one(
            &client,
            &sql::TARGET_LOAD.postgres(),
            &[&item.destination, &target, &item.id, &since_ms],
        )
        .await?;
        Ok(TargetLoad {
            comments: row.int(0)?.clamp(0, i64::from(u32::MAX)) as u32,
            holds_folds: row.flag(1)?,
        })
    }

    async fn fold_into(&self, holder: &OutboxItem, now: i64) -> Result<Option<Fold>, StoreError> {
        let target = serde_json::to_string(&holder.target)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sending = exec(
            &tx,
            &sql::SENDING.postgres(),
            &[&holder.id, &holder.lease_until_ms],
        )
        .await?;
        if sending != 1 {
            return Ok(None);
        }
        let folded = rows(
            &tx,
            &sql::FOLD.postgres(),
            &[
                &holder.destination,
                &target,
                &holder.id,
                &now,
                &holder.lease_until_ms,
            ],
        )
        .await?;
        let newly_folded = folded.len();
        for row in folded {
            let (ticket, key) = (row.text(0)?, row.text(1)?);
            let event = sql::folded_into(key, &holder.destination, &holder.delivery_key);
            insert_audit(&tx, now, Some(&ticket), &event).await?;
        }
        let lines = rows(&tx, &sql::FOLDED_SUMMARIES.postgres(), &[&holder.id])
            .await?
            .iter()
            .map(|r| {
                Ok(FoldedLine {
                    summary: r.text(0)?,
                    ticket: r.text(1)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit().await?;
        Ok(Some(Fold {
            lines,
            newly_folded,
        }))
    }

    async fn sending(&self, item: &OutboxItem) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let marked = exec(
            &client,
            &sql::SENDING.postgres(),
            &[&item.id, &item.lease_until_ms],
        )
        .await?;
        Ok(marked == 1)
    }

    async fn release(&self, item: &OutboxItem) -> Result<(), StoreError> {
        let client = self.client().await?;
        exec(
            &client,
            &sql::RELEASE.postgres(),
            &[&item.id, &item.lease_until_ms, &item.uncertain],
        )
        .await?;
        Ok(())
    }

    async fn record(&self, ticket: Option<&TicketId>, event: AuditEvent) -> Result<(), StoreError> {
        let client = self.client().await?;
        insert_audit(&client, now_ms(), ticket.map(|t| t.as_str()), &event).await
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.client().await?;
        let limit = query.limit.map(|l| l as i64).unwrap_or(i64::MAX);
        let rows = client
            .query(
                if query.ticket.is_some() {
                    "SELECT at, ticket_id, detail FROM audit
                     WHERE ticket_id = $1 AND at >= $2 ORDER BY id LIMIT $3"
                } else {
                    "SELECT at, ticket_id, detail FROM audit
                     WHERE $1::TEXT IS NULL AND at >= $2 ORDER BY id LIMIT $3"
                },
                &[&query.ticket, &query.since_ms.unwrap_or(0), &limit],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let detail: String = r.get(2);
            out.push(AuditRecord {
                at_ms: r.get(0),
                ticket: r.get(1),
                event: serde_json::from_str(&detail)?,
            });
        }
        Ok(out)
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = one(
            &client,
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
            &[],
        )
        .await?
        .get(0);
        Ok(n.max(0) as u64)
    }

    async fn counts(&self) -> Result<OutboxCounts, StoreError> {
        let client = self.client().await?;
        let mut counts = OutboxCounts::default();
        for r in rows(&client, &sql::COUNTS.postgres(), &[]).await? {
            counts.add(&r.text(0)?, r.int(1)?);
        }
        Ok(counts)
    }
}
