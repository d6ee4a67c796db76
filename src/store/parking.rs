//! Poison work and halted connectors: a ticket version or comment that fails for a reason a
//! retry will not fix is parked with its error, skipped by later claims so the rest flows, and
//! tried again only when an admin asks (`deskbridge retry`). A connector whose writes the ITSM
//! refused (401/403) is halted: nothing more is posted through it until then.

use serde_json::json;

use super::{audit, now, still_claimed, Event, InboxRow, OutboxRow, Store};

/// One parked piece of work, for `/status`, reports and `retry`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Parked {
    /// `comment` or `ticket`.
    pub what: String,
    /// Connector instance.
    pub connector: String,
    /// Ticket number (or key when the number is unknown).
    pub ticket: String,
    /// Why it was parked.
    pub error: String,
}

/// A connector that posts nothing until an admin acts.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Halt {
    /// Connector instance.
    pub connector: String,
    /// What the ITSM said.
    pub reason: String,
    /// Since when.
    pub at: String,
}

/// What `retry` put back to work.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Retried {
    /// Comments queued again.
    pub comments: u64,
    /// Ticket versions queued again.
    pub tickets: u64,
    /// Connectors no longer halted.
    pub halts: u64,
}

impl Store {
    /// Parks a claimed comment with its error.
    pub async fn park_comment(&self, row: &OutboxRow, error: &str) -> anyhow::Result<()> {
        let mut tx = self.begin_write().await?;
        still_claimed(
            sqlx::query(
                "UPDATE outbox SET status = 'parked', attempts = attempts + 1, last_error = $1, claimed_by = NULL, claimed_until = NULL
                 WHERE id = $2 AND claimed_by = $3",
            )
            .bind(error)
            .bind(row.id)
            .bind(&*self.holder)
            .execute(&mut *tx)
            .await?,
        )?;
        let payload = json!({"what": "comment", "marker": row.marker, "error": error});
        audit::append(&mut tx, &row.connector, &row.ticket_key, Event::Parked, payload).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Parks a claimed ticket version with its error.
    pub async fn park_ticket(&self, row: &InboxRow, error: &str) -> anyhow::Result<()> {
        let mut tx = self.begin_write().await?;
        still_claimed(
            sqlx::query(
                "UPDATE inbox SET status = 'parked', last_error = $1, claimed_by = NULL, claimed_until = NULL WHERE id = $2 AND claimed_by = $3",
            )
            .bind(error)
            .bind(row.id)
            .bind(&*self.holder)
            .execute(&mut *tx)
            .await?,
        )?;
        let payload = json!({"what": "ticket", "version": row.version, "error": error});
        audit::append(&mut tx, &row.connector, &row.ticket_key, Event::Parked, payload).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stops posting through `connector` until [`Store::retry_parked`] names it.
    pub async fn halt_connector(&self, connector: &str, reason: &str) -> anyhow::Result<()> {
        let mut tx = self.begin_write().await?;
        let fresh =
            sqlx::query("INSERT INTO connector_halts (connector, reason, at) VALUES ($1, $2, $3) ON CONFLICT (connector) DO NOTHING")
                .bind(connector)
                .bind(reason)
                .bind(now())
                .execute(&mut *tx)
                .await?;
        if fresh.rows_affected() > 0 {
            audit::append(&mut tx, connector, "", Event::ConnectorHalted, json!({"reason": reason})).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Halted connectors.
    pub async fn halts(&self) -> anyhow::Result<Vec<Halt>> {
        Ok(
            sqlx::query_as("SELECT connector, reason, at FROM connector_halts ORDER BY connector")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Parked comments and ticket versions, oldest first.
    pub async fn parked(&self) -> anyhow::Result<Vec<Parked>> {
        Ok(sqlx::query_as(
            "SELECT 'comment' AS what, o.connector,
                    COALESCE((SELECT MAX(i.number) FROM inbox i WHERE i.connector = o.connector AND i.ticket_key = o.ticket_key), o.ticket_key) AS ticket,
                    COALESCE(o.last_error, '') AS error
             FROM outbox o WHERE o.status = 'parked'
             UNION ALL
             SELECT 'ticket' AS what, connector, number AS ticket, COALESCE(last_error, '') AS error FROM inbox WHERE status = 'parked'
             ORDER BY connector, ticket",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Puts parked work back to work: all of it, one connector's (which also lifts its halt),
    /// or one ticket's (by number or key). Recorded in the audit log with who asked (`actor`).
    pub async fn retry_parked(&self, connector: Option<&str>, ticket: Option<&str>, actor: &str) -> anyhow::Result<Retried> {
        let mut tx = self.begin_write().await?;
        let (c, t) = (connector.unwrap_or(""), ticket.unwrap_or(""));
        let comments = sqlx::query(
            "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = $1, claimed_by = NULL, claimed_until = NULL
             WHERE status = 'parked' AND ($2 = '' OR connector = $2)
               AND ($3 = '' OR ticket_key = $3 OR ticket_key IN (SELECT ticket_key FROM inbox WHERE number = $3))",
        )
        .bind(now())
        .bind(c)
        .bind(t)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let tickets = sqlx::query(
            "UPDATE inbox SET status = 'received', attempts = 0, next_attempt_at = NULL, claimed_by = NULL, claimed_until = NULL
             WHERE status = 'parked' AND ($1 = '' OR connector = $1) AND ($2 = '' OR ticket_key = $2 OR number = $2)",
        )
        .bind(c)
        .bind(t)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let halts = if ticket.is_none() {
            sqlx::query("DELETE FROM connector_halts WHERE $1 = '' OR connector = $1")
                .bind(c)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        } else {
            0
        };
        let payload = json!({"connector": connector, "ticket": ticket, "comments": comments, "tickets": tickets, "halts_lifted": halts, "actor": actor});
        audit::append(&mut tx, c, t, Event::RetryRequested, payload).await?;
        tx.commit().await?;
        Ok(Retried { comments, tickets, halts })
    }

    /// An operator asked for one ticket to be decided again now: its requests waiting for a
    /// decision retry are due at once (their backoff cleared). Recorded in the audit log with
    /// who asked. Returns how many were made due.
    pub async fn redecide_now(&self, connector: &str, ticket_key: &str, actor: &str, fetched_versions: usize) -> anyhow::Result<u64> {
        let mut tx = self.begin_write().await?;
        let due = sqlx::query("UPDATE inbox SET next_attempt_at = $1 WHERE connector = $2 AND ticket_key = $3 AND status = 'pending'")
            .bind(now())
            .bind(connector)
            .bind(ticket_key)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let payload = json!({"actor": actor, "pending_made_due": due, "new_versions_read": fetched_versions});
        audit::append(&mut tx, connector, ticket_key, Event::RedecideRequested, payload).await?;
        tx.commit().await?;
        Ok(due)
    }
}
