//! The mapping file format (TOML, admin-owned) and its compilation. Every problem is reported
//! at load with the file, line and key; nothing is checked lazily per ticket.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::path::FieldPath;
use super::target::{self, Kind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub mapping: Meta,
    #[serde(default)]
    pub classify: Option<Spanned<ClassifySpec>>,
    pub fields: Spanned<BTreeMap<Spanned<String>, Spanned<FieldSpec>>>,
    #[serde(default)]
    pub attributes: BTreeMap<Spanned<String>, Spanned<FieldSpec>>,
}

/// `[mapping]`: identity of the mapping, recorded with every normalized request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Meta {
    pub name: String,
    pub version: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for reviewers; kept so deny_unknown_fields accepts it
    pub description: Option<String>,
}

/// `[classify]`: when a ticket is an access request at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClassifySpec {
    #[serde(default)]
    pub any: Vec<Spanned<ConditionSpec>>,
    #[serde(default)]
    pub all: Vec<Spanned<ConditionSpec>>,
    #[serde(default)]
    pub not_access_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConditionSpec {
    pub path: String,
    pub present: Option<bool>,
    pub equals: Option<String>,
    pub one_of: Option<Vec<String>>,
    pub matches: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Unmapped {
    /// A value absent from `map` is an invalid field.
    #[default]
    Error,
    /// A value absent from `map` passes through unchanged.
    Keep,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FieldSpec {
    pub path: Option<String>,
    pub paths: Option<Vec<String>>,
    pub default: Option<toml::Value>,
    pub required: Option<bool>,
    pub map: Option<BTreeMap<String, String>>,
    pub unmapped: Option<Unmapped>,
    pub regex: Option<String>,
}

#[derive(Debug)]
pub(super) enum Test {
    Present(bool),
    Equals(String),
    OneOf(Vec<String>),
    Matches(Regex),
}

#[derive(Debug)]
pub(super) struct Condition {
    pub path: FieldPath,
    pub test: Test,
}

#[derive(Debug)]
pub(super) struct Field {
    pub target: String,
    /// `None` for attributes: the value is kept as JSON.
    pub kind: Option<Kind>,
    pub paths: Vec<FieldPath>,
    pub default: Option<Value>,
    pub required: bool,
    pub map: Option<BTreeMap<String, String>>,
    pub unmapped: Unmapped,
    pub regex: Option<Regex>,
}

/// Collects load problems as `file:line: key: message`.
pub(super) struct Problems<'a> {
    file: &'a str,
    source: &'a str,
    pub list: Vec<String>,
}

impl<'a> Problems<'a> {
    pub fn new(file: &'a str, source: &'a str) -> Self {
        Self {
            file,
            source,
            list: Vec::new(),
        }
    }

    pub fn add(&mut self, span: std::ops::Range<usize>, key: &str, message: impl std::fmt::Display) {
        let line = self.source.get(..span.start).map(|s| s.matches('\n').count() + 1).unwrap_or(1);
        let message = message.to_string();
        let message: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        self.list.push(format!("{}:{line}: {key}: {}", self.file, message.join(" ")));
    }
}

fn toml_scalar_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        _ => None,
    }
}

pub(super) fn compile_condition(spec: &Spanned<ConditionSpec>, key: &str, problems: &mut Problems) -> Option<Condition> {
    let c = spec.get_ref();
    let path = match FieldPath::parse(&c.path) {
        Ok(p) => p,
        Err(e) => {
            problems.add(spec.span(), key, e);
            return None;
        }
    };
    let tests = [c.present.is_some(), c.equals.is_some(), c.one_of.is_some(), c.matches.is_some()];
    if tests.iter().filter(|t| **t).count() != 1 {
        problems.add(spec.span(), key, "give exactly one of present, equals, one_of, matches");
        return None;
    }
    let test = if let Some(p) = c.present {
        Test::Present(p)
    } else if let Some(e) = &c.equals {
        Test::Equals(e.clone())
    } else if let Some(list) = &c.one_of {
        Test::OneOf(list.clone())
    } else {
        match Regex::new(c.matches.as_deref().unwrap_or_default()) {
            Ok(r) => Test::Matches(r),
            Err(e) => {
                problems.add(spec.span(), key, format!("invalid regex: {e}"));
                return None;
            }
        }
    };
    Some(Condition { path, test })
}

pub(super) fn compile_field(name: &Spanned<String>, spec: &Spanned<FieldSpec>, attribute: bool, problems: &mut Problems) -> Option<Field> {
    let key = if attribute {
        format!("attributes.{}", name.get_ref())
    } else {
        format!("fields.\"{}\"", name.get_ref())
    };
    let s = spec.get_ref();
    let before = problems.list.len();
    let kind = if attribute {
        None
    } else {
        match target::kind_of(name.get_ref()) {
            Some(k) => Some(k),
            None => {
                let known: Vec<&str> = target::TARGETS.iter().map(|(n, _)| *n).collect();
                problems.add(name.span(), &key, format!("unknown field; known fields: {}", known.join(", ")));
                return None;
            }
        }
    };
    let raw_paths: Vec<String> = s.path.iter().cloned().chain(s.paths.iter().flatten().cloned()).collect();
    if raw_paths.is_empty() && s.default.is_none() {
        problems.add(spec.span(), &key, "needs a path, paths or a default");
    }
    if s.path.is_some() && s.paths.is_some() {
        problems.add(spec.span(), &key, "give path or paths, not both");
    }
    let mut paths = Vec::new();
    for p in &raw_paths {
        match FieldPath::parse(p) {
            Ok(path) => paths.push(path),
            Err(e) => problems.add(spec.span(), &key, e),
        }
    }
    let regex = s.regex.as_deref().and_then(|r| match Regex::new(r) {
        Ok(re) => Some(re),
        Err(e) => {
            problems.add(spec.span(), &key, format!("invalid regex: {e}"));
            None
        }
    });
    let map = s.map.as_ref().map(|m| {
        m.iter()
            .map(|(from, to)| {
                if let Some(kind) = kind {
                    if let Err(e) = target::convert(kind, to) {
                        problems.add(spec.span(), &key, format!("map value for {from:?}: {e}"));
                    }
                }
                (from.trim().to_lowercase(), to.clone())
            })
            .collect::<BTreeMap<_, _>>()
    });
    if s.unmapped.is_some() && map.is_none() {
        problems.add(spec.span(), &key, "unmapped needs a map");
    }
    if kind == Some(Kind::Approvals) && (regex.is_some() || map.is_some()) {
        problems.add(spec.span(), &key, "approvals take no regex or map");
    }
    let default = match (&s.default, kind) {
        (None, _) => None,
        (Some(v), None) => serde_json::to_value(v).ok(),
        (Some(v), Some(k)) => match toml_scalar_text(v).map(|t| target::convert(k, &t)) {
            Some(Ok(value)) => Some(value),
            Some(Err(e)) => {
                problems.add(spec.span(), &key, format!("default: {e}"));
                None
            }
            None => {
                problems.add(spec.span(), &key, "default must be a string, number or boolean");
                None
            }
        },
    };
    if problems.list.len() > before {
        return None;
    }
    Some(Field {
        target: name.get_ref().clone(),
        kind,
        paths,
        default,
        required: s.required.unwrap_or(false) || target::ALWAYS_REQUIRED.contains(&name.get_ref().as_str()),
        map,
        unmapped: s.unmapped.unwrap_or_default(),
        regex,
    })
}
