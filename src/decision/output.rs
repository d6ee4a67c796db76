//! The decision object a policy returns, validated before anyone acts on it.

use serde::Deserialize;

use super::DecisionError;
use crate::schema::{Decision, Obligations, Outcome};

/// What a policy must return: `{outcome, reasons, route_to?, missing?, obligations?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOutput {
    /// approve | deny | review | needs_info.
    pub outcome: Outcome,
    /// At least one reason.
    pub reasons: Vec<String>,
    /// Required for review: who must approve.
    #[serde(default)]
    pub route_to: Option<String>,
    /// Required for needs_info: what is missing.
    #[serde(default)]
    pub missing: Vec<String>,
    /// Conditions on the access.
    #[serde(default)]
    pub obligations: Obligations,
}

impl PolicyOutput {
    /// Parses and checks an answer; anything off is `Malformed`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, DecisionError> {
        let output: Self = serde_json::from_value(value.clone()).map_err(|e| DecisionError::Malformed(e.to_string()))?;
        if output.reasons.iter().all(|r| r.trim().is_empty()) {
            return Err(DecisionError::Malformed("no reasons given".into()));
        }
        if output.outcome == Outcome::Review && output.route_to.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(DecisionError::Malformed("a review must say who it is routed to (route_to)".into()));
        }
        if output.outcome == Outcome::NeedsInfo && output.missing.is_empty() {
            return Err(DecisionError::Malformed("needs_info must list what is missing".into()));
        }
        Ok(output)
    }
}

impl PolicyOutput {
    /// The decision, stamped with who decided, its id and now.
    pub fn into_decision(self, policy_id: String, policy_version: String, decision_id: String) -> Decision {
        Decision {
            outcome: self.outcome,
            reasons: self.reasons,
            route_to: self.route_to,
            missing: self.missing,
            obligations: self.obligations,
            policy_id,
            policy_version,
            decision_id,
            decided_at: chrono::Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformed_answers_are_rejected() {
        for bad in [
            json!({"outcome": "approve"}),
            json!({"outcome": "approve", "reasons": []}),
            json!({"outcome": "yes", "reasons": ["x"]}),
            json!({"outcome": "review", "reasons": ["x"]}),
            json!({"outcome": "needs_info", "reasons": ["x"]}),
            json!({"outcome": "approve", "reasons": ["x"], "grant_now": true}),
            json!({"outcome": "approve", "reasons": "x"}),
            json!(true),
        ] {
            assert!(matches!(PolicyOutput::from_json(&bad), Err(DecisionError::Malformed(_))), "{bad}");
        }
        assert!(PolicyOutput::from_json(&json!({"outcome": "deny", "reasons": ["no"]})).is_ok());
    }
}
