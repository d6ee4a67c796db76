//! HTTP surface of the Jira simulator.

// Helpers return the error response itself; its size does not matter in a test double.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::jql::Jql;
use deskbridge_connector::simkit;

use super::{jira_time, lock, now_ms, Db, Issue, SimComment, State};

type Shared = Arc<State>;
type Params = Query<BTreeMap<String, String>>;

#[derive(Clone)]
struct User {
    account_id: String,
}

pub(super) fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/rest/api/{v}/myself", get(myself))
        .route("/rest/api/{v}/mypermissions", get(mypermissions))
        .route("/rest/api/{v}/field", get(fields))
        .route("/rest/api/{v}/search/jql", post(search_jql).get(search_jql_get))
        .route("/rest/api/{v}/search", post(search_dc).get(search_dc_get))
        .route("/rest/api/{v}/issue", post(create_issue))
        .route("/rest/api/{v}/project/{key}", get(project))
        .route("/rest/api/{v}/issue/createmeta/{project}/issuetypes", get(create_meta_types))
        .route("/rest/api/{v}/issue/{key}", get(get_issue).put(edit_issue))
        .route("/rest/servicedeskapi/request", post(jsm_create_request))
        .route("/rest/api/{v}/issue/{key}/comment", get(list_comments).post(create_comment))
        .route("/rest/api/{v}/comment/{id}/properties/{prop}", put(put_property).get(get_property))
        .route("/rest/servicedeskapi/request/{key}/comment", post(jsm_comment))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        // Answered without credentials, as on Cloud: the `jira` Python client's first call.
        .route("/rest/api/{v}/serverInfo", get(server_info))
        .route("/oauth/token", post(oauth_token))
        .layer(middleware::from_fn_with_state(state.kit.clone(), simkit::faults))
        .layer(middleware::from_fn_with_state(state.kit.clone(), simkit::record))
        .with_state(state)
}

/// Jira's error body.
fn error(status: StatusCode, messages: &[&str], errors: Value) -> Response {
    (status, Json(json!({"errorMessages": messages, "errors": errors}))).into_response()
}

fn bad(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, &[message], json!({}))
}

/// Jira's way of refusing: its error body, and Atlassian's rate-limit headers.
pub(super) struct Flavor;

impl simkit::Flavor for Flavor {
    fn error(&self, status: StatusCode, _message: &str) -> Response {
        error(status, &["Simulated failure"], json!({}))
    }

    fn throttled(&self, retry_after: Option<u64>, reset_in: Option<u64>, beta_retry_after: Option<u64>) -> Response {
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, &["Rate limit exceeded."], json!({}));
        let headers = response.headers_mut();
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = value.parse() {
                headers.insert(name, v);
            }
        };
        if let Some(s) = retry_after {
            set("retry-after", s.to_string());
        }
        if let Some(s) = reset_in {
            let at = chrono::Utc::now() + chrono::Duration::seconds(s as i64 + 60);
            set("x-ratelimit-reset", at.format("%Y-%m-%dT%H:%MZ").to_string());
        }
        if let Some(s) = beta_retry_after {
            set("beta-retry-after", s.to_string());
        }
        set("x-ratelimit-limit", "100".into());
        set("x-ratelimit-remaining", "0".into());
        set("ratelimit-reason", "jira-burst-based".into());
        response
    }
}

async fn authenticate(AxState(state): AxState<Shared>, mut request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let user = if let Some(encoded) = header.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| {
                let (email, token) = pair.split_once(':')?;
                state
                    .users
                    .iter()
                    .find(|u| u.email == email && u.api_token.as_deref() == Some(token))
                    .map(|u| u.account_id.clone())
            })
    } else if let Some(token) = header.strip_prefix("Bearer ") {
        let token = token.trim();
        let by_pat = state
            .users
            .iter()
            .find(|u| u.pat.as_deref() == Some(token))
            .map(|u| u.account_id.clone());
        by_pat.or_else(|| {
            lock(&state.access_tokens)
                .get(token)
                .filter(|(_, expires)| *expires > Instant::now())
                .and_then(|(email, _)| state.users.iter().find(|u| &u.email == email).map(|u| u.account_id.clone()))
        })
    } else {
        None
    };
    match user {
        Some(account_id) => {
            request.extensions_mut().insert(User { account_id });
            next.run(request).await
        }
        None => error(
            StatusCode::UNAUTHORIZED,
            &["Client must be authenticated to access this resource."],
            json!({}),
        ),
    }
}

fn user_json(state: &State, account_id: &str) -> Value {
    match state.user(account_id) {
        Some(u) => json!({
            "accountId": u.account_id, "displayName": u.display_name, "emailAddress": u.email,
            "active": true, "accountType": "atlassian", "timeZone": "UTC",
            "self": format!("{}/rest/api/3/user?accountId={}", state.base_url, u.account_id),
        }),
        None => json!({"accountId": account_id, "active": false}),
    }
}

async fn myself(AxState(state): AxState<Shared>, Extension(user): Extension<User>) -> Response {
    Json(user_json(&state, &user.account_id)).into_response()
}

const PERMISSIONS: &[(&str, &str)] = &[
    ("BROWSE_PROJECTS", "Browse Projects"),
    ("ADD_COMMENTS", "Add Comments"),
    ("EDIT_OWN_COMMENTS", "Edit Own Comments"),
    ("SERVICEDESK_AGENT", "Service Desk Agent"),
];

