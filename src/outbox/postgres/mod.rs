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

mod console;
mod feedback;
mod queries;
mod schema;

use schema::{MIGRATION_LOCK, MIGRATIONS};

/// Connections per replica: enough for a burst of concurrent accepts plus the workers.
const POOL_SIZE: usize = 16;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool,
}

fn pool_error(e: impl std::error::Error + 'static) -> StoreError {
    StoreError::Pool(crate::outbox::with_causes(&e))
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
    /// The secret stored under `name`, stored as `fresh` first if there is none: every
    /// replica, and every later start, gets the same one.
    pub async fn stored_secret(&self, name: &str, fresh: &str) -> Result<String, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh],
            )
            .await?;
        Ok(client
            .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
            .await?
            .get(0))
    }

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
        &crate::outbox::sql::INSERT_AUDIT.postgres(),
        &[&at, &ticket, &event.kind(), &detail],
    )
    .await?;
    Ok(())
}
