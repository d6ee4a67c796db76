//! Turning a verified delivery into the entitlement changes it reports: a SCIM SET's events
//! (RFC 9967: membership PATCHes as Entra ID and Okta send them, notices, deactivation,
//! deletion) or an IGA webhook's JSON. Nothing here trusts an unverified byte: both are called
//! after the signature checks.

use serde_json::{json, Value};

use super::set::{SetError, VerifiedSet};
use crate::store::lifecycle::NewAccessEvent;

const PREFIX: &str = "urn:ietf:params:scim:event:";

/// `Groups` and the id of a `/Groups/<id>` subject URI.
fn subject(uri: &str) -> Option<(&str, String)> {
    let trimmed = uri.trim_start_matches('/');
    let (kind, id) = trimmed.rsplit_once('/')?;
    let kind = kind.rsplit('/').next()?;
    let id = url::form_urlencoded::parse(format!("x={id}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    (!id.is_empty()).then_some((kind, id))
}

/// Member ids a PATCH operation adds or removes, as Entra ID and Okta write them: `path:
/// "members"` with a value list, `path: "members[value eq \"id\"]"`, or no path and a value
/// object holding `members`. `None` for an operation that does not touch members; `Some(None)`
/// for one that replaces them (the group must be read again).
fn members_of_operation(op: &Value) -> Option<Option<(String, Vec<String>)>> {
    let field = |name: &str| {
        op.as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()))
            .unwrap_or(Value::Null)
    };
    let kind = field("op").as_str()?.to_ascii_lowercase();
    let path = field("path").as_str().unwrap_or_default().trim().to_owned();
    let value = field("value");
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["value"].as_str().map(String::from))
            .collect()
    };
    let lower = path.to_ascii_lowercase();
    if lower == "members" {
        return Some(match kind.as_str() {
            "add" | "remove" => Some((kind, ids(&value))),
            _ => None,
        });
    }
    if let Some(rest) = lower.strip_prefix("members[value eq ") {
        let _ = rest;
        let start = path.find('"')? + 1;
        let end = path.rfind('"')?;
        let id = path.get(start..end)?.replace("\\\"", "\"");
        return Some((kind == "remove").then(|| (kind, vec![id])));
    }
    if path.is_empty() {
        let members = value
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("members")).map(|(_, v)| v.clone()))?;
        return Some(match kind.as_str() {
            "add" | "remove" => Some((kind, ids(&members))),
            _ => None,
        });
    }
    None
}

/// The changes one verified SET reports. A payload that does not fit its event's definition is
/// refused with `invalid_request`; event types deskbridge does not act on are kept as evidence.
pub fn set_changes(set: &VerifiedSet) -> Result<Vec<NewAccessEvent>, SetError> {
    let bad = |d: &str| SetError::new("invalid_request", d.to_owned());
    let uri = set.claims["sub_id"]["uri"]
        .as_str()
        .ok_or_else(|| bad("sub_id.uri is missing (RFC 9967 names the subject there)"))?;
    let (kind, id) = subject(uri).ok_or_else(|| bad("sub_id.uri is not /Users/<id> or /Groups/<id>"))?;
    let occurred_at = crate::store::stamp(chrono::DateTime::from_timestamp(set.toe.unwrap_or(set.iat), 0).unwrap_or_default());
    let base = NewAccessEvent {
        via: "set",
        occurred_at,
        ..NewAccessEvent::default()
    };
    let events = set.claims["events"].as_object().ok_or_else(|| bad("events is not an object"))?;
    let mut out = Vec::new();
    for (uri, payload) in events {
        let name = uri.strip_prefix(PREFIX).unwrap_or(uri);
        if payload.get("data").is_some() && payload.get("attributes").is_some() {
            return Err(bad("a SCIM event carries either data (full) or attributes (notice), not both"));
        }
        let raw = json!({"event": uri, "payload": payload, "sub_id": set.claims["sub_id"], "txn": set.txn, "jti": set.jti});
        let mut change = |kind_: &str, group_id: Option<String>, user_id: Option<String>| {
            out.push(NewAccessEvent {
                kind: kind_.to_owned(),
                group_id,
                user_id,
                raw: raw.clone(),
                ..base.clone()
            })
        };
        match (kind, name) {
            ("Groups", "prov:patch:full") => {
                let ops = payload["data"]["Operations"]
                    .as_array()
                    .or(payload["data"]["operations"].as_array())
                    .ok_or_else(|| bad("prov:patch:full has no data.Operations"))?;
                for op in ops {
                    match members_of_operation(op) {
                        Some(Some((op, ids))) => {
                            for member in ids {
                                change(if op == "add" { "added" } else { "removed" }, Some(id.clone()), Some(member));
                            }
                        }
                        Some(None) => change("reread", Some(id.clone()), None),
                        None => {}
                    }
                }
            }
            ("Groups", n) if n.starts_with("prov:patch:notice") || n.starts_with("prov:put") || n.starts_with("prov:create") => {
                change("reread", Some(id.clone()), None)
            }
            ("Groups", "prov:delete") => change("reread", Some(id.clone()), None),
            ("Users", "prov:deactivate") => change("deactivated", None, Some(id.clone())),
            ("Users", "prov:delete") => change("deleted", None, Some(id.clone())),
            _ => change("ignored", None, None),
        }
    }
    if out.is_empty() {
        // A PATCH that touched no member still arrived: kept as evidence of what was sent.
        out.push(NewAccessEvent {
            kind: "ignored".into(),
            raw: json!({"sub_id": set.claims["sub_id"], "events": set.claims["events"]}),
            ..base
        });
    }
    Ok(out)
}

