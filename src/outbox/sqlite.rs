//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a commit is
//! on disk before the webhook is answered. SQLite calls block, so each runs on tokio's
//! blocking pool behind one connection (SQLite serializes writers anyway).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AcceptOutcome, Accepted, AuditQuery, OutboxCounts, OutboxItem, Settle, Store, StoreError,
    now_ms,
};
use crate::audit::{AuditEvent, AuditRecord};
use crate::ticket::TicketId;

const MIGRATIONS: &[&str] = &[r#"
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
"#];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
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
    let tx = conn.transaction()?;
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

fn insert_audit(
    tx: &rusqlite::Transaction<'_>,
    at: i64,
    ticket: Option<&str>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, ticket_id, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![at, ticket, event.kind(), serde_json::to_string(event)?],
    )?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn accept(&self, accepted: Accepted) -> Result<AcceptOutcome, StoreError> {
        self.with_conn(move |conn| {
            let now = now_ms();
            let tx = conn.transaction()?;
            let ticket = &accepted.ticket;
            let inserted = tx.execute(
                "INSERT INTO tickets (source, delivery_id, ticket_id, signature, received_at, ticket)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (source, delivery_id) DO NOTHING",
                params![
                    ticket.source.as_str(),
                    ticket.delivery.as_str(),
                    ticket.id.as_str(),
                    accepted.signature_key,
                    now,
                    serde_json::to_string(ticket)?,
                ],
            )?;
            let ticket_id = Some(ticket.id.as_str());
            if inserted == 0 {
                insert_audit(
                    &tx,
                    now,
                    ticket_id,
                    &AuditEvent::DuplicateDelivery {
                        source: ticket.source.to_string(),
                        delivery: ticket.delivery.to_string(),
                    },
                )?;
                tx.commit()?;
                return Ok(AcceptOutcome::DuplicateDelivery);
            }
            for event in &accepted.events {
                insert_audit(&tx, now, ticket_id, event)?;
            }
            let mut outcome = AcceptOutcome::Stored;
            if let Some(delivery) = &accepted.delivery {
                let queued = tx.execute(
                    "INSERT INTO outbox (delivery_key, ticket_id, destination, target, body, state,
                                         next_attempt_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6)
                     ON CONFLICT (delivery_key) DO NOTHING",
                    params![
                        delivery.delivery_key,
                        ticket.id.as_str(),
                        delivery.destination,
                        serde_json::to_string(&delivery.target)?,
                        delivery.body,
                        now,
                    ],
                )?;
                let event = if queued == 1 {
                    AuditEvent::Enqueued {
                        delivery_key: delivery.delivery_key.clone(),
                        destination: delivery.destination.clone(),
                    }
                } else {
                    outcome = AcceptOutcome::AlreadyEnriched;
                    AuditEvent::AlreadyEnriched {
                        delivery_key: delivery.delivery_key.clone(),
                    }
                };
                insert_audit(&tx, now, ticket_id, &event)?;
            }
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn claim_due(
        &self,
        now: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let lease_until = now + lease.as_millis() as i64;
            let items = {
                let mut stmt = tx.prepare(
                    "SELECT id, delivery_key, ticket_id, destination, target, body, attempts
                     FROM outbox
                     WHERE state = 'pending' AND next_attempt_at <= ?1 AND lease_until <= ?1
                     ORDER BY next_attempt_at, id
                     LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, u32>(6)?,
                    ))
                })?;
                let mut items = Vec::new();
                for row in rows {
                    let (id, delivery_key, ticket, destination, target, body, attempts) = row?;
                    items.push(OutboxItem {
                        id,
                        delivery_key,
                        ticket: TicketId::parse(ticket)
                            .map_err(|e| StoreError::Join(format!("stored ticket id {e}")))?,
                        destination,
                        target: serde_json::from_str(&target)?,
                        body,
                        attempts,
                    });
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

    async fn settle(
        &self,
        item: &OutboxItem,
        settle: Settle,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let id = item.id;
        let ticket = item.ticket.to_string();
        self.with_conn(move |conn| {
            let now = now_ms();
            let tx = conn.transaction()?;
            match &settle {
                Settle::Delivered => tx.execute(
                    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
                            lease_until = 0, last_error = NULL, updated_at = ?2
                     WHERE id = ?1",
                    params![id, now],
                )?,
                Settle::RetryAt { at_ms, error } => tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2,
                            lease_until = 0, last_error = ?3, updated_at = ?4
                     WHERE id = ?1",
                    params![id, at_ms, error, now],
                )?,
                Settle::Dead { error } => tx.execute(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, lease_until = 0,
                            last_error = ?2, updated_at = ?3
                     WHERE id = ?1",
                    params![id, error, now],
                )?,
            };
            insert_audit(&tx, now, Some(&ticket), &event)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn record(&self, ticket: Option<&TicketId>, event: AuditEvent) -> Result<(), StoreError> {
        let ticket = ticket.map(|t| t.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            insert_audit(&tx, now_ms(), ticket.as_deref(), &event)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT at, ticket_id, detail FROM audit
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
                    ))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (at_ms, ticket, detail) = row?;
                out.push(AuditRecord {
                    at_ms,
                    ticket,
                    event: serde_json::from_str(&detail)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn counts(&self) -> Result<OutboxCounts, StoreError> {
        self.with_conn(|conn| {
            let mut counts = OutboxCounts::default();
            let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::NewDelivery;
    use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket};
    use std::collections::BTreeMap;

    fn accepted(delivery: &str, key: &str) -> Accepted {
        Accepted {
            ticket: Ticket {
                id: TicketId::parse("github:acme/ops#1").unwrap(),
                source: SourceKind::Github,
                delivery: DeliveryId::parse(delivery).unwrap(),
                title: "t".into(),
                body: String::new(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                alertname: None,
                reply: None,
                query: None,
            },
            signature_key: "sig".into(),
            events: vec![],
            delivery: Some(NewDelivery {
                delivery_key: key.into(),
                destination: "github".into(),
                target: ReplyTarget::GithubIssue {
                    owner: "acme".into(),
                    repo: "ops".into(),
                    number: 1,
                },
                body: "hello".into(),
            }),
        }
    }

    #[tokio::test]
    async fn duplicate_delivery_and_duplicate_key_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(
            store.accept(accepted("d1", "k1")).await.unwrap(),
            AcceptOutcome::Stored
        );
        assert_eq!(
            store.accept(accepted("d1", "k1")).await.unwrap(),
            AcceptOutcome::DuplicateDelivery
        );
        assert_eq!(
            store.accept(accepted("d2", "k1")).await.unwrap(),
            AcceptOutcome::AlreadyEnriched
        );
        assert_eq!(store.counts().await.unwrap().pending, 1);
    }

    #[tokio::test]
    async fn claimed_items_are_leased_and_come_back_after_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        store.accept(accepted("d1", "k1")).await.unwrap();
        let now = now_ms() + 10;
        let lease = Duration::from_secs(30);
        assert_eq!(store.claim_due(now, 10, lease).await.unwrap().len(), 1);
        assert!(store.claim_due(now, 10, lease).await.unwrap().is_empty());
        let later = now + 31_000;
        assert_eq!(store.claim_due(later, 10, lease).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn settled_items_leave_the_queue_and_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.accept(accepted("d1", "k1")).await.unwrap();
            let item = store
                .claim_due(now_ms() + 10, 10, Duration::from_secs(30))
                .await
                .unwrap()
                .remove(0);
            let event = AuditEvent::NotEnqueued { reason: "x".into() };
            store.settle(&item, Settle::Delivered, event).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.pending, counts.delivered), (0, 1));
        assert_eq!(store.body_of("k1").await.unwrap().as_deref(), Some("hello"));
        assert!(
            store
                .claim_due(now_ms() + 100_000, 10, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
