//! Cursors, the inbox of ticket versions, and decisions.

use std::time::Duration;

use deskbridge_connector::{Cursor, Ticket};
use serde_json::{json, Value};

use super::{audit, later, now, sha256_hex, Event, InboxRow, LatestDecision, Store};

impl Store {
    /// The stored cursor of a connector instance.
    pub async fn cursor(&self, connector: &str) -> anyhow::Result<Cursor> {
        let c: Option<Option<String>> = sqlx::query_scalar("SELECT cursor FROM cursors WHERE connector = ?")
            .bind(connector)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Cursor(c.flatten()))
    }

    /// Stores one polled page and the cursor after it, atomically. Returns how many ticket
    /// versions were new.
    pub async fn ingest_page(&self, connector: &str, tickets: &[Ticket], next: &Cursor) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for t in tickets {
            let raw = t.raw.to_string();
            let digest = sha256_hex(raw.as_bytes());
            let result = sqlx::query(
                "INSERT INTO inbox (connector, ticket_key, version, number, url, updated, raw, raw_sha256, received_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (connector, ticket_key, version) DO NOTHING",
            )
            .bind(connector)
            .bind(&t.key)
            .bind(&t.version)
            .bind(&t.number)
            .bind(&t.url)
            .bind(t.updated.to_rfc3339())
            .bind(&raw)
            .bind(&digest)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            if result.rows_affected() > 0 {
                inserted += 1;
                audit::append(
                    &mut tx,
                    connector,
                    &t.key,
                    Event::TicketSeen,
                    json!({"number": t.number, "version": t.version, "raw_sha256": digest}),
                )
                .await?;
            }
        }
        sqlx::query("INSERT INTO cursors (connector, cursor, updated_at) VALUES (?, ?, ?) ON CONFLICT (connector) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at")
            .bind(connector)
            .bind(&next.0)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Ticket versions ready for normalization and decision: new ones, and pending ones whose
    /// retry time is before `due_before` (a pass passes its start time, so a request that fails
    /// during the pass is not retried within it).
    pub async fn due_inbox(&self, limit: i64, due_before: &str) -> anyhow::Result<Vec<InboxRow>> {
        Ok(sqlx::query_as(
            "SELECT id, connector, ticket_key, version, number, url, updated, raw, attempts, received_at FROM inbox
             WHERE status = 'received' OR (status = 'pending' AND next_attempt_at < ?)
             ORDER BY id LIMIT ?",
        )
        .bind(due_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The normalized JSON of the ticket's latest earlier version, if any.
    pub async fn previous_normalized(&self, row: &InboxRow) -> anyhow::Result<Option<Value>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT normalized FROM inbox WHERE connector = ? AND ticket_key = ? AND id < ? AND normalized IS NOT NULL AND status != 'stale' ORDER BY id DESC LIMIT 1",
        )
        .bind(&row.connector)
        .bind(&row.ticket_key)
        .bind(row.id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Whether a later version of the same ticket is already in the inbox.
    pub async fn has_newer_version(&self, row: &InboxRow) -> anyhow::Result<bool> {
        let newer: Option<i64> = sqlx::query_scalar("SELECT id FROM inbox WHERE connector = ? AND ticket_key = ? AND id > ? LIMIT 1")
            .bind(&row.connector)
            .bind(&row.ticket_key)
            .bind(row.id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(newer.is_some())
    }

    /// The latest decision on a ticket.
    pub async fn latest_decision(&self, connector: &str, ticket_key: &str) -> anyhow::Result<Option<LatestDecision>> {
        Ok(sqlx::query_as(
            "SELECT request_hash, decision_id, outcome FROM decisions WHERE connector = ? AND ticket_key = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(connector)
        .bind(ticket_key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a ticket that is not an access request, or a version that changes nothing, with
    /// any further evidence (`extra`) in the same transaction.
    pub async fn settle(
        &self,
        row: &InboxRow,
        status: &str,
        normalized: &Value,
        request_hash: Option<&str>,
        extra: &[(Event, Value)],
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        mark_normalized(&mut tx, row, status, status, normalized, request_hash, extra).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a decision and queues its comment in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_decision(
        &self,
        row: &InboxRow,
        normalized: &Value,
        request_hash: &str,
        decision: &crate::schema::Decision,
        raw: &Value,
        marker: &str,
        body: &str,
        extra: &[(Event, Value)],
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let decision_json = serde_json::to_value(decision)?;
        mark_normalized(&mut tx, row, "decided", "access_request", normalized, Some(request_hash), extra).await?;
        sqlx::query("INSERT INTO decisions (decision_id, inbox_id, connector, ticket_key, request_hash, outcome, decision, raw, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&decision.decision_id)
            .bind(row.id)
            .bind(&row.connector)
            .bind(&row.ticket_key)
            .bind(request_hash)
            .bind(decision.outcome.as_str())
            .bind(decision_json.to_string())
            .bind(raw.to_string())
            .bind(decision.decided_at.to_rfc3339())
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            &row.connector,
            &row.ticket_key,
            Event::Decided,
            json!({"decision": decision_json, "pdp_raw": raw}),
        )
        .await?;
        super::outbox::queue_comment(&mut tx, row, request_hash, &decision.decision_id, marker, body).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps a request pending after a failed decision, to be retried after `delay`.
    pub async fn decision_failed(&self, row: &InboxRow, normalized: &Value, error: &str, delay: Duration) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE inbox SET status = 'pending', normalized = ?, attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?")
            .bind(normalized.to_string())
            .bind(later(delay))
            .bind(error)
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            &row.connector,
            &row.ticket_key,
            Event::DecisionFailed,
            json!({"version": row.version, "error": error, "attempt": row.attempts + 1}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Sets an inbox row's status and normalized form, and records the normalization and any
/// further evidence, inside the caller's transaction.
async fn mark_normalized(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    row: &InboxRow,
    status: &str,
    audit_status: &str,
    normalized: &Value,
    request_hash: Option<&str>,
    extra: &[(Event, Value)],
) -> anyhow::Result<()> {
    sqlx::query("UPDATE inbox SET status = ?, normalized = ?, request_hash = ?, last_error = NULL WHERE id = ?")
        .bind(status)
        .bind(normalized.to_string())
        .bind(request_hash)
        .bind(row.id)
        .execute(&mut **tx)
        .await?;
    let payload = json!({"version": row.version, "status": audit_status, "request_hash": request_hash, "normalized": normalized});
    audit::append(tx, &row.connector, &row.ticket_key, Event::Normalized, payload).await?;
    for (event, payload) in extra {
        audit::append(tx, &row.connector, &row.ticket_key, *event, payload.clone()).await?;
    }
    Ok(())
}
