//! Durable state in one SQLite file: cursors, the inbox of raw tickets, decisions, the outbox of
//! comments and the audit log. Each page of tickets is stored in one transaction together with
//! the cursor that follows it, so a crash never skips or loses a ticket.

pub mod audit;
mod inbox;
mod outbox;
mod reads;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deskbridge_connector::Ticket;
use serde_json::Value;
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
        // A file name, not a URL: a path holding `?`, `#` or spaces must open as written.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and reports).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[cfg(test)]
mod tests;