async fn mypermissions(AxState(state): AxState<Shared>, Extension(user): Extension<User>, Query(q): Params) -> Response {
    let Some(wanted) = q.get("permissions") else {
        return bad("The 'permissions' query parameter is required.");
    };
    let held = state.user(&user.account_id).map(|u| u.permissions.clone()).unwrap_or_default();
    let mut out = Map::new();
    for (n, key) in wanted.split(',').map(str::trim).filter(|k| !k.is_empty()).enumerate() {
        let Some((_, name)) = PERMISSIONS.iter().find(|(k, _)| *k == key) else {
            return bad(&format!("Invalid permission key: {key}"));
        };
        out.insert(
            key.to_owned(),
            json!({"id": (n + 10).to_string(), "key": key, "name": name, "type": "PROJECT", "description": name, "havePermission": held.iter().any(|h| h == key)}),
        );
    }
    Json(json!({ "permissions": out })).into_response()
}

async fn fields(AxState(state): AxState<Shared>) -> Response {
    let mut out = vec![];
    for (id, name) in [
        ("summary", "Summary"),
        ("status", "Status"),
        ("issuetype", "Issue Type"),
        ("project", "Project"),
        ("reporter", "Reporter"),
        ("created", "Created"),
        ("updated", "Updated"),
        ("description", "Description"),
    ] {
        out.push(json!({"id": id, "key": id, "name": name, "custom": false, "orderable": true, "navigable": true, "searchable": true, "clauseNames": [id], "schema": {"type": "string", "system": id}}));
    }
    for f in &state.fields {
        let id = state.field_id(&f.name).unwrap_or_default();
        let number: u64 = id.trim_start_matches("customfield_").parse().unwrap_or(0);
        out.push(json!({
            "id": id, "key": id, "name": f.name, "custom": true, "orderable": true, "navigable": true, "searchable": true,
            "clauseNames": [format!("cf[{number}]"), f.name],
            "schema": {"type": f.schema_type, "custom": f.schema_custom, "customId": number},
        }));
    }
    Json(Value::Array(out)).into_response()
}

/// Text as an ADF document, a paragraph per line (how Jira shows a v2 or JSM comment in v3).
fn adf(text: &str) -> Value {
    crate::adf_document(text)
}

/// The issue as the API returns it, with only the `fields` asked for.
pub(super) fn issue_json(state: &State, issue: &Issue, wanted: &[&str], version: u8) -> Value {
    let all = wanted.iter().any(|f| *f == "*all" || *f == "*navigable");
    let want = |name: &str| all || wanted.contains(&name);
    let mut fields = Map::new();
    if want("summary") {
        fields.insert("summary".into(), json!(issue.summary));
    }
    if want("status") {
        let category = if issue.status.eq_ignore_ascii_case("done") || issue.status.eq_ignore_ascii_case("declined") {
            "done"
        } else {
            "indeterminate"
        };
        fields.insert("status".into(), json!({"name": issue.status, "statusCategory": {"key": category}}));
    }
    if want("issuetype") {
        fields.insert("issuetype".into(), json!({"name": issue.issue_type}));
    }
    if want("project") {
        fields.insert("project".into(), json!({"key": issue.project, "name": issue.project}));
    }
    if want("reporter") {
        fields.insert("reporter".into(), user_json(state, &issue.reporter));
    }
    if want("created") {
        fields.insert("created".into(), json!(jira_time(issue.created_ms)));
    }
    if want("updated") {
        fields.insert("updated".into(), json!(jira_time(issue.updated_ms)));
    }
    if want("description") {
        let value = if issue.description.is_empty() {
            Value::Null
        } else if version >= 3 {
            adf(&issue.description)
        } else {
            json!(issue.description)
        };
        fields.insert("description".into(), value);
    }
    for f in &state.fields {
        let Some(id) = state.field_id(&f.name) else { continue };
        if !want(&id) {
            continue;
        }
        let value = if f.schema_custom == "com.atlassian.servicedesk:vp-origin" {
            issue.request_type.as_ref().map_or(Value::Null, |(rid, name)| {
                json!({
                    "_links": {"web": format!("{}/servicedesk/customer/portal/1/{}", state.base_url, issue.key())},
                    "requestType": {"id": rid, "name": name, "serviceDeskId": "1"},
                    "currentStatus": {"status": issue.status, "statusDate": {"epochMillis": issue.updated_ms}},
                })
            })
        } else {
            issue.custom.get(&f.name).cloned().unwrap_or(Value::Null)
        };
        fields.insert(id, value);
    }
    json!({
        "id": issue.id.to_string(),
        "key": issue.key(),
        "self": format!("{}/rest/api/{version}/issue/{}", state.base_url, issue.id),
        "fields": fields,
    })
}

fn version_of(v: &str) -> Result<u8, Response> {
    match v {
        "2" => Ok(2),
        "3" | "latest" => Ok(3),
        _ => Err(error(StatusCode::NOT_FOUND, &["No such API version"], json!({}))),
    }
}

fn field_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(String::from).collect(),
        Some(Value::String(s)) => s.split(',').map(|f| f.trim().to_owned()).collect(),
        _ => Vec::new(),
    }
}

