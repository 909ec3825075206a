//! The shared store: PostgreSQL, for several runlink replicas behind a load balancer.
//!
//! What makes replicas safe is in the schema and the claim query, not in any one process:
//! dedup and delivery keys are unique constraints (two replicas receiving the same retried
//! webhook store it once), outbox claims take rows with `FOR UPDATE SKIP LOCKED` and set a
//! lease (a replica that dies mid-delivery releases its items when the lease runs out, and
//! the next attempt checks the destination for the marker before posting), and migrations
//! run under an advisory lock so replicas starting together migrate once.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls_platform_verifier::ConfigVerifierExt;

use super::{
    AcceptOutcome, Accepted, AuditQuery, ItemState, Matching, OutboxCounts, OutboxItem, OutboxRow,
    Requeue, Settle, Store, StoreError, StoredTicket, now_ms,
};
use crate::audit::{AuditEvent, AuditRecord};
use crate::ticket::TicketId;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tickets (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    ticket TEXT NOT NULL,
    UNIQUE (source, delivery_id)
);
CREATE INDEX tickets_received ON tickets (received_at);
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    delivery_key TEXT NOT NULL UNIQUE,
    ticket_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    claims INTEGER NOT NULL DEFAULT 0,
    uncertain BOOLEAN NOT NULL DEFAULT FALSE,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX outbox_dest_due ON outbox (destination, state, next_attempt_at);
CREATE INDEX outbox_ticket ON outbox (ticket_id);
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    ticket_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_ticket ON audit (ticket_id);
CREATE INDEX audit_at ON audit (at);
"#,
    // A destination's Retry-After, for every replica.
    r#"
CREATE TABLE pauses (
    destination TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
"#,
    // One accepted webhook in one round trip: the decisions `accept` makes (duplicate,
    // already enriched, over the per-ticket cap) run next to the data. Audit details are
    // rendered by runlink; `{existing}` in the cap event is filled in here.
    r#"
CREATE FUNCTION runlink_accept(
    p_source TEXT, p_delivery TEXT, p_ticket_id TEXT, p_signature TEXT, p_now BIGINT,
    p_ticket TEXT, p_kinds TEXT[], p_details TEXT[], p_duplicate TEXT,
    p_key TEXT, p_destination TEXT, p_target TEXT, p_body TEXT, p_max BIGINT,
    p_already TEXT, p_cap TEXT, p_enqueued TEXT
) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    existing BIGINT;
BEGIN
    INSERT INTO tickets (source, delivery_id, ticket_id, signature, received_at, ticket)
    VALUES (p_source, p_delivery, p_ticket_id, p_signature, p_now, p_ticket)
    ON CONFLICT (source, delivery_id) DO NOTHING;
    IF NOT FOUND THEN
        INSERT INTO audit (at, ticket_id, kind, detail)
        VALUES (p_now, p_ticket_id, 'duplicate_delivery', p_duplicate);
        RETURN 'duplicate';
    END IF;
    INSERT INTO audit (at, ticket_id, kind, detail)
    SELECT p_now, p_ticket_id, e.k, e.d FROM unnest(p_kinds, p_details) WITH ORDINALITY AS e(k, d, n)
    ORDER BY e.n;
    IF p_key IS NULL THEN
        RETURN 'stored';
    END IF;
    -- Serializes enrichments of one ticket across replicas, so the cap holds.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_ticket_id, 0));
    IF EXISTS (SELECT 1 FROM outbox WHERE delivery_key = p_key) THEN
        INSERT INTO audit (at, ticket_id, kind, detail)
        VALUES (p_now, p_ticket_id, 'already_enriched', p_already);
        RETURN 'already_enriched';
    END IF;
    SELECT COUNT(*) INTO existing FROM outbox WHERE ticket_id = p_ticket_id;
    IF existing >= p_max THEN
        INSERT INTO audit (at, ticket_id, kind, detail)
        VALUES (p_now, p_ticket_id, 'not_enqueued', replace(p_cap, '{existing}', existing::TEXT));
        RETURN 'cap_reached';
    END IF;
    INSERT INTO outbox (delivery_key, ticket_id, destination, target, body, state,
                        next_attempt_at, created_at, updated_at)
    VALUES (p_key, p_ticket_id, p_destination, p_target, p_body, 'pending', p_now, p_now, p_now);
    INSERT INTO audit (at, ticket_id, kind, detail)
    VALUES (p_now, p_ticket_id, 'enqueued', p_enqueued);
    RETURN 'stored';