/// The changes an IGA webhook body reports, and its delivery id. Every problem names the field.
///
/// ```json
/// {"id": "evt-1", "event": "grant", "identity": "r.ito", "entitlement": "sap-erp/FI_POSTING_ADMIN",
///  "at": "2026-12-02T10:00:00Z", "expires_at": "2026-12-09T10:00:00Z", "decision_id": "…", "ticket": "RITM0010003"}
/// ```
/// `event` is `grant`, `revoke` or `identity_disabled`; a grant or revoke names `entitlement`
/// (`system/entitlement` from the catalog) or `group`.
pub fn webhook_changes(body: &[u8], catalog: Option<&crate::catalog::Catalog>) -> Result<(String, Vec<NewAccessEvent>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let text = |name: &str| -> Result<Option<String>, String> {
        match &v[name] {
            Value::Null => Ok(None),
            Value::String(s) if !s.trim().is_empty() && s.len() <= 300 => Ok(Some(s.trim().to_owned())),
            _ => Err(format!("{name}: expected a non-empty string of at most 300 characters")),
        }
    };
    let id = text("id")?.ok_or("id: missing (the event's unique id; a repeated id is dropped)")?;
    let event = text("event")?.ok_or("event: missing (grant, revoke or identity_disabled)")?;
    let identity = text("identity")?.ok_or("identity: missing (the directory user name)")?;
    let time = |name: &str| -> Result<Option<String>, String> {
        text(name)?
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map(|d| crate::store::stamp(d.with_timezone(&chrono::Utc)))
                    .map_err(|_| format!("{name}: {t:?} is not an RFC 3339 time"))
            })
            .transpose()
    };
    let at = time("at")?.ok_or("at: missing (when the change happened, RFC 3339)")?;
    let expires_at = time("expires_at")?;
    let group = match (text("group")?, text("entitlement")?) {
        (Some(g), _) => Some(g),
        (None, Some(e)) => {
            let (system, entitlement) = e.split_once('/').ok_or(format!("entitlement: {e:?} is not system/entitlement"))?;
            let catalog = catalog.ok_or("entitlement: no catalog is configured to find its group; send group instead")?;
            let resolved = catalog.resolve(system, entitlement);
            let group = resolved
                .entitlement
                .and_then(|e| e.group)
                .ok_or(format!("entitlement: {e:?} has no directory group in catalog {}", catalog.label()))?;
            Some(group)
        }
        (None, None) => None,
    };
    let kind = match event.as_str() {
        "grant" | "revoke" if group.is_none() => return Err("entitlement or group: a grant or revoke names one".into()),
        "grant" => "added",
        "revoke" => "removed",
        "identity_disabled" => "deactivated",
        other => return Err(format!("event: {other:?} is not grant, revoke or identity_disabled")),
    };
    let change = NewAccessEvent {
        via: "webhook",
        kind: kind.into(),
        group_name: group,
        user_name: Some(identity),
        occurred_at: at,
        decision_ref: text("decision_id")?,
        ticket_ref: text("ticket")?,
        expires_at,
        raw: v.clone(),
        ..NewAccessEvent::default()
    };
    Ok((id, vec![change]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_as_entra_and_okta_send_them() {
        let add = json!({"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]});
        assert_eq!(
            members_of_operation(&add),
            Some(Some(("add".into(), vec!["u1".into(), "u2".into()])))
        );
        let remove = json!({"op": "remove", "path": "members[value eq \"u3\"]"});
        assert_eq!(members_of_operation(&remove), Some(Some(("remove".into(), vec!["u3".into()]))));
        let pathless = json!({"op": "add", "value": {"members": [{"value": "u4"}]}});
        assert_eq!(members_of_operation(&pathless), Some(Some(("add".into(), vec!["u4".into()]))));
        let replace = json!({"op": "replace", "path": "members", "value": []});
        assert_eq!(members_of_operation(&replace), Some(None));
        let rename = json!({"op": "replace", "path": "displayName", "value": "x"});
        assert_eq!(members_of_operation(&rename), None);
    }

    #[test]
    fn webhook_fields_are_checked_by_name() {
        let err = |body: Value| webhook_changes(body.to_string().as_bytes(), None).expect_err("refused");
        assert!(err(json!({})).starts_with("id:"));
        assert!(err(json!({"id": "1", "event": "grant", "identity": "a", "at": "yesterday", "group": "g"})).starts_with("at:"));
        assert!(
            err(json!({"id": "1", "event": "grant", "identity": "a", "at": "2026-12-01T00:00:00Z"})).starts_with("entitlement or group")
        );
        assert!(
            err(json!({"id": "1", "event": "promote", "identity": "a", "at": "2026-12-01T00:00:00Z", "group": "g"})).starts_with("event:")
        );
        let (id, changes) = webhook_changes(
            json!({"id": "e1", "event": "revoke", "identity": "a", "at": "2026-12-01T00:00:00Z", "group": "g"})
                .to_string()
                .as_bytes(),
            None,
        )
        .expect("valid");
        assert_eq!((id.as_str(), changes[0].kind.as_str()), ("e1", "removed"));
    }
}
