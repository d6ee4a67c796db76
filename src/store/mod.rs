//! Durable state in one SQLite file: cursors, the inbox of raw tickets, decisions, the outbox of
//! comments and the audit log. Each page of tickets is stored in one transaction together with
//! the cursor that follows it, so a crash never skips or loses a ticket.

pub mod audit;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deskbridge_connector::{CommentId, Cursor, Ticket};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use audit::{AuditRecord, Event};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A ticket version waiting to be normalized and decided.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    /// Row id.
    pub id: i64,
    /// Connector instance.
    pub connector: String,
    /// Ticket key.
    pub ticket_key: String,
    /// Ticket version.
    pub version: String,
    /// Human-facing number.
    pub number: String,
    /// Link.
    pub url: String,
    /// ITSM update time (RFC 3339).
    pub updated: String,
    /// Raw ticket JSON.
    pub raw: String,
    /// Failed decision attempts so far.
    pub attempts: i64,
    /// When this version arrived.
    pub received_at: String,
}

impl InboxRow {
    /// Rebuilds the connector's ticket.
    pub fn ticket(&self) -> anyhow::Result<Ticket> {
        Ok(Ticket {
            source: self.connector.clone(),
            key: self.ticket_key.clone(),
            number: self.number.clone(),
            url: self.url.clone(),
            updated: DateTime::parse_from_rfc3339(&self.updated)?.with_timezone(&Utc),
            version: self.version.clone(),
            raw: serde_json::from_str(&self.raw)?,
        })
    }
}

/// A comment waiting to be posted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Connector instance.
    pub connector: String,
    /// Ticket key.
    pub ticket_key: String,
    /// Idempotency marker.
    pub marker: String,
    /// Rendered text.
    pub body: String,
    /// The decision it reports.
    pub decision_id: String,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// The latest decision on a ticket.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LatestDecision {
    /// Hash of the request it decided.
    pub request_hash: String,
    /// Its id.
    pub decision_id: String,
    /// Its outcome.
    pub outcome: String,
}

/// One row of the demo/status table.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketSummary {
    /// Connector.
    pub connector: String,
    /// Ticket key.
    pub ticket_key: String,
    /// Number.
    pub number: String,
    /// Inbox status.
    pub status: String,
    /// Normalized JSON.
    pub normalized: Option<String>,
    /// Decision JSON of the latest decision, if any.
    pub decision: Option<String>,
    /// Comment status.
    pub comment_status: Option<String>,
    /// Comment id.
    pub comment_id: Option<String>,
}

/// What a shadow decision point said.
#[derive(Debug, Clone)]
pub struct ShadowResult {
    /// Which decision point.
    pub pdp: String,
    /// Its outcome, when it answered.
    pub outcome: Option<String>,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// Whether it agreed with the primary outcome.
    pub agree: bool,
    /// Its raw answer.
    pub raw: Value,
}

/// One stored shadow comparison.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShadowRow {
    /// Ticket number.
    pub number: String,
    /// Primary outcome.
    pub primary_outcome: String,
    /// Shadow decision point.
    pub shadow_pdp: String,
    /// Shadow outcome.
    pub shadow_outcome: Option<String>,
    /// Shadow error.
    pub shadow_error: Option<String>,
    /// Agreed.
    pub agree: bool,
    /// When.
    pub at: String,
}

/// The latest state of one ticket, for reports.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketState {
    /// Connector.
    pub connector: String,
    /// Number.
    pub number: String,
    /// Inbox status of the latest version.
    pub status: String,
    /// Its normalized JSON.
    pub normalized: String,
    /// When that version arrived.
    pub received_at: String,
    /// Failed decision attempts on it.
    pub attempts: i64,
    /// The latest decision JSON.
    pub decision: Option<String>,
}

/// Counts for progress reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Inbox rows.
    pub inbox: i64,
    /// Decisions.
    pub decisions: i64,
    /// Comments posted.
    pub posted: i64,
    /// Comments queued (not posted yet).
    pub queued: i64,
    /// Requests waiting for a decision retry.
    pub pending: i64,
}

