//! `deskbridge audit export` and `deskbridge audit verify --export`.

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::signing::{verify_checkpoint, AuditSigner, Checkpoint};
use crate::store::audit::{verify_run, AuditRecord, GENESIS};
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
}

/// Writes the records at or after `since` and the checkpoints covering them. With a signer,
/// the latest record is signed first, so the export ends on a checkpoint.
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
    let since = since
        .map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default();
    let records: Vec<AuditRecord> = store.audit_records().await?.into_iter().filter(|r| r.at >= since).collect();
    let (first, last) = (records.first().map_or(0, |r| r.seq), records.last().map_or(0, |r| r.seq));
    let checkpoints: Vec<Checkpoint> = store
        .checkpoints()
        .await?
        .into_iter()
        .filter(|c| c.seq >= first && c.seq <= last)
        .collect();
    match format {
        Format::Jsonl => {
            for r in &records {
                let line = Line::Record {
                    seq: r.seq,
                    at: r.at.clone(),
                    connector: r.connector.clone(),
                    ticket_key: r.ticket_key.clone(),
                    kind: r.kind.clone(),
                    payload: serde_json::from_str(&r.payload)?,
                    prev_hash: r.prev_hash.clone(),
                    hash: r.hash.clone(),
                };
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            }
            for c in &checkpoints {
                writeln!(out, "{}", serde_json::to_string(&Line::Checkpoint(c.clone()))?)?;
            }
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            for r in &records {
                writer.serialize(Row {
                    kind_of_row: "record".into(),
                    seq: r.seq,
                    at: r.at.clone(),
                    connector: r.connector.clone().unwrap_or_default(),
                    ticket_key: r.ticket_key.clone().unwrap_or_default(),
                    kind: r.kind.clone(),
                    payload: r.payload.clone(),
                    prev_hash: r.prev_hash.clone(),
                    hash: r.hash.clone(),
                    ..Row::default()
                })?;
            }
            for c in &checkpoints {
                writer.serialize(Row {
                    kind_of_row: "checkpoint".into(),
                    seq: c.seq,
                    at: c.at.clone(),
                    hash: c.hash.clone(),
                    public_key: c.public_key.clone(),
                    signature: c.signature.clone(),
                    ..Row::default()
                })?;
            }
            writer.flush()?;
        }
    }
    Ok(records.len())
}

fn parse(text: &str) -> Result<(Vec<AuditRecord>, Vec<Checkpoint>), String> {
    let (mut records, mut checkpoints) = (Vec::new(), Vec::new());
    if text.trim_start().starts_with('{') {
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str::<Line>(line).map_err(|e| format!("line {}: {e}", n + 1))? {
                Line::Record {
                    seq,
                    at,
                    connector,
                    ticket_key,
                    kind,
                    payload,
                    prev_hash,
                    hash,
                } => records.push(AuditRecord {
                    seq,
                    at,
                    connector,
                    ticket_key,
                    kind,
                    payload: payload.to_string(),
                    prev_hash,
                    hash,
                }),
                Line::Checkpoint(c) => checkpoints.push(c),
            }
        }
    } else {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        for (n, row) in reader.deserialize::<Row>().enumerate() {
            let row = row.map_err(|e| format!("row {}: {e}", n + 2))?;
            let opt = |s: String| if s.is_empty() { None } else { Some(s) };
            match row.kind_of_row.as_str() {
                "record" => records.push(AuditRecord {
                    seq: row.seq,
                    at: row.at,
                    connector: opt(row.connector),
                    ticket_key: opt(row.ticket_key),
                    kind: row.kind,
                    payload: row.payload,
                    prev_hash: row.prev_hash,
                    hash: row.hash,
                }),
                "checkpoint" => checkpoints.push(Checkpoint {
                    seq: row.seq,
                    hash: row.hash,
                    at: row.at,
                    public_key: row.public_key,
                    signature: row.signature,
                }),
                other => return Err(format!("row {}: unknown type {other:?}", n + 2)),
            }
        }
    }
    Ok((records, checkpoints))
}

/// Verifies an exported trail with the public key alone: the chain inside the export, every
/// checkpoint's signature, and that a checkpoint covers the last record (so nothing was cut
/// off the end or added after it).
pub fn verify_export(text: &str, key: &VerifyingKey) -> Result<String, String> {
    let (records, checkpoints) = parse(text)?;
    let Some(first) = records.first() else {
        return Err("the export holds no records".into());
    };
    let start = if first.seq == 1 {
        GENESIS.to_owned()
    } else {
        first.prev_hash.clone()
    };
    verify_run(&records, &start)?;
    for cp in &checkpoints {
        verify_checkpoint(cp, key)?;
        match records.iter().find(|r| r.seq == cp.seq) {
            Some(r) if r.hash == cp.hash => {}
            Some(r) => return Err(format!("record seq {}: differs from its signed checkpoint", r.seq)),
            None => return Err(format!("checkpoint at seq {} covers no record in the export", cp.seq)),
        }
    }
    let last = records.last().map_or(0, |r| r.seq);
    if !checkpoints.iter().any(|c| c.seq == last) {
        return Err(format!(
            "the last record (seq {last}) is not covered by a signed checkpoint: records may have been removed from or added to the end"
        ));
    }
    Ok(format!(
        "export verified: {} records (seq {}..={last}), {} signed checkpoints",
        records.len(),
        first.seq,
        checkpoints.len()
    ))
}
