//! HTTP surface of the simulator.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::db::{journal_fields, Db, Display};
use super::query::{compare, Query};
use deskbridge_connector::simkit;

use super::{bump, lock, now_stamp, value_to_string, State};

type Shared = Arc<State>;

/// The authenticated user of a request.
#[derive(Clone)]
struct User {
    name: String,
    read_only: bool,
    unreadable: Vec<String>,
}

pub(super) fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/api/now/table/{table}", get(list).post(create))
        .route("/api/now/v2/table/{table}", get(list).post(create))
        .route("/api/now/table/{table}/{sys_id}", get(get_one).patch(update).put(update))
        .route("/api/now/v2/table/{table}/{sys_id}", get(get_one).patch(update).put(update))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        .route("/oauth_token.do", post(oauth_token))
        .layer(middleware::from_fn_with_state(state.kit.clone(), simkit::faults))
        .layer(middleware::from_fn_with_state(state.kit.clone(), simkit::record))
        .with_state(state)
}

/// ServiceNow's error envelope.
fn sn_error(status: StatusCode, message: &str, detail: Option<&str>) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "detail": detail}, "status": "failure"})),
    )
        .into_response()
}

/// ServiceNow's way of refusing: its error envelope, and its rate-limit headers
/// (`X-RateLimit-Reset` in epoch seconds).
pub(super) struct Flavor;

impl simkit::Flavor for Flavor {
    fn error(&self, status: StatusCode, message: &str) -> Response {
        sn_error(status, status.canonical_reason().unwrap_or("Error"), Some(message))
    }