/// Now, in the store's timestamp format.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn later(delay: Duration) -> String {
    (Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero()))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// SHA-256 hex of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Store {
    /// Opens (creating if needed) the SQLite file and applies migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

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
        let queued = sqlx::query(
            "INSERT INTO outbox (connector, ticket_key, request_hash, decision_id, marker, body, next_attempt_at, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&row.connector)
        .bind(&row.ticket_key)
        .bind(request_hash)
        .bind(&decision.decision_id)
        .bind(marker)
        .bind(body)
        .bind(now())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if queued.rows_affected() > 0 {
            audit::append(
                &mut tx,
                &row.connector,
                &row.ticket_key,
                Event::CommentQueued,
                json!({"marker": marker, "body_sha256": sha256_hex(body.as_bytes()), "decision_id": decision.decision_id}),
            )
            .await?;
        }
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

    /// Queues the one "decision delayed" comment of a request version (a second call is a
    /// no-op). Returns whether it was queued now.
    pub async fn queue_delayed_comment(&self, row: &InboxRow, request_hash: &str, marker: &str, body: &str) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let queued = sqlx::query(
            "INSERT INTO outbox (connector, ticket_key, request_hash, decision_id, marker, body, next_attempt_at, created_at)
             VALUES (?, ?, ?, 'delayed', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&row.connector)
        .bind(&row.ticket_key)
        .bind(format!("{request_hash}:delayed"))
        .bind(marker)
        .bind(body)
        .bind(now())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let fresh = queued.rows_affected() > 0;
        if fresh {
            let payload = json!({"marker": marker, "body_sha256": sha256_hex(body.as_bytes()), "decision_id": "delayed"});
            audit::append(&mut tx, &row.connector, &row.ticket_key, Event::CommentQueued, payload).await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    /// Records what the shadow decision point said beside the primary decision.
    pub async fn record_shadow(
        &self,
        row: &InboxRow,
        request_hash: &str,
        primary: &crate::schema::Decision,
        shadow: &ShadowResult,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO shadow_decisions (connector, ticket_key, number, request_hash, primary_decision_id, primary_outcome, shadow_pdp, shadow_outcome, shadow_error, agree, at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.connector)
        .bind(&row.ticket_key)
        .bind(&row.number)
        .bind(request_hash)
        .bind(&primary.decision_id)
        .bind(primary.outcome.as_str())
        .bind(&shadow.pdp)
        .bind(&shadow.outcome)
        .bind(&shadow.error)
        .bind(shadow.agree)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let payload = json!({"primary_decision_id": primary.decision_id, "primary_outcome": primary.outcome.as_str(),
            "shadow_pdp": shadow.pdp, "shadow_outcome": shadow.outcome, "shadow_error": shadow.error, "agree": shadow.agree, "shadow_raw": shadow.raw});
        audit::append(&mut tx, &row.connector, &row.ticket_key, Event::ShadowDecided, payload).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every shadow comparison, newest first.
    pub async fn shadow_results(&self) -> anyhow::Result<Vec<ShadowRow>> {
        Ok(sqlx::query_as(
            "SELECT number, primary_outcome, shadow_pdp, shadow_outcome, shadow_error, agree, at FROM shadow_decisions ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await?)
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

    /// Counts of what is stored.
    pub async fn counts(&self) -> anyhow::Result<Counts> {
        let one = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.pool);
        Ok(Counts {
            inbox: one("SELECT COUNT(*) FROM inbox").await?,
            decisions: one("SELECT COUNT(*) FROM decisions").await?,
            posted: one("SELECT COUNT(*) FROM outbox WHERE status = 'posted'").await?,
            queued: one("SELECT COUNT(*) FROM outbox WHERE status = 'queued'").await?,
            pending: one("SELECT COUNT(*) FROM inbox WHERE status = 'pending'").await?,
        })
    }

    /// Requests whose decision keeps failing.
    pub async fn pending_errors(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT number, COALESCE(last_error, '') FROM inbox WHERE status = 'pending' ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The latest state of every ticket, for the demo table.
    pub async fn summaries(&self) -> anyhow::Result<Vec<TicketSummary>> {
        Ok(sqlx::query_as(
            "SELECT i.connector, i.ticket_key, i.number, i.status, i.normalized,
                    (SELECT d.decision FROM decisions d WHERE d.connector = i.connector AND d.ticket_key = i.ticket_key ORDER BY d.id DESC LIMIT 1) AS decision,
                    (SELECT o.status FROM outbox o WHERE o.connector = i.connector AND o.ticket_key = i.ticket_key ORDER BY o.id DESC LIMIT 1) AS comment_status,
                    (SELECT o.comment_id FROM outbox o WHERE o.connector = i.connector AND o.ticket_key = i.ticket_key ORDER BY o.id DESC LIMIT 1) AS comment_id
             FROM inbox i
             WHERE i.id = (SELECT MAX(j.id) FROM inbox j WHERE j.connector = i.connector AND j.ticket_key = i.ticket_key AND j.status != 'unchanged')
             ORDER BY i.number",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The whole audit log in order.
    pub async fn audit_records(&self) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(
            sqlx::query_as("SELECT seq, at, connector, ticket_key, kind, payload, prev_hash, hash FROM audit ORDER BY seq")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The latest audit record.
    pub async fn last_audit_record(&self) -> anyhow::Result<Option<AuditRecord>> {
        Ok(
            sqlx::query_as("SELECT seq, at, connector, ticket_key, kind, payload, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every audit record of one ticket, in order.
    pub async fn audit_for_ticket(&self, connector: &str, ticket_key: &str) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(sqlx::query_as(
            "SELECT seq, at, connector, ticket_key, kind, payload, prev_hash, hash FROM audit WHERE connector = ? AND ticket_key = ? ORDER BY seq",
        )
        .bind(connector)
        .bind(ticket_key)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Tickets whose number or key is `text`: `(connector, key, number, url)`.
    pub async fn find_tickets(&self, text: &str) -> anyhow::Result<Vec<(String, String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT connector, ticket_key, MAX(number), MAX(url) FROM inbox WHERE number = ?1 OR ticket_key = ?1 GROUP BY connector, ticket_key ORDER BY connector",
        )
        .bind(text)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest normalized state of every ticket with its latest decision.
    pub async fn ticket_states(&self) -> anyhow::Result<Vec<TicketState>> {
        Ok(sqlx::query_as(
            "SELECT i.connector, i.number, i.status, i.normalized, i.received_at, i.attempts,
                    (SELECT d.decision FROM decisions d WHERE d.connector = i.connector AND d.ticket_key = i.ticket_key ORDER BY d.id DESC LIMIT 1) AS decision
             FROM inbox i
             WHERE i.id = (SELECT MAX(j.id) FROM inbox j WHERE j.connector = i.connector AND j.ticket_key = i.ticket_key
                           AND j.normalized IS NOT NULL AND j.status != 'stale')
             ORDER BY i.connector, i.number",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Comments decided but not on their ticket: `(connector, number, created_at)`.
    pub async fn undelivered_comments(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT o.connector, COALESCE((SELECT MAX(i.number) FROM inbox i WHERE i.connector = o.connector AND i.ticket_key = o.ticket_key), o.ticket_key), o.created_at
             FROM outbox o WHERE o.status != 'posted' ORDER BY o.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stored audit checkpoints, oldest first.
    pub async fn checkpoints(&self) -> anyhow::Result<Vec<crate::audit::Checkpoint>> {
        Ok(
            sqlx::query_as("SELECT seq, hash, at, public_key, signature FROM audit_checkpoints ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Stores a checkpoint.
    pub async fn insert_checkpoint(&self, cp: &crate::audit::Checkpoint) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO audit_checkpoints (seq, hash, at, public_key, signature) VALUES (?, ?, ?, ?, ?)")
            .bind(cp.seq)
            .bind(&cp.hash)
            .bind(&cp.at)
            .bind(&cp.public_key)
            .bind(&cp.signature)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The underlying pool (for tests and reports).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
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

#[cfg(test)]
mod tests;
