//! The hash-chained audit log: every pipeline step appends one record.
//!
//! A record's hash is SHA-256 over the canonical JSON of its sequence number, time, connector,
//! ticket, kind, payload and the previous record's hash. Editing, deleting, inserting or
//! reordering any record breaks the chain at that record.
//!
//! Canonical JSON, by the record's `scheme`:
//! - 2 (every record written now): RFC 8785, the JSON Canonicalization Scheme, through
//!   `serde_json_canonicalizer`; the object also holds `"scheme": 2`. It does not depend on how
//!   serde_json orders maps, so no dependency's features can change a hash.
//! - 1 (records written before scheme 2 existed): keys sorted by their bytes, no spaces, values
//!   as serde_json writes them. Written out here, not by serde_json's map, so these records
//!   verify whatever serde_json's features are.
//!
//! A log may hold scheme-1 records followed by scheme-2 records, never the other way round.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
    /// An operator asked for a ticket to be read and decided again now.
    RedecideRequested,
    /// The facts a decision rests on: catalog entries, directory answers, and what the ticket
    /// claimed (with any claim that understates the catalog).
    Enriched,
    /// A verified delivery of entitlement changes (SET, webhook or reconciliation) was stored.
    AccessEventReceived,
    /// A grant was observed and matched to the approving decision.
    AccessGranted,
    /// A revocation was observed.
    AccessRevoked,
    /// An access lifecycle's expiry passed (with whether the access was still present).
    AccessExpired,
    /// A provisioning finding (granted without approval, beyond the decision, not revoked after
    /// expiry, approved but not fulfilled, disabled identity with access).
    AccessFinding,
    /// Later evidence closed a provisioning finding.
    AccessFindingResolved,
    /// An entitlement change that concerns no catalog group, or that nothing could be matched to.
    AccessObserved,
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
            Self::RedecideRequested => "redecide_requested",
            Self::Enriched => "enriched",
            Self::AccessEventReceived => "access_event_received",
            Self::AccessGranted => "access_granted",
            Self::AccessRevoked => "access_revoked",
            Self::AccessExpired => "access_expired",
            Self::AccessFinding => "access_finding",
            Self::AccessFindingResolved => "access_finding_resolved",
            Self::AccessObserved => "access_observed",
        }
    }
}

/// The hash scheme of records written before RFC 8785 was adopted.
pub const LEGACY_SCHEME: i64 = 1;
/// RFC 8785 (JCS): the scheme every record is written with.
pub const JCS_SCHEME: i64 = 2;

/// What a record's hash is computed over.
pub struct Content<'a> {
    /// Position in the log.
    pub seq: i64,
    /// When.
    pub at: &'a str,
    /// Connector instance ("" for none).
    pub connector: &'a str,
    /// Ticket key ("" for none).
    pub ticket_key: &'a str,
    /// Event kind.
    pub kind: &'a str,
    /// Payload.
    pub payload: &'a Value,
    /// The previous record's hash.
    pub prev: &'a str,
}

