//! `deskbridge audit export` and `deskbridge audit verify --export`.

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::path::Path;

use super::signing::{verify_checkpoint, AuditSigner, Checkpoint};
use crate::store::audit::{AuditRecord, ChainVerifier, GENESIS, LEGACY_SCHEME};
use crate::store::Store;

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object a line: records, then checkpoints.
    Jsonl,
    /// A header line, then one row per record and per checkpoint.
    Csv,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Record {
        seq: i64,
        at: String,
        connector: Option<String>,
        ticket_key: Option<String>,
        kind: String,
        payload: Value,
        prev_hash: String,
        hash: String,
        /// Absent in exports written before hash schemes existed: scheme 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheme: Option<i64>,
    },
    Checkpoint(Checkpoint),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Row {
    #[serde(rename = "type")]
    kind_of_row: String,
    seq: i64,
    at: String,
    connector: String,
    ticket_key: String,
    kind: String,
    payload: String,
    prev_hash: String,
    hash: String,
    public_key: String,
    signature: String,
    /// Absent in exports written before hash schemes existed: scheme 1.
    #[serde(default)]
    scheme: Option<i64>,
}

/// Writes the records at or after `since` and the checkpoints covering them, a page at a time
/// (memory stays flat however long the log is; the time filter runs in SQL). With a signer, the
/// latest record is signed first, so the export ends on a checkpoint.
pub async fn export(
    store: &Store,
    since: Option<DateTime<Utc>>,
    format: Format,
    signer: Option<&AuditSigner>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<usize> {
    if let Some(signer) = signer {
        super::checkpoint(store, signer).await?;
    }
    let since = since.map(crate::store::stamp).unwrap_or_default();
    let mut sink = match format {
        Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out))),
        Format::Jsonl => Sink::Jsonl(out),
    };
    let (mut first, mut last, mut count, mut after) = (0, 0, 0usize, 0);
    loop {
        let page = store.audit_page(after, &since, super::PAGE).await?;
        let Some(end) = page.last() else { break };
        after = end.seq;
        for r in &page {
            if first == 0 {
                first = r.seq;
            }
            last = r.seq;
            count += 1;
            match &mut sink {
                Sink::Csv(writer) => writer.serialize(Row {
                    kind_of_row: "record".into(),
                    seq: r.seq,
                    at: r.at.clone(),
                    connector: r.connector.clone().unwrap_or_default(),
                    ticket_key: r.ticket_key.clone().unwrap_or_default(),
                    kind: r.kind.clone(),
                    payload: r.payload.clone(),
                    prev_hash: r.prev_hash.clone(),
                    hash: r.hash.clone(),
                    scheme: Some(r.scheme),
                    ..Row::default()
                })?,
                Sink::Jsonl(out) => {
                    let line = Line::Record {
                        seq: r.seq,
                        at: r.at.clone(),
                        connector: r.connector.clone(),
                        ticket_key: r.ticket_key.clone(),
                        kind: r.kind.clone(),
                        payload: serde_json::from_str(&r.payload)?,
                        prev_hash: r.prev_hash.clone(),
                        hash: r.hash.clone(),
                        scheme: Some(r.scheme),
                    };
                    writeln!(out, "{}", serde_json::to_string(&line)?)?;
                }
            }
        }
    }
    if count > 0 {
        let mut checkpoints = super::CheckpointPages::new(first, last);
        while let Some(c) = checkpoints.next(store).await? {
            match &mut sink {
                Sink::Csv(writer) => writer.serialize(Row {
                    kind_of_row: "checkpoint".into(),
                    seq: c.seq,
                    at: c.at.clone(),
                    hash: c.hash.clone(),
                    public_key: c.public_key.clone(),
                    signature: c.signature.clone(),
                    ..Row::default()
                })?,
                Sink::Jsonl(out) => writeln!(out, "{}", serde_json::to_string(&Line::Checkpoint(c))?)?,
            }
        }
    }
    match sink {
        Sink::Csv(mut writer) => writer.flush()?,
        Sink::Jsonl(out) => out.flush()?,
    }
    Ok(count)
}

