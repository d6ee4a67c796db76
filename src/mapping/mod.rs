//! Admin-owned field mappings: a TOML file turns one raw ticket into an [`AccessRequest`],
//! [`Normalized::Incomplete`] (every missing or invalid field, with why) or
//! [`Normalized::NotAnAccessRequest`]. No ticket field can set a decision.

pub(crate) mod path;
mod spec;
mod target;

use std::path::Path;

use deskbridge_connector::Ticket;
use serde_json::{json, Map, Value};

use crate::schema::{AccessRequest, FieldProblem, Normalized, SourceTicket};
use path::scalar_text;
use spec::{Condition, Field, Problems, Test, Unmapped};

pub use target::{ALWAYS_REQUIRED, TARGETS};

/// A mapping file that failed to load: every problem, each naming file, line and key.
#[derive(Debug, thiserror::Error)]
#[error("mapping {file} is invalid:\n  {}", problems.join("\n  "))]
pub struct MappingError {
    /// The file.
    pub file: String,
    /// `file:line: key: message`, one per problem.
    pub problems: Vec<String>,
}

/// A compiled mapping.
#[derive(Debug)]
pub struct Mapping {
    /// `[mapping] name`.
    pub name: String,
    /// `[mapping] version`.
    pub version: String,
    /// The mapping's text as written (the admin console's playground starts from it).
    pub text: String,
    any: Vec<Condition>,
    all: Vec<Condition>,
    not_access_reason: String,
    fields: Vec<Field>,
    attributes: Vec<Field>,
}

impl Mapping {
    /// Loads and compiles a mapping file.
    pub fn load(path: &Path) -> Result<Self, MappingError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MappingError {
            file: file.clone(),
            problems: vec![format!("{file}: cannot read: {e}")],
        })?;
        Self::parse(&text, &file)
    }

    /// Compiles mapping text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, MappingError> {
        let parsed: spec::File = toml::from_str(text).map_err(|e| MappingError {
            file: file.to_owned(),
            problems: vec![format!("{file}: {}", e.to_string().trim_end().replace('\n', "\n    "))],
        })?;
        let mut problems = Problems::new(file, text);
        let (mut any, mut all, mut reason) = (Vec::new(), Vec::new(), None);
        if let Some(classify) = &parsed.classify {
            let c = classify.get_ref();
            for (i, cond) in c.any.iter().enumerate() {
                any.extend(spec::compile_condition(cond, &format!("classify.any[{i}]"), &mut problems));
            }
            for (i, cond) in c.all.iter().enumerate() {
                all.extend(spec::compile_condition(cond, &format!("classify.all[{i}]"), &mut problems));
            }
            reason = c.not_access_reason.clone();
        }
        let mut fields = Vec::new();
        for (name, field) in parsed.fields.get_ref() {
            fields.extend(spec::compile_field(name, field, false, &mut problems));
        }
        for required in ALWAYS_REQUIRED {
            if !parsed.fields.get_ref().keys().any(|k| k.get_ref() == required) {
                problems.add(
                    parsed.fields.span(),
                    "fields",
                    format!("no mapping for required field \"{required}\""),
                );
            }
        }
        let mut attributes = Vec::new();
        for (name, field) in &parsed.attributes {
            attributes.extend(spec::compile_field(name, field, true, &mut problems));
        }
        if !problems.list.is_empty() {
            return Err(MappingError {
                file: file.to_owned(),
                problems: problems.list,
            });
        }
        Ok(Self {
            name: parsed.mapping.name,
            version: parsed.mapping.version,
            text: text.to_owned(),
            any,
            all,
            not_access_reason: reason.unwrap_or_else(|| "the ticket does not match the mapping's access-request conditions".into()),
            fields,
            attributes,
        })
    }

    /// Normalizes one ticket.
    pub fn normalize(&self, ticket: &Ticket) -> Normalized {
        let source = SourceTicket {
            connector: ticket.source.clone(),
            key: ticket.key.clone(),
            number: ticket.number.clone(),
            url: ticket.url.clone(),
            version: ticket.version.clone(),
        };
        let raw = &ticket.raw;
        let classified = (self.any.is_empty() || self.any.iter().any(|c| c.holds(raw))) && self.all.iter().all(|c| c.holds(raw));
        if !classified {
            return Normalized::NotAnAccessRequest {
                source,
                reason: self.not_access_reason.clone(),
            };
        }
        let mut problems = Vec::new();
        let mut values: Map<String, Value> = Map::new();
        for field in &self.fields {
            match field.extract(raw) {
                Ok(Some(v)) => {
                    values.insert(field.target.clone(), v);
                }
                Ok(None) if field.required => problems.push(FieldProblem {
                    field: field.target.clone(),
                    reason: format!("missing: nothing at {}", field.describe_paths()),
                }),
                Ok(None) => {}
                Err(reason) => problems.push(FieldProblem {
                    field: field.target.clone(),
                    reason,
                }),
            }
        }
        let mut attributes = Map::new();
        for field in &self.attributes {
            match field.extract(raw) {
                Ok(Some(v)) => {
                    attributes.insert(field.target.clone(), v);
                }
                Ok(None) if field.required => problems.push(FieldProblem {
                    field: format!("attributes.{}", field.target),
                    reason: format!("missing: nothing at {}", field.describe_paths()),
                }),
                Ok(None) => {}
                Err(reason) => problems.push(FieldProblem {
                    field: format!("attributes.{}", field.target),
                    reason,
                }),
            }
        }
        if !problems.is_empty() {
            return Normalized::Incomplete { source, problems };
        }
        match assemble(&source, &values, attributes) {
            Ok(request) => Normalized::AccessRequest {
                request: Box::new(request),
            },
            Err(reason) => Normalized::Incomplete {
                source,
                problems: vec![FieldProblem {
                    field: "request".into(),
                    reason,
                }],
            },
        }
    }
}

