-- Replicas write side by side: no lock serializes write transactions any more. A write
-- transaction commits its audit records here with its other writes; just after the commit,
-- under an advisory lock only sealing takes, they are chained onto `audit` (hash, prev_hash,
-- seq) in the order they were inserted and deleted from here, in one transaction. Rows wait
-- here only between a commit and its sealing, or until the next sealing if a replica died in
-- between (every start seals what is left).
CREATE TABLE audit_unsealed (
    id          BIGSERIAL PRIMARY KEY,
    at          TEXT NOT NULL,
    connector   TEXT NOT NULL,
    ticket_key  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL
);
