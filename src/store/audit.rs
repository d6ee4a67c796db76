//! The hash-chained audit log: every pipeline step appends one record.
//!
//! A record's hash is SHA-256 over the canonical JSON (keys sorted) of its sequence number,
//! time, connector, ticket, kind, payload and the previous record's hash. Editing, deleting,
//! inserting or reordering any record breaks the chain at that record.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Any, Transaction};

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
    /// A later decision replaced an earlier one.
    Superseded,
    /// The ticket's own approval or state changed in the ITSM (informational, never decides).
    ItsmApproval,
    /// The decision point failed; the request stays pending.
    DecisionFailed,
    /// A comment was queued.
    CommentQueued,
    /// A comment was posted (or found posted), with its id.
    CommentPosted,
    /// Posting failed for good; an operator must act.
    CommentFailed,
    /// A shadow decision point's answer beside the primary decision.
    ShadowDecided,
    /// A ticket version or comment failed for a reason a retry will not fix; it waits for
    /// `deskbridge retry`.
    Parked,
    /// The ITSM refused a write's credentials; the connector posts nothing until an admin acts.
    ConnectorHalted,
    /// An admin asked for parked work to be tried again.
    RetryRequested,
    /// The facts a decision rests on: catalog entries, directory answers, and what the ticket
    /// claimed (with any claim that understates the catalog).
    Enriched,
}

impl Event {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TicketSeen => "ticket_seen",
            Self::Normalized => "normalized",
            Self::Decided => "decided",
            Self::Superseded => "superseded",
            Self::ItsmApproval => "itsm_approval",
            Self::DecisionFailed => "decision_failed",
            Self::CommentQueued => "comment_queued",
            Self::CommentPosted => "comment_posted",
            Self::CommentFailed => "comment_failed",
            Self::ShadowDecided => "shadow_decided",
            Self::Parked => "parked",
            Self::ConnectorHalted => "connector_halted",
            Self::RetryRequested => "retry_requested",
            Self::Enriched => "enriched",
        }
    }
}

/// SHA-256 of a record's canonical JSON (serde_json's default map keeps keys sorted).
pub fn record_hash(seq: i64, at: &str, connector: &str, ticket_key: &str, kind: &str, payload: &Value, prev: &str) -> String {
    let canonical = json!({
        "seq": seq, "at": at, "connector": connector, "ticket_key": ticket_key,
        "kind": kind, "payload": payload, "prev_hash": prev,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends one record inside the caller's transaction, chained to the last one. SQLite's
/// single writer makes "read the last record, write the next" atomic.
pub async fn append(tx: &mut Transaction<'_, Any>, connector: &str, ticket_key: &str, event: Event, payload: Value) -> sqlx::Result<()> {
    let last: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (seq, prev) = last.map_or((1, GENESIS.to_owned()), |(s, h)| (s + 1, h));
    let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let hash = record_hash(seq, &at, connector, ticket_key, event.as_str(), &payload, &prev);
    sqlx::query(
        "INSERT INTO audit (seq, at, connector, ticket_key, kind, payload, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
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
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: i64,
    /// When (RFC 3339, microseconds).
    pub at: String,
    /// Connector instance.
    pub connector: Option<String>,
    /// Ticket key.
    pub ticket_key: Option<String>,
    /// Event kind.
    pub kind: String,
    /// Payload JSON text.
    pub payload: String,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record's content should have.
    pub fn expected_hash(&self) -> Result<String, String> {
        let payload: Value = serde_json::from_str(&self.payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        Ok(record_hash(
            self.seq,
            &self.at,
            self.connector.as_deref().unwrap_or_default(),
            self.ticket_key.as_deref().unwrap_or_default(),
            &self.kind,
            &payload,
            &self.prev_hash,
        ))
    }

    fn describe(&self) -> String {
        format!(
            "record seq {} ({} at {}, ticket {})",
            self.seq,
            self.kind,
            self.at,
            self.ticket_key.as_deref().unwrap_or("-")
        )
    }
}

/// Checks a run of records. `start_prev` is the hash before the first (GENESIS for a whole
/// log). Returns how many verified, or a message naming the first bad record.
pub fn verify_run(records: &[AuditRecord], start_prev: &str) -> Result<usize, String> {
    let mut prev = start_prev.to_owned();
    let first_seq = records.first().map_or(1, |r| r.seq);
    for (expected_seq, r) in (first_seq..).zip(records) {
        if r.seq != expected_seq {
            return Err(format!(
                "{}: expected seq {expected_seq}; a record was deleted, inserted or reordered here",
                r.describe()
            ));
        }
        if r.prev_hash != prev {
            return Err(format!(
                "{}: prev_hash does not match the record before it; a record was deleted, inserted or reordered here",
                r.describe()
            ));
        }
        let expected = r.expected_hash().map_err(|e| format!("{}: {e}", r.describe()))?;
        if expected != r.hash {
            return Err(format!("{}: content does not match its hash; the record was edited", r.describe()));
        }
        prev = r.hash.clone();
    }
    Ok(records.len())
}

/// Checks a whole log from the first record.
pub fn verify(records: &[AuditRecord]) -> Result<usize, String> {
    if let Some(first) = records.first() {
        if first.seq != 1 {
            return Err(format!(
                "{}: the log must start at seq 1; earlier records were deleted",
                first.describe()
            ));
        }
    }
    verify_run(records, GENESIS)
}