/// The first `limit` issues `jql` matches in its order (only those after the search-after
/// position `after`, when given), and how many it matches in all (after `after`). Only the page
/// is sorted and copied: paging through 100,000 issues is not quadratic in copies and sorts.
fn matching(state: &State, jql: &Jql, after: Option<&Issue>, limit: usize) -> Result<(Vec<Issue>, usize), Response> {
    let db = lock(&state.db);
    let mut hits: Vec<&Issue> = Vec::new();
    for issue in &db.issues {
        if jql.matches(issue).map_err(|m| bad(&m))? && after.is_none_or(|p| jql.compare(issue, p) == std::cmp::Ordering::Greater) {
            hits.push(issue);
        }
    }
    let total = hits.len();
    if hits.len() > limit {
        hits.select_nth_unstable_by(limit, |a, b| jql.compare(a, b));
        hits.truncate(limit);
    }
    hits.sort_by(|a, b| jql.compare(a, b));
    Ok((hits.into_iter().cloned().collect(), total))
}

/// The first `limit` issues `jql` matches in its order after the search-after position `after`,
/// and whether more match. A query ordered by `updated` first (deskbridge's poll) walks the
/// issues in that order from its position, or from the least `updated` its filter allows, a
/// run of one `updated` value at a time sorted by the whole order: a page costs about what it
/// returns, not a scan of every issue.
fn page_after(state: &State, jql: &Jql, after: Option<&Issue>, limit: usize) -> Result<(Vec<Issue>, bool), Response> {
    if !jql.by_updated_first() {
        let (hits, total) = matching(state, jql, after, limit)?;
        let more = total > hits.len();
        return Ok((hits, more));
    }
    let floor = jql.updated_floor();
    let from = after.map_or(floor, |p| p.updated_ms.max(floor));
    let mut db = lock(&state.db);
    let mut hits: Vec<&Issue> = Vec::new();
    let mut run: Vec<&Issue> = Vec::new();
    let mut run_at = None;
    fn close<'a>(jql: &Jql, hits: &mut Vec<&'a Issue>, run: &mut Vec<&'a Issue>) {
        run.sort_by(|a, b| jql.compare(a, b));
        hits.append(run);
    }
    for issue in db.ordered(from) {
        if run_at != Some(issue.updated_ms) {
            close(jql, &mut hits, &mut run);
            if hits.len() > limit {
                break;
            }
            run_at = Some(issue.updated_ms);
        }
        if jql.matches(issue).map_err(|m| bad(&m))? && after.is_none_or(|p| jql.compare(issue, p) == std::cmp::Ordering::Greater) {
            run.push(issue);
        }
    }
    close(jql, &mut hits, &mut run);
    let more = hits.len() > limit;
    Ok((hits.into_iter().take(limit).cloned().collect(), more))
}

/// `POST /rest/api/3/search/jql`: the enhanced search. Bounded JQL only; pages by
/// `nextPageToken` (absent on the last page), no `total`.
async fn search_jql(AxState(state): AxState<Shared>, Path(v): Path<String>, body: Bytes) -> Response {
    let version = match version_of(&v) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return bad("The request body is not valid JSON.");
    };
    jql_search(&state, &body, version)
}

/// `GET …/search/jql?jql=…&fields=a,b&maxResults=…&nextPageToken=…`: the same search, its
/// parameters in the query string.
async fn search_jql_get(AxState(state): AxState<Shared>, Path(v): Path<String>, Query(q): Params) -> Response {
    let version = match version_of(&v) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut body = Map::new();
    for (k, val) in q {
        let list = |text: &str| json!(text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>());
        let value = match k.as_str() {
            "maxResults" => match val.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => return bad(&format!("The value '{val}' is invalid for maxResults.")),
            },
            "fields" | "properties" => list(&val),
            "fieldsByKeys" | "failFast" => json!(val == "true"),
            "reconcileIssues" => json!(val.split(',').filter_map(|n| n.trim().parse::<u64>().ok()).collect::<Vec<_>>()),
            _ => json!(val),
        };
        body.insert(k, value);
    }
    jql_search(&state, &body, version)
}

fn jql_search(state: &State, body: &Map<String, Value>, version: u8) -> Response {
    const KNOWN: &[&str] = &[
        "jql",
        "nextPageToken",
        "maxResults",
        "fields",
        "expand",
        "properties",
        "fieldsByKeys",
        "failFast",
        "reconcileIssues",
    ];
    if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return bad(&format!("Unrecognized field \"{unknown}\""));
    }
    let text = body.get("jql").and_then(Value::as_str).unwrap_or_default();
    let jql = match Jql::parse(text, true) {
        Ok(j) => j,
        Err(m) => return bad(&m),
    };
    let hash = format!("{:x}", fxhash(text));
    // Like Jira's search platform, the token is a search-after position (the sort values of
    // the last issue returned), not an offset: issues changing while a client pages neither
    // shift pages nor get skipped.
    let after = match body.get("nextPageToken").and_then(Value::as_str) {
        None => None,
        Some(token) => match decode_token(token) {
            // Tokens expire (after 7 days on Cloud; `page_token_ttl` here).
            Some((position, h, issued)) if h == hash && now_ms() - issued <= state.config.page_token_ttl.as_millis() as i64 => {
                Some(position)
            }
            _ => return bad("The provided next page token is invalid or expired."),
        },
    };
    let max = body.get("maxResults").and_then(Value::as_u64).unwrap_or(50).clamp(1, 100) as usize;
    let wanted = field_list(body.get("fields"));
    let wanted: Vec<&str> = if wanted.is_empty() {
        vec!["id"]
    } else {
        wanted.iter().map(String::as_str).collect()
    };
    let (page, more) = match page_after(state, &jql, after.as_ref(), max) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let is_last = !more;
    let mut out = json!({"issues": page.iter().map(|i| issue_json(state, i, &wanted, version)).collect::<Vec<_>>(), "isLast": is_last});
    if let (false, Some(last)) = (is_last, page.last()) {
        out["nextPageToken"] = json!(encode_token(last, &hash));
    }
    Json(out).into_response()
}

