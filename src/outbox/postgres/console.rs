//! The web console's reads (`crate::outbox::console`).

use super::*;
use crate::outbox::console::{self, Dialect, Gap, IndexedTicket, Param, Summary, TicketFilter};

impl PostgresStore {
    pub(super) async fn select_tickets(
        &self,
        filter: &TicketFilter,
    ) -> Result<Vec<IndexedTicket>, StoreError> {
        let (sql, params) = console::tickets_query(filter, Dialect::Postgres);
        let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = params
            .into_iter()
            .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                match p {
                    Param::Text(t) => Box::new(t),
                    Param::Int(i) => Box::new(i),
                }
            })
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let client = self.client().await?;
        let found = rows(&client, &sql, &refs).await?;
        Ok(found
            .iter()
            .map(|r| IndexedTicket {
                id: r.get(0),
                at_ms: r.get(1),
                ticket: r.get(2),
                source: r.get(3),
                title: r.get(4),
                signature: r.get(5),
                outcome: r.get(6),
                runbook: r.get(7),
                destination: r.get(8),
            })
            .collect())
    }

    pub(super) async fn select_summary(&self, since_ms: i64) -> Result<Summary, StoreError> {
        let client = self.client().await?;
        let mut summary = Summary::default();
        for r in rows(
            &client,
            &console::postgres(console::SUMMARY_OUTCOMES),
            &[&since_ms],
        )
        .await?
        {
            summary
                .outcomes
                .push((r.get(0), r.get::<_, i64>(1).max(0) as u64));
        }
        for r in rows(
            &client,
            &console::postgres(console::SUMMARY_HOURLY),
            &[&since_ms],
        )
        .await?
        {
            summary
                .hourly
                .push((r.get(0), r.get(1), r.get::<_, i64>(2).max(0) as u64));
        }
        Ok(summary)
    }

    pub(super) async fn select_runbook_counts(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        Ok(rows(
            &client,
            &console::postgres(console::RUNBOOK_COUNTS),
            &[&since_ms],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
        .collect())
    }

    pub(super) async fn select_gaps(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Gap>, StoreError> {
        let client = self.client().await?;
        Ok(rows(
            &client,
            &console::postgres(console::GAPS),
            &[&since_ms, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| Gap {
            signature: r.get(0),
            tickets: r.get::<_, i64>(1).max(0) as u64,
            last_ms: r.get(2),
        })
        .collect())
    }
}
