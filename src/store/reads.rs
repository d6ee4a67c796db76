//! Reads for reports, the demo table, shadow mode and audit evidence.

use serde_json::json;

use super::{audit, now, AuditRecord, Backlog, Counts, Event, InboxRow, ShadowResult, ShadowRow, Store, TicketState};

/// Each ticket's latest normalized version (not stale) with its latest decision; callers add
/// `AND …` conditions.
const LATEST_STATES: &str = "SELECT i.connector, i.ticket_key, i.number, i.url, i.status, i.normalized, i.received_at, i.attempts,
        (SELECT d.decision FROM decisions d WHERE d.connector = i.connector AND d.ticket_key = i.ticket_key ORDER BY d.id DESC LIMIT 1) AS decision
    FROM inbox i
    WHERE i.id = (SELECT MAX(j.id) FROM inbox j WHERE j.connector = i.connector AND j.ticket_key = i.ticket_key
                  AND j.normalized IS NOT NULL AND j.status != 'stale')";

/// The order of [`Store::ticket_states`] and its pages.
const STATES_ORDER: &str = "ORDER BY i.connector, i.number";

impl Store {
    /// Records what the shadow decision point said beside the primary decision.
    pub async fn record_shadow(
        &self,
        row: &InboxRow,
        request_hash: &str,
        primary: &crate::schema::Decision,
        shadow: &ShadowResult,
    ) -> anyhow::Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO shadow_decisions (connector, ticket_key, number, request_hash, primary_decision_id, primary_outcome, shadow_pdp, shadow_outcome, shadow_error, agree, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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

    /// Unfinished work by state. Each count reads the status index over the unfinished rows
    /// only, so it stays cheap however many tickets are finished.
    pub async fn backlog(&self) -> anyhow::Result<Backlog> {
        let by_status = |sql: &'static str| async move {
            let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
            Ok::<_, anyhow::Error>(rows.into_iter().collect::<std::collections::HashMap<_, _>>())
        };
        let inbox =
            by_status("SELECT status, COUNT(*) FROM inbox WHERE status IN ('received', 'pending', 'parked') GROUP BY status").await?;
        let outbox = by_status("SELECT status, COUNT(*) FROM outbox WHERE status IN ('queued', 'parked') GROUP BY status").await?;
        let n = |counts: &std::collections::HashMap<String, i64>, status: &str| counts.get(status).copied().unwrap_or(0);
        Ok(Backlog {
            received: n(&inbox, "received"),
            pending: n(&inbox, "pending"),
            parked_tickets: n(&inbox, "parked"),
            queued: n(&outbox, "queued"),
            parked_comments: n(&outbox, "parked"),
        })
    }

    /// Whether the store answers a trivial query within `limit`.
    pub async fn ping(&self, limit: std::time::Duration) -> anyhow::Result<()> {
        match tokio::time::timeout(limit, sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(&self.pool)).await {
            Ok(result) => result
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{}", deskbridge_connector::urls::error_chain(&e))),
            Err(_) => anyhow::bail!("no answer within {} ms", limit.as_millis()),
        }
    }

