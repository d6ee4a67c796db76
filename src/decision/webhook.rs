//! A webhook PDP: the adapter pattern for IGA platforms (SailPoint, Saviynt, in-house).
//!
//! deskbridge POSTs `{"request_id", "sent_at", "request": AccessRequest}` with
//! `X-Deskbridge-Signature: sha256=<hex HMAC-SHA256(secret, body)>`. The adapter answers
//! `{"request_id", "decision": {outcome, reasons, route_to?, missing?, obligations?},
//! "decision_id"?, "policy_id"?, "policy_version"?}` signed the same way over its body. A
//! missing or wrong signature, another request id or any other shape fails closed.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::remote::{PdpHttp, PdpTransport};
use super::{Decided, DecisionError, DecisionPoint, PolicyOutput};
use crate::schema::AccessRequest;

/// The signature header, both ways.
pub const SIGNATURE_HEADER: &str = "x-deskbridge-signature";

/// `[decision]` with `kind = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The adapter's URL.
    #[serde(deserialize_with = "deskbridge_connector::urls::http_url")]
    pub url: url::Url,
    /// Shared HMAC secret (at least 16 characters); use `${VAR}`.
    #[serde(deserialize_with = "deskbridge_connector::webhook::hmac_secret")]
    pub secret: SecretString,
    /// Recorded when the adapter does not name its policy.
    #[serde(default)]
    pub policy_id: Option<String>,
    /// Time limit, CA and credentials (`[decision.transport]`).
    #[serde(default)]
    pub transport: PdpTransport,
}

/// `sha256=<hex>` over `body`.
pub fn sign(secret: &SecretString, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `header` against `body` in constant time.
pub fn verify(secret: &SecretString, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// A webhook adapter.
pub struct WebhookDecisionPoint {
    config: WebhookConfig,
    http: PdpHttp,
}

impl WebhookDecisionPoint {
    /// Builds the client.
    pub fn new(config: WebhookConfig) -> anyhow::Result<Self> {
        Ok(Self {
            http: PdpHttp::new("webhook PDP", &config.transport)?,
            config,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    request_id: String,
    decision: Value,
    #[serde(default)]
    decision_id: Option<String>,
    #[serde(default)]
    policy_id: Option<String>,
    #[serde(default)]
    policy_version: Option<String>,
}

#[async_trait]
impl DecisionPoint for WebhookDecisionPoint {
    fn describe(&self) -> String {
        format!("webhook:{}", self.config.url.host_str().unwrap_or("pdp"))
    }

    async fn decide(&self, request: &AccessRequest) -> Result<Decided, DecisionError> {
        let request_id = super::new_decision_id();
        let body = serde_json::to_vec(&json!({"request_id": request_id, "sent_at": chrono::Utc::now(), "request": request}))
            .map_err(|e| DecisionError::Engine(e.to_string()))?;
        let signature = sign(&self.config.secret, &body);
        let response = self
            .http
            .post(self.config.url.as_str(), body, &[(SIGNATURE_HEADER, signature)])
            .await?;
        let header = response.headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        if !verify(&self.config.secret, &response.body, header) {
            return Err(DecisionError::Malformed(
                "the webhook PDP's answer is not signed with the shared secret".into(),
            ));
        }
        let raw: Value = serde_json::from_slice(&response.body).map_err(|e| DecisionError::Malformed(format!("not JSON: {e}")))?;
        let answer: Answer = serde_json::from_value(raw.clone()).map_err(|e| DecisionError::Malformed(e.to_string()))?;
        if answer.request_id != request_id {
            return Err(DecisionError::Malformed(format!(
                "the answer is for request {}, not {request_id}",
                answer.request_id
            )));
        }
        let output = PolicyOutput::from_json(&answer.decision)?;
        Ok(Decided {
            decision: output.into_decision(
                answer
                    .policy_id
                    .or_else(|| self.config.policy_id.clone())
                    .unwrap_or_else(|| self.describe()),
                answer.policy_version.unwrap_or_else(|| "unversioned".into()),
                answer.decision_id.unwrap_or(request_id),
            ),
            raw,
        })
    }
}
