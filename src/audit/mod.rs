//! Audit evidence: verifying the chain, exporting it, signed checkpoints and a ticket's trace.

mod export;
pub mod signing;
pub(crate) mod trace;

use crate::store::audit::{AuditRecord, ChainVerifier, GENESIS};
use crate::store::Store;

pub use export::{export, verify_export, Format};
pub use signing::{AuditSigner, Checkpoint};
pub use trace::trace;

/// Records and checkpoints read per query while verifying or exporting.
pub(crate) const PAGE: i64 = 1000;

/// Verifies the whole log in the store and every stored checkpoint, a page at a time: memory
/// stays flat however long the log is. Returns a summary, or the first problem, naming the
/// record.
pub async fn verify_store(store: &Store) -> anyhow::Result<Result<String, String>> {
    let mut chain = ChainVerifier::new(GENESIS);
    let mut checkpoints = Checkpoints::new();
    let mut after = 0;
    loop {
        let page = store.audit_page(after, "", PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            if chain.count() == 0 && r.seq != 1 {
                return Ok(Err(format!(
                    "record seq {} ({} at {}): the log must start at seq 1; earlier records were deleted",
                    r.seq, r.kind, r.at
                )));
            }
            if let Err(problem) = chain.push(r) {
                return Ok(Err(problem));
            }
            if let Err(problem) = checkpoints.check(store, r).await? {
                return Ok(Err(problem));
            }
        }
    }
    if let Err(problem) = checkpoints.finish(store, after).await? {
        return Ok(Err(problem));
    }
    Ok(Ok(format!(
        "audit log verified: {} records, {} signed checkpoints",
        chain.count(),
        checkpoints.seen
    )))
}

/// Stored checkpoints covering records `from_seq..=to_seq`, read a page at a time in (seq, id)
/// order.
pub(crate) struct CheckpointPages {
    to_seq: i64,
    after: (i64, i64),
    buffered: std::collections::VecDeque<Checkpoint>,
    exhausted: bool,
}

impl CheckpointPages {
    pub(crate) fn new(from_seq: i64, to_seq: i64) -> Self {
        Self {
            to_seq,
            // Checkpoint ids start at 1: (from_seq, 0) comes just before the first at from_seq.
            after: (from_seq, 0),
            buffered: Default::default(),
            exhausted: false,
        }
    }

    /// The next checkpoint, without taking it.
    pub(crate) async fn peek(&mut self, store: &Store) -> anyhow::Result<Option<&Checkpoint>> {
        if self.buffered.is_empty() && !self.exhausted {
            let page = store.checkpoint_page(self.after, self.to_seq, PAGE).await?;
            self.exhausted = (page.len() as i64) < PAGE;
            if let Some((id, cp)) = page.last() {
                self.after = (cp.seq, *id);
            }
            self.buffered.extend(page.into_iter().map(|(_, cp)| cp));
        }
        Ok(self.buffered.front())
    }

    /// The next checkpoint.
    pub(crate) async fn next(&mut self, store: &Store) -> anyhow::Result<Option<Checkpoint>> {
        self.peek(store).await?;
        Ok(self.buffered.pop_front())
    }
}

/// The store's checkpoints, checked beside the records they cover.
struct Checkpoints {
    pages: CheckpointPages,
    keys: std::collections::HashMap<String, ed25519_dalek::VerifyingKey>,
    seen: usize,
}

impl Checkpoints {
    fn new() -> Self {
        Self {
            pages: CheckpointPages::new(0, i64::MAX),
            keys: Default::default(),
            seen: 0,
        }
    }

    /// Checks every checkpoint of record `r` (signature, and that it signed this record).
    async fn check(&mut self, store: &Store, r: &AuditRecord) -> anyhow::Result<Result<(), String>> {
        while self.pages.peek(store).await?.is_some_and(|cp| cp.seq <= r.seq) {
            let Some(cp) = self.pages.next(store).await? else { break };
            self.seen += 1;
            let key = match self.keys.get(&cp.public_key) {
                Some(k) => *k,
                None => match signing::parse_public_key(&cp.public_key) {
                    Ok(k) => *self.keys.entry(cp.public_key.clone()).or_insert(k),
                    Err(e) => return Ok(Err(format!("checkpoint at seq {}: {e}", cp.seq))),
                },
            };
            if let Err(problem) = signing::verify_checkpoint(&cp, &key) {
                return Ok(Err(problem));
            }
            if cp.seq < r.seq || cp.hash != r.hash {
                return Ok(Err(format!(
                    "record seq {}: differs from its signed checkpoint; the record was replaced",
                    cp.seq
                )));
            }
        }
        Ok(Ok(()))
    }

    /// After the last record: a checkpoint beyond it means records were cut off the end.
    async fn finish(&mut self, store: &Store, last_seq: i64) -> anyhow::Result<Result<(), String>> {
        if let Some(cp) = self.pages.peek(store).await? {
            return Ok(Err(format!(
                "a signed checkpoint covers seq {} but the log ends at seq {last_seq}: records were deleted from the end",
                cp.seq
            )));
        }
        Ok(Ok(()))
    }
}

/// Signs the latest record, unless it is already signed. Returns the new checkpoint.
pub async fn checkpoint(store: &Store, signer: &AuditSigner) -> anyhow::Result<Option<Checkpoint>> {
    let Some(last) = store.last_audit_record().await? else {
        return Ok(None);
    };
    if store.has_checkpoint(last.seq, &signer.public_hex()).await? {
        return Ok(None);
    }
    let cp = signer.sign(last.seq, &last.hash);
    store.insert_checkpoint(&cp).await?;
    Ok(Some(cp))
}
