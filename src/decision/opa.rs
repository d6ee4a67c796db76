//! OPA's Data API: `POST /v1/data/{path}` with `{"input": request}`. The result must be the
//! decision object the shipped policy returns; an undefined result (no `result` key) fails
//! closed. OPA's `decision_id` becomes the decision id when decision logging is on.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::remote::{PdpHttp, PdpTransport};
use super::{Decided, DecisionError, DecisionPoint, PolicyOutput};
use crate::schema::AccessRequest;

/// `[decision]` with `kind = "opa"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpaConfig {
    /// OPA's base URL, e.g. `https://opa.internal:8181`.
    #[serde(deserialize_with = "deskbridge_connector::urls::http_url")]
    pub url: url::Url,
    /// The rule's path under `/v1/data`, e.g. `deskbridge/access/decision`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Recorded as the policy version (OPA does not report one).
    #[serde(default)]
    pub policy_version: Option<String>,
    /// Time limit, CA and credentials (`[decision.transport]`).
    #[serde(default)]
    pub transport: PdpTransport,
}

fn default_path() -> String {
    "deskbridge/access/decision".into()
}

/// An OPA server.
pub struct OpaDecisionPoint {
    endpoint: String,
    policy_id: String,
    policy_version: String,
    http: PdpHttp,
}

impl OpaDecisionPoint {
    /// Builds the client.
    pub fn new(config: &OpaConfig) -> anyhow::Result<Self> {
        let path = config.path.trim_matches('/');
        if path.is_empty() || path.contains("..") {
            anyhow::bail!("decision.path: {:?} is not a rule path", config.path);
        }
        Ok(Self {
            endpoint: format!("{}/v1/data/{path}", config.url.as_str().trim_end_matches('/')),
            policy_id: format!("opa:{}", path.replace('/', ".")),
            policy_version: config.policy_version.clone().unwrap_or_else(|| "unversioned".into()),
            http: PdpHttp::new("OPA", &config.transport)?,
        })
    }
}

#[async_trait]
impl DecisionPoint for OpaDecisionPoint {
    fn describe(&self) -> String {
        self.policy_id.clone()
    }

    async fn decide(&self, request: &AccessRequest) -> Result<Decided, DecisionError> {
        let body = serde_json::to_vec(&json!({ "input": request })).map_err(|e| DecisionError::Engine(e.to_string()))?;
        let response = self.http.post(&self.endpoint, body, &[]).await?;
        let raw: Value =
            serde_json::from_slice(&response.body).map_err(|e| DecisionError::Malformed(format!("OPA answer is not JSON: {e}")))?;
        if let Some(errors) = raw.get("errors") {
            return Err(DecisionError::Rejected(format!("OPA reported errors: {errors}")));
        }
        let Some(result) = raw.get("result") else {
            return Err(DecisionError::Undefined(self.endpoint.clone()));
        };
        let output = PolicyOutput::from_json(result)?;
        let decision_id = raw
            .get("decision_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(super::new_decision_id);
        Ok(Decided {
            decision: output.into_decision(self.policy_id.clone(), self.policy_version.clone(), decision_id),
            raw,
        })
    }
}
