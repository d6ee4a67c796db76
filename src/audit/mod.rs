//! Audit evidence: verifying the chain, exporting it, signed checkpoints and a ticket's trace.

mod export;
pub mod signing;
mod trace;

use crate::store::audit::verify;
use crate::store::Store;

pub use export::{export, verify_export, Format};
pub use signing::{AuditSigner, Checkpoint};
pub use trace::trace;

/// Verifies the whole log in the store and every stored checkpoint. Returns a summary, or the
/// first problem, naming the record.
pub async fn verify_store(store: &Store) -> anyhow::Result<Result<String, String>> {
    let records = store.audit_records().await?;
    let count = match verify(&records) {
        Ok(n) => n,
        Err(problem) => return Ok(Err(problem)),
    };
    let checkpoints = store.checkpoints().await?;
    for cp in &checkpoints {
        let key = match signing::parse_public_key(&cp.public_key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(format!("checkpoint at seq {}: {e}", cp.seq))),
        };
        if let Err(problem) = signing::verify_checkpoint(cp, &key) {
            return Ok(Err(problem));
        }
        match records.iter().find(|r| r.seq == cp.seq) {
            Some(r) if r.hash == cp.hash => {}
            Some(r) => {
                return Ok(Err(format!(
                    "record seq {}: differs from its signed checkpoint; the record was replaced",
                    r.seq
                )))
            }
            None => {
                return Ok(Err(format!(
                    "a signed checkpoint covers seq {} but the log ends at seq {}: records were deleted from the end",
                    cp.seq,
                    records.last().map_or(0, |r| r.seq)
                )))
            }
        }
    }
    Ok(Ok(format!(
        "audit log verified: {count} records, {} signed checkpoints",
        checkpoints.len()
    )))
}

/// Signs the latest record, unless it is already signed. Returns the new checkpoint.
pub async fn checkpoint(store: &Store, signer: &AuditSigner) -> anyhow::Result<Option<Checkpoint>> {
    let Some(last) = store.audit_records().await?.pop() else {
        return Ok(None);
    };
    if store
        .checkpoints()
        .await?
        .iter()
        .any(|c| c.seq == last.seq && c.public_key == signer.public_hex())
    {
        return Ok(None);
    }
    let cp = signer.sign(last.seq, &last.hash);
    store.insert_checkpoint(&cp).await?;
    Ok(Some(cp))
}
