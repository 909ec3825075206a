//! The durable queue between "ticket accepted" and "comment posted". A webhook is answered
//! 2xx only after its ticket, the rendered comment and the audit events are committed here;
//! the delivery worker then drains it. The store is a trait so the embedded SQLite backend
//! and a shared database backend behave the same for the rest of the program.

pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditRecord};
use crate::ticket::{ReplyTarget, Ticket, TicketId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: cannot create {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store: stored record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("store: background task failed: {0}")]
    Join(String),
}

/// One enrichment to post: the key that makes it unique, where it goes, and the exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    pub delivery_key: String,
    pub destination: String,
    pub target: ReplyTarget,
    pub body: String,
}

/// Everything one accepted webhook leaves behind, written in one transaction.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub ticket: Ticket,
    pub signature_key: String,
    pub events: Vec<AuditEvent>,
    pub delivery: Option<NewDelivery>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Stored; the delivery (if any) is queued.
    Stored,
    /// The sender retried a delivery we already stored; nothing new was written.
    DuplicateDelivery,
    /// A new delivery of a ticket whose enrichment is already queued or posted.
    AlreadyEnriched,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub delivery_key: String,
    pub ticket: TicketId,
    pub destination: String,
    pub target: ReplyTarget,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What became of one attempt; the store records it with its audit event atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Delivered,
    RetryAt { at_ms: i64, error: String },
    Dead { error: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub ticket: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: Option<usize>,
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Durably stores a ticket with its delivery and audit events, or reports why not.
    async fn accept(&self, accepted: Accepted) -> Result<AcceptOutcome, StoreError>;

    /// Leases up to `limit` due items; a leased item is invisible to other claims until the
    /// lease runs out, so a crashed worker's items come back by themselves.
    async fn claim_due(
        &self,
        now_ms: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    async fn settle(
        &self,
        item: &OutboxItem,
        settle: Settle,
        event: AuditEvent,
    ) -> Result<(), StoreError>;

    async fn record(&self, ticket: Option<&TicketId>, event: AuditEvent) -> Result<(), StoreError>;

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    async fn counts(&self) -> Result<OutboxCounts, StoreError>;
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