fn fxhash(text: &str) -> u64 {
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn encode_token(last: &Issue, hash: &str) -> String {
    let raw = json!([
        last.updated_ms,
        last.created_ms,
        last.project,
        last.number,
        last.id,
        last.status,
        last.summary,
        hash,
        now_ms()
    ]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
}

/// The sort position a token stands for, as an issue carrying the sort values.
fn decode_token(token: &str) -> Option<(Issue, String, i64)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let position = Issue {
        id: v[4].as_u64()?,
        project: v[2].as_str()?.to_owned(),
        number: v[3].as_u64()?,
        issue_type: String::new(),
        status: v[5].as_str()?.to_owned(),
        summary: v[6].as_str()?.to_owned(),
        description: String::new(),
        reporter: String::new(),
        created_ms: v[1].as_i64()?,
        updated_ms: v[0].as_i64()?,
        request_type: None,
        custom: BTreeMap::new(),
        comments: Vec::new(),
    };
    Some((position, v[7].as_str()?.to_owned(), v[8].as_i64()?))
}

/// The Data Center search window (`jira.search.platform.max.result.window`).
pub const MAX_RESULT_WINDOW: usize = 10_000;

/// `POST /rest/api/2/search` (Data Center): `startAt` paging with `total`; deep paging past
/// the result window fails. On Cloud the old search is gone (410).
async fn search_dc(AxState(state): AxState<Shared>, Path(v): Path<String>, body: Bytes) -> Response {
    if v != "2" {
        return error(
            StatusCode::GONE,
            &["The requested API has been removed. Please migrate to the /rest/api/3/search/jql API."],
            json!({}),
        );
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return bad("The request body is not valid JSON.");
    };
    dc_search(&state, &body)
}

async fn search_dc_get(AxState(state): AxState<Shared>, Path(v): Path<String>, Query(q): Params) -> Response {
    if v != "2" {
        return error(StatusCode::GONE, &["The requested API has been removed."], json!({}));
    }
    let mut body = Map::new();
    for (k, val) in q {
        let value = match k.as_str() {
            "startAt" | "maxResults" => json!(val.parse::<u64>().unwrap_or(0)),
            _ => json!(val),
        };
        body.insert(k, value);
    }
    dc_search(&state, &body)
}

fn dc_search(state: &State, body: &Map<String, Value>) -> Response {
    let text = body.get("jql").and_then(Value::as_str).unwrap_or_default();
    let jql = match Jql::parse(text, false) {
        Ok(j) => j,
        Err(m) => return bad(&m),
    };
    let start = body.get("startAt").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = body.get("maxResults").and_then(Value::as_u64).unwrap_or(50).clamp(0, 1000) as usize;
    if start >= MAX_RESULT_WINDOW {
        return bad(&format!(
            "Result window is too large, startAt + maxResults must be less than or equal to {MAX_RESULT_WINDOW}"
        ));
    }
    let max = max.min(MAX_RESULT_WINDOW - start);
    let wanted = field_list(body.get("fields"));
    let wanted: Vec<&str> = if wanted.is_empty() {
        vec!["*navigable"]
    } else {
        wanted.iter().map(String::as_str).collect()
    };
    let (hits, total) = match matching(state, &jql, None, start + max) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let page: Vec<Value> = hits.iter().skip(start).map(|i| issue_json(state, i, &wanted, 2)).collect();
    Json(json!({"startAt": start, "maxResults": max, "total": total, "issues": page})).into_response()
}

fn find<'a>(db: &'a mut Db, key: &str) -> Option<&'a mut Issue> {
    db.get_mut(key)
}

async fn get_issue(AxState(state): AxState<Shared>, Path((v, key)): Path<(String, String)>, Query(q): Params) -> Response {
    let version = match version_of(&v) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let issue = find(&mut lock(&state.db), &key).cloned();
    let Some(issue) = issue else {
        return error(
            StatusCode::NOT_FOUND,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        );
    };
    let wanted: Vec<String> = q
        .get("fields")
        .map(|f| f.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_else(|| vec!["*all".into()]);
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    Json(issue_json(&state, &issue, &wanted, version)).into_response()
}

fn comment_json(state: &State, c: &SimComment, version: u8, with_properties: bool) -> Value {
    let body = if version >= 3 {
        match &c.body {
            Value::String(s) => adf(s),
            other => other.clone(),
        }
    } else {
        json!(c.text)
    };
    let mut out = json!({
        "id": c.id.to_string(),
        "author": user_json(state, &c.author),
        "body": body,
        "created": jira_time(c.created_ms),
        "updated": jira_time(c.created_ms),
        "jsdPublic": c.public,
    });
    if with_properties {
        out["properties"] = Value::Array(c.properties.iter().map(|(k, v)| json!({"key": k, "value": v})).collect());
    }
    out
}

async fn list_comments(AxState(state): AxState<Shared>, Path((v, key)): Path<(String, String)>, Query(q): Params) -> Response {
    let version = match version_of(&v) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(issue) = find(&mut lock(&state.db), &key).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        );
    };
    let start: usize = q.get("startAt").and_then(|s| s.parse().ok()).unwrap_or(0);
    let max: usize = q.get("maxResults").and_then(|s| s.parse().ok()).unwrap_or(100).clamp(1, 100);
    let mut comments = issue.comments.clone();
    match q.get("orderBy").map(String::as_str) {
        Some("-created") => comments.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id))),
        Some("created") | Some("+created") | None => comments.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id))),
        Some(other) => return bad(&format!("Invalid orderBy: {other}")),
    }
    let with_properties = q.get("expand").is_some_and(|e| e.split(',').any(|x| x.trim() == "properties"));
    let page: Vec<Value> = comments
        .iter()
        .skip(start)
        .take(max)
        .map(|c| comment_json(&state, c, version, with_properties))
        .collect();
    Json(json!({"startAt": start, "maxResults": max, "total": comments.len(), "comments": page})).into_response()
}

