-- Per-installation secrets and settings, made once on first open. `marker_key` keys the
-- comment markers (HMAC-SHA256), so nobody outside this installation can compute a marker.
CREATE TABLE installation (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- The current OAuth tokens of each connector using rotating refresh tokens, shared by every
-- replica and rotated under a row lock: one token chain, however many replicas. Empty until
-- the first rotation (the configured refresh token is used then).
CREATE TABLE oauth_tokens (
    name           TEXT PRIMARY KEY,
    refresh_token  TEXT,
    access_token   TEXT,
    expires_at     TEXT,
    rotated_at     TEXT
);

-- Connectors whose writes the ITSM refused (401/403): nothing more is posted through them
-- until an admin fixes the credentials and runs `deskbridge retry --connector <id>`.
CREATE TABLE connector_halts (
    connector  TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    at         TEXT NOT NULL
);
