//! A directory exported to a file, for shops without SCIM: JSON (an array of SCIM-shaped users,
//! or `{"Resources": [...]}` as a SCIM list answers) or CSV with the columns `userName`,
//! `email`, `externalId`, `active`, `userType`, `department`, `manager`, `employeeNumber`,
//! `groups` (separated by `;`). Attribute names are case-insensitive, as SCIM's are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::{Directory, Identity};

/// The exported directory, read once at start-up.
pub struct FileDirectory {
    path: PathBuf,
    people: Vec<Identity>,
}

/// A JSON value with every object key lower-cased: SCIM attribute names are case-insensitive.
pub(crate) fn lower_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), lower_keys(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(lower_keys).collect()),
        other => other,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `true`, `"True"`, `"false"`, … as directories send them.
pub fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The enterprise extension's key, lower-cased.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user";

/// An identity from a SCIM-shaped user (keys already lower-cased). `manager` is the value the
/// file or service gave (a user name in exports; an id from SCIM, resolved by the caller).
pub fn identity_of(user: &Value) -> Option<Identity> {
    let user_name = text(&user["username"])?;
    let enterprise = &user[ENTERPRISE];
    let mut emails: Vec<String> = user["emails"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| text(&e["value"])).collect())
        .unwrap_or_default();
    emails.extend(text(&user["email"]));
    let groups = user["groups"]
        .as_array()
        .map(|a| a.iter().filter_map(|g| text(&g["display"]).or_else(|| text(g))).collect())
        .unwrap_or_default();
    Some(Identity {
        user_name,
        emails,
        external_id: text(&user["externalid"]),
        active: truthy(&user["active"]).unwrap_or(false),
        user_type: text(&user["usertype"]),
        department: text(&enterprise["department"]).or_else(|| text(&user["department"])),
        manager: text(&enterprise["manager"]["value"]).or_else(|| text(&user["manager"])),
        employee_number: text(&enterprise["employeenumber"]).or_else(|| text(&user["employeenumber"])),
        groups,
    })
}

impl FileDirectory {
    /// Reads the export; every unreadable row is reported with its line or index.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let raw = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading directory export {}: {e}", path.display()))?;
        let csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let users: Vec<Value> = if csv {
            let mut reader = csv::Reader::from_reader(raw.as_bytes());
            let headers: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
            let mut rows = Vec::new();
            for (n, record) in reader.records().enumerate() {
                let record = record.map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 2))?;
                let mut user = serde_json::Map::new();
                for (h, v) in headers.iter().zip(record.iter()) {
                    let value = if h == "groups" {
                        Value::Array(
                            v.split(';')
                                .map(str::trim)
                                .filter(|g| !g.is_empty())
                                .map(|g| Value::String(g.into()))
                                .collect(),
                        )
                    } else {
                        Value::String(v.to_owned())
                    };
                    user.insert(h.clone(), value);
                }
                rows.push(Value::Object(user));
            }
            rows
        } else {
            let doc = lower_keys(serde_json::from_str(&raw).map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?);
            match doc {
                Value::Array(items) => items,
                Value::Object(mut o) => match o.remove("resources") {
                    Some(Value::Array(items)) => items,
                    _ => anyhow::bail!("{}: expected an array of users or a SCIM list with Resources", path.display()),
                },
                _ => anyhow::bail!("{}: expected an array of users", path.display()),
            }
        };
        let mut people = Vec::new();
        let mut problems = Vec::new();
        for (n, user) in users.iter().enumerate() {
            match identity_of(user) {
                Some(identity) => people.push(identity),
                None => problems.push(format!("{}: user {}: no userName", path.display(), n + 1)),
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("directory export has {} problem(s):\n  {}", problems.len(), problems.join("\n  "));
        }
        Ok(Self {
            path: path.to_owned(),
            people,
        })
    }
}

#[async_trait]
impl Directory for FileDirectory {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, Option<Identity>>, String> {
        Ok(keys
            .iter()
            .map(|k| {
                let found = self.people.iter().find(|p| p.answers_to(k)).cloned().map(|mut p| {
                    // Exports name the manager by user name already.
                    if let Some(m) = &p.manager {
                        if let Some(manager) = self.people.iter().find(|q| q.answers_to(m)) {
                            p.manager = Some(manager.user_name.clone());
                        }
                    }
                    p
                });
                (k.clone(), found)
            })
            .collect())
    }
}
