-- Claiming walks these indexes in id order and stops at the batch size, instead of sorting
-- every waiting ticket version (or queued comment) on each claim.
CREATE INDEX inbox_claim ON inbox (status, id);
CREATE INDEX outbox_claim ON outbox (status, id);
