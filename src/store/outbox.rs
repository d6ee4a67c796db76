//! The outbox of comments.

use std::time::Duration;

use deskbridge_connector::CommentId;
use serde_json::json;

use super::{audit, later, now, sha256_hex, still_claimed, Event, InboxRow, OutboxRow, Store};

impl Store {
    /// Queues the one "decision delayed" comment of a request version (a second call is a
    /// no-op). Returns whether it was queued now.
    pub async fn queue_delayed_comment(&self, row: &InboxRow, request_hash: &str, marker: &str, body: &str) -> anyhow::Result<bool> {
        let mut tx = self.begin_write().await?;
        let fresh = queue_comment(
            &mut tx,
            &row.connector,
            &row.ticket_key,
            &format!("{request_hash}:delayed"),
            "delayed",
            marker,
            body,
        )
        .await?;
        tx.commit().await?;
        Ok(fresh)
    }

    /// Claims comments due for posting: never tried ones queued by now, and retries due before
    /// `due_before` (see [`Store::claim_inbox`]); a
    /// comment claimed by a live replica is skipped, one whose lease expired is taken over.
    /// The lease outlasts the poster's check-then-post, so a post that timed out on another
    /// replica has landed (or failed) before anyone re-checks the ticket for its marker.
    pub async fn claim_outbox(&self, limit: i64, due_before: &str) -> anyhow::Result<Vec<OutboxRow>> {
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2, claims = claims + 1 WHERE id IN (
                SELECT id FROM outbox WHERE status = 'queued'
                  AND (next_attempt_at < $3 OR (attempts = 0 AND next_attempt_at <= $4))
                  AND (claimed_until IS NULL OR claimed_until < $4 OR claimed_by = $1)
                  AND connector NOT IN (SELECT connector FROM connector_halts)
                ORDER BY id LIMIT $5{})
             RETURNING id, connector, ticket_key, marker, body, decision_id, attempts, claims",
            self.backend.skip_locked()
        );
        let mut rows: Vec<OutboxRow> = self
            .write_fetch_all(|| {
                sqlx::query_as(&sql)
                    .bind(&*self.holder)
                    .bind(later(self.lease))
                    .bind(due_before)
                    .bind(now())
                    .bind(limit)
            })
            .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Extends this replica's claim on a comment just before it is posted, so the lease covers
    /// the post itself. Fails with [`LostClaim`] when another replica took the comment over;
    /// the caller must then not post.
    pub async fn renew_outbox_claim(&self, row: &OutboxRow) -> anyhow::Result<()> {
        still_claimed(
            self.write_one(|| {
                sqlx::query("UPDATE outbox SET claimed_until = $1 WHERE id = $2 AND claimed_by = $3 AND status = 'queued'")
                    .bind(later(self.lease))
                    .bind(row.id)
                    .bind(&*self.holder)
            })
            .await?,
        )?;
        Ok(())
    }

    /// Gives up this replica's claim on a comment without changing it.
    pub async fn release_comment(&self, row: &OutboxRow) -> anyhow::Result<()> {
        self.write_one(|| {
            sqlx::query("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND claimed_by = $2")
                .bind(row.id)
                .bind(&*self.holder)
        })
        .await?;
        Ok(())
    }

    /// Marks comments posted (or found already posted), in one transaction. Answers the ids of
    /// the rows another replica took over meanwhile (nothing is written for them; the other
    /// replica finds the comment by its marker).
    pub async fn comments_posted(&self, posted: &[(&OutboxRow, &CommentId, bool)]) -> anyhow::Result<Vec<i64>> {
        let mut lost = Vec::new();
        if posted.is_empty() {
            return Ok(lost);
        }
        // The records are made before the write, as a batch's are (see `audit::Ready`).
        let records = posted
            .iter()
            .map(|(row, comment_id, found_existing)| {
                audit::ready(
                    self.backend,
                    &row.connector,
                    &row.ticket_key,
                    Event::CommentPosted,
                    &json!({"marker": row.marker, "comment_id": comment_id.0, "decision_id": row.decision_id, "found_existing": found_existing}),
                )
            })
            .collect::<sqlx::Result<Vec<_>>>()?;
        let mut tx = self.begin_write().await?;
        let at = now();
        let mut held = std::collections::HashSet::with_capacity(posted.len());
        for chunk in posted.chunks(super::ROWS_PER_STATEMENT) {
            let mut sql = String::from("WITH v (id, comment_id) AS (VALUES ");
            super::push_placeholders(&mut sql, chunk.len(), 2, tx.backend);
            sql.push_str(&format!(
                ") UPDATE{} outbox SET status = 'posted', comment_id = v.comment_id, posted_at = {}, last_error = NULL, claimed_by = NULL,
                    claimed_until = NULL
                 FROM v WHERE outbox.id = v.id AND outbox.claimed_by = {} RETURNING outbox.id",
                tx.backend.or_fail(),
                super::next_placeholder(tx.backend, chunk.len() * 2 + 1),
                super::next_placeholder(tx.backend, chunk.len() * 2 + 2),
            ));
            let mut query = sqlx::query_scalar::<_, i64>(&sql);
            for (row, comment_id, _) in chunk {
                query = query.bind(row.id).bind(&comment_id.0);
            }
            held.extend(query.bind(&at).bind(&*self.holder).fetch_all(&mut *tx).await?);
        }
        for ((row, _, _), record) in posted.iter().zip(records) {
            if held.contains(&row.id) {
                tx.chain.records.push(record);
            } else {
                lost.push(row.id);
            }
        }
        tx.commit().await?;
        Ok(lost)
    }

