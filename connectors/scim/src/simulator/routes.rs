//! HTTP surface of the SCIM simulator.

// Helpers return the error response itself; its size does not matter in a test double.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use deskbridge_connector::simkit;
use serde_json::{json, Value};

use super::filter;
use super::{lock, touch, State};

type Shared = Arc<State>;
type Params = Query<HashMap<String, String>>;

const SCIM_JSON: &str = "application/scim+json";

/// SCIM's error shape and `Retry-After` on 429.
pub(super) struct Flavor;

impl simkit::Flavor for Flavor {
    fn error(&self, status: StatusCode, message: &str) -> Response {
        scim_error(status, None, message)
    }

    fn throttled(&self, retry_after: Option<u64>, _reset_in: Option<u64>, _beta: Option<u64>) -> Response {
        let mut r = scim_error(StatusCode::TOO_MANY_REQUESTS, None, "too many requests");
        if let Some(s) = retry_after {
            r.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        r
    }
}

fn scim_json(status: StatusCode, body: Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static(SCIM_JSON));
    r
}

fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body =
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": status.as_u16().to_string(), "detail": detail});
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    scim_json(status, body)
}

pub(super) fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/scim/v2/Users", get(list_users))
        .route("/scim/v2/Users/{id}", get(get_user).patch(patch_user))
        .route("/scim/v2/Groups", get(list_groups))
        .route("/scim/v2/Groups/{id}", get(get_group).patch(patch_group))
        .route("/scim/v2/ServiceProviderConfig", get(service_provider_config))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let api = api.route("/jwks.json", get(jwks));
    api.layer(middleware::from_fn_with_state(state.kit.clone(), simkit::faults))
        .layer(middleware::from_fn_with_state(state.kit.clone(), simkit::record))
        .with_state(state)
}

async fn authenticate(AxState(state): AxState<Shared>, request: Request, next: Next) -> Response {
    let ok = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == state.config.token);
    if ok {
        return next.run(request).await;
    }
    let mut r = scim_error(StatusCode::UNAUTHORIZED, None, "a valid bearer token is required");
    r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
    r
}

/// A user as served: `groups` only when configured.
fn render_user(state: &State, groups: &[Value], user: &Value) -> Value {
    let mut out = user.clone();
    if state.config.user_groups {
        let id = &user["id"];
        let held: Vec<Value> = groups
            .iter()
            .filter(|g| g["members"].as_array().is_some_and(|m| m.iter().any(|x| &x["value"] == id)))
            .map(|g| json!({"value": g["id"], "display": g["displayName"], "type": "direct"}))
            .collect();
        out["groups"] = Value::Array(held);
    }
    out
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.9) on top-level names, case-insensitive;
/// `id`, `schemas` and `meta` are always returned. Extension attributes are named by their URN.
fn project(mut resource: Value, q: &HashMap<String, String>) -> Value {
    let names = |key: &str| -> Option<Vec<String>> {
        q.get(key).map(|v| {
            v.split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect()
        })
    };
    let Some(object) = resource.as_object_mut() else { return resource };
    let always = ["id", "schemas", "meta"];
    if let Some(wanted) = names("attributes") {
        object.retain(|k, _| {
            let k = k.to_ascii_lowercase();
            always.contains(&k.as_str())
                || wanted
                    .iter()
                    .any(|w| *w == k || w.starts_with(&format!("{k}.")) || w.starts_with(&format!("{k}:")))
        });
    } else if let Some(excluded) = names("excludedAttributes") {
        object.retain(|k, _| {
            let k = k.to_ascii_lowercase();
            always.contains(&k.as_str()) || !excluded.contains(&k)
        });
    }
    resource
}

