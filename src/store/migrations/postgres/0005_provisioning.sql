-- Provisioning evidence and time-bound access (see src/provisioning). PostgreSQL twin of sqlite/0008.
--
-- Every entitlement change deskbridge is told about or observes: a SCIM security event token
-- (push), a reconciliation diff of a catalog group, or a signed webhook from an IGA tool.
-- Deduplicated per source on `dedupe_key` (the SET's iss+jti, the webhook's event id, the
-- reconciliation's group+member+change+snapshot). `processed_at` is set once it was matched.
CREATE TABLE access_events (
    id              BIGSERIAL PRIMARY KEY,
    source          TEXT NOT NULL,
    dedupe_key      TEXT NOT NULL,
    via             TEXT NOT NULL,
    kind            TEXT NOT NULL,
    group_name      TEXT,
    group_id        TEXT,
    user_name       TEXT,
    user_id         TEXT,
    occurred_at     TEXT NOT NULL,
    observed_after  TEXT,
    received_at     TEXT NOT NULL,
    decision_ref    TEXT,
    ticket_ref      TEXT,
    expires_at      TEXT,
    raw             TEXT NOT NULL,
    raw_sha256      TEXT NOT NULL,
    processed_at    TEXT,
    outcome         TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    UNIQUE (source, dedupe_key)
);
CREATE INDEX access_events_todo ON access_events (processed_at, id);

-- One row per approving decision whose entitlement a catalog group represents:
-- approved → granted (evidence) → expired (timer) / revoked (evidence); superseded when a later
-- decision replaces an approval not yet granted; extended when a later approval continues it.
CREATE TABLE access_lifecycle (
    decision_id       TEXT PRIMARY KEY,
    connector         TEXT NOT NULL,
    ticket_key        TEXT NOT NULL,
    number            TEXT NOT NULL,
    request_hash      TEXT NOT NULL,
    beneficiary       TEXT NOT NULL,
    system_id         TEXT NOT NULL,
    entitlement       TEXT NOT NULL,
    group_name        TEXT NOT NULL,
    owner             TEXT NOT NULL,
    approved_at       TEXT NOT NULL,
    max_days          BIGINT,
    end_date          TEXT,
    state             TEXT NOT NULL DEFAULT 'approved',
    granted_at        TEXT,
    grant_event       BIGINT,
    expires_at        TEXT,
    expiry_fired_at   TEXT,
    revoked_at        TEXT,
    revoke_event      BIGINT,
    unfulfilled_at    TEXT
);
CREATE INDEX access_lifecycle_match ON access_lifecycle (beneficiary, group_name, state);
CREATE INDEX access_lifecycle_timer ON access_lifecycle (state, expires_at);
-- Every decision supersedes its ticket's approvals not yet granted.
CREATE INDEX access_lifecycle_ticket ON access_lifecycle (connector, ticket_key);

-- What deskbridge last knew of each catalog group's membership (from events and
-- reconciliation), and which identities the directory disabled.
CREATE TABLE memberships (
    group_name  TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    present     BIGINT NOT NULL,
    since       TEXT NOT NULL,
    via         TEXT NOT NULL,
    event_id    BIGINT,
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX memberships_user ON memberships (user_name);
CREATE TABLE disabled_identities (
    user_name  TEXT PRIMARY KEY,
    since      TEXT NOT NULL,
    event_id   BIGINT
);
-- When each reconciled group was last read (the lower time bound of what the next read finds).
CREATE TABLE reconciliations (
    group_name  TEXT PRIMARY KEY,
    read_at     TEXT NOT NULL
);

-- Provisioning findings, each recorded once (and in the audit log), resolved when later
-- evidence closes the gap (the access removed).
CREATE TABLE access_findings (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    connector    TEXT NOT NULL,
    ticket_key   TEXT NOT NULL,
    number       TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    group_name   TEXT NOT NULL,
    detail       TEXT NOT NULL,
    found_at     TEXT NOT NULL,
    resolved_at  TEXT,
    UNIQUE (kind, subject)
);