/// Where export lines go.
enum Sink<'a> {
    Csv(Box<csv::Writer<&'a mut dyn std::io::Write>>),
    Jsonl(&'a mut dyn std::io::Write),
}

/// Reads an export line by line (JSONL) or row by row (CSV), calling `each` for every record
/// and checkpoint, without holding the file in memory.
fn read_export(path: &Path, each: &mut dyn FnMut(Item) -> Result<(), String>) -> Result<(), String> {
    use std::io::BufRead as _;
    let open = || std::fs::File::open(path).map_err(|e| format!("reading export {}: {e}", path.display()));
    let mut reader = std::io::BufReader::new(open()?);
    let jsonl = {
        let buffer = reader.fill_buf().map_err(|e| format!("reading export {}: {e}", path.display()))?;
        buffer.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    };
    if jsonl {
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let item = match serde_json::from_str::<Line>(&line).map_err(|e| format!("line {}: {e}", n + 1))? {
                Line::Record {
                    seq,
                    at,
                    connector,
                    ticket_key,
                    kind,
                    payload,
                    prev_hash,
                    hash,
                    scheme,
                } => Item::Record(AuditRecord {
                    seq,
                    at,
                    connector,
                    ticket_key,
                    kind,
                    payload: payload.to_string(),
                    prev_hash,
                    hash,
                    scheme: scheme.unwrap_or(LEGACY_SCHEME),
                }),
                Line::Checkpoint(c) => Item::Checkpoint(c),
            };
            each(item)?;
        }
    } else {
        let mut rows = csv::Reader::from_reader(reader);
        for (n, row) in rows.deserialize::<Row>().enumerate() {
            let row = row.map_err(|e| format!("row {}: {e}", n + 2))?;
            let opt = |s: String| if s.is_empty() { None } else { Some(s) };
            let item = match row.kind_of_row.as_str() {
                "record" => Item::Record(AuditRecord {
                    seq: row.seq,
                    at: row.at,
                    connector: opt(row.connector),
                    ticket_key: opt(row.ticket_key),
                    kind: row.kind,
                    payload: row.payload,
                    prev_hash: row.prev_hash,
                    hash: row.hash,
                    scheme: row.scheme.unwrap_or(LEGACY_SCHEME),
                }),
                "checkpoint" => Item::Checkpoint(Checkpoint {
                    seq: row.seq,
                    hash: row.hash,
                    at: row.at,
                    public_key: row.public_key,
                    signature: row.signature,
                }),
                other => return Err(format!("row {}: unknown type {other:?}", n + 2)),
            };
            each(item)?;
        }
    }
    Ok(())
}

enum Item {
    Record(AuditRecord),
    Checkpoint(Checkpoint),
}

/// Verifies an exported trail with the public key alone: the chain inside the export, every
/// checkpoint's signature, and that a checkpoint covers the last record (so nothing was cut
/// off the end or added after it). Two passes over the file — checkpoints first, then the
/// chain — so memory grows with the checkpoints, never with the records.
pub fn verify_export(path: &Path, key: &VerifyingKey) -> Result<String, String> {
    let mut signed: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
    let mut checkpoints = 0;
    read_export(path, &mut |item| {
        if let Item::Checkpoint(cp) = item {
            verify_checkpoint(&cp, key)?;
            signed.entry(cp.seq).or_default().push(cp.hash);
            checkpoints += 1;
        }
        Ok(())
    })?;
    let mut chain: Option<ChainVerifier> = None;
    let (mut first, mut last) = (0, 0);
    let mut covered = 0;
    read_export(path, &mut |item| {
        let Item::Record(r) = item else { return Ok(()) };
        let verifier = chain.get_or_insert_with(|| {
            first = r.seq;
            ChainVerifier::new(if r.seq == 1 { GENESIS } else { &r.prev_hash })
        });
        verifier.push(&r)?;
        last = r.seq;
        if let Some(hashes) = signed.get(&r.seq) {
            if hashes.iter().any(|h| h != &r.hash) {
                return Err(format!("record seq {}: differs from its signed checkpoint", r.seq));
            }
            covered += hashes.len();
        }
        Ok(())
    })?;
    let Some(chain) = chain else {
        return Err("the export holds no records".into());
    };
    if covered < checkpoints {
        let stray = signed.keys().copied().filter(|s| *s < first || *s > last).min().unwrap_or(0);
        return Err(format!("checkpoint at seq {stray} covers no record in the export"));
    }
    if !signed.contains_key(&last) {
        return Err(format!(
            "the last record (seq {last}) is not covered by a signed checkpoint: records may have been removed from or added to the end"
        ));
    }
    Ok(format!(
        "export verified: {} records (seq {first}..={last}), {checkpoints} signed checkpoints",
        chain.count()
    ))
}
