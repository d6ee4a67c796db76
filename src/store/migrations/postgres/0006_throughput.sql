-- Read each change once: the digest of a ticket version's content without the fields every
-- write bumps (ServiceNow's sys_mod_count and sys_updated_on, Jira's updated). A new version
-- whose digest equals the ticket's latest stored version changed nothing deskbridge reads
-- (typically deskbridge's own comment) and is not stored again.
ALTER TABLE inbox ADD COLUMN content_sha256 TEXT;
-- How many times a comment was claimed for posting. The claim is committed before the post is
-- sent, so a comment never claimed before cannot have reached the ITSM and its first post
-- skips the marker lookup. Rows claimed or tried before this column existed count as claimed.
ALTER TABLE outbox ADD COLUMN claims BIGINT NOT NULL DEFAULT 0;
UPDATE outbox SET claims = 1 WHERE claimed_by IS NOT NULL OR attempts > 0 OR status != 'queued';
