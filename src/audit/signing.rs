//! Ed25519-signed checkpoints of the audit chain, so an exported trail can be verified without
//! database access. A checkpoint signs `(seq, hash, at)` of one record; since every record
//! links to the one before it, that commits to the whole chain up to it.

use anyhow::Context as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use secrecy::{ExposeSecret, SecretString};

pub use crate::store::audit::Checkpoint;

/// The signed bytes.
pub fn message(seq: i64, hash: &str, at: &str) -> String {
    format!("deskbridge-audit-checkpoint/v1\n{seq}\n{hash}\n{at}")
}

/// The audit signing key (from config `[audit] signing_key`, 64 hex characters).
pub struct AuditSigner {
    key: SigningKey,
}

impl AuditSigner {
    /// Reads a hex seed; the error never repeats the secret.
    pub fn from_secret(secret: &SecretString) -> anyhow::Result<Self> {
        let bytes = hex::decode(secret.expose_secret().trim()).map_err(|_| anyhow::anyhow!("audit.signing_key: not hex"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("audit.signing_key: must be 32 bytes (64 hex characters)"))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A new random key: `(secret hex, public hex)`.
    pub fn generate() -> (SecretString, String) {
        let seed: [u8; 32] = rand::random();
        let key = SigningKey::from_bytes(&seed);
        (SecretString::from(hex::encode(seed)), hex::encode(key.verifying_key().to_bytes()))
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Signs one record's position.
    pub fn sign(&self, seq: i64, hash: &str) -> Checkpoint {
        let at = crate::store::now();
        let signature = self.key.sign(message(seq, hash, &at).as_bytes());
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            at,
            public_key: self.public_hex(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// Reads a public key given as hex, or as a file holding the hex.
pub fn parse_public_key(text: &str) -> anyhow::Result<VerifyingKey> {
    let text = text.trim();
    let hex_text = if std::path::Path::new(text).is_file() {
        std::fs::read_to_string(text)
            .with_context(|| format!("reading public key {text}"))?
            .trim()
            .to_owned()
    } else {
        text.to_owned()
    };
    let bytes: [u8; 32] = hex::decode(&hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("public key: expected 64 hex characters (or a file holding them)")?;
    VerifyingKey::from_bytes(&bytes).context("public key: not a valid Ed25519 key")
}

/// Checks a checkpoint's signature under `key`.
pub fn verify_checkpoint(checkpoint: &Checkpoint, key: &VerifyingKey) -> Result<(), String> {
    if checkpoint.public_key != hex::encode(key.to_bytes()) {
        return Err(format!(
            "checkpoint at seq {} is signed by another key ({})",
            checkpoint.seq, checkpoint.public_key
        ));
    }
    let bytes: [u8; 64] = hex::decode(&checkpoint.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("checkpoint at seq {}: malformed signature", checkpoint.seq))?;
    key.verify(
        message(checkpoint.seq, &checkpoint.hash, &checkpoint.at).as_bytes(),
        &Signature::from_bytes(&bytes),
    )
    .map_err(|_| format!("checkpoint at seq {}: signature does not verify", checkpoint.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_under_its_key_and_content() {
        let (secret, public) = AuditSigner::generate();
        let signer = AuditSigner::from_secret(&secret).expect("key");
        assert_eq!(signer.public_hex(), public);
        let key = parse_public_key(&public).expect("public key");
        let mut cp = signer.sign(7, "abc");
        assert_eq!(verify_checkpoint(&cp, &key), Ok(()));
        cp.hash = "abd".into();
        assert!(verify_checkpoint(&cp, &key).expect_err("tampered").contains("does not verify"));
        let (_, other) = AuditSigner::generate();
        assert!(verify_checkpoint(&signer.sign(1, "x"), &parse_public_key(&other).expect("key")).is_err());
    }

    #[test]
    fn a_bad_key_is_reported_without_echoing_it() {
        let err = AuditSigner::from_secret(&SecretString::from("zz-not-hex-secret"))
            .err()
            .expect("bad");
        assert!(!err.to_string().contains("zz-not-hex-secret"));
    }
}