/// Checks an ADF document the way Jira does: a `doc` of version 1 whose nodes are known, with
/// non-empty text nodes. Returns its plain text.
fn adf_text(doc: &Value) -> Result<String, String> {
    if doc.get("type").and_then(Value::as_str) != Some("doc") || doc.get("version").and_then(Value::as_u64) != Some(1) {
        return Err("the body must be an ADF document: type doc, version 1".into());
    }
    let Some(content) = doc.get("content").and_then(Value::as_array) else {
        return Err("doc.content must be an array".into());
    };
    let mut lines = Vec::new();
    for block in content {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or_default();
        if !matches!(kind, "paragraph" | "heading" | "blockquote" | "codeBlock" | "rule") {
            return Err(format!("unknown or misplaced block node {kind:?}"));
        }
        let mut line = String::new();
        for inline in block.get("content").and_then(Value::as_array).cloned().unwrap_or_default() {
            match inline.get("type").and_then(Value::as_str).unwrap_or_default() {
                "text" => {
                    let text = inline.get("text").and_then(Value::as_str).unwrap_or_default();
                    if text.is_empty() {
                        return Err("text nodes must have non-empty text".into());
                    }
                    if let Some(marks) = inline.get("marks") {
                        let ok = marks.as_array().is_some_and(|m| {
                            m.iter().all(|mark| {
                                matches!(
                                    mark.get("type").and_then(Value::as_str),
                                    Some("strong" | "em" | "code" | "link" | "strike" | "underline")
                                )
                            })
                        });
                        if !ok {
                            return Err("invalid text marks".into());
                        }
                    }
                    line.push_str(text);
                }
                "hardBreak" => line.push('\n'),
                other => return Err(format!("unknown inline node {other:?}")),
            }
        }
        lines.push(line);
    }
    Ok(lines.join("\n"))
}

fn parse_properties(body: &Map<String, Value>) -> Result<BTreeMap<String, Value>, Response> {
    let mut out = BTreeMap::new();
    match body.get("properties") {
        None => {}
        Some(Value::Array(items)) => {
            for p in items {
                let key = p.get("key").and_then(Value::as_str).unwrap_or_default();
                if key.is_empty() || key.len() > 255 {
                    return Err(bad("A property key must be 1 to 255 characters."));
                }
                let value = p.get("value").cloned().unwrap_or(Value::Null);
                if value.to_string().len() > 32_768 {
                    return Err(bad("The property value is too large (32768 bytes at most)."));
                }
                out.insert(key.to_owned(), value);
            }
        }
        Some(_) => return Err(bad("properties must be an array")),
    }
    Ok(out)
}

pub(super) fn add_comment(
    db: &mut Db,
    key: &str,
    author: String,
    body: Value,
    text: String,
    properties: BTreeMap<String, Value>,
    public: bool,
) -> Option<SimComment> {
    let id = db.next_comment;
    let at = db.position(key)?;
    let issue = find(db, key)?;
    let created_ms = now_ms().max(issue.comments.last().map_or(0, |c| c.created_ms));
    let comment = SimComment {
        id,
        author,
        body,
        text,
        created_ms,
        properties,
        public,
    };
    issue.comments.push(comment.clone());
    State::touch(issue);
    db.next_comment += 1;
    db.comment_on.insert(id, at);
    Some(comment)
}

fn may(state: &State, user: &User, permission: &str) -> bool {
    state
        .user(&user.account_id)
        .is_some_and(|u| u.permissions.iter().any(|p| p == permission))
}

