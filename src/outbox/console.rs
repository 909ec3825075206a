//! What the web console reads: the `ticket_index` table (one row per decision, filled by
//! triggers, see the schemas), through queries that each use an index: a filter becomes a
//! condition only when it is set, so the planner can pick that filter's index, and lists
//! page by id (newest first) instead of by offset. Both stores run the same SQL but for
//! the title search (FTS5 on SQLite, ILIKE on PostgreSQL).

use serde::Serialize;

/// Which tickets a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketFilter {
    pub source: Option<String>,
    /// `alarm`, `rule`, `taught`, `text`, or `none` (not confident).
    pub outcome: Option<String>,
    pub destination: Option<String>,
    pub runbook: Option<String>,
    /// Words that must all be in the title.
    pub text: Option<String>,
    /// Only rows older than this index id (the next page).
    pub before: Option<i64>,
    pub limit: usize,
}

/// One decided ticket as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexedTicket {
    pub id: i64,
    pub at_ms: i64,
    pub ticket: String,
    pub source: String,
    pub title: String,
    pub signature: String,
    pub outcome: String,
    pub runbook: Option<String>,
    pub destination: Option<String>,
}

/// Decisions by outcome over a period, and per hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub outcomes: Vec<(String, u64)>,
    /// (start of the hour in ms, outcome, count), oldest first.
    pub hourly: Vec<(i64, String, u64)>,
}

/// An alarm signature that got no confident runbook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub signature: String,
    pub tickets: u64,
    pub last_ms: i64,
}

/// A bound value of a console query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// How the title search is spelled in each store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

pub(crate) const INDEXED_COLUMNS: &str =
    "id, at, ticket_id, source, title, signature, outcome, runbook, destination";

/// The list query for `filter`: its SQL (numbered parameters, `?N` or `$N`) and values.
pub(crate) fn tickets_query(filter: &TicketFilter, dialect: Dialect) -> (String, Vec<Param>) {
    let mut conditions = vec!["probe = 0".to_string()];
    let mut params = Vec::new();
    let bind = |params: &mut Vec<Param>, value: Param| {
        params.push(value);
        match dialect {
            Dialect::Sqlite => format!("?{}", params.len()),
            Dialect::Postgres => format!("${}", params.len()),
        }
    };
    for (column, value) in [
        ("source", &filter.source),
        ("outcome", &filter.outcome),
        ("destination", &filter.destination),
        ("runbook", &filter.runbook),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            let p = bind(&mut params, Param::Text(value.clone()));
            conditions.push(format!("{column} = {p}"));
        }
    }
    let mut from = "ticket_index";
    let mut order = "id";
    if let Some(text) = filter
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        match dialect {
            Dialect::Sqlite => {
                if let Some(query) = fts_query(text) {
                    // Driven from the full-text index in id order, so a common word stops
                    // after one page of matches instead of collecting them all.
                    let p = bind(&mut params, Param::Text(query));
                    from =
                        "ticket_titles JOIN ticket_index ON ticket_index.id = ticket_titles.rowid";
                    order = "ticket_titles.rowid";
                    conditions.push(format!("ticket_titles MATCH {p}"));
                }
            }
            Dialect::Postgres => {
                for word in text.split_whitespace() {
                    let escaped = word
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_");
                    let p = bind(&mut params, Param::Text(format!("%{escaped}%")));
                    conditions.push(format!("title ILIKE {p}"));
                }
            }
        }
    }
    if let Some(before) = filter.before {
        let p = bind(&mut params, Param::Int(before));
        conditions.push(format!("{order} < {p}"));
    }
    let limit = bind(&mut params, Param::Int(filter.limit.clamp(1, 500) as i64));
    let columns: Vec<String> = INDEXED_COLUMNS
        .split(", ")
        .map(|c| format!("ticket_index.{c}"))
        .collect();
    (
        format!(
            "SELECT {} FROM {from} WHERE {} ORDER BY {order} DESC LIMIT {limit}",
            columns.join(", "),
            conditions.join(" AND ")
        ),
        params,
    )
}

/// Each word of `text` as a quoted FTS5 prefix term (all must match); quoting keeps FTS5's
/// own syntax out of what a user types.
fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(8)
        .map(|w| format!("\"{}\"*", w.to_lowercase()))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// From the hourly counts the triggers keep: a day is a few hundred rows however many
/// tickets it had.
pub(crate) const SUMMARY_OUTCOMES: &str =
    "SELECT outcome, CAST(SUM(n) AS BIGINT) FROM ticket_hours WHERE hour >= ?1 GROUP BY outcome";

pub(crate) const SUMMARY_HOURLY: &str =
    "SELECT hour, outcome, CAST(SUM(n) AS BIGINT) FROM ticket_hours
     WHERE hour >= ?1 GROUP BY hour, outcome ORDER BY hour";

pub(crate) const RUNBOOK_COUNTS: &str = "SELECT runbook, CAST(SUM(n) AS BIGINT) FROM ticket_hours
     WHERE hour >= ?1 AND runbook <> '' GROUP BY runbook";

pub(crate) const GAPS: &str =
    "SELECT signature, CAST(SUM(n) AS BIGINT) AS total, MAX(last_at) FROM gap_days
     WHERE day >= ?1 GROUP BY signature ORDER BY total DESC, signature LIMIT ?2";

/// `?N` as `$N`, for the fixed statements above.
pub(crate) fn postgres(sql: &'static str) -> String {
    crate::outbox::sql::Statement::new(sql).postgres()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_set_filters_become_conditions_and_search_words_are_quoted() {
        let filter = TicketFilter {
            outcome: Some("none".into()),
            text: Some("disk \"full\" OR*".into()),
            before: Some(90),
            limit: 50,
            ..Default::default()
        };
        let (sql, params) = tickets_query(&filter, Dialect::Sqlite);
        assert!(sql.contains("outcome = ?1"), "{sql}");
        assert!(sql.contains("MATCH ?2"), "{sql}");
        assert!(
            sql.contains("id < ?3") && sql.ends_with("LIMIT ?4"),
            "{sql}"
        );
        assert!(!sql.contains("source ="), "{sql}");
        assert_eq!(params[1], Param::Text("\"disk\"* \"full\"* \"or\"*".into()));
        let (sql, params) = tickets_query(&filter, Dialect::Postgres);
        assert!(sql.contains("title ILIKE $2"), "{sql}");
        assert_eq!(params.len(), 6);
    }
}
