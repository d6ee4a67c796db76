-- deskbridge store, PostgreSQL. The same tables as the SQLite store (timestamps are RFC 3339
-- text in UTC with microseconds, which sort as time), shared by any number of replicas.

CREATE TABLE cursors (
    connector   TEXT PRIMARY KEY,
    cursor      TEXT,
    updated_at  TEXT NOT NULL
);

-- One row per ticket version, deduplicated on (connector, ticket_key, version).
-- status: received | not_access | pending | decided | unchanged | stale
CREATE TABLE inbox (
    id               BIGSERIAL PRIMARY KEY,
    connector        TEXT NOT NULL,
    ticket_key       TEXT NOT NULL,
    version          TEXT NOT NULL,
    number           TEXT NOT NULL,
    url              TEXT NOT NULL,
    updated          TEXT NOT NULL,
    raw              TEXT NOT NULL,
    raw_sha256       TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'received',
    normalized       TEXT,
    request_hash     TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_error       TEXT,
    claimed_by       TEXT,
    claimed_until    TEXT,
    UNIQUE (connector, ticket_key, version)
);
CREATE INDEX inbox_work ON inbox (status, next_attempt_at);
CREATE INDEX inbox_ticket ON inbox (connector, ticket_key);

CREATE TABLE decisions (
    id            BIGSERIAL PRIMARY KEY,
    decision_id   TEXT NOT NULL UNIQUE,
    inbox_id      BIGINT NOT NULL REFERENCES inbox (id),
    connector     TEXT NOT NULL,
    ticket_key    TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    decision      TEXT NOT NULL,
    raw           TEXT NOT NULL,
    decided_at    TEXT NOT NULL
);
CREATE INDEX decisions_ticket ON decisions (connector, ticket_key, id);

-- One comment per (ticket, request version); the marker is unique too.
CREATE TABLE outbox (
    id               BIGSERIAL PRIMARY KEY,
    connector        TEXT NOT NULL,
    ticket_key       TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    decision_id      TEXT NOT NULL,
    marker           TEXT NOT NULL UNIQUE,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'queued',
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    comment_id       TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    posted_at        TEXT,
    claimed_by       TEXT,
    claimed_until    TEXT,
    UNIQUE (connector, ticket_key, request_hash)
);
CREATE INDEX outbox_work ON outbox (status, next_attempt_at);

-- Hash-chained evidence. Appends are serialized by a transaction-scoped advisory lock, so
-- replicas never fork the chain.
CREATE TABLE audit (
    seq         BIGINT PRIMARY KEY,
    at          TEXT NOT NULL,
    connector   TEXT,
    ticket_key  TEXT,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

CREATE TABLE audit_checkpoints (
    id          BIGSERIAL PRIMARY KEY,
    seq         BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    at          TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);

CREATE FUNCTION deskbridge_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION deskbridge_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION deskbridge_append_only();
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION deskbridge_append_only();

CREATE TABLE shadow_decisions (
    id                   BIGSERIAL PRIMARY KEY,
    connector            TEXT NOT NULL,
    ticket_key           TEXT NOT NULL,
    number               TEXT NOT NULL,
    request_hash         TEXT NOT NULL,
    primary_decision_id  TEXT NOT NULL,
    primary_outcome      TEXT NOT NULL,
    shadow_pdp           TEXT NOT NULL,
    shadow_outcome       TEXT,
    shadow_error         TEXT,
    agree                BIGINT NOT NULL,
    at                   TEXT NOT NULL
);
CREATE INDEX shadow_disagreements ON shadow_decisions (agree, id);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
