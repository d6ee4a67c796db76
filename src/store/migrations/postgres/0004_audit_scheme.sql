-- Which canonical JSON a record's hash is over: 1 = the sorted-key JSON of records written
-- before this migration, 2 = RFC 8785 (JCS), for every record from now on. The scheme of a
-- scheme-2 record is itself hashed, and a log never goes back from 2 to 1.
ALTER TABLE audit ADD COLUMN scheme INTEGER NOT NULL DEFAULT 1;
-- `audit export --since` filters by time in SQL.
CREATE INDEX audit_at ON audit (at);
