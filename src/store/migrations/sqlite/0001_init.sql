-- deskbridge store, SQLite. One file holds cursors, the inbox, decisions, the outbox and the
-- append-only audit log.

CREATE TABLE cursors (
    connector   TEXT PRIMARY KEY,
    cursor      TEXT,
    updated_at  TEXT NOT NULL
);

-- One row per ticket version, deduplicated on (connector, ticket_key, version).
-- status: received | not_access | pending (decision failed, retried) | decided | unchanged
CREATE TABLE inbox (
    id               INTEGER PRIMARY KEY,
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
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_error       TEXT,
    UNIQUE (connector, ticket_key, version)
);
CREATE INDEX inbox_work ON inbox (status, next_attempt_at);
CREATE INDEX inbox_ticket ON inbox (connector, ticket_key);

CREATE TABLE decisions (
    id            INTEGER PRIMARY KEY,
    decision_id   TEXT NOT NULL UNIQUE,
    inbox_id      INTEGER NOT NULL REFERENCES inbox (id),
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
    id               INTEGER PRIMARY KEY,
    connector        TEXT NOT NULL,
    ticket_key       TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    decision_id      TEXT NOT NULL,
    marker           TEXT NOT NULL UNIQUE,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'queued',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    comment_id       TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    posted_at        TEXT,
    UNIQUE (connector, ticket_key, request_hash)
);
CREATE INDEX outbox_work ON outbox (status, next_attempt_at);

-- Hash-chained evidence: hash = sha256(canonical JSON of the record with prev_hash).
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    connector   TEXT,
    ticket_key  TEXT,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
