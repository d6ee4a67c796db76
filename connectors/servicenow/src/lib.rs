//! deskbridge connector for the ServiceNow Table API (`sc_req_item` by default).
//!
//! - Incremental polling on a boundary-safe keyset cursor `(sys_updated_on, sys_id)` with a lag
//!   window, so rows sharing one second are neither missed nor repeated.
//! - Catalog variables and recorded approvals read in one batched query per page.
//! - Write-back to a journal field (`work_notes`, or `comments`), with an idempotency marker
//!   looked up in `sys_journal_field` before posting.
//!
//! With the `simulator` feature, [`simulator`] is a stateful fake of the same API subset.

mod client;
mod config;
mod cursor;
mod markup;
pub mod query;
#[cfg(feature = "simulator")]
pub mod simulator;

pub use client::ServiceNow;
pub use config::{CommentField, ServiceNowConfig};
pub use markup::JournalMarkup;

/// The `kind` of this connector in configuration.
pub const KIND: &str = "servicenow";

/// Extracts the message of a ServiceNow error body
/// (`{"error":{"message":…,"detail":…},"status":"failure"}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: Option<String>,
        detail: Option<serde_json::Value>,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let message = envelope.error.message.unwrap_or_default();
    let detail = match envelope.error.detail {
        Some(serde_json::Value::String(s)) if !s.is_empty() => format!(": {s}"),
        _ => String::new(),
    };
    let text: String = format!("{message}{detail}").chars().take(300).collect();
    Some(text)
}