    /// Reschedules a comment after a retryable failure: its next attempt looks for the marker
    /// first.
    pub async fn comment_failed(&self, row: &OutboxRow, error: &str, retry_in: Duration) -> anyhow::Result<()> {
        still_claimed(
            self.write_one(|| {
                sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, claimed_by = NULL, claimed_until = NULL
             WHERE id = $3 AND claimed_by = $4",
            )
            .bind(later(retry_in))
            .bind(error)
            .bind(row.id)
            .bind(&*self.holder)
            })
            .await?,
        )?;
        Ok(())
    }
}

/// A comment to queue with its decision.
pub(super) struct Queued<'a> {
    pub connector: &'a str,
    pub ticket_key: &'a str,
    pub request_hash: &'a str,
    pub decision_id: &'a str,
    pub marker: &'a str,
    pub body: &'a str,
}

/// Queues comments in multi-row inserts, each unless its marker or its ticket's request is
/// queued already. Returns the markers newly queued; the caller records their audit records.
pub(super) async fn queue_comments<'a>(
    tx: &mut super::WriteTx,
    comments: &[Queued<'a>],
) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut fresh = std::collections::HashSet::with_capacity(comments.len());
    let at = now();
    for chunk in comments.chunks(super::ROWS_PER_STATEMENT) {
        let mut sql = format!(
            "INSERT{} INTO outbox (connector, ticket_key, request_hash, decision_id, marker, body, next_attempt_at, created_at) VALUES ",
            tx.backend.or_fail()
        );
        super::push_placeholders(&mut sql, chunk.len(), 8, tx.backend);
        sql.push_str(" ON CONFLICT DO NOTHING RETURNING marker");
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for c in chunk {
            query = query
                .bind(c.connector)
                .bind(c.ticket_key)
                .bind(c.request_hash)
                .bind(c.decision_id)
                .bind(c.marker)
                .bind(c.body)
                .bind(&at)
                .bind(&at);
        }
        fresh.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(fresh)
}

/// The audit record of a comment queued now.
pub(super) async fn record_queued(tx: &mut super::WriteTx, c: &Queued<'_>) -> anyhow::Result<()> {
    let payload = queued_payload(c.marker, c.body, c.decision_id);
    Ok(audit::append(tx, c.connector, c.ticket_key, Event::CommentQueued, payload).await?)
}

/// The payload of a `comment_queued` record.
pub(super) fn queued_payload(marker: &str, body: &str, decision_id: &str) -> serde_json::Value {
    json!({"marker": marker, "body_sha256": sha256_hex(body.as_bytes()), "decision_id": decision_id})
}

/// Queues a comment in the caller's transaction, once per (ticket, request hash); records it
/// in the audit log when it is new. Returns whether it was queued now.
pub(super) async fn queue_comment(
    tx: &mut super::WriteTx,
    connector: &str,
    ticket_key: &str,
    request_hash: &str,
    decision_id: &str,
    marker: &str,
    body: &str,
) -> anyhow::Result<bool> {
    let comment = Queued {
        connector,
        ticket_key,
        request_hash,
        decision_id,
        marker,
        body,
    };
    let fresh = !queue_comments(tx, std::slice::from_ref(&comment)).await?.is_empty();
    if fresh {
        record_queued(tx, &comment).await?;
    }
    Ok(fresh)
}
