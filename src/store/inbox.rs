//! Cursors, the inbox of ticket versions, and decisions.

use std::time::Duration;

use deskbridge_connector::{Cursor, Ticket};
use serde_json::{json, Value};

use super::{audit, later, now, sha256_hex, still_claimed, ChangedMeanwhile, Event, InboxRow, LatestDecision, Store};

impl Store {
    /// The stored cursor of a connector instance.
    pub async fn cursor(&self, connector: &str) -> anyhow::Result<Cursor> {
        Ok(Cursor(self.stored_cursor(connector).await?.flatten()))
    }

    /// The cursors-table row under `key`: `None` when there is none, `Some(None)` for a stored
    /// start position.
    async fn stored_cursor(&self, key: &str) -> anyhow::Result<Option<Option<String>>> {
        Ok(sqlx::query_scalar("SELECT cursor FROM cursors WHERE connector = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Stores one polled page and the cursor after it, atomically. Returns how many ticket
    /// versions were new.
    pub async fn ingest_page(&self, connector: &str, tickets: &[Ticket], next: &Cursor) -> anyhow::Result<usize> {
        self.ingest(connector, connector, tickets, next).await
    }

    /// The stored cursor of a backfill (see [`Store::ingest_backfill_page`]).
    pub async fn backfill_cursor(&self, connector: &str, since: &str) -> anyhow::Result<Option<Cursor>> {
        Ok(self.stored_cursor(&backfill_key(connector, since)).await?.map(Cursor))
    }

    /// Stores one page of a backfill from `since` and the backfill's own cursor, atomically: an
    /// interrupted backfill resumes after the last stored page. The connector's live cursor is
    /// left alone.
    pub async fn ingest_backfill_page(&self, connector: &str, since: &str, tickets: &[Ticket], next: &Cursor) -> anyhow::Result<usize> {
        self.ingest(&backfill_key(connector, since), connector, tickets, next).await
    }

    async fn ingest(&self, cursor_key: &str, connector: &str, tickets: &[Ticket], next: &Cursor) -> anyhow::Result<usize> {
        let mut tx = self.begin_write().await?;
        let inserted = insert_tickets(&mut tx, connector, tickets, "poll").await?;
        sqlx::query("INSERT INTO cursors (connector, cursor, updated_at) VALUES ($1, $2, $3) ON CONFLICT (connector) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at")
            .bind(cursor_key)
            .bind(&next.0)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Whether a webhook delivery with this id was already taken in.
    pub async fn delivery_seen(&self, connector: &str, delivery_id: &str) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT 1 FROM webhook_deliveries WHERE connector = $1 AND delivery_id = $2")
            .bind(connector)
            .bind(delivery_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Stores the tickets a verified webhook delivery led to (read again from the ITSM) and its
    /// delivery id, atomically; the poll cursor is untouched. `None` when the same delivery was
    /// taken in meanwhile (nothing is stored).
    pub async fn ingest_webhook(&self, connector: &str, delivery_id: Option<&str>, tickets: &[Ticket]) -> anyhow::Result<Option<usize>> {
        let mut tx = self.begin_write().await?;
        if let Some(id) = delivery_id {
            let fresh = sqlx::query(
                "INSERT INTO webhook_deliveries (connector, delivery_id, received_at) VALUES ($1, $2, $3) ON CONFLICT (connector, delivery_id) DO NOTHING",
            )
            .bind(connector)
            .bind(id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            if fresh.rows_affected() == 0 {
                return Ok(None);
            }
        }
        let inserted = insert_tickets(&mut tx, connector, tickets, "webhook").await?;
        tx.commit().await?;
        Ok(Some(inserted))
    }

    /// Claims ticket versions ready for normalization and decision: new ones, and pending ones
    /// whose retry time is before `due_before` (a pass passes its start time, so a request that
    /// fails during the pass is not retried within it). A row claimed by a live replica is
    /// skipped, and so is any version of a ticket that has one; a claim whose lease expired is
    /// taken over.
    pub async fn claim_inbox(&self, limit: i64, due_before: &str) -> anyhow::Result<Vec<InboxRow>> {
        let now = now();
        let sql = format!(
            "UPDATE inbox SET claimed_by = $1, claimed_until = $2 WHERE id IN (
                SELECT i.id FROM inbox i
                WHERE (i.status = 'received' OR (i.status = 'pending' AND i.next_attempt_at < $3))
                  AND (i.claimed_until IS NULL OR i.claimed_until < $4 OR i.claimed_by = $1)
                  AND NOT EXISTS (SELECT 1 FROM inbox j WHERE j.connector = i.connector AND j.ticket_key = i.ticket_key
                                  AND j.id != i.id AND j.claimed_until >= $4 AND j.claimed_by != $1
                                  AND j.status IN ('received', 'pending'))
                ORDER BY i.id LIMIT $5{})
             RETURNING id, connector, ticket_key, version, number, url, updated, raw, attempts, received_at",
            self.backend.skip_locked()
        );
        let mut rows: Vec<InboxRow> = sqlx::query_as(&sql)
            .bind(&*self.holder)
            .bind(later(self.lease))
            .bind(due_before)
            .bind(&now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// The normalized JSON of the ticket's latest earlier version, if any.
    pub async fn previous_normalized(&self, row: &InboxRow) -> anyhow::Result<Option<Value>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT normalized FROM inbox WHERE connector = $1 AND ticket_key = $2 AND id < $3 AND normalized IS NOT NULL AND status != 'stale' ORDER BY id DESC LIMIT 1",
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
        let newer: Option<i64> = sqlx::query_scalar("SELECT id FROM inbox WHERE connector = $1 AND ticket_key = $2 AND id > $3 LIMIT 1")
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
            "SELECT request_hash, decision_id, outcome FROM decisions WHERE connector = $1 AND ticket_key = $2 ORDER BY id DESC LIMIT 1",
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
        let mut tx = self.begin_write().await?;
        mark_normalized(&mut tx, &self.holder, row, status, status, normalized, request_hash, extra).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a decision and queues its comment in one transaction. `read_latest` is the
    /// ticket's latest decision id as read before deciding: if another replica decided this
    /// ticket since, nothing is written and [`ChangedMeanwhile`] says to decide again.
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
        read_latest: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut tx = self.begin_write().await?;
        let decision_json = serde_json::to_value(decision)?;
        mark_normalized(
            &mut tx,
            &self.holder,
            row,
            "decided",
            "access_request",
            normalized,
            Some(request_hash),
            extra,
        )
        .await?;
        // Writers are serialized here, so this sees every decision committed before ours.
        let latest: Option<(String, i64)> =
            sqlx::query_as("SELECT decision_id, inbox_id FROM decisions WHERE connector = $1 AND ticket_key = $2 ORDER BY id DESC LIMIT 1")
                .bind(&row.connector)
                .bind(&row.ticket_key)
                .fetch_optional(&mut *tx)
                .await?;
        if latest.as_ref().map(|(id, _)| id.as_str()) != read_latest || latest.is_some_and(|(_, inbox_id)| inbox_id > row.id) {
            return Err(ChangedMeanwhile.into());
        }
        sqlx::query("INSERT INTO decisions (decision_id, inbox_id, connector, ticket_key, request_hash, outcome, decision, raw, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
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
        super::outbox::queue_comment(
            &mut tx,
            &row.connector,
            &row.ticket_key,
            request_hash,
            &decision.decision_id,
            marker,
            body,
        )
        .await?;
        super::lifecycle::on_decision(&mut tx, row, normalized, request_hash, decision).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives up this replica's claim on a row without changing it, so it is taken again.
    pub async fn release(&self, row: &InboxRow) -> anyhow::Result<()> {
        sqlx::query("UPDATE inbox SET claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND claimed_by = $2")
            .bind(row.id)
            .bind(&*self.holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps a request pending after a failed decision, to be retried after `delay`.
    pub async fn decision_failed(&self, row: &InboxRow, normalized: &Value, error: &str, delay: Duration) -> anyhow::Result<()> {
        let mut tx = self.begin_write().await?;
        still_claimed(
            sqlx::query(
                "UPDATE inbox SET status = 'pending', normalized = $1, attempts = attempts + 1, next_attempt_at = $2, last_error = $3,
                    claimed_by = NULL, claimed_until = NULL
             WHERE id = $4 AND claimed_by = $5",
            )
            .bind(normalized.to_string())
            .bind(later(delay))
            .bind(error)
            .bind(row.id)
            .bind(&*self.holder)
            .execute(&mut *tx)
            .await?,
        )?;
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

/// The cursors-table key of a backfill: one per (connector, start), so a backfill from another
/// date starts afresh while the same command resumes.
fn backfill_key(connector: &str, since: &str) -> String {
    format!("backfill:{connector}:{since}")
}

/// Sets an inbox row's status and normalized form, and records the normalization and any
/// further evidence, inside the caller's transaction. Fails with [`LostClaim`] when the row is
/// no longer claimed by `holder`.
#[allow(clippy::too_many_arguments)]
async fn mark_normalized(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    holder: &str,
    row: &InboxRow,
    status: &str,
    audit_status: &str,
    normalized: &Value,
    request_hash: Option<&str>,
    extra: &[(Event, Value)],
) -> anyhow::Result<()> {
    still_claimed(
        sqlx::query(
            "UPDATE inbox SET status = $1, normalized = $2, request_hash = $3, last_error = NULL, claimed_by = NULL, claimed_until = NULL
         WHERE id = $4 AND claimed_by = $5",
        )
        .bind(status)
        .bind(normalized.to_string())
        .bind(request_hash)
        .bind(row.id)
        .bind(holder)
        .execute(&mut **tx)
        .await?,
    )?;
    let payload = json!({"version": row.version, "status": audit_status, "request_hash": request_hash, "normalized": normalized});
    audit::append(tx, &row.connector, &row.ticket_key, Event::Normalized, payload).await?;
    for (event, payload) in extra {
        audit::append(tx, &row.connector, &row.ticket_key, *event, payload.clone()).await?;
    }
    Ok(())
}

/// Inserts new ticket versions (known ones are skipped) with a `ticket_seen` audit record each.
async fn insert_tickets(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    connector: &str,
    tickets: &[Ticket],
    via: &str,
) -> anyhow::Result<usize> {
    let mut inserted = 0;
    for t in tickets {
        let raw = t.raw.to_string();
        let digest = sha256_hex(raw.as_bytes());
        let result = sqlx::query(
            "INSERT INTO inbox (connector, ticket_key, version, number, url, updated, raw, raw_sha256, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (connector, ticket_key, version) DO NOTHING",
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
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() > 0 {
            inserted += 1;
            audit::append(
                tx,
                connector,
                &t.key,
                Event::TicketSeen,
                json!({"number": t.number, "version": t.version, "raw_sha256": digest, "via": via}),
            )
            .await?;
        }
    }
    Ok(inserted)
}
