//! Renders a decision into a ticket comment from an admin-editable minijinja template.
//!
//! Every value placed in the template (ticket fields, policy reasons) is made inert first:
//! control characters collapse to spaces, so no value can forge a line of the comment; bidi
//! controls and zero-width characters are dropped, so none can reorder or hide what a reader
//! sees; each value is capped at [`FIELD_CHARS`] characters; and the connector's markup
//! escaping keeps ticket text from becoming markup. A body longer than [`COMMENT_CHARS`] loses
//! whole lines from its middle (never the outcome line or the closing policy lines), so an ITSM
//! that truncates long comments never cuts the marker. The idempotency marker is appended after
//! rendering, so no template can drop it.

use std::path::Path;

use anyhow::Context as _;
use deskbridge_connector::Markup;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{json, Value};

use crate::schema::{AccessRequest, Decision, Outcome};

const DEFAULT_TEMPLATE: &str = include_str!("comment.txt.j2");

/// Longest value quoted into a comment, in characters (before markup escaping).
pub const FIELD_CHARS: usize = 500;

/// Longest comment body, marker line excluded, in characters.
pub const COMMENT_CHARS: usize = 4000;

/// The comment renderer.
pub struct CommentRenderer {
    env: Environment<'static>,
}

/// What a comment reports.
pub struct CommentInput<'a> {
    /// The ticket's number.
    pub number: &'a str,
    /// The request, when the ticket normalized into one.
    pub request: Option<&'a AccessRequest>,
    /// The decision.
    pub decision: &'a Decision,
    /// The decision this one replaces.
    pub supersedes: Option<&'a str>,
}

fn label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Approve => "APPROVED by policy",
        Outcome::Deny => "DENIED by policy",
        Outcome::Review => "REVIEW required",
        Outcome::NeedsInfo => "MORE INFORMATION needed",
    }
}

/// Collapses control characters (newlines included) to single spaces and neutralises anything
/// that reads as a deskbridge marker.
pub(crate) fn inert(text: &str, markup: &dyn Markup) -> String {
    // Most ticket values are already flat: nothing to drop, collapse or cap.
    let flat = if already_flat(text) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(flattened(text))
    };
    markup.escape(&deskbridge_connector::neutralize_markers(&flat))
}

/// `text` on one line: bidi controls and zero-width characters dropped, every run of control
/// characters and whitespace one space, no space at either end, at most [`FIELD_CHARS`]
/// characters.
fn flattened(text: &str) -> String {
    let flat: String = text
        .chars()
        .filter(|c| !crate::text::is_bidi_control(*c) && !crate::text::is_zero_width(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::text::cap(&flat.split_whitespace().collect::<Vec<_>>().join(" "), FIELD_CHARS)
}

/// Whether [`flattened`] would leave `text` as it is: no control, bidi or
/// zero-width character, whitespace only as single ASCII spaces between words, and at most
/// [`FIELD_CHARS`] characters.
fn already_flat(text: &str) -> bool {
    let mut count = 0;
    let mut after_space = true; // a leading space is not flat
    for c in text.chars() {
        count += 1;
        if count > FIELD_CHARS {
            return false;
        }
        if c == ' ' {
            if after_space {
                return false;
            }
            after_space = true;
        } else if c.is_whitespace() || crate::text::is_hostile(c) {
            return false;
        } else {
            after_space = false;
        }
    }
    !(after_space && count > 0) // a trailing space is not flat
}
/// `body` within [`COMMENT_CHARS`]: whole lines dropped from the middle, the first line (the
/// outcome) and the last two (policy, and that the ticket grants nothing) always kept.
fn shortened(body: &str) -> String {
    let count = |s: &str| s.chars().count() + 1;
    if body.chars().count() <= COMMENT_CHARS {
        return body.to_owned();
    }
    let lines: Vec<&str> = body.lines().collect();
    if lines.len() <= 3 {
        return body.to_owned();
    }
    let (head, middle, tail) = (lines[0], &lines[1..lines.len() - 2], &lines[lines.len() - 2..]);
    let notice_room = 80;
    let mut budget = COMMENT_CHARS.saturating_sub(count(head) + tail.iter().map(|l| count(l)).sum::<usize>() + notice_room);
    let mut kept = vec![head];
    let mut dropped = 0;
    for line in middle {
        if dropped == 0 && count(line) <= budget {
            budget -= count(line);
            kept.push(line);
        } else {
            dropped += 1;
        }
    }
    let notice = format!("… ({dropped} more line(s) left out: the comment is capped at {COMMENT_CHARS} characters)");
    kept.push(&notice);
    kept.extend(tail);
    kept.join("\n")
}

/// `value` as the template sees it, with every string in it made [`inert`]: one walk that both
/// neutralises the strings and builds the template's values, the same values minijinja would
/// make of the neutralised JSON (a map for an object, a sequence for an array, `none` for
/// null). Map keys are the schema's and the policy's names, not ticket text, and are kept.
fn template_value(value: &Value, markup: &dyn Markup) -> minijinja::Value {
    match value {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        // As serde_json hands numbers on: a non-negative integer as u64, a negative one as i64.
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => minijinja::Value::from(u),
            (None, Some(i)) => minijinja::Value::from(i),
            (None, None) => minijinja::Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => minijinja::Value::from(inert(s, markup)),
        Value::Array(items) => items.iter().map(|v| template_value(v, markup)).collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.as_str(), template_value(v, markup))).collect(),
    }
}