/// Builds the request from extracted values; serde checks every type once more.
fn assemble(source: &SourceTicket, v: &Map<String, Value>, attributes: Map<String, Value>) -> Result<AccessRequest, String> {
    let get = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let beneficiary_type = v.get("beneficiary.type").cloned().unwrap_or_else(|| json!("person"));
    let nhi_present =
        beneficiary_type != json!("person") || ["nhi.owner", "nhi.purpose", "nhi.expires_at"].iter().any(|k| v.contains_key(*k));
    let request = json!({
        "source": source,
        "kind": get("kind"),
        "requester": {"id": get("requester.id"), "display_name": get("requester.display_name"), "email": get("requester.email")},
        "beneficiary": {"type": beneficiary_type, "id": get("beneficiary.id"), "display_name": get("beneficiary.display_name")},
        "target": {"system": get("target.system"), "environment": get("target.environment")},
        "entitlement": {"id": get("entitlement.id"), "name": get("entitlement.name"),
            "privileged": v.get("entitlement.privileged").cloned().unwrap_or(Value::Bool(false))},
        "justification": get("justification"),
        "duration_days": get("duration_days"),
        "expires_at": get("expires_at"),
        "urgency": get("urgency"),
        "approver_context": {
            "assignment_group": get("approver.assignment_group"),
            "named_approver": get("approver.named_approver"),
            "itsm_approval": get("approver.itsm_approval"),
            "itsm_state": get("approver.itsm_state"),
            "recorded": v.get("approver.recorded").cloned().unwrap_or_else(|| json!([])),
        },
        "nhi": if nhi_present {
            json!({"owner": get("nhi.owner"), "purpose": get("nhi.purpose"), "expires_at": get("nhi.expires_at")})
        } else { Value::Null },
        "attributes": attributes,
    });
    serde_json::from_value(request).map_err(|e| format!("does not fit the schema: {e}"))
}

impl Condition {
    fn holds(&self, raw: &Value) -> bool {
        let text = self.path.lookup(raw).and_then(scalar_text);
        match &self.test {
            Test::Present(want) => text.is_some() == *want,
            Test::Equals(v) => text.is_some_and(|t| t.eq_ignore_ascii_case(v.trim())),
            Test::OneOf(list) => text.is_some_and(|t| list.iter().any(|v| t.eq_ignore_ascii_case(v.trim()))),
            Test::Matches(re) => text.is_some_and(|t| re.is_match(&t)),
        }
    }
}

