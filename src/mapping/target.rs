//! The schema fields a mapping can fill, and how a text value becomes each one's type.

use chrono::NaiveDate;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Bool,
    Integer,
    Date,
    /// One of a serde enum's snake_case names.
    Enum(&'static [&'static str]),
    /// Recorded approvals: a JSON array of `{approver, state}`.
    Approvals,
}

const REQUEST_KINDS: &[&str] = &["grant", "revoke", "modify", "extend", "create_identity", "rotate_credential"];
const IDENTITY_KINDS: &[&str] = &["person", "service_account", "workload", "api_key"];
const ENVIRONMENTS: &[&str] = &["prod", "staging", "test", "dev"];
const URGENCIES: &[&str] = &["low", "medium", "high", "critical"];

/// Every field a mapping may name under `[fields]`, with its type.
pub const TARGETS: &[(&str, Kind)] = &[
    ("kind", Kind::Enum(REQUEST_KINDS)),
    ("requester.id", Kind::Text),
    ("requester.display_name", Kind::Text),
    ("requester.email", Kind::Text),
    ("beneficiary.type", Kind::Enum(IDENTITY_KINDS)),
    ("beneficiary.id", Kind::Text),
    ("beneficiary.display_name", Kind::Text),
    ("target.system", Kind::Text),
    ("target.environment", Kind::Enum(ENVIRONMENTS)),
    ("entitlement.id", Kind::Text),
    ("entitlement.name", Kind::Text),
    ("entitlement.privileged", Kind::Bool),
    ("justification", Kind::Text),
    ("duration_days", Kind::Integer),
    ("expires_at", Kind::Date),
    ("urgency", Kind::Enum(URGENCIES)),
    ("approver.assignment_group", Kind::Text),
    ("approver.named_approver", Kind::Text),
    ("approver.itsm_approval", Kind::Text),
    ("approver.itsm_state", Kind::Text),
    ("approver.recorded", Kind::Approvals),
    ("nhi.owner", Kind::Text),
    ("nhi.purpose", Kind::Text),
    ("nhi.expires_at", Kind::Date),
];

/// Fields without which a request cannot be decided; a mapping must fill them (by path or
/// default), and a ticket missing them is `Incomplete`.
pub const ALWAYS_REQUIRED: &[&str] = &[
    "kind",
    "requester.id",
    "beneficiary.id",
    "target.system",
    "target.environment",
    "entitlement.id",
];

pub fn kind_of(target: &str) -> Option<Kind> {
    TARGETS.iter().find(|(name, _)| *name == target).map(|(_, kind)| *kind)
}

/// Converts a text value to the target type, or says why it cannot be.
pub fn convert(kind: Kind, text: &str) -> Result<Value, String> {
    match kind {
        Kind::Text => Ok(Value::String(text.to_owned())),
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "n" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("{text:?} is not a yes/no value")),
        },
        Kind::Integer => text
            .parse::<u32>()
            .map(Value::from)
            .map_err(|_| format!("{text:?} is not a whole number of days")),
        Kind::Date => {
            let date = text.get(..10).unwrap_or(text);
            NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map(|d| Value::String(d.to_string()))
                .map_err(|_| format!("{text:?} is not a date (YYYY-MM-DD)"))
        }
        Kind::Enum(allowed) => {
            let normalized = text.trim().to_ascii_lowercase().replace([' ', '-'], "_");
            if allowed.contains(&normalized.as_str()) {
                Ok(Value::String(normalized))
            } else {
                Err(format!("{text:?} is not one of {}", allowed.join(", ")))
            }
        }
        Kind::Approvals => Err("approvals are read as JSON, not text".into()),
    }
}
