//! deskbridge connector for Jira Cloud (REST v3), Jira Data Center (REST v2) and Jira Service
//! Management.
//!
//! - Search: Cloud `POST /rest/api/3/search/jql` paged by `nextPageToken`; Data Center
//!   `POST /rest/api/2/search` paged by `startAt` in windows under the 10,000-result cap. The
//!   cursor is on `updated` in epoch milliseconds with an overlap window, deduplicated on
//!   (issue id, updated), and advances only once a query has drained.
//! - Custom fields are named in configuration and resolved to this site's ids through
//!   `/rest/api/{2,3}/field`; the JSM request type is found by its schema.
//! - Comments: ADF with ticket text in text nodes (Cloud), wiki markup escaped (Data Center,
//!   JSM), or the JSM request-comment API with a public/internal choice; a marker in the text
//!   plus a comment property in the same create call; existing comments checked newest-first.
//! - A start-up check of `/myself` and the project permissions the connector needs.
//!
//! With the `simulator` feature, [`simulator`] is a stateful fake of the same API subset.

mod client;
mod config;
mod cursor;
mod markup;
#[cfg(feature = "simulator")]
pub mod simulator;

pub use client::{Jira, MARKER_PROPERTY};
pub use config::{CommentApi, CommentSettings, Deployment, JiraConfig, Visibility};
pub use markup::{adf_document, adf_plain_text, AdfMarkup, WikiMarkup};

/// The `kind` of this connector in configuration.
pub const KIND: &str = "jira";

/// Extracts the message of a Jira error body (`{"errorMessages":[...],"errors":{...}}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default, rename = "errorMessages")]
        messages: Vec<String>,
        #[serde(default)]
        errors: std::collections::BTreeMap<String, serde_json::Value>,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let mut parts = envelope.messages;
    parts.extend(
        envelope
            .errors
            .into_iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default())),
    );
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("; ").chars().take(300).collect())
}