async fn create_comment(
    AxState(state): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((v, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let version = match version_of(&v) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return bad("The request body is not valid JSON.");
    };
    if !may(&state, &user, "ADD_COMMENTS") {
        return error(
            StatusCode::FORBIDDEN,
            &["You do not have the permission to comment on this issue."],
            json!({}),
        );
    }
    let raw_body = body.get("body").cloned().unwrap_or(Value::Null);
    let text = if version >= 3 {
        match adf_text(&raw_body) {
            Ok(t) => t,
            Err(why) => {
                tracing::debug!(why, "simulator rejected ADF");
                return error(StatusCode::BAD_REQUEST, &[], json!({"comment": "Comment body is not valid!"}));
            }
        }
    } else {
        match raw_body.as_str() {
            Some(s) if !s.trim().is_empty() => s.to_owned(),
            _ => return error(StatusCode::BAD_REQUEST, &[], json!({"comment": "Comment body can not be empty!"})),
        }
    };
    let properties = match parse_properties(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let internal = properties
        .get("sd.public.comment")
        .and_then(|v| v.get("internal"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut db = lock(&state.db);
    match add_comment(&mut db, &key, user.account_id, raw_body, text, properties, !internal) {
        Some(c) => (StatusCode::CREATED, Json(comment_json(&state, &c, version, false))).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        ),
    }
}

async fn jsm_comment(AxState(state): AxState<Shared>, Extension(user): Extension<User>, Path(key): Path<String>, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return bad("The request body is not valid JSON.");
    };
    let Some(text) = body.get("body").and_then(Value::as_str).filter(|s| !s.trim().is_empty()) else {
        return bad("The comment body is required.");
    };
    let public = body.get("public").and_then(Value::as_bool).unwrap_or(true);
    let is_agent = may(&state, &user, "SERVICEDESK_AGENT");
    if !may(&state, &user, "ADD_COMMENTS") || (!public && !is_agent) {
        return error(
            StatusCode::FORBIDDEN,
            &["You do not have permission to add this comment."],
            json!({}),
        );
    }
    let mut db = lock(&state.db);
    if find(&mut db, &key).is_none_or(|i| i.request_type.is_none()) {
        return error(
            StatusCode::NOT_FOUND,
            &["The request does not exist or is not a customer request."],
            json!({}),
        );
    }
    let Some(c) = add_comment(
        &mut db,
        &key,
        user.account_id.clone(),
        json!(text),
        text.to_owned(),
        BTreeMap::new(),
        public,
    ) else {
        return error(StatusCode::NOT_FOUND, &["Request not found"], json!({}));
    };
    let author = user_json(&state, &user.account_id);
    (
        StatusCode::CREATED,
        Json(json!({
            "id": c.id.to_string(), "body": text, "public": public, "author": author,
            "created": {"epochMillis": c.created_ms, "iso8601": jira_time(c.created_ms), "jira": jira_time(c.created_ms), "friendly": "Today"},
            "_links": {"self": format!("{}/rest/servicedeskapi/request/{key}/comment/{}", state.base_url, c.id)},
        })),
    )
        .into_response()
}

async fn put_property(
    AxState(state): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((_v, id, prop)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return bad("The property value must be JSON.");
    };
    if prop.is_empty() || prop.len() > 255 || body.len() > 32_768 {
        return bad("The property key or value is too large.");
    }
    let mut db = lock(&state.db);
    let Some(c) = db.comment_mut(&id) else {
        return error(StatusCode::NOT_FOUND, &["Comment not found"], json!({}));
    };
    if c.author != user.account_id && !may(&state, &user, "EDIT_ALL_COMMENTS") {
        return error(
            StatusCode::FORBIDDEN,
            &["You may only set properties on your own comments."],
            json!({}),
        );
    }
    let created = c.properties.insert(prop, value).is_none();
    if created { StatusCode::CREATED } else { StatusCode::OK }.into_response()
}

async fn get_property(AxState(state): AxState<Shared>, Path((_v, id, prop)): Path<(String, String, String)>) -> Response {
    let db = lock(&state.db);
    let Some(c) = db.comment(&id) else {
        return error(StatusCode::NOT_FOUND, &["Comment not found"], json!({}));
    };
    match c.properties.get(&prop) {
        Some(v) => Json(json!({"key": prop, "value": v})).into_response(),
        None => error(StatusCode::NOT_FOUND, &["The property was not found."], json!({})),
    }
}

/// `POST /oauth/token`: the refresh-token grant with rotation. Each refresh issues a new
/// refresh token and disables the one used; reusing it is `403 invalid_grant`.
async fn oauth_token(AxState(state): AxState<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let form: BTreeMap<String, String> = if json_body {
        serde_json::from_slice::<BTreeMap<String, Value>>(&body)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
            .collect()
    } else {
        url::form_urlencoded::parse(&body).into_owned().collect()
    };
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let oauth_error = |status: StatusCode, code: &str, description: &str| {
        (status, Json(json!({"error": code, "error_description": description}))).into_response()
    };
    let grant = get("grant_type").to_owned();
    if (get("client_id"), get("client_secret")) != (super::OAUTH_CLIENT.0, super::OAUTH_CLIENT.1) {
        lock(&state.grants).push(format!("{grant}:refused"));
        return oauth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    }
    if grant != "refresh_token" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Only refresh_token is simulated");
    }
    let Some(email) = lock(&state.refresh_tokens).remove(get("refresh_token")) else {
        lock(&state.grants).push(format!("{grant}:refused"));
        return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Unknown or invalid refresh token.");
    };
    lock(&state.grants).push(format!("{grant}:ok"));
    let access = format!("at-{:032x}", rand::random::<u128>());
    let refresh = format!("rt-{:032x}", rand::random::<u128>());
    lock(&state.access_tokens).insert(access.clone(), (email.clone(), Instant::now() + state.config.token_ttl));
    lock(&state.refresh_tokens).insert(refresh.clone(), email);
    Json(json!({
        "access_token": access, "refresh_token": refresh, "token_type": "Bearer",
        "expires_in": state.config.token_ttl.as_secs(), "scope": "read:jira-work write:jira-work offline_access",
    }))
    .into_response()
}

async fn server_info(AxState(state): AxState<Shared>, Path(v): Path<String>) -> Response {
    if let Err(r) = version_of(&v) {
        return r;
    }
    let now = jira_time(now_ms());
    Json(json!({
        "baseUrl": state.base_url, "displayUrl": state.base_url, "version": "1001.0.0-SNAPSHOT",
        "versionNumbers": [1001, 0, 0], "deploymentType": "Cloud", "buildNumber": 100_287,
        "buildDate": now, "serverTime": now, "scmInfo": "deskbridge-simulator", "serverTitle": "Jira (deskbridge simulator)",
        "defaultLocale": {"locale": "en_US"}, "serverTimeZone": "Etc/UTC",
    }))
    .into_response()
}

/// A field value as `issue_json` serves it back: text fields as strings, select fields as
/// `{value}`, user fields as `{accountId}`, dates as strings.
fn custom_value(state: &State, value: &Value) -> Value {
    match value {
        Value::Object(o) if o.contains_key("value") => json!({"value": o["value"]}),
        Value::Object(o) if o.contains_key("accountId") || o.contains_key("id") => {
            let id = o.get("accountId").or_else(|| o.get("id")).cloned().unwrap_or(Value::Null);
            json!({"accountId": id})
        }
        Value::Object(o) if o.contains_key("emailAddress") => {
            let email = o["emailAddress"].as_str().unwrap_or_default();
            let id = state.users.iter().find(|u| u.email == email).map(|u| u.account_id.clone());
            json!({"accountId": id})
        }
        other => other.clone(),
    }
}

/// Reads `fields` of a create or edit: summary, description (ADF on v3, text on v2) and
/// custom fields by id. Anything else is refused as Jira refuses it.
fn editable_fields(state: &State, fields: &Map<String, Value>, version: u8, skip: &[&str]) -> Result<Vec<(String, Value)>, Response> {
    let mut out = Vec::new();
    let mut errors = Map::new();
    for (id, value) in fields {
        if skip.contains(&id.as_str()) {
            continue;
        }
        match id.as_str() {
            "summary" => match value.as_str() {
                Some(text) if !text.trim().is_empty() => out.push(("summary".to_owned(), json!(text))),
                _ => {
                    errors.insert("summary".into(), json!("You must specify a summary of the issue."));
                }
            },
            "description" => {
                let text = match (version, value) {
                    (_, Value::Null) => Ok(String::new()),
                    (3, doc) => adf_text(doc),
                    (_, Value::String(s)) => Ok(s.clone()),
                    _ => Err("must be a string".to_owned()),
                };
                match text {
                    Ok(text) => out.push(("description".to_owned(), json!(text))),
                    Err(_) => {
                        errors.insert("description".into(), json!("Operation value must be an Atlassian Document"));
                    }
                }
            }
            other => match state.field_name(other) {
                Some(name) => out.push((name.to_owned(), custom_value(state, value))),
                None => {
                    errors.insert(
                        other.into(),
                        json!(format!(
                            "Field '{other}' cannot be set. It is not on the appropriate screen, or unknown."
                        )),
                    );
                }
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(error(StatusCode::BAD_REQUEST, &[], Value::Object(errors)))
    }
}

/// The start of a write: the API version, a JSON object body, and the user's `permission`
/// (refused with `refusal`, as Jira words it).
fn write_request(
    state: &State,
    user: &User,
    v: Option<&str>,
    body: &[u8],
    permission: &str,
    refusal: &str,
) -> Result<(u8, Map<String, Value>), Response> {
    let version = match v {
        Some(v) => version_of(v)?,
        None => 2,
    };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("The request body is not valid JSON."));
    };
    if !may(state, user, permission) {
        return Err(error(StatusCode::FORBIDDEN, &[refusal], json!({})));
    }
    Ok((version, body))
}

/// A new issue from the fields a create gave (summary, description, custom fields by name).
fn new_issue(
    project: String,
    issue_type: String,
    reporter: String,
    request_type: Option<String>,
    values: Vec<(String, Value)>,
) -> super::NewIssue {
    let mut new = super::NewIssue {
        project,
        issue_type,
        summary: String::new(),
        description: String::new(),
        reporter,
        request_type,
        custom: Vec::new(),
        status: None,
        updated_ms: None,
    };
    for (name, value) in values {
        match name.as_str() {
            "summary" => new.summary = value.as_str().unwrap_or_default().to_owned(),
            "description" => new.description = value.as_str().unwrap_or_default().to_owned(),
            _ => new.custom.push((name, value)),
        }
    }
    new
}

fn created(state: &State, issue: &Issue) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({"id": issue.id.to_string(), "key": issue.key(), "self": format!("{}/rest/api/3/issue/{}", state.base_url, issue.id)})),
    )
        .into_response()
}

