-- Claiming new ticket versions walks this index in arrival order and stops at the batch size,
-- instead of sorting every waiting version on each claim.
CREATE INDEX inbox_claim ON inbox (status, id);
