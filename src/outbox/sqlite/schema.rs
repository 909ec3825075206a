//! The tables and their migrations, applied in order at open.

use super::*;

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    // Crash and timeout bookkeeping: a claim that was never settled, or an attempt that timed
    // out, may have posted; the next attempt checks for the marker first.
    r#"
ALTER TABLE outbox ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_ticket ON outbox (ticket_id);
CREATE INDEX outbox_dest_due ON outbox (destination, state, next_attempt_at);
"#,
    // A destination's Retry-After, for every worker that shares the store.
    r#"
CREATE TABLE pauses (
    destination TEXT PRIMARY KEY,
    until INTEGER NOT NULL
);
"#,
    // Claims use outbox_dest_due; this one only cost a write per accepted webhook.
    r#"
DROP INDEX IF EXISTS outbox_due;
"#,
    // The ingest log's high-water mark: every record up to it is in the tables.
    r#"
CREATE TABLE journal_applied (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO journal_applied (id, seq) VALUES (1, 0);
"#,
    // `CHECK (state IN (...))` built a temporary B-tree for its list on every insert and
    // state change (a large share of the applier's work, bench/HISTORY.md); a chain of `=` does not.
    r#"
CREATE TABLE outbox_new (
    id INTEGER PRIMARY KEY,
    delivery_key TEXT NOT NULL UNIQUE,
    ticket_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'pending' OR state = 'delivered' OR state = 'dead'),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    claims INTEGER NOT NULL DEFAULT 0,
    uncertain INTEGER NOT NULL DEFAULT 0
);
INSERT INTO outbox_new (id, delivery_key, ticket_id, destination, target, body, state,
                        attempts, next_attempt_at, lease_until, last_error, created_at,
                        updated_at, claims, uncertain)
SELECT id, delivery_key, ticket_id, destination, target, body, state, attempts,
       next_attempt_at, lease_until, last_error, created_at, updated_at, claims, uncertain
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_ticket ON outbox (ticket_id);
CREATE INDEX outbox_dest_due ON outbox (destination, state, next_attempt_at);
"#,
    // Comments per reply target are capped: the last one allowed lists the alerts folded
    // into it (`folded_into`, their one-line `summary`), which are settled 'folded'.
    r#"
CREATE TABLE outbox_new (
    id INTEGER PRIMARY KEY,
    delivery_key TEXT NOT NULL UNIQUE,
    ticket_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'pending' OR state = 'delivered' OR state = 'dead'
                               OR state = 'folded'),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    claims INTEGER NOT NULL DEFAULT 0,
    uncertain INTEGER NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT '',
    folded_into INTEGER
);
INSERT INTO outbox_new (id, delivery_key, ticket_id, destination, target, body, state,
                        attempts, next_attempt_at, lease_until, last_error, created_at,
                        updated_at, claims, uncertain)
SELECT id, delivery_key, ticket_id, destination, target, body, state, attempts,
       next_attempt_at, lease_until, last_error, created_at, updated_at, claims, uncertain
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_ticket ON outbox (ticket_id);
CREATE INDEX outbox_dest_due ON outbox (destination, state, next_attempt_at);
CREATE INDEX outbox_target ON outbox (destination, target, updated_at);
CREATE INDEX outbox_folded ON outbox (folded_into) WHERE folded_into IS NOT NULL;
"#,
    // What operators say about answers (`/runlink right|wrong|use|none`), and the ticket a
    // command is about, found by its id.
    r#"
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    record TEXT NOT NULL,
    forgotten_at INTEGER,
    UNIQUE (source, delivery_id)
);
CREATE INDEX feedback_at ON feedback (at);
CREATE INDEX tickets_ticket ON tickets (ticket_id);
"#,
    // Candidate runbook indexes and what the replicas decided about them (`canary`).
    r#"
CREATE TABLE canary (
    version TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    at INTEGER NOT NULL
);
"#,
    // The console's index of tickets: one row per decision, filled by triggers from the
    // audit rows the accept writes (no cost to the accept's code path), with the columns
    // its filters and counts use, and a full-text index over titles.
    r#"
