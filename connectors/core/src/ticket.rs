use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One version of one ticket as the ITSM returned it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// The connector instance that read it (the `id` of its `[[connectors]]` entry).
    pub source: String,
    /// The ITSM's stable identifier (ServiceNow `sys_id`, Jira issue id).
    pub key: String,
    /// The human-facing number (`RITM0010001`, `ACC-42`).
    pub number: String,
    /// A link to the ticket in the ITSM's UI, built by the connector from its base URL, never
    /// taken from ticket text.
    pub url: String,
    /// When the ITSM last changed the ticket.
    pub updated: DateTime<Utc>,
    /// A value that changes with every update (ServiceNow `sys_mod_count`, Jira `updated`).
    pub version: String,
    /// The record exactly as read, plus what the connector fetched alongside it (catalog
    /// variables). Untrusted input: evidence, never a decision.
    pub raw: serde_json::Value,
}

/// Where an incremental poll resumes. Opaque to everything but the connector that made it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor(pub Option<String>);

impl Cursor {
    /// The cursor of a connector that has never polled.
    pub fn start() -> Self {
        Self(None)
    }
}

/// One page of an incremental poll.
#[derive(Debug, Clone)]
pub struct Page {
    /// Tickets in cursor order.
    pub tickets: Vec<Ticket>,
    /// The cursor to store once `tickets` are durably stored.
    pub next: Cursor,
    /// Whether another page may be available right away.
    pub more: bool,
}

/// A comment to write back to a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// The idempotency marker, also present in `body`. A connector finds an earlier post of the
    /// same comment by this marker.
    pub marker: String,
    /// The text, already escaped for the target field with [`Connector::markup`].
    pub body: String,
}

/// The ITSM's identifier of a posted comment (ServiceNow `sys_journal_field.sys_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentId(pub String);

impl std::fmt::Display for CommentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
