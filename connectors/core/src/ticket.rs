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

/// A comment deskbridge posted earlier, found on the ticket by its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundComment {
    /// Its id in the ITSM.
    pub id: CommentId,
    /// Its text as the ITSM stores it (plain text of an ADF document; wiki or journal text as
    /// written), so the caller can check it says what is being posted.
    pub text: String,
}

/// What every deskbridge marker starts with.
pub const MARKER_PREFIX: &str = "deskbridge-id:";

/// The line that carries `marker` in a comment.
pub fn marker_line(marker: &str) -> String {
    format!("[{marker}]")
}

/// Whether `text` carries `marker` as a whole line of its own (`[marker]`, or `\[marker\]` as
/// wiki markup escapes it), not merely somewhere inside a line that quotes it.
pub fn has_marker_line(text: &str, marker: &str) -> bool {
    let plain = marker_line(marker);
    let escaped = format!("\\[{marker}\\]");
    text.lines().map(str::trim).any(|l| l == plain || l == escaped)
}

/// Makes text quoted from a ticket unable to carry anything that reads as a marker: the
/// prefix's hyphen becomes a non-breaking hyphen (U+2011), which reads the same.
pub fn neutralize_markers(text: &str) -> String {
    const PREFIX: &[u8] = b"deskbridge-id";
    if !text.as_bytes().windows(PREFIX.len()).any(|w| w.eq_ignore_ascii_case(PREFIX)) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("deskbridge-id") {
        out.push_str(&rest[..at + "deskbridge".len()]);
        out.push('\u{2011}');
        rest = &rest[at + "deskbridge-".len()..];
    }
    out.push_str(rest);
    out
}

/// The ITSM's identifier of a posted comment (ServiceNow `sys_journal_field.sys_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentId(pub String);

impl CommentId {
    /// A stable reference to a posted comment whose own id is not known: `key#marker`, which
    /// the marker makes unique.
    pub fn by_marker(key: &str, marker: &str) -> Self {
        Self(format!("{key}#{marker}"))
    }
}

impl std::fmt::Display for CommentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_counts_only_as_a_whole_line() {
        let m = "deskbridge-id:abc";
        assert!(has_marker_line("decision\n[deskbridge-id:abc]\n", m));
        assert!(has_marker_line("decision\n  \\[deskbridge-id:abc\\]", m));
        assert!(!has_marker_line("quoted: [deskbridge-id:abc]", m));
        assert!(!has_marker_line("[deskbridge-id:abcd]", m));
    }

    #[test]
    fn quoted_text_cannot_carry_a_marker() {
        let t = neutralize_markers("see [DESKBRIDGE-ID:abc] and deskbridge-id:def");
        assert!(!t.to_ascii_lowercase().contains("deskbridge-id"), "{t}");
        assert!(t.contains("abc") && t.contains("def"));
        assert_eq!(neutralize_markers("plain"), "plain");
    }
}
