-- Shadow mode: what a second decision point said beside the primary. Never changes an outcome.
CREATE TABLE shadow_decisions (
    id                   INTEGER PRIMARY KEY,
    connector            TEXT NOT NULL,
    ticket_key           TEXT NOT NULL,
    number               TEXT NOT NULL,
    request_hash         TEXT NOT NULL,
    primary_decision_id  TEXT NOT NULL,
    primary_outcome      TEXT NOT NULL,
    shadow_pdp           TEXT NOT NULL,
    shadow_outcome       TEXT,
    shadow_error         TEXT,
    agree                INTEGER NOT NULL,
    at                   TEXT NOT NULL
);
CREATE INDEX shadow_disagreements ON shadow_decisions (agree, id);