/// SHA-256 of a record's canonical JSON under `scheme`.
pub fn record_hash(scheme: i64, c: &Content<'_>) -> Result<String, String> {
    let bytes = match scheme {
        JCS_SCHEME => {
            // Streamed into the digest through a buffer: no copy of the payload, and the digest
            // takes the canonical text in blocks, not a call per token.
            let mut digest = std::io::BufWriter::with_capacity(4096, Sha256::new());
            write_record_jcs(c, &mut digest).map_err(|e| format!("canonical JSON: {e}"))?;
            let digest = digest.into_inner().map_err(|e| format!("canonical JSON: {}", e.error()))?;
            return Ok(hex::encode(digest.finalize()));
        }
        LEGACY_SCHEME => {
            let object = json!({
                "seq": c.seq, "at": c.at, "connector": c.connector, "ticket_key": c.ticket_key,
                "kind": c.kind, "payload": c.payload, "prev_hash": c.prev,
            });
            let mut out = String::new();
            legacy_json(&object, &mut out);
            out.into_bytes()
        }
        other => return Err(format!("unknown hash scheme {other}")),
    };
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// A record's RFC 8785 (JCS) form, the scheme-2 hash input, written to `out`: the object
/// `{seq, at, connector, ticket_key, kind, payload, prev_hash, scheme}` with its members in
/// JCS order (all names are ASCII, so by their bytes).
pub fn write_record_jcs(c: &Content<'_>, out: &mut impl std::io::Write) -> std::io::Result<()> {
    write_record_prefix(c.at, c.connector, c.kind, out)?;
    write_jcs(c.payload, out)?;
    write_record_tail(c.prev, c.seq, c.ticket_key, out)
}

/// The members of a record's JCS form before its payload's value (see [`write_record_jcs`]):
/// with the payload, all a record's own content, known before it joins the chain.
fn write_record_prefix(at: &str, connector: &str, kind: &str, out: &mut impl std::io::Write) -> std::io::Result<()> {
    out.write_all(b"{\"at\":")?;
    serde_json::to_writer(&mut *out, at)?;
    out.write_all(b",\"connector\":")?;
    serde_json::to_writer(&mut *out, connector)?;
    out.write_all(b",\"kind\":")?;
    serde_json::to_writer(&mut *out, kind)?;
    out.write_all(b",\"payload\":")
}

/// The members of a record's JCS form from `prev_hash` on (see [`write_record_jcs`]): its place
/// in the chain, and its ticket key, which sorts last.
fn write_record_tail(prev: &str, seq: i64, ticket_key: &str, out: &mut impl std::io::Write) -> std::io::Result<()> {
    out.write_all(b",\"prev_hash\":")?;
    serde_json::to_writer(&mut *out, prev)?;
    write!(out, ",\"scheme\":{JCS_SCHEME},\"seq\":")?;
    write_jcs(&Value::from(seq), out)?;
    out.write_all(b",\"ticket_key\":")?;
    serde_json::to_writer(&mut *out, ticket_key)?;
    out.write_all(b"}")
}

/// Integers of this size or less are exact as doubles, so their JCS form is their digits.
const EXACT_INTEGER: u64 = 1 << 53;

/// `value` as RFC 8785 canonical JSON, written as it is walked. Object members are sorted by
/// the UTF-16 code units of their names; strings are escaped as serde_json escapes them, which
/// is what JCS asks (`"`, `\\` and control characters only, lowercase `\u00xx`); integers
/// within ±2^53 are their digits. Any other number (a fraction, a larger integer) is written by
/// `serde_json_canonicalizer`, the reference this function is tested against.
pub fn write_jcs(value: &Value, out: &mut impl std::io::Write) -> std::io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= EXACT_INTEGER) {
                write!(out, "{i}")
            } else if let Some(u) = n.as_u64().filter(|u| *u <= EXACT_INTEGER) {
                write!(out, "{u}")
            } else {
                let text = serde_json_canonicalizer::to_vec(value).map_err(std::io::Error::other)?;
                out.write_all(&text)
            }
        }
        Value::String(s) => Ok(serde_json::to_writer(&mut *out, s)?),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_jcs(item, out)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            if !members.iter().all(|(k, _)| k.is_ascii()) {
                members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            } else if !members.is_sorted_by(|a, b| a.0 <= b.0) {
                members.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.write_all(b"{")?;
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, name)?;
                out.write_all(b":")?;
                write_jcs(item, out)?;
            }
            out.write_all(b"}")
        }
    }
}