impl Field {
    fn describe_paths(&self) -> String {
        if self.paths.is_empty() {
            return "(no path)".into();
        }
        self.paths.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" or ")
    }

    /// The converted value, `Ok(None)` when absent, `Err(reason)` when present but invalid.
    fn extract(&self, raw: &Value) -> Result<Option<Value>, String> {
        let found = self.paths.iter().find_map(|p| {
            let v = p.lookup(raw)?;
            let present = match v {
                Value::Null => false,
                Value::String(s) => !s.trim().is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            present.then_some((p, v))
        });
        let Some((path, value)) = found else {
            return Ok(self.default.clone());
        };
        let Some(kind) = self.kind else {
            // Attributes keep JSON as is unless a regex or map shapes a text value.
            if self.regex.is_none() && self.map.is_none() {
                return Ok(Some(value.clone()));
            }
            return self.shape_text(path.as_str(), value).map(|t| t.map(Value::String));
        };
        if kind == target::Kind::Approvals {
            return approvals(value).map(Some).map_err(|e| format!("{}: {e}", path.as_str()));
        }
        match self.shape_text(path.as_str(), value)? {
            None => Ok(self.default.clone()),
            Some(text) => target::convert(kind, &text)
                .map(Some)
                .map_err(|e| format!("invalid at {}: {e}", path.as_str())),
        }
    }

    /// Applies regex extraction then the value map.
    fn shape_text(&self, path: &str, value: &Value) -> Result<Option<String>, String> {
        let Some(mut text) = scalar_text(value) else {
            return Err(format!("invalid at {path}: expected a single value, found {}", type_name(value)));
        };
        if let Some(re) = &self.regex {
            let Some(caps) = re.captures(&text) else {
                return Err(format!("invalid at {path}: {text:?} does not match {}", re.as_str()));
            };
            let m = caps.name("value").or_else(|| caps.get(1)).or_else(|| caps.get(0));
            text = m.map(|m| m.as_str().trim().to_owned()).unwrap_or_default();
            if text.is_empty() {
                return Ok(None);
            }
        }
        if let Some(map) = &self.map {
            match map.get(&text.trim().to_lowercase()) {
                Some(mapped) => text = mapped.clone(),
                None if self.unmapped == Unmapped::Keep => {}
                None => {
                    let known: Vec<&str> = map.keys().map(String::as_str).collect();
                    return Err(format!(
                        "invalid at {path}: {text:?} is not a mapped value (mapped: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(Some(text))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
        _ => "an empty value",
    }
}

fn approvals(value: &Value) -> Result<Value, String> {
    let Value::Array(items) = value else {
        return Err("expected a list of approvals".into());
    };
    items
        .iter()
        .map(|item| {
            let approver = item.get("approver").and_then(scalar_text).ok_or("an approval without approver")?;
            let state = item.get("state").and_then(scalar_text).unwrap_or_default();
            Ok(json!({"approver": approver, "state": state}))
        })
        .collect::<Result<Vec<_>, &str>>()
        .map(Value::Array)
        .map_err(String::from)
}

/// A ticket from JSON: a stored ticket (`{source, key, number, url, updated, version, raw}`) or
/// the raw record a connector reads (then `source` names it).
pub fn ticket_from_value(value: Value, source: &str) -> anyhow::Result<Ticket> {
    if value.get("raw").is_some() && value.get("key").is_some() {
        return Ok(serde_json::from_value::<Ticket>(value)?);
    }
    if !value.is_object() {
        anyhow::bail!("a ticket is a JSON object (a raw ITSM record, or a stored ticket with key and raw)");
    }
    let text_of = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| value.get(*k).and_then(Value::as_str))
            .unwrap_or("unknown")
            .to_owned()
    };
    Ok(Ticket {
        source: source.into(),
        key: text_of(&["sys_id", "id"]),
        number: text_of(&["number", "key"]),
        url: String::new(),
        updated: chrono::Utc::now(),
        version: text_of(&["sys_mod_count", "version"]),
        raw: value,
    })
}

#[cfg(test)]
mod tests;
