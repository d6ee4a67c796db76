//! Inbound webhooks: HMAC-SHA256 signatures verified on the raw body, in constant time, before
//! anything is stored; what a verified delivery names.

use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

/// `[connectors.webhook]`: how deliveries to this connector instance are authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The shared secret the ITSM signs with (at least 16 characters); use `${VAR}`.
    #[serde(deserialize_with = "hmac_secret")]
    pub secret: SecretString,
    /// The header carrying `sha256=<hex>` (or bare hex). Jira always uses `X-Hub-Signature`.
    #[serde(default)]
    pub signature_header: Option<String>,
    /// The header naming a delivery, used to drop replays and retries. Jira always uses
    /// `X-Atlassian-Webhook-Identifier`.
    #[serde(default)]
    pub delivery_header: Option<String>,
    /// Largest body accepted, in bytes; larger deliveries get 413 unread.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

/// Fewest characters a shared HMAC secret may have.
pub const MIN_SECRET_CHARS: usize = 16;

/// `deserialize_with` for a shared HMAC secret: an empty or short secret is refused at load
/// (anyone could forge deliveries signed with it). The error never repeats the secret.
pub fn hmac_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    let secret = SecretString::deserialize(d)?;
    let chars = secret.expose_secret().trim().chars().count();
    if chars == 0 {
        return Err(serde::de::Error::custom("the secret is empty"));
    }
    if chars < MIN_SECRET_CHARS {
        return Err(serde::de::Error::custom(format!(
            "the secret has {chars} characters; at least {MIN_SECRET_CHARS} are needed (make one with `openssl rand -hex 32`)"
        )));
    }
    Ok(secret)
}

fn default_max_body() -> usize {
    1024 * 1024
}

/// Why a delivery was refused (always answered 401, the reason only logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header.
    #[error("signature header missing")]
    Missing,
    /// The header is not `sha256=<hex>`.
    #[error("signature header malformed")]
    Malformed,
    /// The HMAC does not match the body.
    #[error("signature does not match the body")]
    Mismatch,
}

/// What a verified delivery tells deskbridge: which tickets to read again. The payload itself is
/// never used as ticket data: it can be stale, reordered or forged by whoever holds the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The ITSM's delivery id, when it sends one (replays carry the same id).
    pub delivery_id: Option<String>,
    /// Keys ([`crate::Ticket::key`]) of the tickets the delivery names.
    pub keys: Vec<String>,
}

/// A verifier for one connector instance.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    secret: SecretString,
    /// Signature header name.
    pub signature_header: String,
    /// Delivery id header name, if any.
    pub delivery_header: Option<String>,
    /// Body size limit.
    pub max_body_bytes: usize,
}

impl WebhookVerifier {
    /// A verifier from configuration with the connector kind's default headers.
    pub fn new(config: &WebhookConfig, default_signature_header: &str, default_delivery_header: Option<&str>) -> Self {
        Self {
            secret: config.secret.clone(),
            signature_header: config
                .signature_header
                .clone()
                .unwrap_or_else(|| default_signature_header.to_owned()),
            delivery_header: config.delivery_header.clone().or(default_delivery_header.map(String::from)),
            max_body_bytes: config.max_body_bytes,
        }
    }

    /// Checks `sha256=<hex HMAC-SHA256(secret, body)>` in the signature header, comparing in
    /// constant time (`Mac::verify_slice`).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        let value = headers
            .get(self.signature_header.as_str())
            .ok_or(SignatureError::Missing)?
            .to_str()
            .map_err(|_| SignatureError::Malformed)?
            .trim();
        let hex_part = value.strip_prefix("sha256=").unwrap_or(value);
        let expected = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose_secret().as_bytes()).map_err(|_| SignatureError::Mismatch)?;
        mac.update(body);
        mac.verify_slice(&expected).map_err(|_| SignatureError::Mismatch)
    }

    /// The delivery id header's value, if configured and present.
    pub fn delivery_id(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.delivery_header.as_deref()?;
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().chars().take(200).collect::<String>())
            .filter(|v| !v.is_empty())
    }
}

/// `sha256=<hex>` for `body` under `secret` (what a sender puts in the signature header).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> WebhookVerifier {
        WebhookVerifier::new(
            &WebhookConfig {
                secret: SecretString::from("s3cret"),
                signature_header: None,
                delivery_header: None,
                max_body_bytes: 10,
            },
            "X-Hub-Signature",
            Some("X-Atlassian-Webhook-Identifier"),
        )
    }

    #[test]
    fn only_the_right_signature_over_the_exact_body_passes() {
        let v = verifier();
        let body = br#"{"issue":{"id":"1"}}"#;
        let mut headers = HeaderMap::new();
        assert_eq!(v.verify(&headers, body), Err(SignatureError::Missing));
        headers.insert("x-hub-signature", sign("s3cret", body).parse().expect("header"));
        assert_eq!(v.verify(&headers, body), Ok(()));
        assert_eq!(v.verify(&headers, br#"{"issue":{"id":"2"}}"#), Err(SignatureError::Mismatch));
        headers.insert("x-hub-signature", sign("other", body).parse().expect("header"));
        assert_eq!(v.verify(&headers, body), Err(SignatureError::Mismatch));
        headers.insert("x-hub-signature", "sha256=zz".parse().expect("header"));
        assert_eq!(v.verify(&headers, body), Err(SignatureError::Malformed));
    }
}