/// Scheme 1: keys sorted by their UTF-8 bytes, no whitespace, scalars as serde_json writes them.
fn legacy_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                legacy_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                legacy_json(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The audit records appended in one write transaction, not yet chained: each gets its
/// sequence number and hash when it joins the chain (see [`super::WriteTx::commit`]).
#[derive(Default)]
pub(crate) struct Pending {
    /// Records not yet written.
    pub(crate) records: Vec<Ready>,
}

/// An audit record ready to join the chain: its payload's text, and on SQLite its hash with
/// every member before `prev_hash` already taken in (SHA-256 takes its input in order), so
/// joining the chain hashes only the previous record's hash, the position and the ticket key.
/// Made before the write that appends it, where it can be ([`ready`]): the walk over the payload
/// in canonical form is most of a record's hashing, and no writer waits while it runs. On
/// PostgreSQL records are hashed when they are sealed, from their stored text.
pub(crate) struct Ready {
    record: AuditRecord,
    head: Option<Sha256>,
}

/// A record of `event` on a ticket, stamped now, ready to join the chain (see [`Ready`]).
///
/// The payload is walked once: its canonical (JCS) form is both the stored text and the hash
/// input. Without non-ASCII member names or fractions that is the text serde_json writes, and
/// either way it is JSON that parses to the same value, which is what verification hashes.
pub(crate) fn ready(backend: super::Backend, connector: &str, ticket_key: &str, event: Event, payload: &Value) -> sqlx::Result<Ready> {
    ready_canonical(backend, connector, ticket_key, event, canonical_text(payload)?)
}

/// `value`'s RFC 8785 (JCS) text.
pub(crate) fn canonical_text(value: &Value) -> sqlx::Result<String> {
    let mut text = Vec::with_capacity(1024);
    write_jcs(value, &mut text).map_err(canonical_error)?;
    String::from_utf8(text).map_err(canonical_error)
}

/// A failure to write a record's canonical form.
fn canonical_error(e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Protocol(format!("canonical JSON: {e}"))
}

/// [`ready`] for a payload the caller already wrote in its canonical form (`payload` is
/// [`write_jcs`]'s text of the payload; verification hashes the canonical form of the stored
/// text parsed, so any other text fails verification).
pub(crate) fn ready_canonical(
    backend: super::Backend,
    connector: &str,
    ticket_key: &str,
    event: Event,
    payload: String,
) -> sqlx::Result<Ready> {
    let record = AuditRecord::unchained(
        super::now(),
        connector.to_owned(),
        ticket_key.to_owned(),
        event.as_str().to_owned(),
        payload,
    );
    let head = match backend {
        super::Backend::Sqlite => Some(head_of(&record, &record.payload)?),
        super::Backend::Postgres => None,
    };
    Ok(Ready { head, record })
}

/// `record`'s hash input up to its payload (see [`Ready`]); `payload` is its payload's value.
fn head(record: &AuditRecord, payload: &Value) -> sqlx::Result<Sha256> {
    head_of(record, &canonical_text(payload)?)
}

/// `record`'s hash input up to its payload, given as its canonical text.
fn head_of(record: &AuditRecord, canonical_payload: &str) -> sqlx::Result<Sha256> {
    let mut head = Sha256::new();
    write_record_prefix(&record.at, record.connector.as_deref().unwrap_or_default(), &record.kind, &mut head).map_err(canonical_error)?;
    head.update(canonical_payload.as_bytes());
    Ok(head)
}

/// Appends one record inside the caller's transaction. It joins the chain when the
/// transaction commits: on SQLite chained to the last record inside the transaction (SQLite
/// has one writer); on PostgreSQL sealed into the chain just after the commit (see [`seal`]),
/// so replicas' write transactions never wait for one another to append.
pub async fn append(tx: &mut super::WriteTx, connector: &str, ticket_key: &str, event: Event, payload: Value) -> sqlx::Result<()> {
    tx.chain.records.push(ready(tx.backend, connector, ticket_key, event, &payload)?);
    Ok(())
}

/// The chain's last record, `(seq, hash)`, read inside `tx` (the genesis hash when the log is
/// empty).
async fn read_head(tx: &mut sqlx::AnyConnection) -> sqlx::Result<(i64, String)> {
    let last: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    Ok(last.unwrap_or((0, GENESIS.to_owned())))
}

/// Chains `records`, in order, after the record `(seq, prev)`.
fn chain(records: Vec<Ready>, (mut seq, mut prev): (i64, String)) -> sqlx::Result<Vec<AuditRecord>> {
    let mut chained = Vec::with_capacity(records.len());
    for Ready { mut record, head: made } in records {
        seq += 1;
        let mut head = match made {
            Some(head) => head,
            None => {
                let payload: Value =
                    serde_json::from_str(&record.payload).map_err(|e| sqlx::Error::Protocol(format!("audit payload: {e}")))?;
                head(&record, &payload)?
            }
        };
        write_record_tail(&prev, seq, record.ticket_key.as_deref().unwrap_or_default(), &mut head).map_err(canonical_error)?;
        record.hash = hex::encode(head.finalize());
        record.seq = seq;
        record.prev_hash = std::mem::replace(&mut prev, record.hash.clone());
        chained.push(record);
    }
    Ok(chained)
}

/// Chains a transaction's records and writes them, inside `tx`, which must be the only writer
/// of the chain: SQLite's one writer, or PostgreSQL's sealing lock. They follow `cached`, the
/// head this process last committed, when given; when another writer appended since, the first
/// insert collides on the sequence number and the records are chained again after the head
/// read inside `tx`, from their stored texts. Returns the new head, `None` when there were no
/// records.
pub(super) async fn chain_and_write(
    tx: &mut sqlx::AnyConnection,
    records: Vec<Ready>,
    backend: super::Backend,
    cached: Option<(i64, String)>,
) -> sqlx::Result<Option<(i64, String)>> {
    if records.is_empty() {
        return Ok(None);
    }
    let trusted = cached.is_some();
    let after = match cached {
        Some(head) => head,
        None => read_head(tx).await?,
    };
    let mut chained = chain(records, after)?;
    match write_records(tx, &chained, backend).await {
        Ok(()) => {}
        Err(e) if trusted && e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
            // The chain has no gaps, so a stale head collides on the statement's first row
            // and nothing of it was written; should the log's head be one of these records
            // after all, the write fails (and the transaction rolls back) rather than chain
            // them twice.
            let head = read_head(tx).await?;
            if chained.iter().any(|r| r.hash == head.1) {
                return Err(e);
            }
            tracing::debug!("another writer appended to the audit chain; chaining after its head");
            // Chaining sets each record's position and hashes again; the hashes' heads are made
            // again from the stored texts.
            let again = chained.into_iter().map(|record| Ready { record, head: None }).collect();
            chained = chain(again, head)?;
            write_records(tx, &chained, backend).await?;
        }
        Err(e) => return Err(e),
    }
    Ok(chained.last().map(|r| (r.seq, r.hash.clone())))
}

