//! The web console's reads (`crate::outbox::console`).

use super::*;
use crate::outbox::console::{self, Dialect, Gap, IndexedTicket, Param, Summary, TicketFilter};

fn indexed(r: &rusqlite::Row<'_>) -> rusqlite::Result<IndexedTicket> {
    Ok(IndexedTicket {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        ticket: r.get(2)?,
        source: r.get(3)?,
        title: r.get(4)?,
        signature: r.get(5)?,
        outcome: r.get(6)?,
        runbook: r.get(7)?,
        destination: r.get(8)?,
    })
}

impl SqliteStore {
    pub(super) async fn select_tickets(
        &self,
        filter: &TicketFilter,
    ) -> Result<Vec<IndexedTicket>, StoreError> {
        let (sql, params) = console::tickets_query(filter, Dialect::Sqlite);
        self.with_conn(move |conn| {
            let values: Vec<rusqlite::types::Value> = params
                .into_iter()
                .map(|p| match p {
                    Param::Text(t) => rusqlite::types::Value::Text(t),
                    Param::Int(i) => rusqlite::types::Value::Integer(i),
                })
                .collect();
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), indexed)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn select_summary(&self, since_ms: i64) -> Result<Summary, StoreError> {
        self.with_conn(move |conn| {
            let mut summary = Summary::default();
            let mut stmt = conn.prepare_cached(console::SUMMARY_OUTCOMES)?;
            for row in stmt.query_map(params![since_ms], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })? {
                let (outcome, n) = row?;
                summary.outcomes.push((outcome, n.max(0) as u64));
            }
            let mut stmt = conn.prepare_cached(console::SUMMARY_HOURLY)?;
            for row in stmt.query_map(params![since_ms], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })? {
                let (hour, outcome, n) = row?;
                summary.hourly.push((hour, outcome, n.max(0) as u64));
            }
            Ok(summary)
        })
        .await
    }

    pub(super) async fn select_runbook_counts(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(console::RUNBOOK_COUNTS)?;
            let rows = stmt.query_map(params![since_ms], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn select_gaps(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Gap>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(console::GAPS)?;
            let rows = stmt.query_map(params![since_ms, limit as i64], |r| {
                Ok(Gap {
                    signature: r.get(0)?,
                    tickets: r.get::<_, i64>(1)?.max(0) as u64,
                    last_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
