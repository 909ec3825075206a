//! The `Store` operations that read and write the tables directly: claims, settles,
//! pauses, the audit log, counts and the operator listings.

use super::*;
use crate::outbox::sql;
use crate::outbox::{Fold, FoldedLine, TargetLoad};

#[async_trait]
impl Store for SqliteStore {
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
                Settle::Delivered => {
                    tx.execute(sql::SETTLE_DELIVERED.sqlite(), params![id, now])?
                }
                Settle::RetryAt {
                    at_ms,
                    error,
                    uncertain,
                } => tx.execute(
                    sql::SETTLE_RETRY.sqlite(),
                    params![id, at_ms, error, now, uncertain, lease],
                )?,
                Settle::Dead { error } => {
                    tx.execute(sql::SETTLE_DEAD.sqlite(), params![id, error, now, lease])?
                }
                Settle::Folded { reason } => {
                    tx.execute(sql::SETTLE_FOLDED.sqlite(), params![id, reason, now, lease])?
                }
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
                .query_row(sql::PAUSED_UNTIL.sqlite(), [destination], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn target_load(
        &self,
        item: &OutboxItem,
        since_ms: i64,
    ) -> Result<TargetLoad, StoreError> {
        let target = serde_json::to_string(&item.target)?;
        let (id, destination) = (item.id, item.destination.clone());
        self.with_conn(move |conn| {
            Ok(conn.prepare_cached(sql::TARGET_LOAD.sqlite())?.query_row(
                params![destination, target, id, since_ms],
                |r| {
                    Ok(TargetLoad {
                        comments: r.get::<_, i64>(0)?.clamp(0, i64::from(u32::MAX)) as u32,
                        holds_folds: r.get(1)?,
                    })
                },
            )?)
        })
        .await
    }

    async fn fold_into(&self, holder: &OutboxItem, now: i64) -> Result<Option<Fold>, StoreError> {
        let target = serde_json::to_string(&holder.target)?;
        let holder = holder.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let sending = tx.execute(
                sql::SENDING.sqlite(),
                params![holder.id, holder.lease_until_ms],
            )?;
            if sending != 1 {
                return Ok(None);
            }
            let folded: Vec<(String, String)> = tx
                .prepare_cached(sql::FOLD.sqlite())?
                .query_map(
                    params![
                        holder.destination,
                        target,
                        holder.id,
                        now,
                        holder.lease_until_ms
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<_, _>>()?;
            let newly_folded = folded.len();
            for (ticket, key) in folded {
                let event = sql::folded_into(key, &holder.destination, &holder.delivery_key);
                insert_audit(&tx, now, Some(&ticket), &event)?;
            }
            let lines = tx
                .prepare_cached(sql::FOLDED_SUMMARIES.sqlite())?
                .query_map(params![holder.id], |r| {
                    Ok(FoldedLine {
                        summary: r.get(0)?,
                        ticket: r.get(1)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok(Some(Fold {
                lines,
                newly_folded,
            }))
        })
        .await
    }

    async fn sending(&self, item: &OutboxItem) -> Result<bool, StoreError> {
        let (id, lease) = (item.id, item.lease_until_ms);
        self.with_conn(
            move |conn| Ok(conn.execute(sql::SENDING.sqlite(), params![id, lease])? == 1),
        )
        .await
    }

    async fn release(&self, item: &OutboxItem) -> Result<(), StoreError> {
        let (id, lease, uncertain) = (item.id, item.lease_until_ms, item.uncertain);
        self.with_conn(move |conn| {
            conn.execute(sql::RELEASE.sqlite(), params![id, lease, uncertain])?;
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
            // One statement per shape: `?1 IS NULL OR ticket_id = ?1` would keep the
            // planner off the ticket index and read the whole log for one ticket.
            let mut stmt = conn.prepare_cached(if query.ticket.is_some() {
                "SELECT at, ticket_id, detail, kind FROM audit
                 WHERE ticket_id = ?1 AND at >= ?2 ORDER BY id LIMIT ?3"
            } else {
                "SELECT at, ticket_id, detail, kind FROM audit
                 WHERE ?1 IS NULL AND at >= ?2 ORDER BY id LIMIT ?3"
            })?;
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
            let mut stmt = conn.prepare_cached(sql::COUNTS.sqlite())?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (state, n) = row?;
                counts.add(&state, n);
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

    fn write_state(&self) -> WriteState {
        let Some(ingest) = &self.inner.ingest else {
            return WriteState::default();
        };
        // Nothing retries a log write that failed until a webhook comes, and none comes while
        // the replica is not ready: room on the disk is what ends that failure.
        if ingest.health.failing(WritePart::IngestLog)
            && available_bytes(&ingest.dir).is_some_and(|free| free >= journal::ROOM_TO_WRITE)
        {
            ingest.health.succeeded(WritePart::IngestLog);
        }
        ingest.health.state()
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
            let mut stmt = conn.prepare(sql::PENDING_ROWS.sqlite())?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let row = sql::outbox_row(row)?;
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
            let mut stmt = conn.prepare(sql::LIST.sqlite())?;
            let mut rows = stmt.query(params![state.map(ItemState::as_str), limit as i64])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(sql::outbox_row(row)?);
            }
            Ok(out)
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
            let mut stmt = conn.prepare(sql::TICKETS_SINCE.sqlite())?;
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
            let id = match which {
                Requeue::One(id) => Some(id),
                Requeue::AllDead => None,
            };
            Ok(conn.execute(sql::REQUEUE.sqlite(), params![now, id])? as u64)
        })
        .await
    }
}

impl SqliteStore {
    pub(super) async fn claim(
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
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {} FROM outbox
                     WHERE destination = ?3 AND state = 'pending'
                       AND next_attempt_at <= ?1 AND lease_until <= ?1
                     ORDER BY next_attempt_at, id
                     LIMIT ?2",
                    sql::CLAIM_COLUMNS
                ))?;
                let mut rows = stmt.query(params![now, limit as i64, destination])?;
                let mut items = Vec::new();
                while let Some(row) = rows.next()? {
                    items.push(sql::claimed_item(row, lease_until)?);
                }
                items
            };
            for item in &items {
                tx.execute(
                    "UPDATE outbox SET lease_until = ?2 WHERE id = ?1",
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