impl CommentRenderer {
    /// The shipped template, or an admin's override. A template that fails to render a sample
    /// decision is rejected here, at start-up.
    pub fn new(template: Option<&Path>) -> anyhow::Result<Self> {
        let source = match template {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading comment template {}", path.display()))?,
            None => DEFAULT_TEMPLATE.to_owned(),
        };
        let name = template.map(|p| p.display().to_string()).unwrap_or_else(|| "comment.txt.j2".into());
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_template_owned(name.clone(), source)
            .with_context(|| format!("comment template {name}"))?;
        let renderer = Self { env };
        renderer.check(&name)?;
        Ok(renderer)
    }

    fn template_name(&self) -> anyhow::Result<String> {
        self.env
            .templates()
            .next()
            .map(|(n, _)| n.to_owned())
            .context("no comment template")
    }

    fn check(&self, name: &str) -> anyhow::Result<()> {
        let decision = Decision {
            outcome: Outcome::Review,
            reasons: vec!["sample".into()],
            route_to: Some("owners".into()),
            missing: vec!["justification".into()],
            obligations: crate::schema::Obligations {
                max_duration_days: Some(7),
                step_up: true,
            },
            policy_id: "p".into(),
            policy_version: "1".into(),
            decision_id: "d".into(),
            decided_at: chrono::Utc::now(),
        };
        struct Plain;
        impl Markup for Plain {
            fn escape(&self, text: &str) -> String {
                text.to_owned()
            }
        }
        self.render_body(
            &CommentInput {
                number: "X",
                request: None,
                decision: &decision,
                supersedes: Some("d0"),
            },
            &Plain,
        )
        .with_context(|| format!("comment template {name} fails on a sample decision"))?;
        Ok(())
    }

    fn render_body(&self, input: &CommentInput<'_>, markup: &dyn Markup) -> anyhow::Result<String> {
        let d = input.decision;
        let context = json!({
                "ticket": {"number": input.number},
                "request": input.request,
                "outcome": d.outcome.as_str(),
                "outcome_label": label(d.outcome),
                "reasons": d.reasons,
                "route_to": d.route_to,
                "missing": d.missing,
                "obligations": d.obligations,
                "policy": {"id": d.policy_id, "version": d.policy_version},
                "decision_id": d.decision_id,
                "decided_at": d.decided_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "supersedes": input.supersedes,
        });
        let template = self.env.get_template(&self.template_name()?)?;
        Ok(template.render(template_value(&context, markup))?)
    }

    /// The comment text, ending with the marker line.
    pub fn render(&self, input: &CommentInput<'_>, marker: &str, markup: &dyn Markup) -> anyhow::Result<String> {
        let body = shortened(self.render_body(input, markup)?.trim_end());
        Ok(format!("{body}\n[{marker}]"))
    }
}

#[cfg(test)]
mod tests;