/// `POST /rest/api/{2,3}/issue`: `{"fields": {"project": {"key"}, "issuetype": {"name"},
/// "summary", "description", "customfield_…"}}`.
async fn create_issue(AxState(state): AxState<Shared>, Extension(user): Extension<User>, Path(v): Path<String>, body: Bytes) -> Response {
    let (version, body) = match write_request(
        &state,
        &user,
        Some(&v),
        &body,
        "CREATE_ISSUES",
        "You do not have permission to create issues in this project.",
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(fields) = body.get("fields").and_then(Value::as_object) else {
        return bad("fields is required.");
    };
    let null = Value::Null;
    let field = |name: &str| fields.get(name).unwrap_or(&null);
    let project = match (field("project")["key"].as_str(), field("project")["id"].as_str()) {
        (Some(key), _) => key.to_owned(),
        (None, Some(PROJECT_ID)) => super::SEEDED_PROJECT.to_owned(),
        (None, id) => id.unwrap_or_default().to_owned(),
    };
    let known_project = lock(&state.db).issues.iter().any(|i| i.project == project) || project == super::SEEDED_PROJECT;
    let issue_type = match (field("issuetype")["name"].as_str(), field("issuetype")["id"].as_str()) {
        (Some(name), _) => name.to_owned(),
        (None, Some(id)) => match ISSUE_TYPES.iter().find(|(i, _)| *i == id) {
            Some((_, name)) => (*name).to_owned(),
            None => return error(StatusCode::BAD_REQUEST, &[], json!({"issuetype": "valid issue type is required"})),
        },
        (None, None) => return error(StatusCode::BAD_REQUEST, &[], json!({"issuetype": "issue type is required"})),
    };
    if !known_project {
        return error(StatusCode::BAD_REQUEST, &[], json!({"project": "valid project is required"}));
    }
    if fields.get("summary").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"summary": "You must specify a summary of the issue."}),
        );
    }
    let values = match editable_fields(&state, fields, version, &["project", "issuetype", "reporter"]) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let reporter = field("reporter")["accountId"]
        .as_str()
        .or_else(|| field("reporter")["id"].as_str())
        .map_or_else(|| user.account_id.clone(), str::to_owned);
    let issue = state.create(new_issue(project, issue_type, reporter, None, values));
    created(&state, &issue)
}

