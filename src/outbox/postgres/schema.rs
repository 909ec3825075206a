//! The tables, the accept function and their migrations, applied in order under an
//! advisory lock.

pub(super) const MIGRATIONS: &[&str] = &[
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
    // The state check as the SQLite schema writes it, so the two schemas say the same.
    r#"
ALTER TABLE outbox DROP CONSTRAINT outbox_state_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_state_check
    CHECK (state = 'pending' OR state = 'delivered' OR state = 'dead');
"#,
    // Comments per reply target are capped: the last one allowed lists the alerts folded
    // into it (`folded_into`, their one-line `summary`), which are settled 'folded'. The
    // accept takes the summary; the function without it stays for replicas not yet upgraded.
    r#"
ALTER TABLE outbox ADD COLUMN summary TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN folded_into BIGINT;
ALTER TABLE outbox DROP CONSTRAINT outbox_state_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_state_check
    CHECK (state = 'pending' OR state = 'delivered' OR state = 'dead' OR state = 'folded');
CREATE INDEX outbox_target ON outbox (destination, target, updated_at);
CREATE INDEX outbox_folded ON outbox (folded_into) WHERE folded_into IS NOT NULL;
CREATE FUNCTION runlink_accept(
    p_source TEXT, p_delivery TEXT, p_ticket_id TEXT, p_signature TEXT, p_now BIGINT,
    p_ticket TEXT, p_kinds TEXT[], p_details TEXT[], p_duplicate TEXT,
    p_key TEXT, p_destination TEXT, p_target TEXT, p_body TEXT, p_max BIGINT,
    p_already TEXT, p_cap TEXT, p_enqueued TEXT, p_summary TEXT
) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    outcome TEXT;
BEGIN
    outcome := runlink_accept(p_source, p_delivery, p_ticket_id, p_signature, p_now, p_ticket,
                              p_kinds, p_details, p_duplicate, p_key, p_destination, p_target,
                              p_body, p_max, p_already, p_cap, p_enqueued);
    IF outcome = 'stored' AND p_key IS NOT NULL THEN
        UPDATE outbox SET summary = p_summary WHERE delivery_key = p_key;
    END IF;
    RETURN outcome;
END
$$;
"#,
    // Secrets runlink makes for itself (the key its markers are signed with), shared by
    // every replica.
    r#"
CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"#,
    // What operators say about answers (`/runlink right|wrong|use|none`), and the ticket a
    // command is about, found by its id.
    r#"
CREATE TABLE feedback (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    record TEXT NOT NULL,
    forgotten_at BIGINT,
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
    at BIGINT NOT NULL
);
"#,
    // The console's index of tickets: one row per decision, filled by triggers from the
    // audit rows the accept writes, with the columns its filters and counts use.
    r#"
CREATE TABLE ticket_index (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
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
CREATE FUNCTION runlink_index_decided() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d JSONB := NEW.detail::jsonb;
    reason TEXT := d #>> '{candidates,0,reason}';
    confident BOOLEAN := coalesce((d ->> 'confident')::boolean, false);
BEGIN
    INSERT INTO ticket_index (at, ticket_id, source, title, signature, outcome, runbook, probe)
    SELECT NEW.at, NEW.ticket_id, t.source, coalesce(t.ticket::jsonb ->> 'title', ''),
           coalesce(d ->> 'signature', ''),
           CASE
               WHEN NOT confident THEN 'none'
               WHEN reason = 'alarm' THEN 'alarm'
               WHEN reason LIKE 'rule:%' THEN 'rule'
               WHEN reason LIKE 'taught:%' THEN 'taught'
               ELSE 'text'
           END,
           CASE WHEN confident THEN d #>> '{candidates,0,runbook}' END,
           CASE WHEN coalesce((d ->> 'probe')::boolean, false) THEN 1 ELSE 0 END
    FROM (SELECT source, ticket FROM tickets WHERE ticket_id = NEW.ticket_id
          ORDER BY id DESC LIMIT 1) AS t;
    RETURN NULL;
END
$$;
CREATE TABLE ticket_hours (
    hour BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    runbook TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (hour, outcome, runbook)
);
CREATE TABLE gap_days (
    day BIGINT NOT NULL,
    signature TEXT NOT NULL,
    n BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (day, signature)
);
CREATE FUNCTION runlink_count_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.probe = 0 THEN
        INSERT INTO ticket_hours (hour, outcome, runbook, n)
        VALUES ((NEW.at / 3600000) * 3600000, NEW.outcome, coalesce(NEW.runbook, ''), 1)
        ON CONFLICT (hour, outcome, runbook) DO UPDATE SET n = ticket_hours.n + 1;
        IF NEW.outcome = 'none' THEN
            INSERT INTO gap_days (day, signature, n, last_at)
            VALUES ((NEW.at / 86400000) * 86400000, NEW.signature, 1, NEW.at)
            ON CONFLICT (day, signature) DO UPDATE
            SET n = gap_days.n + 1, last_at = greatest(gap_days.last_at, excluded.last_at);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER ticket_index_count AFTER INSERT ON ticket_index FOR EACH ROW
EXECUTE FUNCTION runlink_count_ticket();
CREATE TRIGGER ticket_index_fill AFTER INSERT ON audit FOR EACH ROW
WHEN (NEW.kind = 'decided' AND NEW.ticket_id IS NOT NULL)
EXECUTE FUNCTION runlink_index_decided();
CREATE FUNCTION runlink_index_enqueued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ticket_index SET destination = NEW.detail::jsonb ->> 'destination'
    WHERE id = (SELECT max(id) FROM ticket_index WHERE ticket_id = NEW.ticket_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER ticket_index_destination AFTER INSERT ON audit FOR EACH ROW
WHEN (NEW.kind = 'enqueued' AND NEW.ticket_id IS NOT NULL)
EXECUTE FUNCTION runlink_index_enqueued();
"#,
];

/// The advisory lock key migrations run under (any constant unique to runlink).
pub(super) const MIGRATION_LOCK: i64 = 0x72756e6c696e6b;
