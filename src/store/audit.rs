//! The hash-chained audit log: every pipeline step appends one record.

use chrono::Utc;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Sqlite, Transaction};

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record is about.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A raw ticket version arrived (payload: its hash).
    TicketSeen,
    /// The mapping's result.
    Normalized,
    /// A decision, with the decision point's raw answer.
    Decided,
    /// The decision point failed; the request stays pending.
    DecisionFailed,
    /// A comment was queued.
    CommentQueued,
    /// A comment was posted (or found posted), with its id.
    CommentPosted,
    /// Posting failed for good; an operator must act.
    CommentFailed,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Self::TicketSeen => "ticket_seen",
            Self::Normalized => "normalized",
            Self::Decided => "decided",
            Self::DecisionFailed => "decision_failed",
            Self::CommentQueued => "comment_queued",
            Self::CommentPosted => "comment_posted",
            Self::CommentFailed => "comment_failed",
        }
    }
}

/// SHA-256 of a record's canonical JSON (keys sorted, as serde_json's default map keeps them).
pub fn record_hash(at: &str, connector: &str, ticket_key: &str, kind: &str, payload: &Value, prev: &str) -> String {
    let canonical =
        json!({"at": at, "connector": connector, "ticket_key": ticket_key, "kind": kind, "payload": payload, "prev_hash": prev});
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends one record inside the caller's transaction, chained to the last one.
pub async fn append(tx: &mut Transaction<'_, Sqlite>, connector: &str, ticket_key: &str, event: Event, payload: Value) -> sqlx::Result<()> {
    let prev: Option<String> = sqlx::query_scalar("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    let prev = prev.unwrap_or_else(|| GENESIS.to_owned());
    let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let hash = record_hash(&at, connector, ticket_key, event.as_str(), &payload, &prev);
    sqlx::query("INSERT INTO audit (at, connector, ticket_key, kind, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(&at)
        .bind(connector)
        .bind(ticket_key)
        .bind(event.as_str())
        .bind(payload.to_string())
        .bind(&prev)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One audit record as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    /// Position in the log.
    pub seq: i64,
    /// When.
    pub at: String,
    /// Connector instance.
    pub connector: Option<String>,
    /// Ticket.
    pub ticket_key: Option<String>,
    /// Event kind.
    pub kind: String,
    /// Payload JSON.
    pub payload: String,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// Checks the chain; returns the seq of the first bad record.
pub fn verify(records: &[AuditRecord]) -> Result<usize, String> {
    let mut prev = GENESIS.to_owned();
    for r in records {
        let payload: Value = serde_json::from_str(&r.payload).map_err(|e| format!("record {}: payload is not JSON: {e}", r.seq))?;
        if r.prev_hash != prev {
            return Err(format!("record {}: prev_hash does not match the record before it", r.seq));
        }
        let expected = record_hash(
            &r.at,
            r.connector.as_deref().unwrap_or_default(),
            r.ticket_key.as_deref().unwrap_or_default(),
            &r.kind,
            &payload,
            &prev,
        );
        if expected != r.hash {
            return Err(format!("record {}: content does not match its hash", r.seq));
        }
        prev = r.hash.clone();
    }
    Ok(records.len())
}