fn list(resources: Vec<Value>, q: &HashMap<String, String>) -> Response {
    let matched = match q.get("filter") {
        Some(text) => match filter::parse(text) {
            Ok(f) => resources.into_iter().filter(|r| filter::matches(&f, r)).collect::<Vec<_>>(),
            Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidFilter"), &e),
        },
        None => resources,
    };
    let start = q.get("startIndex").and_then(|s| s.parse::<usize>().ok()).unwrap_or(1).max(1);
    let count = q.get("count").and_then(|s| s.parse::<usize>().ok()).unwrap_or(100).min(200);
    let page: Vec<Value> = matched.iter().skip(start - 1).take(count).map(|r| project(r.clone(), q)).collect();
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": matched.len(),
            "startIndex": start,
            "itemsPerPage": page.len(),
            "Resources": page,
        }),
    )
}

async fn list_users(AxState(state): AxState<Shared>, Query(q): Params) -> Response {
    let db = lock(&state.db);
    let users = db.users.iter().map(|u| render_user(&state, &db.groups, u)).collect();
    list(users, &q)
}

async fn list_groups(AxState(state): AxState<Shared>, Query(q): Params) -> Response {
    let groups = lock(&state.db).groups.clone();
    list(groups, &q)
}

fn with_etag(resource: Value, headers: &HeaderMap) -> Response {
    let tag = resource["meta"]["version"].as_str().unwrap_or_default().to_owned();
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(tag.as_str()) && !tag.is_empty() {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut r = scim_json(StatusCode::OK, resource);
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert("etag", v);
    }
    r
}

async fn get_user(AxState(state): AxState<Shared>, Path(id): Path<String>, Query(q): Params, headers: HeaderMap) -> Response {
    let db = lock(&state.db);
    match db.users.iter().find(|u| u["id"] == id) {
        Some(u) => with_etag(project(render_user(&state, &db.groups, u), &q), &headers),
        None => scim_error(StatusCode::NOT_FOUND, None, "no such user"),
    }
}

async fn get_group(AxState(state): AxState<Shared>, Path(id): Path<String>, Query(q): Params, headers: HeaderMap) -> Response {
    let db = lock(&state.db);
    match db.groups.iter().find(|g| g["id"] == id) {
        Some(g) => with_etag(project(g.clone(), &q), &headers),
        None => scim_error(StatusCode::NOT_FOUND, None, "no such group"),
    }
}

/// `"True"`/`"False"` strings as Entra sends them.
fn coerce(v: &Value) -> Value {
    match v.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("true") => Value::Bool(true),
        Some("false") => Value::Bool(false),
        _ => v.clone(),
    }
}

fn operations(body: &Bytes) -> Result<Vec<Value>, Response> {
    let v: Value = serde_json::from_slice(body).map_err(|_| scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "not JSON"))?;
    let ops = v
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("operations")))
        .and_then(|(_, v)| v.as_array())
        .cloned()
        .ok_or_else(|| scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "no Operations"))?;
    Ok(ops)
}

fn field<'a>(op: &'a Value, name: &str) -> Option<&'a Value> {
    op.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

