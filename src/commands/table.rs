//! The readable summary table of `deskbridge demo` and `deskbridge sync`.

use serde_json::Value;

use crate::store::TicketState;

/// Text from tickets or ITSMs made safe for one table cell: control characters (escape
/// sequences included), bidi controls and zero-width characters become spaces. (Everything
/// printed also passes through [`crate::text::for_terminal`].)
pub fn terminal_safe(text: &str) -> String {
    text.chars().map(|c| if crate::text::is_hostile(c) { ' ' } else { c }).collect()
}

fn cell(text: &str, width: usize) -> String {
    let text = terminal_safe(text);
    let text = text.as_str();
    let mut s: String = text.chars().take(width).collect();
    if text.chars().count() > width {
        s.pop();
        s.push('…');
    }
    format!("{s:<width$}")
}

/// One line per ticket: ticket, requester → beneficiary, entitlement, outcome, reason.
pub fn render(rows: &[TicketState]) -> String {
    let widths = [12, 30, 40, 12, 70];
    let header = ["TICKET", "REQUESTER → BENEFICIARY", "ENTITLEMENT", "OUTCOME", "REASON"];
    let mut out = String::new();
    let line = |cols: [&str; 5]| {
        cols.iter()
            .zip(widths)
            .map(|(c, w)| cell(c, w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    out.push_str(&line(header));
    out.push_str(&line([
        "-".repeat(12).as_str(),
        &"-".repeat(30),
        &"-".repeat(40),
        &"-".repeat(12),
        &"-".repeat(70),
    ]));
    for row in rows {
        let normalized: Value = serde_json::from_str(&row.normalized).unwrap_or(Value::Null);
        let decision: Value = row
            .decision
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null);
        let request = &normalized["request"];
        let who = match (request["requester"]["id"].as_str(), request["beneficiary"]["id"].as_str()) {
            (Some(r), Some(b)) => format!("{r} → {b}"),
            _ => "—".into(),
        };
        let entitlement = match (
            request["entitlement"]["id"].as_str(),
            request["target"]["system"].as_str(),
            request["target"]["environment"].as_str(),
        ) {
            (Some(e), Some(s), Some(env)) => format!("{e} @ {s}/{env}"),
            _ => "—".into(),
        };
        let (outcome, reason) = match (row.status.as_str(), decision["outcome"].as_str()) {
            ("not_access", _) => (
                "—".to_owned(),
                normalized["reason"].as_str().unwrap_or("not an access request").to_owned(),
            ),
            ("pending", _) => ("pending".to_owned(), "decision point failed; will retry (fails closed)".to_owned()),
            (_, Some(o)) => (o.to_owned(), decision["reasons"][0].as_str().unwrap_or_default().to_owned()),
            (status, None) => (status.to_owned(), String::new()),
        };
        out.push_str(&line([&row.number, &who, &entitlement, &outcome, &reason]));
    }
    out
}