    fn throttled(&self, retry_after: Option<u64>, reset_in: Option<u64>, _beta: Option<u64>) -> Response {
        let mut response = sn_error(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            Some("Rate limit exceeded for rule deskbridge-simulator"),
        );
        let headers = response.headers_mut();
        if let Some(secs) = retry_after {
            headers.insert("retry-after", HeaderValue::from(secs));
        }
        let reset = chrono::Utc::now().timestamp() + i64::try_from(reset_in.or(retry_after).unwrap_or(1)).unwrap_or(0);
        headers.insert("x-ratelimit-limit", HeaderValue::from(1000));
        headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
        headers.insert("x-ratelimit-rule", HeaderValue::from_static("0123456789abcdef0123456789abcdef"));
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
                let (name, password) = pair.split_once(':')?;
                state
                    .config
                    .users
                    .iter()
                    .find(|u| u.username == name && u.password == password)
                    .map(|u| User {
                        name: u.username.clone(),
                        read_only: u.read_only,
                        unreadable: u.unreadable.clone(),
                    })
            })
    } else if let Some(token) = header.strip_prefix("Bearer ") {
        let tokens = lock(&state.access_tokens);
        tokens
            .get(token.trim())
            .filter(|(_, expiry)| *expiry > Instant::now())
            .and_then(|(name, _)| {
                state.config.users.iter().find(|u| &u.username == name).map(|u| User {
                    name: name.clone(),
                    read_only: u.read_only,
                    unreadable: u.unreadable.clone(),
                })
            })
    } else {
        None
    };
    match user {
        Some(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None => sn_error(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            Some("Required to provide Auth information"),
        ),
    }
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn display_mode(query: &[(String, String)]) -> Display {
    match param(query, "sysparm_display_value") {
        Some("true") => Display::True,
        Some("all") => Display::All,
        _ => Display::False,
    }
}

fn query_pairs(request_query: Option<&str>) -> Vec<(String, String)> {
    request_query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn fields_param(query: &[(String, String)]) -> Option<Vec<String>> {
    param(query, "sysparm_fields")
        .filter(|f| !f.trim().is_empty())
        .map(|f| f.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

fn invalid_table(table: &str) -> Response {
    sn_error(StatusCode::BAD_REQUEST, &format!("Invalid table {table}"), None)
}

async fn list(
    AxState(state): AxState<Shared>,
    Extension(user): Extension<User>,
    Path(table): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    if user.unreadable.contains(&table) {
        return acl_denied("Read");
    }
    let query = query_pairs(uri.query());
    let mut db = lock(&state.db);
    if let Some(t) = db.tables.get_mut(&table) {
        t.refresh();
    }
    let db = db;
    let Some(rows) = db.table(&table) else {
        return invalid_table(&table);
    };
    let parsed = match Query::parse(param(&query, "sysparm_query").unwrap_or_default()) {
        Ok(q) => q,
        // An unparseable term: like an instance with invalid queries returning no rows.
        Err(_) => Query {
            alternatives: vec![vec![vec![]]],
            order: vec![],
        },
    };
    let valid = parsed.fields().all(|f| db.field_exists(&table, f))
        && param(&query, "sysparm_query").map(|q| Query::parse(q).is_ok()).unwrap_or(true);
    let limit = param(&query, "sysparm_limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(10_000);
    let offset = param(&query, "sysparm_offset").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let no_count = param(&query, "sysparm_no_count") == Some("true");
    // A poll without a count reads the rows in the `(sys_updated_on, sys_id)` index from its
    // cursor on and stops one row past the page: a page costs its own size, not the table's.
    let by_update = if valid && no_count { parsed.update_range() } else { None };
    let end = offset.saturating_add(limit);
    let (matched, extent) = if let Some((from, through)) = &by_update {
        let page: Vec<&super::Record> = rows
            .updated_from(from, through.as_deref())
            .filter(|r| parsed.matches(&|f| db.raw(&table, r, f)))
            .take(end.saturating_add(1))
            .collect();
        let more = page.len() > end;
        (page, Extent::Uncounted { more })
    } else {
        let mut matched: Vec<&super::Record> = if valid {
            // An indexed field narrows the rows read; every candidate still meets the whole query.
            let candidates = parsed
                .lookup()
                .and_then(|(field, values)| rows.rows_where(field, values.into_iter()));
            match candidates {
                Some(candidates) => candidates
                    .into_iter()
                    .filter(|r| parsed.matches(&|f| db.raw(&table, r, f)))
                    .collect(),
                None => rows.rows.iter().filter(|r| parsed.matches(&|f| db.raw(&table, r, f))).collect(),
            }
        } else {
            Vec::new()
        };
        let total = matched.len();
        if !parsed.order.is_empty() {
            // Each row's sort key is resolved once; only the rows up to the page's end are put
            // in order (a page of a large table does not sort the whole table).
            let mut keyed: Vec<(Vec<String>, usize, &super::Record)> = matched
                .into_iter()
                .enumerate()
                .map(|(at, r)| (parsed.order.iter().map(|(field, _)| db.raw(&table, r, field)).collect(), at, r))
                .collect();
            // Rows that compare equal keep table order, as a stable sort keeps them.
            let order = |a: &(Vec<String>, usize, &super::Record), b: &(Vec<String>, usize, &super::Record)| {
                for ((x, y), (_, desc)) in a.0.iter().zip(&b.0).zip(&parsed.order) {
                    let ord = compare(x, y);
                    let ord = if *desc { ord.reverse() } else { ord };
                    if ord.is_ne() {
                        return ord;
                    }
                }
                a.1.cmp(&b.1)
            };
            if end < keyed.len() {
                keyed.select_nth_unstable_by(end, order);
                keyed.truncate(end);
            }
            keyed.sort_unstable_by(order);
            matched = keyed.into_iter().map(|(_, _, r)| r).collect();
        }
        let extent = if no_count {
            Extent::Uncounted { more: total > end }
        } else {
            Extent::Counted(total)
        };
        (matched, extent)
    };
    let fields = fields_param(&query);
    let exclude = param(&query, "sysparm_exclude_reference_link") == Some("true");
    let display = display_mode(&query);
    let result: Vec<Value> = matched
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|r| Value::Object(db.render(&table, r, fields.as_deref(), display, exclude, &state.base_url)))
        .collect();
    let mut headers = HeaderMap::new();
    if let Extent::Counted(total) = extent {
        headers.insert("x-total-count", HeaderValue::from(total));
    }
    if let Some(link) = link_header(&state.base_url, &table, &query, extent, limit, offset) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.insert("link", v);
        }
    }
    (StatusCode::OK, headers, Json(json!({ "result": result }))).into_response()
}

/// How much a list matched: counted, or (with `sysparm_no_count`) only whether rows follow
/// the page.
#[derive(Clone, Copy)]
enum Extent {
    Counted(usize),
    Uncounted { more: bool },
}

/// `Link: <…>;rel="first",<…>;rel="prev",<…>;rel="next",<…>;rel="last"`, omitted for one page.
/// Without a count there is no `last`, and `next` only when rows follow the page.
fn link_header(base: &str, table: &str, query: &[(String, String)], extent: Extent, limit: usize, offset: usize) -> Option<String> {
    let (more, last) = match extent {
        Extent::Counted(total) => {
            if limit == 0 || total <= limit {
                return None;
            }
            (offset + limit < total, Some((total - 1) / limit * limit))
        }
        Extent::Uncounted { more } => {
            if limit == 0 || (offset == 0 && !more) {
                return None;
            }
            (more, None)
        }
    };
    let url = |off: usize| {
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k != "sysparm_offset" && k != "sysparm_limit")
            .cloned()
            .collect();
        pairs.push(("sysparm_limit".into(), limit.to_string()));
        pairs.push(("sysparm_offset".into(), off.to_string()));
        let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        format!("<{base}/api/now/table/{table}?{encoded}>")
    };
    let mut links = vec![format!("{};rel=\"first\"", url(0))];
    if offset > 0 {
        links.push(format!("{};rel=\"prev\"", url(offset.saturating_sub(limit))));
    }
    if more {
        links.push(format!("{};rel=\"next\"", url(offset + limit)));
    }
    if let Some(last) = last {
        links.push(format!("{};rel=\"last\"", url(last)));
    }
    Some(links.join(","))
}

async fn get_one(AxState(state): AxState<Shared>, Path((table, sys_id)): Path<(String, String)>, uri: axum::http::Uri) -> Response {
    let query = query_pairs(uri.query());
    let mut db = lock(&state.db);
    if let Some(t) = db.tables.get_mut(&table) {
        t.refresh();
    }
    let db = db;
    let Some(rows) = db.table(&table) else {
        return invalid_table(&table);
    };
    match rows.get(&sys_id) {
        Some(record) => {
            let fields = fields_param(&query);
            let exclude = param(&query, "sysparm_exclude_reference_link") == Some("true");
            let rendered = db.render(&table, record, fields.as_deref(), display_mode(&query), exclude, &state.base_url);
            Json(json!({ "result": rendered })).into_response()
        }
        None => not_found(),
    }
}

fn not_found() -> Response {
    sn_error(
        StatusCode::NOT_FOUND,
        "No Record found",
        Some("Record doesn't exist or ACL restricts the record retrieval"),
    )
}

fn acl_denied(what: &str) -> Response {
    sn_error(
        StatusCode::FORBIDDEN,
        "Operation Failed",
        Some(&format!("ACL Exception {what} Failed due to security constraints")),
    )
}

fn body_object(body: &Bytes) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn invalid_payload() -> Response {
    sn_error(
        StatusCode::BAD_REQUEST,
        "Exception while reading request",
        Some("The payload is not valid JSON."),
    )
}

pub(crate) fn append_journal(db: &mut Db, state: &State, table: &str, sys_id: &str, element: &str, value: &str, user: &str) {
    let journal_id = state.new_id();
    let mut entry = super::Record::new();
    entry.insert("sys_id".into(), journal_id);
    entry.insert("element_id".into(), sys_id.into());
    entry.insert("name".into(), table.into());
    entry.insert("element".into(), element.into());
    entry.insert("value".into(), value.into());
    entry.insert("sys_created_on".into(), now_stamp());
    entry.insert("sys_created_by".into(), user.into());
    db.tables.entry("sys_journal_field".into()).or_default().insert(entry);
    if let Some(record) = db.tables.get_mut(table).and_then(|t| t.get_mut(sys_id)) {
        bump(record, user);
    }
}

async fn update(
    AxState(state): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((table, sys_id)): Path<(String, String)>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    if user.read_only {
        return acl_denied("Update");
    }
    let Some(fields) = body_object(&body) else {
        return invalid_payload();
    };
    let query = query_pairs(uri.query());
    let mut db = lock(&state.db);
    if db.table(&table).is_none() {
        return invalid_table(&table);
    }
    if db.table(&table).and_then(|t| t.get(&sys_id)).is_none() {
        return not_found();
    }
    let journals = journal_fields(&table);
    let mut changed = false;
    for (key, value) in &fields {
        let text = value_to_string(value);
        if journals.contains(&key.as_str()) {
            if !text.is_empty() {
                append_journal(&mut db, &state, &table, &sys_id, key, &text, &user.name);
            }
        } else if let Some(record) = db.tables.get_mut(&table).and_then(|t| t.get_mut(&sys_id)) {
            record.insert(key.clone(), text);
            changed = true;
        }
    }
    if changed {
        if let Some(record) = db.tables.get_mut(&table).and_then(|t| t.get_mut(&sys_id)) {
            bump(record, &user.name);
        }
    }
    let Some(record) = db.table(&table).and_then(|t| t.get(&sys_id)) else {
        return not_found();
    };
    let rendered = db.render(
        &table,
        record,
        fields_param(&query).as_deref(),
        display_mode(&query),
        false,
        &state.base_url,
    );
    Json(json!({ "result": rendered })).into_response()
}

async fn create(AxState(state): AxState<Shared>, Extension(user): Extension<User>, Path(table): Path<String>, body: Bytes) -> Response {
    if user.read_only {
        return acl_denied("Create");
    }
    let Some(fields) = body_object(&body) else {
        return invalid_payload();
    };
    let mut db = lock(&state.db);
    if db.table(&table).is_none() {
        return invalid_table(&table);
    }
    let sys_id = state.new_id();
    let now = now_stamp();
    let mut record = super::Record::new();
    let journals = journal_fields(&table);
    for (key, value) in &fields {
        if !journals.contains(&key.as_str()) {
            record.insert(key.clone(), value_to_string(value));
        }
    }
    for (k, v) in [
        ("sys_id", sys_id.clone()),
        ("sys_created_on", now.clone()),
        ("sys_updated_on", now),
        ("sys_mod_count", "0".into()),
        ("sys_created_by", user.name.clone()),
    ] {
        record.insert(k.into(), v);
    }
    db.tables.entry(table.clone()).or_default().insert(record);
    for (key, value) in &fields {
        if journals.contains(&key.as_str()) {
            append_journal(&mut db, &state, &table, &sys_id, key, &value_to_string(value), &user.name);
        }
    }
    let Some(record) = db.table(&table).and_then(|t| t.get(&sys_id)) else {
        return not_found();
    };
    let rendered = db.render(&table, record, None, Display::False, false, &state.base_url);
    (StatusCode::CREATED, Json(json!({ "result": rendered }))).into_response()
}

fn oauth_error(status: StatusCode, description: &str) -> Response {
    (status, Json(json!({"error_description": description, "error": "server_error"}))).into_response()
}

async fn oauth_token(AxState(state): AxState<Shared>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    if method != Method::POST {
        return oauth_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let form_encoded = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        // The token endpoint only reads form bodies; JSON yields an unhelpful error.
        return oauth_error(StatusCode::BAD_REQUEST, "access_denied");
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| param(&form, k).unwrap_or_default().to_owned();
    let client_ok = state
        .config
        .oauth_clients
        .iter()
        .any(|(id, secret)| *id == get("client_id") && *secret == get("client_secret"));
    if !client_ok {
        return oauth_error(StatusCode::UNAUTHORIZED, "access_denied");
    }
    let user = match get("grant_type").as_str() {
        "password" => state
            .config
            .users
            .iter()
            .find(|u| u.username == get("username") && u.password == get("password"))
            .map(|u| u.username.clone()),
        "refresh_token" => lock(&state.refresh_tokens).get(&get("refresh_token")).cloned(),
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    let Some(user) = user else {
        return oauth_error(StatusCode::UNAUTHORIZED, "access_denied");
    };
    let access = format!("sim-at-{}", state.new_id());
    let refresh = if get("grant_type") == "refresh_token" {
        get("refresh_token")
    } else {
        format!("sim-rt-{}", state.new_id())
    };
    lock(&state.access_tokens).insert(access.clone(), (user.clone(), Instant::now() + state.config.token_ttl));
    lock(&state.refresh_tokens).insert(refresh.clone(), user);
    Json(json!({
        "access_token": access,
        "refresh_token": refresh,
        "scope": "useraccount",
        "token_type": "Bearer",
        "expires_in": state.config.token_ttl.as_secs(),
    }))
    .into_response()
}