    /// The whole audit log in order, in memory: for tests and small logs. Verification and
    /// export read it a page at a time ([`Store::audit_page`]).
    pub async fn audit_records(&self) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(sqlx::query_as(&format!("SELECT {} FROM audit ORDER BY seq", audit::COLUMNS))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Up to `limit` records after `after_seq`, in order, written at or after `since` (an RFC 3339
    /// time in the store's format; "" for all).
    pub async fn audit_page(&self, after_seq: i64, since: &str, limit: i64) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM audit WHERE seq > $1 AND at >= $2 ORDER BY seq LIMIT $3",
            audit::COLUMNS
        ))
        .bind(after_seq)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest audit record.
    pub async fn last_audit_record(&self) -> anyhow::Result<Option<AuditRecord>> {
        Ok(
            sqlx::query_as(&format!("SELECT {} FROM audit ORDER BY seq DESC LIMIT 1", audit::COLUMNS))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every audit record of one ticket, in order.
    pub async fn audit_for_ticket(&self, connector: &str, ticket_key: &str) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM audit WHERE connector = $1 AND ticket_key = $2 ORDER BY seq",
            audit::COLUMNS
        ))
        .bind(connector)
        .bind(ticket_key)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Tickets whose number or key is `text`: `(connector, key, number, url)`.
    pub async fn find_tickets(&self, text: &str) -> anyhow::Result<Vec<(String, String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT connector, ticket_key, MAX(number), MAX(url) FROM inbox WHERE number = $1 OR ticket_key = $1 GROUP BY connector, ticket_key ORDER BY connector",
        )
        .bind(text)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest normalized state of every ticket with its latest decision (for reports and
    /// the demo table; a ticket not yet normalized is left out).
    pub async fn ticket_states(&self) -> anyhow::Result<Vec<TicketState>> {
        use futures_util::TryStreamExt as _;
        self.ticket_states_streamed().try_collect().await
    }

    /// [`Store::ticket_states`], in the same order, as the rows arrive: for a caller that looks
    /// at each ticket once and keeps little, so its memory does not grow with the tickets.
    pub fn ticket_states_streamed(&self) -> impl futures_util::Stream<Item = anyhow::Result<TicketState>> + Send + '_ {
        use futures_util::TryStreamExt as _;
        static ALL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!("{LATEST_STATES} {STATES_ORDER}"));
        sqlx::query_as::<_, TicketState>(ALL.as_str())
            .fetch(&self.pool)
            .map_err(anyhow::Error::from)
    }

    /// A page of [`Store::ticket_states`] in the same order: `limit` tickets after `offset`,
    /// only those whose number, key or normalized request contains `search` (any case; all when
    /// empty). The filter and the page run in SQL.
    pub async fn ticket_page(&self, search: &str, limit: i64, offset: i64) -> anyhow::Result<Vec<TicketState>> {
        let pattern = format!(
            "%{}%",
            search.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        Ok(sqlx::query_as(&format!(
            "{LATEST_STATES}
               AND ($1 = '' OR LOWER(i.number) LIKE $2 ESCAPE '\\' OR LOWER(i.ticket_key) LIKE $2 ESCAPE '\\'
                    OR LOWER(i.normalized) LIKE $2 ESCAPE '\\')
             {STATES_ORDER}
             LIMIT $3 OFFSET $4"
        ))
        .bind(search)
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One ticket's row of [`Store::ticket_states`], when it was normalized.
    pub async fn ticket_state(&self, connector: &str, ticket_key: &str) -> anyhow::Result<Option<TicketState>> {
        Ok(
            sqlx::query_as(&format!("{LATEST_STATES} AND i.connector = $1 AND i.ticket_key = $2"))
                .bind(connector)
                .bind(ticket_key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The latest stored version of one ticket.
    pub async fn latest_ticket(&self, connector: &str, ticket_key: &str) -> anyhow::Result<Option<InboxRow>> {
        Ok(sqlx::query_as(
            "SELECT id, connector, ticket_key, version, number, url, updated, raw, attempts, received_at FROM inbox
             WHERE connector = $1 AND ticket_key = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(connector)
        .bind(ticket_key)
        .fetch_optional(&self.pool)
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
    pub async fn checkpoints(&self) -> anyhow::Result<Vec<audit::Checkpoint>> {
        Ok(
            sqlx::query_as("SELECT seq, hash, at, public_key, signature FROM audit_checkpoints ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Up to `limit` checkpoints covering records `from_seq..=to_seq`, after the checkpoint
    /// `(after_seq, after_id)` in (seq, id) order: `(id, checkpoint)` pairs.
    pub async fn checkpoint_page(
        &self,
        (after_seq, after_id): (i64, i64),
        to_seq: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<(i64, audit::Checkpoint)>> {
        let rows: Vec<(i64, i64, String, String, String, String)> = sqlx::query_as(
            "SELECT id, seq, hash, at, public_key, signature FROM audit_checkpoints
             WHERE (seq > $1 OR (seq = $1 AND id > $2)) AND seq <= $3 ORDER BY seq, id LIMIT $4",
        )
        .bind(after_seq)
        .bind(after_id)
        .bind(to_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, seq, hash, at, public_key, signature)| {
                (
                    id,
                    audit::Checkpoint {
                        seq,
                        hash,
                        at,
                        public_key,
                        signature,
                    },
                )
            })
            .collect())
    }

    /// Whether `public_key` has signed record `seq`.
    pub async fn has_checkpoint(&self, seq: i64, public_key: &str) -> anyhow::Result<bool> {
        let found: Option<(i64,)> = sqlx::query_as("SELECT seq FROM audit_checkpoints WHERE seq = $1 AND public_key = $2 LIMIT 1")
            .bind(seq)
            .bind(public_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Stores a checkpoint.
    pub async fn insert_checkpoint(&self, cp: &audit::Checkpoint) -> anyhow::Result<()> {
        self.write_one(|| {
            sqlx::query("INSERT INTO audit_checkpoints (seq, hash, at, public_key, signature) VALUES ($1, $2, $3, $4, $5)")
                .bind(cp.seq)
                .bind(&cp.hash)
                .bind(&cp.at)
                .bind(&cp.public_key)
                .bind(&cp.signature)
        })
        .await?;
        Ok(())
    }
}
