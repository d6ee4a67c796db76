-- Work is claimed before it is done: a replica writes its id and a lease expiry on the rows it
-- takes, and finishing the work checks the claim is still its own. A claim whose lease has
-- expired (its holder died or stalled) can be taken by anyone.
ALTER TABLE inbox ADD COLUMN claimed_by TEXT;
ALTER TABLE inbox ADD COLUMN claimed_until TEXT;
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until TEXT;

-- Named leases: one poller per connector instance at a time.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
