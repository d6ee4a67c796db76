//! Checks recorded requests against Atlassian's published OpenAPI descriptions
//! (`../shared/reference/jira/`, copied into `tests/openapi/`): the path and method exist, every
//! query parameter is declared and valid, required ones are present, and the JSON body
//! validates against the operation's request schema (via the `jsonschema` crate).

use std::path::Path;

use deskbridge_jira::simulator::RecordedRequest;
use serde_json::Value;

pub struct Spec {
    doc: Value,
    uri: &'static str,
    registry: jsonschema::Registry<'static>,
}

fn load(file: &str, uri: &'static str) -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("OpenAPI JSON");
    let registry = jsonschema::Registry::new()
        .add(uri, doc.clone())
        .expect("register")
        .prepare()
        .expect("prepare");
    Spec { doc, uri, registry }
}

/// The platform (v3) and JSM descriptions.
pub struct Specs {
    platform: Spec,
    service_desk: Spec,
}

impl Specs {
    pub fn load() -> Self {
        Self {
            platform: load("jira-platform-v3.openapi.json", "urn:jira-platform"),
            service_desk: load("jira-service-management.openapi.json", "urn:jira-service-management"),
        }
    }

    /// Problems with one request; `Ok(false)` when no description covers it (the OAuth token
    /// endpoint lives at auth.atlassian.com, outside both).
    pub fn check(&self, r: &RecordedRequest) -> Result<bool, Vec<String>> {
        let (spec, path, v2) = if r.path.starts_with("/rest/servicedeskapi/") {
            (&self.service_desk, r.path.clone(), false)
        } else if let Some(rest) = r.path.strip_prefix("/rest/api/2/") {
            // Data Center v2: same operations as v3, described by the v3 document.
            (&self.platform, format!("/rest/api/3/{rest}"), true)
        } else if r.path.starts_with("/rest/api/3/") {
            (&self.platform, r.path.clone(), false)
        } else {
            return Ok(false);
        };
        spec.check(r, &path, v2).map(|()| true)
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn matches_template(template: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = 0;
    for (a, b) in t.iter().zip(&p) {
        if a.starts_with('{') && a.ends_with('}') {
            if b.is_empty() {
                return None;
            }
            params += 1;
        } else if a != b {
            return None;
        }
    }
    Some(params)
}

impl Spec {
    fn validate(&self, pointer: &str, instance: &Value) -> Vec<String> {
        let pointer = pointer.replace('{', "%7B").replace('}', "%7D");
        let schema = serde_json::json!({"$ref": format!("{}#{pointer}", self.uri)});
        let validator = match jsonschema::options().with_registry(&self.registry).build(&schema) {
            Ok(v) => v,
            Err(e) => return vec![format!("schema {pointer}: {e}")],
        };
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }

    fn check(&self, r: &RecordedRequest, path: &str, v2: bool) -> Result<(), Vec<String>> {
        let paths = self.doc["paths"].as_object().expect("paths");
        let Some((template, item)) = paths
            .iter()
            .filter_map(|(t, item)| matches_template(t, path).map(|n| (n, t, item)))
            .min_by_key(|(n, _, _)| *n)
            .map(|(_, t, item)| (t, item))
        else {
            return Err(vec![format!("{} {}: no such path in the description", r.method, r.path)]);
        };
        let method = r.method.to_ascii_lowercase();
        let Some(op) = item.get(&method) else {
            return Err(vec![format!("{} {}: {template} has no {method}", r.method, r.path)]);
        };
        let mut problems = Vec::new();
        let op_pointer = format!("/paths/{}/{method}", escape_pointer(template));
        let params: Vec<(String, Value)> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(item["parameters"].as_array().into_iter().flatten())
            .map(|p| {
                let p = match p.get("$ref").and_then(Value::as_str) {
                    Some(reference) => self.doc.pointer(reference.trim_start_matches('#')).cloned().unwrap_or(Value::Null),
                    None => p.clone(),
                };
                (p["name"].as_str().unwrap_or_default().to_owned(), p)
            })
            .collect();
        for (name, value) in &r.query {
            match params.iter().find(|(n, p)| n == name && p["in"] == "query") {
                None => problems.push(format!("{} {}: query parameter {name} is not described", r.method, r.path)),
                Some((_, p)) => {
                    let schema = &p["schema"];
                    let instance = match schema["type"].as_str() {
                        Some("integer") => value.parse::<i64>().map(Value::from).unwrap_or(Value::String(value.clone())),
                        Some("boolean") => value.parse::<bool>().map(Value::from).unwrap_or(Value::String(value.clone())),
                        Some("array") => Value::Array(value.split(',').map(|s| Value::String(s.to_owned())).collect()),
                        _ => Value::String(value.clone()),
                    };
                    let errors =
                        jsonschema::validator_for(schema).map(|v| v.iter_errors(&instance).map(|e| e.to_string()).collect::<Vec<_>>());
                    if let Ok(errors) = errors {
                        problems.extend(
                            errors
                                .into_iter()
                                .map(|e| format!("{} {}: query {name}={value}: {e}", r.method, r.path)),
                        );
                    }
                }
            }
        }
        for (name, p) in &params {
            if p["in"] == "query" && p["required"] == true && r.param(name).is_none() {
                problems.push(format!("{} {}: required query parameter {name} missing", r.method, r.path));
            }
        }
        if let Some(body) = op.get("requestBody") {
            let body = match body.get("$ref").and_then(Value::as_str) {
                Some(reference) => self.doc.pointer(reference.trim_start_matches('#')).cloned().unwrap_or(Value::Null),
                None => body.clone(),
            };
            let mut instance = r.json();
            if instance.is_null() && body["required"] == true {
                problems.push(format!("{} {}: a JSON body is required", r.method, r.path));
            } else if !instance.is_null() {
                if !r.content_type.starts_with("application/json") {
                    problems.push(format!("{} {}: content type {:?}", r.method, r.path, r.content_type));
                }
                if v2 && instance.get("body").is_some_and(Value::is_string) {
                    // v2 comments carry wiki text where v3 carries ADF; everything else is checked.
                    instance["body"] = serde_json::json!({"type": "doc", "version": 1, "content": []});
                }
                let pointer = format!("{op_pointer}/requestBody/content/application~1json/schema");
                let pointer = if self.doc.pointer(&pointer).is_some() {
                    pointer
                } else if body.pointer("/content/application~1json/schema").is_some() {
                    // A referenced requestBody: validate against the referenced schema.
                    let reference = op["requestBody"]["$ref"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_start_matches('#')
                        .to_owned();
                    format!("{reference}/content/application~1json/schema")
                } else {
                    String::new()
                };
                if !pointer.is_empty() {
                    problems.extend(
                        self.validate(&pointer, &instance)
                            .into_iter()
                            .map(|e| format!("{} {}: body: {e}", r.method, r.path)),
                    );
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