/// `PUT /rest/api/{2,3}/issue/{key}`: `{"fields": {…}}` (status changes need a transition, as
/// on Jira); 204.
async fn edit_issue(
    AxState(state): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((v, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (version, body) = match write_request(
        &state,
        &user,
        Some(&v),
        &body,
        "EDIT_ISSUES",
        "You do not have permission to edit issues in this project.",
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let empty = Map::new();
    let fields = body.get("fields").and_then(Value::as_object).unwrap_or(&empty);
    let values = match editable_fields(&state, fields, version, &[]) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let changes: Vec<(&str, Value)> = values.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    match state.change(&key, &changes) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        ),
    }
}

/// JSM `POST /rest/servicedeskapi/request`: `{"serviceDeskId", "requestTypeId",
/// "requestFieldValues": {"summary", "description", "customfield_…"}, "raiseOnBehalfOf"}`.
async fn jsm_create_request(AxState(state): AxState<Shared>, Extension(user): Extension<User>, body: Bytes) -> Response {
    let (_, body) = match write_request(
        &state,
        &user,
        None,
        &body,
        "CREATE_ISSUES",
        "You do not have permission to raise requests.",
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let body = Value::Object(body);
    let text = |v: &Value| v.as_str().map(str::to_owned).or_else(|| v.as_u64().map(|n| n.to_string()));
    if text(&body["serviceDeskId"]).as_deref() != Some("1") {
        return error(StatusCode::NOT_FOUND, &["The service desk does not exist."], json!({}));
    }
    let Some(request_type) = text(&body["requestTypeId"]).filter(|id| super::seed::REQUEST_TYPES.iter().any(|(t, _)| t == id)) else {
        return bad("The request type does not exist in this service desk.");
    };
    let empty = Map::new();
    let fields = body.get("requestFieldValues").and_then(Value::as_object).unwrap_or(&empty);
    if fields.get("summary").is_none() {
        return bad("Summary is required.");
    }
    let values = match editable_fields(&state, fields, 2, &[]) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let reporter = body["raiseOnBehalfOf"]
        .as_str()
        .map_or_else(|| user.account_id.clone(), str::to_owned);
    let issue = state.create(new_issue(
        super::SEEDED_PROJECT.into(),
        "Service Request".into(),
        reporter,
        Some(request_type),
        values,
    ));
    let (type_id, _) = issue.request_type.clone().unwrap_or_default();
    (
        StatusCode::CREATED,
        Json(json!({
            "issueId": issue.id.to_string(), "issueKey": issue.key(), "requestTypeId": type_id, "serviceDeskId": "1",
            "createdDate": {"epochMillis": issue.created_ms, "iso8601": jira_time(issue.created_ms)},
            "reporter": user_json(&state, &issue.reporter),
            "currentStatus": {"status": issue.status},
            "_links": {"self": format!("{}/rest/servicedeskapi/request/{}", state.base_url, issue.id), "web": format!("{}/browse/{}", state.base_url, issue.key())},
        })),
    )
        .into_response()
}

/// The seeded project's id.
const PROJECT_ID: &str = "10000";
/// Issue types of the seeded project: `(id, name)`.
const ISSUE_TYPES: &[(&str, &str)] = &[("10001", "Service Request"), ("10002", "Task")];

fn issue_types(state: &State) -> Vec<Value> {
    ISSUE_TYPES
        .iter()
        .map(
            |(id, name)| json!({"id": id, "name": name, "subtask": false, "self": format!("{}/rest/api/3/issuetype/{id}", state.base_url)}),
        )
        .collect()
}

async fn project(AxState(state): AxState<Shared>, Path((v, key)): Path<(String, String)>) -> Response {
    if let Err(r) = version_of(&v) {
        return r;
    }
    if key != super::SEEDED_PROJECT && key != PROJECT_ID {
        return error(
            StatusCode::NOT_FOUND,
            &[&format!("No project could be found with key '{key}'.")],
            json!({}),
        );
    }
    Json(json!({
        "id": PROJECT_ID, "key": super::SEEDED_PROJECT, "name": "Access requests", "projectTypeKey": "service_desk",
        "self": format!("{}/rest/api/3/project/{PROJECT_ID}", state.base_url), "issueTypes": issue_types(&state),
    }))
    .into_response()
}

async fn create_meta_types(AxState(state): AxState<Shared>, Path((v, project)): Path<(String, String)>) -> Response {
    if let Err(r) = version_of(&v) {
        return r;
    }
    if project != super::SEEDED_PROJECT && project != PROJECT_ID {
        return error(StatusCode::NOT_FOUND, &["No project could be found."], json!({}));
    }
    let types = issue_types(&state);
    Json(json!({"issueTypes": types, "values": types, "startAt": 0, "maxResults": 50, "total": ISSUE_TYPES.len(), "isLast": true}))
        .into_response()
}