/// Writes a transaction's records to `audit_unsealed`, to be sealed into the chain after the
/// commit: the PostgreSQL path, where write transactions run side by side.
pub(super) async fn write_unsealed(tx: &mut sqlx::AnyConnection, records: &[Ready]) -> sqlx::Result<()> {
    for chunk in records.chunks(super::ROWS_PER_STATEMENT) {
        let mut sql = String::from("INSERT INTO audit_unsealed (at, connector, ticket_key, kind, payload) VALUES ");
        super::push_placeholders(&mut sql, chunk.len(), 5, super::Backend::Postgres);
        let mut query = sqlx::query(&sql);
        for Ready { record: r, .. } in chunk {
            query = query
                .bind(&r.at)
                .bind(r.connector.as_deref().unwrap_or_default())
                .bind(r.ticket_key.as_deref().unwrap_or_default())
                .bind(&r.kind)
                .bind(&r.payload);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// The advisory lock only sealing takes (PostgreSQL): one sealer extends the chain at a time.
/// Write transactions never take it.
const SEAL_LOCK: i64 = 7_305_812_009;

/// Records sealed per transaction.
const SEAL_BATCH: i64 = 2000;

/// Seals committed records into the chain (PostgreSQL): under [`SEAL_LOCK`], takes the
/// unsealed records every committed transaction left, in the order they were inserted, chains
/// them after the last record and deletes them from `audit_unsealed`, in one transaction, until
/// none is left. Returns how many were sealed.
///
/// Order: a record inserted after another record's transaction committed gets a larger id, and
/// is sealed in a later round or after it in the same one, so the chain keeps every order a
/// replica could observe: a ticket's decision before its comment's posting, an event before
/// what it caused. Records of transactions that ran side by side may be sealed in either order;
/// a transaction's own records stay in the order it appended them.
pub(super) async fn seal(pool: &sqlx::AnyPool) -> anyhow::Result<usize> {
    let mut sealed = 0;
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SEAL_LOCK)
            .execute(&mut *tx)
            .await?;
        // Deleting and reading in one statement: only rows committed before it are seen, and
        // exactly those leave the table (a later commit's rows wait for the next round).
        let mut rows: Vec<(i64, String, String, String, String, String)> = sqlx::query_as(
            "DELETE FROM audit_unsealed WHERE id IN (SELECT id FROM audit_unsealed ORDER BY id LIMIT $1)
             RETURNING id, at, connector, ticket_key, kind, payload",
        )
        .bind(SEAL_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(sealed);
        }
        rows.sort_unstable_by_key(|r| r.0);
        let count = rows.len();
        let mut records = Vec::with_capacity(count);
        for (id, at, connector, ticket_key, kind, payload) in rows {
            let value: Value = serde_json::from_str(&payload)
                .map_err(|e| anyhow::anyhow!("audit_unsealed id {id}: the payload is not JSON ({e}); nothing was sealed"))?;
            let record = AuditRecord::unchained(at, connector, ticket_key, kind, payload);
            records.push(Ready {
                head: Some(head(&record, &value)?),
                record,
            });
        }
        chain_and_write(&mut tx, records, super::Backend::Postgres, None).await?;
        tx.commit().await?;
        sealed += count;
        if (count as i64) < SEAL_BATCH {
            return Ok(sealed);
        }
    }
}

/// Writes chained records in multi-row inserts.
pub(super) async fn write_records(tx: &mut sqlx::AnyConnection, records: &[AuditRecord], backend: super::Backend) -> sqlx::Result<()> {
    for chunk in records.chunks(super::ROWS_PER_STATEMENT) {
        let mut sql = format!(
            "INSERT{} INTO audit (seq, at, connector, ticket_key, kind, payload, prev_hash, hash, scheme) VALUES ",
            backend.or_fail()
        );
        super::push_placeholders(&mut sql, chunk.len(), 9, backend);
        let mut query = sqlx::query(&sql);
        for r in chunk {
            query = query
                .bind(r.seq)
                .bind(&r.at)
                .bind(r.connector.as_deref().unwrap_or_default())
                .bind(r.ticket_key.as_deref().unwrap_or_default())
                .bind(&r.kind)
                .bind(&r.payload)
                .bind(&r.prev_hash)
                .bind(&r.hash)
                .bind(r.scheme);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// One signed checkpoint, as stored (signed and checked by `crate::audit::signing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Checkpoint {
    /// The record signed.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When the checkpoint was made.
    pub at: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
    /// Hex Ed25519 signature over `crate::audit::signing::message`.
    pub signature: String,
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
    /// Its hash scheme ([`LEGACY_SCHEME`] or [`JCS_SCHEME`]).
    pub scheme: i64,
}

/// The columns of [`AuditRecord`], for queries.
pub const COLUMNS: &str = "seq, at, connector, ticket_key, kind, payload, prev_hash, hash, scheme";

impl AuditRecord {
    /// A record not yet in the chain: its `seq`, `prev_hash` and `hash` are set when it joins
    /// it (scheme 2, RFC 8785).
    fn unchained(at: String, connector: String, ticket_key: String, kind: String, payload: String) -> Self {
        Self {
            seq: 0,
            at,
            connector: Some(connector),
            ticket_key: Some(ticket_key),
            kind,
            payload,
            prev_hash: String::new(),
            hash: String::new(),
            scheme: JCS_SCHEME,
        }
    }

    /// The hash this record's content should have.
    pub fn expected_hash(&self) -> Result<String, String> {
        let payload: Value = serde_json::from_str(&self.payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        record_hash(
            self.scheme,
            &Content {
                seq: self.seq,
                at: &self.at,
                connector: self.connector.as_deref().unwrap_or_default(),
                ticket_key: self.ticket_key.as_deref().unwrap_or_default(),
                kind: &self.kind,
                payload: &payload,
                prev: &self.prev_hash,
            },
        )
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

/// Checks records one at a time, in order, holding only the last one's hash: memory stays flat
/// however long the log is.
pub struct ChainVerifier {
    prev: String,
    next_seq: Option<i64>,
    scheme: i64,
    count: usize,
}

impl ChainVerifier {
    /// A verifier whose first record follows `start_prev` (GENESIS for a whole log).
    pub fn new(start_prev: &str) -> Self {
        Self {
            prev: start_prev.to_owned(),
            next_seq: None,
            scheme: LEGACY_SCHEME,
            count: 0,
        }
    }

    /// Checks the next record; a message naming it if it is bad.
    pub fn push(&mut self, r: &AuditRecord) -> Result<(), String> {
        let expected_seq = self.next_seq.unwrap_or(r.seq);
        if r.seq != expected_seq {
            return Err(format!(
                "{}: expected seq {expected_seq}; a record was deleted, inserted or reordered here",
                r.describe()
            ));
        }
        if r.prev_hash != self.prev {
            return Err(format!(
                "{}: prev_hash does not match the record before it; a record was deleted, inserted or reordered here",
                r.describe()
            ));
        }
        if r.scheme < self.scheme {
            return Err(format!(
                "{}: hash scheme {} after scheme {}; a log never goes back to an older scheme",
                r.describe(),
                r.scheme,
                self.scheme
            ));
        }
        let expected = r.expected_hash().map_err(|e| format!("{}: {e}", r.describe()))?;
        if expected != r.hash {
            return Err(format!("{}: content does not match its hash; the record was edited", r.describe()));
        }
        self.prev.clone_from(&r.hash);
        self.next_seq = Some(r.seq + 1);
        self.scheme = r.scheme;
        self.count += 1;
        Ok(())
    }

    /// Records verified so far.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// Checks a run of records. `start_prev` is the hash before the first (GENESIS for a whole
/// log). Returns how many verified, or a message naming the first bad record.
pub fn verify_run(records: &[AuditRecord], start_prev: &str) -> Result<usize, String> {
    let mut verifier = ChainVerifier::new(start_prev);
    for r in records {
        verifier.push(r)?;
    }
    Ok(verifier.count())
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
