//! The outbox of comments.

use std::time::Duration;

use deskbridge_connector::CommentId;
use serde_json::json;

use super::{audit, later, now, sha256_hex, Event, InboxRow, OutboxRow, Store};

impl Store {
    /// Queues the one "decision delayed" comment of a request version (a second call is a
    /// no-op). Returns whether it was queued now.
    pub async fn queue_delayed_comment(&self, row: &InboxRow, request_hash: &str, marker: &str, body: &str) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let fresh = queue_comment(&mut tx, row, &format!("{request_hash}:delayed"), "delayed", marker, body).await?;
        tx.commit().await?;
        Ok(fresh)
    }

    /// Comments due for posting before `due_before` (see [`Store::due_inbox`]).
    pub async fn due_outbox(&self, limit: i64, due_before: &str) -> anyhow::Result<Vec<OutboxRow>> {
        Ok(sqlx::query_as(
            "SELECT id, connector, ticket_key, marker, body, decision_id, attempts FROM outbox WHERE status = 'queued' AND next_attempt_at < ? ORDER BY id LIMIT ?",
        )
        .bind(due_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks a comment posted (or found already posted).
    pub async fn comment_posted(&self, row: &OutboxRow, comment_id: &CommentId, found_existing: bool) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE outbox SET status = 'posted', comment_id = ?, posted_at = ?, last_error = NULL WHERE id = ?")
            .bind(&comment_id.0)
            .bind(now())
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            &row.connector,
            &row.ticket_key,
            Event::CommentPosted,
            json!({"marker": row.marker, "comment_id": comment_id.0, "decision_id": row.decision_id, "found_existing": found_existing}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reschedules a comment after a retryable failure, or parks it after a fatal one.
    pub async fn comment_failed(&self, row: &OutboxRow, error: &str, retry_in: Option<Duration>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let (status, next) = match retry_in {
            Some(delay) => ("queued", later(delay)),
            None => ("failed", now()),
        };
        sqlx::query("UPDATE outbox SET status = ?, attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?")
            .bind(status)
            .bind(next)
            .bind(error)
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
        if retry_in.is_none() {
            audit::append(
                &mut tx,
                &row.connector,
                &row.ticket_key,
                Event::CommentFailed,
                json!({"marker": row.marker, "error": error}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Queues a comment in the caller's transaction, once per (ticket, request hash); records it
/// in the audit log when it is new. Returns whether it was queued now.
pub(super) async fn queue_comment(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    row: &InboxRow,
    request_hash: &str,
    decision_id: &str,
    marker: &str,
    body: &str,
) -> anyhow::Result<bool> {
    let queued = sqlx::query(
        "INSERT INTO outbox (connector, ticket_key, request_hash, decision_id, marker, body, next_attempt_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(&row.connector)
    .bind(&row.ticket_key)
    .bind(request_hash)
    .bind(decision_id)
    .bind(marker)
    .bind(body)
    .bind(now())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    let fresh = queued.rows_affected() > 0;
    if fresh {
        let payload = json!({"marker": marker, "body_sha256": sha256_hex(body.as_bytes()), "decision_id": decision_id});
        audit::append(tx, &row.connector, &row.ticket_key, Event::CommentQueued, payload).await?;
    }
    Ok(fresh)
}