END
$$;
"#,
    // Every replica counts pending deliveries every few seconds; delivered rows pile up.
    r#"
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
"#,
];

/// The advisory lock key migrations run under (any constant unique to runlink).
const MIGRATION_LOCK: i64 = 0x72756e6c696e6b;

/// Connections per replica: enough for a burst of concurrent accepts plus the workers.
const POOL_SIZE: usize = 16;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool,
}

fn pool_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

impl PostgresStore {
    /// Connects and runs pending migrations. TLS follows the URL's `sslmode` (`prefer` by
    /// default, `require` to refuse plain connections), verifying the server's certificate
    /// against the system's trust store.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url.parse()?;
        // The same process-wide crypto provider the HTTP client uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = rustls::ClientConfig::with_platform_verifier()
            .map_err(|e| StoreError::Pool(format!("TLS setup: {e}")))?;
        let manager = Manager::from_config(
            config,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(pool_error)?;
        let store = PostgresStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Applies every migration newer than the database; returns the schema version.
    pub async fn migrate(&self) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // "already exists, skipping" notices would land in every start-up log.
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
        )
        .await?;
        let current: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await?
            .get(0);
        let mut version = current;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let v = i as i64 + 1;
            if v > current {
                tx.batch_execute(sql).await?;
                tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&v])
                    .await?;
                version = v;
            }
        }
        tx.commit().await?;
        Ok(version)
    }
}

