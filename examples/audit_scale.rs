//! Evidence at scale: prints figures, asserts nothing.
//!
//!     cargo run --release --example audit_scale -- [RECORDS]
//!
//! Builds an audit log of RECORDS records (default 1,000,000) with a signed checkpoint every
//! 10,000, in a SQLite file, then runs in separate child processes, so each peak RSS is its own:
//!
//! - `verify`: `audit verify`'s store check, a page at a time (what deskbridge does now);
//! - `export`: `audit export` of the whole log as JSONL to /dev/null, a page at a time;
//! - `export-since`: the same from the middle of the log (the filter runs in SQL);
//! - `verify-export`: `audit verify --export` of that JSONL file with the public key;
//! - `whole-log`: the way both worked before, the whole log loaded into memory first,
//!   for comparison.

#[allow(dead_code)]
mod common;

use std::time::Instant;

use deskbridge::audit::{self, AuditSigner, Format};
use deskbridge::store::audit::{append, Event};
use deskbridge::store::Store;

async fn build(path: &std::path::Path, records: usize, signer: &AuditSigner) -> anyhow::Result<()> {
    let store = Store::open(path).await?;
    let started = Instant::now();
    let batch = 10_000;
    let mut written = 0;
    while written < records {
        let mut tx = store.begin_write().await?;
        for n in written..(written + batch).min(records) {
            let payload = serde_json::json!({
                "ticket_hash": format!("{n:064x}"), "number": format!("RITM{n:07}"),
                "decision": {"outcome": "review", "reasons": ["privileged access needs the owner"], "policy_version": "2026.12.1"}
            });
            append(&mut tx, "servicenow", &format!("{:032x}", n % 50_000), Event::Decided, payload).await?;
        }
        tx.commit().await?;
        written = (written + batch).min(records);
        audit::checkpoint(&store, signer).await?;
    }
    println!(
        "built {records} records in {:.1} s ({:.0} records/s), peak RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        records as f64 / started.elapsed().as_secs_f64(),
        common::peak_rss_mib("self")
    );
    Ok(())
}

async fn child(mode: &str, db: &std::path::Path, extra: Option<&str>) -> anyhow::Result<()> {
    let store = Store::open(db).await?;
    let started = Instant::now();
    let what = match mode {
        "verify" => audit::verify_store(&store).await?.map_err(anyhow::Error::msg)?,
        "export" | "export-since" => {
            let since = match mode {
                "export-since" => {
                    let last = store.last_audit_record().await?.map_or(0, |r| r.seq);
                    let middle = store.audit_page(last / 2, "", 1).await?;
                    middle
                        .first()
                        .map(|r| chrono::DateTime::parse_from_rfc3339(&r.at))
                        .transpose()?
                        .map(|t| t.to_utc())
                }
                _ => None,
            };
            let path = extra.unwrap_or("/dev/null");
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            let n = audit::export(&store, since, Format::Jsonl, None, &mut out).await?;
            format!("exported {n} records")
        }
        "verify-export" => {
            let key = audit::signing::parse_public_key(extra.unwrap_or_default())?;
            let file = db.with_extension("jsonl");
            audit::verify_export(&file, &key).map_err(anyhow::Error::msg)?
        }
        "whole-log" => {
            let records = store.audit_records().await?;
            let n = deskbridge::store::audit::verify(&records).map_err(anyhow::Error::msg)?;
            let checkpoints = store.checkpoints().await?;
            // As verify used to: each checkpoint looked up by a scan of the records.
            let matched = checkpoints
                .iter()
                .filter(|cp| records.iter().any(|r| r.seq == cp.seq && r.hash == cp.hash))
                .count();
            format!("{n} records loaded whole and verified, {matched} checkpoints matched")
        }
        other => anyhow::bail!("unknown mode {other}"),
    };
    println!(
        "  {mode:<14} {:>7.1} s   peak RSS {:>6.1} MiB   {what}",
        started.elapsed().as_secs_f64(),
        common::peak_rss_mib("self")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2], std::path::Path::new(&args[3]), args.get(4).map(String::as_str)).await;
    }
    let records: usize = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("audit.db");
    let (secret, public) = AuditSigner::generate();
    let signer = AuditSigner::from_secret(&secret)?;
    build(&db, records, &signer).await?;
    println!(
        "SQLite file {:.0} MiB; each step below is its own process:",
        std::fs::metadata(&db)?.len() as f64 / 1048576.0
    );
    let me = std::env::current_exe()?;
    let jsonl = db.with_extension("jsonl").display().to_string();
    for (mode, extra) in [
        ("verify", None),
        ("export", Some(jsonl.as_str())),
        ("export-since", None),
        ("verify-export", Some(public.as_str())),
        ("whole-log", None),
    ] {
        let mut cmd = std::process::Command::new(&me);
        cmd.arg("--child").arg(mode).arg(&db);
        if let Some(extra) = extra {
            cmd.arg(extra);
        }
        let status = cmd.status()?;
        if !status.success() {
            anyhow::bail!("{mode} failed");
        }
    }
    Ok(())
}