async fn patch_user(AxState(state): AxState<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let ops = match operations(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut db = lock(&state.db);
    let Some(user) = db.users.iter_mut().find(|u| u["id"] == id) else {
        return scim_error(StatusCode::NOT_FOUND, None, "no such user");
    };
    let before = user.clone();
    for op in &ops {
        let kind = field(op, "op").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
        if !matches!(kind.as_str(), "add" | "replace") {
            return scim_error(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                "only add and replace are supported on users",
            );
        }
        let value = field(op, "value").cloned().unwrap_or(Value::Null);
        match field(op, "path").and_then(Value::as_str) {
            // Okta and SailPoint: path-less, the value is an attribute map.
            None => {
                if let Some(map) = value.as_object() {
                    for (k, v) in map {
                        if k.eq_ignore_ascii_case("active") {
                            user["active"] = coerce(v);
                        } else {
                            user[k.as_str()] = v.clone();
                        }
                    }
                }
            }
            Some(p) if p.eq_ignore_ascii_case("active") => user["active"] = coerce(&value),
            Some(p) => user[p] = value,
        }
    }
    // An unchanged resource keeps its ETag.
    if *user != before {
        touch(user);
    }
    scim_json(StatusCode::OK, user.clone())
}

async fn patch_group(AxState(state): AxState<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let ops = match operations(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut db = lock(&state.db);
    let Some(group) = db.groups.iter_mut().find(|g| g["id"] == id) else {
        return scim_error(StatusCode::NOT_FOUND, None, "no such group");
    };
    let before = group.clone();
    for op in &ops {
        let kind = field(op, "op").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
        let path = field(op, "path").and_then(Value::as_str).unwrap_or_default().to_owned();
        let values: Vec<String> = field(op, "value")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|m| m["value"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        let members = group["members"].as_array().cloned().unwrap_or_default();
        let new_members: Vec<Value> = match (kind.as_str(), path.as_str()) {
            ("add", p) if p.eq_ignore_ascii_case("members") => {
                let mut m = members;
                for v in values {
                    if !m.iter().any(|x| x["value"] == v) {
                        m.push(json!({"value": v, "type": "User"}));
                    }
                }
                m
            }
            // RFC form: `members[value eq "id"]`.
            ("remove", p) if p.len() > 7 && p[..7].eq_ignore_ascii_case("members") && p.contains('[') => {
                let inner = &p[p.find('[').unwrap_or(0) + 1..p.rfind(']').unwrap_or(p.len())];
                let f = match filter::parse(inner) {
                    Ok(f) => f,
                    Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidPath"), &e),
                };
                members.into_iter().filter(|m| !filter::matches(&f, m)).collect()
            }
            // Entra's default job: `Remove` with path `members` and a value list removes those
            // members, never all of them.
            ("remove", p) if p.eq_ignore_ascii_case("members") && !values.is_empty() => {
                members.into_iter().filter(|m| !values.iter().any(|v| m["value"] == *v)).collect()
            }
            ("remove", p) if p.eq_ignore_ascii_case("members") => Vec::new(),
            ("replace", p) if p.eq_ignore_ascii_case("members") => {
                values.into_iter().map(|v| json!({"value": v, "type": "User"})).collect()
            }
            // Okta's rename alongside membership updates: path-less replace of displayName.
            ("replace", "") => {
                if let Some(name) = field(op, "value").and_then(|v| v.get("displayName")).cloned() {
                    group["displayName"] = name;
                }
                members
            }
            _ => {
                return scim_error(
                    StatusCode::BAD_REQUEST,
                    Some("invalidPath"),
                    &format!("unsupported operation {kind} {path}"),
                )
            }
        };
        group["members"] = Value::Array(new_members);
    }
    let (old, mut new) = (member_ids(&before), member_ids(group));
    let mut removed: Vec<String> = old.iter().filter(|m| !new.contains(m)).cloned().collect();
    if !removed.is_empty() && state.forget_revocation() {
        // A provisioning job that "succeeds" without removing anyone.
        for m in &removed {
            new.push(m.clone());
            if let Some(list) = group["members"].as_array_mut() {
                list.push(json!({"value": m, "type": "User"}));
            }
        }
        removed.clear();
    }
    let added: Vec<String> = new.iter().filter(|m| !old.contains(m)).cloned().collect();
    if *group != before {
        touch(group);
    }
    let answer = group.clone();
    drop(db);
    state.membership_changed(&answer, &added, &removed);
    scim_json(StatusCode::OK, answer)
}

async fn jwks(AxState(state): AxState<Shared>) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        state.events.jwks().to_string(),
    )
        .into_response()
}

fn member_ids(group: &Value) -> Vec<String> {
    group["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["value"].as_str().map(String::from))
        .collect()
}

async fn service_provider_config() -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": 200},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": true},
            "authenticationSchemes": [{"type": "oauthbearertoken", "name": "Bearer token", "description": "A static bearer token"}],
        }),
    )
}
