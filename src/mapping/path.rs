//! Where a mapping reads a value from a raw ticket.
//!
//! A path starting with `$` is an RFC 9535 JSONPath, evaluated by `serde_json_path`. Any other
//! path is a field name: first looked up as a literal key (ServiceNow returns dot-walked fields
//! such as `opened_by.user_name` as flat keys), then as a dotted path into nested objects
//! (`variables.role` becomes `$['variables']['role']`).

use serde_json::Value;
use serde_json_path::JsonPath;

#[derive(Debug, Clone)]
pub struct FieldPath {
    text: String,
    literal: Option<String>,
    path: JsonPath,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("path is empty".into());
        }
        if text.starts_with('$') {
            let path = JsonPath::parse(text).map_err(|e| format!("invalid JSONPath {text:?}: {e}"))?;
            return Ok(Self {
                text: text.into(),
                literal: None,
                path,
            });
        }
        if text.split('.').any(str::is_empty) {
            return Err(format!("invalid field path {text:?}: empty segment"));
        }
        let quoted: String = text
            .split('.')
            .map(|segment| format!("[{}]", serde_json::to_string(segment).unwrap_or_default().replace('\'', "\\'")))
            .collect();
        let path = JsonPath::parse(&format!("${quoted}")).map_err(|e| format!("invalid field path {text:?}: {e}"))?;
        Ok(Self {
            text: text.into(),
            literal: Some(text.into()),
            path,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first value found, if any.
    pub fn lookup<'a>(&self, raw: &'a Value) -> Option<&'a Value> {
        if let Some(literal) = &self.literal {
            if let Some(v) = raw.get(literal) {
                return Some(v);
            }
        }
        self.path.query(raw).first()
    }
}

/// A scalar as text; `None` for null, empty strings, arrays and objects.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        // ServiceNow references without exclude_reference_link: {"link": …, "value": …}.
        Value::Object(map) => map.get("value").or_else(|| map.get("display_value")).and_then(scalar_text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literal_dotted_keys_win_over_nesting() {
        let raw = json!({"opened_by.user_name": "abel", "variables": {"role": "admin", "odd.name": 1}});
        assert_eq!(
            FieldPath::parse("opened_by.user_name").expect("path").lookup(&raw),
            Some(&json!("abel"))
        );
        assert_eq!(
            FieldPath::parse("variables.role").expect("path").lookup(&raw),
            Some(&json!("admin"))
        );
        assert_eq!(
            FieldPath::parse("$.variables['odd.name']").expect("path").lookup(&raw),
            Some(&json!(1))
        );
        assert_eq!(FieldPath::parse("variables.none").expect("path").lookup(&raw), None);
    }

    #[test]
    fn bad_paths_are_rejected_with_the_reason() {
        assert!(FieldPath::parse("$.a[").expect_err("bad").contains("invalid JSONPath"));
        assert!(FieldPath::parse("a..b").expect_err("bad").contains("empty segment"));
    }
}