/// Statements are prepared once per connection and reused: an unprepared query costs a
/// second round trip (parse, then execute) every time.
async fn exec(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

async fn one(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

async fn rows(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

async fn insert_audit(
    tx: &impl deadpool_postgres::GenericClient,
    at: i64,
    ticket: Option<&str>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    let detail = serde_json::to_string(event)?;
    exec(
        tx,
        "INSERT INTO audit (at, ticket_id, kind, detail) VALUES ($1, $2, $3, $4)",
        &[&at, &ticket, &event.kind(), &detail],
    )
    .await?;
    Ok(())
}

const ROW_COLUMNS: &str = "id, delivery_key, ticket_id, destination, state, attempts, \
                           next_attempt_at, last_error, created_at";

fn read_row(r: &tokio_postgres::Row) -> OutboxRow {
    OutboxRow {
        id: r.get(0),
        delivery_key: r.get(1),
        ticket: r.get(2),
        destination: r.get(3),
        state: r.get(4),
        attempts: r.get::<_, i32>(5).max(0) as u32,
        next_attempt_ms: r.get(6),
        last_error: r.get(7),
        created_ms: r.get(8),
    }
}

#[async_trait]
impl Store for PostgresStore {
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
        let duplicate = serde_json::to_string(&AuditEvent::DuplicateDelivery {
            source: ticket.source.to_string(),
            delivery: ticket.delivery.to_string(),
        })?;
        let delivery = accepted.delivery.as_ref();
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
        let (already, cap, enqueued) = match delivery {
            Some(d) => (
                Some(serde_json::to_string(&AuditEvent::AlreadyEnriched {
                    delivery_key: d.delivery_key.clone(),
                })?),
                Some(serde_json::to_string(&AuditEvent::NotEnqueued {
                    reason: format!(
                        "ticket already has {{existing}} enrichments (cap {})",
                        accepted.max_per_ticket
                    ),
                })?),
                Some(serde_json::to_string(&AuditEvent::Enqueued {
                    delivery_key: d.delivery_key.clone(),
                    destination: d.destination.clone(),
                })?),
            ),
            None => (None, None, None),
        };
        let client = self.client().await?;
        let outcome: String = one(
            &client,
            "SELECT runlink_accept($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                   $14, $15, $16, $17)",
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
                     SELECT id, claims AS old_claims FROM outbox
                     WHERE destination = $1 AND state = 'pending'
                       AND next_attempt_at <= $2 AND lease_until <= $2
                     ORDER BY next_attempt_at, id
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE outbox o SET lease_until = $4, claims = o.attempts + 1
                 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.delivery_key, o.ticket_id, o.destination, o.target, o.body,
                           o.attempts, due.old_claims, o.uncertain, o.created_at,
                           o.next_attempt_at",
            &[&destination, &now, &(limit as i64), &lease_until],
        )
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            let attempts: i32 = r.get(6);
            let claims: i32 = r.get(7);
            let uncertain: bool = r.get(8);
            let target: String = r.get(4);
            let ticket: String = r.get(2);
            items.push((
                r.get::<_, i64>(10),
                OutboxItem {
                    id: r.get(0),
                    delivery_key: r.get(1),
                    ticket: TicketId::parse(ticket)
                        .map_err(|e| StoreError::Join(format!("stored ticket id {e}")))?,
                    destination: r.get(3),
                    target: serde_json::from_str(&target)?,
                    body: r.get(5),
                    attempts: attempts.max(0) as u32,
                    uncertain: uncertain || claims > attempts,
                    created_ms: r.get(9),
                    lease_until_ms: lease_until,
                },
            ));
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
                    "SELECT {ROW_COLUMNS} FROM outbox
                     WHERE state = 'pending' AND NOT (destination = ANY($1)) ORDER BY id"
                ),
                &[&known],
            )
            .await?;
        Ok(rows.iter().map(read_row).collect())
    }

    async fn list(
        &self,
        state: Option<ItemState>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let client = self.client().await?;
        let state = state.map(ItemState::as_str);
        let rows = client
            .query(
                &format!(
                    "SELECT {ROW_COLUMNS} FROM outbox WHERE ($1::TEXT IS NULL OR state = $1)
                     ORDER BY id LIMIT $2"
                ),
                &[&state, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(read_row).collect())
    }

    async fn tickets_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredTicket>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT received_at, ticket FROM tickets WHERE received_at >= $1
                 ORDER BY id LIMIT $2",
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
        Ok(client
            .execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, claims = 0,
                        next_attempt_at = $1, lease_until = 0, updated_at = $1
                 WHERE state = 'dead' AND ($2::BIGINT IS NULL OR id = $2)",
                &[&now_ms(), &id],
            )
            .await?)
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
                exec(
                    &tx,
                    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
                            claims = attempts + 1, uncertain = FALSE,
                            lease_until = 0, last_error = NULL, updated_at = $2
                     WHERE id = $1",
                    &[&item.id, &now],
                )
                .await?
            }
            Settle::RetryAt {
                at_ms,
                error,
                uncertain,
            } => {
                exec(
                    &tx,
                    "UPDATE outbox SET attempts = attempts + 1, claims = attempts + 1,
                            next_attempt_at = $2, lease_until = 0, last_error = $3,
                            uncertain = (uncertain OR $5), updated_at = $4
                     WHERE id = $1 AND lease_until = $6",
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
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1,
                            claims = attempts + 1, lease_until = 0,
                            last_error = $2, updated_at = $3
                     WHERE id = $1 AND lease_until = $4",
                    &[&item.id, error, &now, &item.lease_until_ms],
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
        let found = rows(
            &client,
            "SELECT until FROM pauses WHERE destination = $1",
            &[&destination],
        )
        .await?;
        Ok(found.first().map(|r| r.get(0)).unwrap_or(0))
    }

    async fn release(&self, item: &OutboxItem) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                // Given back unsent by this owner, but an earlier owner's unsettled claim
                // may have posted: an item claimed uncertain stays uncertain.
                "UPDATE outbox SET lease_until = 0, claims = attempts,
                                   uncertain = (uncertain OR $3)
                 WHERE id = $1 AND lease_until = $2 AND state = 'pending'",
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
                "SELECT at, ticket_id, detail FROM audit
                 WHERE ($1::TEXT IS NULL OR ticket_id = $1) AND at >= $2
                 ORDER BY id LIMIT $3",
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
        let rows = client
            .query("SELECT state, COUNT(*) FROM outbox GROUP BY state", &[])
            .await?;
        let mut counts = OutboxCounts::default();
        for r in rows {
            let state: String = r.get(0);
            let n = r.get::<_, i64>(1).max(0) as u64;
            match state.as_str() {
                "pending" => counts.pending = n,
                "delivered" => counts.delivered = n,
                "dead" => counts.dead = n,
                _ => {}
            }
        }
        Ok(counts)
    }
}