CREATE TABLE ticket_index (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    ticket_id TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    signature TEXT NOT NULL,
    outcome TEXT NOT NULL,
    runbook TEXT,
    destination TEXT,
    probe INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ticket_index_outcome ON ticket_index (outcome, id);
CREATE INDEX ticket_index_source ON ticket_index (source, id);
CREATE INDEX ticket_index_destination ON ticket_index (destination, id);
CREATE INDEX ticket_index_runbook ON ticket_index (runbook, id);
CREATE INDEX ticket_index_ticket ON ticket_index (ticket_id);
CREATE VIRTUAL TABLE ticket_titles USING fts5(title, content='');
-- Counts the overview, the runbooks page and coverage read, kept as tickets arrive:
-- per hour, outcome and runbook; per day and signature for what had no answer.
CREATE TABLE ticket_hours (
    hour INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    runbook TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (hour, outcome, runbook)
) WITHOUT ROWID;
CREATE TABLE gap_days (
    day INTEGER NOT NULL,
    signature TEXT NOT NULL,
    n INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (day, signature)
) WITHOUT ROWID;
CREATE TRIGGER ticket_index_title AFTER INSERT ON ticket_index
BEGIN
    INSERT INTO ticket_titles (rowid, title) VALUES (NEW.id, NEW.title);
    INSERT INTO ticket_hours (hour, outcome, runbook, n)
    SELECT (NEW.at / 3600000) * 3600000, NEW.outcome, coalesce(NEW.runbook, ''), 1
    WHERE NEW.probe = 0
    ON CONFLICT (hour, outcome, runbook) DO UPDATE SET n = n + 1;
    INSERT INTO gap_days (day, signature, n, last_at)
    SELECT (NEW.at / 86400000) * 86400000, NEW.signature, 1, NEW.at
    WHERE NEW.probe = 0 AND NEW.outcome = 'none'
    ON CONFLICT (day, signature) DO UPDATE SET n = n + 1, last_at = max(last_at, excluded.last_at);
END;
CREATE TRIGGER ticket_index_fill AFTER INSERT ON audit
WHEN NEW.ticket_id IS NOT NULL AND (NEW.kind = 'batch' OR NEW.kind = 'decided')
BEGIN
    INSERT INTO ticket_index (at, ticket_id, source, title, signature, outcome, runbook,
                              destination, probe)
    SELECT NEW.at, NEW.ticket_id, t.source, coalesce(json_extract(t.ticket, '$.title'), ''),
           coalesce(json_extract(d.value, '$.signature'), ''),
           CASE
               WHEN NOT json_extract(d.value, '$.confident') THEN 'none'
               WHEN json_extract(d.value, '$.candidates[0].reason') = 'alarm' THEN 'alarm'
               WHEN json_extract(d.value, '$.candidates[0].reason') LIKE 'rule:%' THEN 'rule'
               WHEN json_extract(d.value, '$.candidates[0].reason') LIKE 'taught:%' THEN 'taught'
               ELSE 'text'
           END,
           CASE WHEN json_extract(d.value, '$.confident')
                THEN json_extract(d.value, '$.candidates[0].runbook') END,
           (SELECT json_extract(e.value, '$.destination')
            FROM json_each(NEW.detail) AS e
            WHERE NEW.kind = 'batch' AND json_extract(e.value, '$.event') = 'enqueued'),
           coalesce(json_extract(d.value, '$.probe'), 0)
    FROM json_each(CASE WHEN NEW.kind = 'batch' THEN NEW.detail
                        ELSE json_array(json(NEW.detail)) END) AS d
    JOIN tickets AS t ON t.id = (SELECT max(id) FROM tickets WHERE ticket_id = NEW.ticket_id)
    WHERE json_extract(d.value, '$.event') = 'decided';
END;
"#,
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
