use std::path::Path;

use anyhow::Context as _;
use chrono::Utc;
use deskbridge_connector::Ticket;
use serde_json::Value;

use crate::mapping::Mapping;
use crate::schema::Normalized;

/// `deskbridge mapping test MAPPING TICKET.json`: prints the normalized request, or every
/// validation error. Returns whether the ticket normalized into a complete request (or was
/// classified as not one).
///
/// The ticket file is either a stored ticket (`{source, key, number, url, updated, version,
/// raw}`) or just the raw record the connector reads.
pub fn mapping_test(mapping: &Path, ticket: &Path) -> anyhow::Result<(String, bool)> {
    let mapping = Mapping::load(mapping)?;
    let text = std::fs::read_to_string(ticket).with_context(|| format!("reading ticket {}", ticket.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("ticket {} is not JSON", ticket.display()))?;
    let ticket = if value.get("raw").is_some() && value.get("key").is_some() {
        serde_json::from_value::<Ticket>(value).with_context(|| format!("ticket {}", ticket.display()))?
    } else {
        let text_of = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("unknown").to_owned();
        Ticket {
            source: "mapping-test".into(),
            key: text_of("sys_id"),
            number: text_of("number"),
            url: String::new(),
            updated: Utc::now(),
            version: text_of("sys_mod_count"),
            raw: value,
        }
    };
    let normalized = mapping.normalize(&ticket);
    let ok = !matches!(normalized, Normalized::Incomplete { .. });
    Ok((serde_json::to_string_pretty(&normalized)? + "\n", ok))
}
