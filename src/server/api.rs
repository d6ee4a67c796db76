//! The admin API: JSON under `/api`, every route behind a bearer token (viewer or operator),
//! described by an OpenAPI document generated from these handlers at `/api/openapi.json`.
//! Operator actions are written to the audit log with who asked.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::OpenApi;

use super::auth::{Caller, Operator, Viewer};
use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "deskbridge admin API",
        description = "Tickets, decisions, reports and parked work of one deskbridge deployment, and a side-effect-free mapping preview. Every route needs `Authorization: Bearer <token>`; operator actions need the operator role and are audited with the caller's name."
    ),
    paths(
        whoami,
        api_status,
        tickets,
        ticket,
        redecide,
        drift,
        access,
        shadow,
        parked,
        retry,
        mappings,
        super::preview::preview
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/whoami", get(whoami))
        .route("/status", get(api_status))
        .route("/tickets", get(tickets))
        .route("/tickets/{connector}/{key}", get(ticket))
        .route("/tickets/{connector}/{key}/redecide", post(redecide))
        .route("/reports/drift", get(drift))
        .route("/reports/access", get(access))
        .route("/reports/shadow", get(shadow))
        .route("/parked", get(parked))
        .route("/parked/retry", post(retry))
        .route("/mappings", get(mappings))
        .route("/preview", post(super::preview::preview))
}

/// An error answer: `{"error": "..."}`.
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl ApiError {
    pub(super) fn internal(e: &anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "admin API request failed");
        Self(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see deskbridge's log".into())
    }

    pub(super) fn not_found(what: String) -> Self {
        Self(StatusCode::NOT_FOUND, what)
    }

    pub(super) fn bad_request(what: String) -> Self {
        Self(StatusCode::BAD_REQUEST, what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error": self.1}))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(&e)
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// A JSON body whose rejection (not JSON, wrong content type, wrong shape) answers like every
/// other API error: `{"error": …}` with 400 or 415.
pub(super) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match Json::<Value>::from_request(request, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => StatusCode::BAD_REQUEST,
                };
                return Err(ApiError(status, rejection.body_text()));
            }
        };
        // serde would also read a struct from an array; the API takes objects only.
        if !value.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object".into()));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("the body does not match: {e}")))
    }
}

/// Query parameters whose rejection answers `{"error": …}` with 400.
pub(super) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|r| ApiError(StatusCode::BAD_REQUEST, r.body_text()))
    }
}

async fn openapi_json(_caller: Viewer) -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// Who the token belongs to and what it may do.
#[utoipa::path(get, path = "/api/whoami", responses((status = 200, body = Caller), (status = 401, description = "no valid token")))]
async fn whoami(Viewer(caller): Viewer) -> Json<Caller> {
    Json(caller)
}

/// Per-connector state, unfinished work, readiness and version.
#[utoipa::path(get, path = "/api/status", responses((status = 200, body = super::Status), (status = 401, description = "no valid token")))]
async fn api_status(State(state): State<AppState>, _caller: Viewer) -> ApiResult<super::Status> {
    Ok(Json(super::status_of(&state.pipeline).await?))
}

/// One ticket as the list shows it: its latest version's state and its latest decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketRow {
    /// Connector instance.
    pub connector: String,
    /// Ticket key (sys_id, issue id).
    pub key: String,
    /// Human-facing number.
    pub number: String,
    /// Link to the ticket in the ITSM.
    pub url: String,
    /// State of the latest version: decided, pending, unchanged, not_access, parked, ….
    pub state: String,
    /// The latest decision's outcome.
    pub outcome: Option<String>,
    /// The latest decision's id.
    pub decision_id: Option<String>,
    /// Who is asking (the request's requester).
    pub requester: Option<String>,
    /// Who would get access.
    pub beneficiary: Option<String>,
    /// Target system.
    pub system: Option<String>,
    /// Entitlement asked for.
    pub entitlement: Option<String>,
    /// When the latest version arrived.
    pub received_at: String,
    /// Failed decision attempts on it.
    pub attempts: i64,
}

fn ticket_row(t: &crate::store::TicketState) -> TicketRow {
    let (normalized, decision) = t.parsed();
    let request = &normalized["request"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    TicketRow {
        connector: t.connector.clone(),
        key: t.ticket_key.clone(),
        number: t.number.clone(),
        url: t.url.clone(),
        state: t.status.clone(),
        outcome: text(&decision["outcome"]),
        decision_id: text(&decision["decision_id"]),
        requester: text(&request["requester"]["id"]),
        beneficiary: text(&request["beneficiary"]["id"]),
        system: text(&request["target"]["system"]),
        entitlement: text(&request["entitlement"]["id"]),
        received_at: t.received_at.clone(),
        attempts: t.attempts,
    }
}

/// Which tickets to list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// Only tickets whose number, key or request contains this (any case).
    #[serde(default)]
    pub q: String,
    /// At most this many (default 500, at most 5,000).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// A page of tickets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketList {
    /// The tickets, by connector then number.
    pub tickets: Vec<TicketRow>,
    /// Where this page starts.
    pub offset: i64,
    /// Whether more tickets match after this page.
    pub more: bool,
}

/// Tickets deskbridge has read, with their state and latest outcome: a page, filtered in SQL.
#[utoipa::path(get, path = "/api/tickets", params(TicketQuery), responses((status = 200, body = TicketList), (status = 400, description = "a parameter that does not parse"), (status = 401, description = "no valid token")))]
async fn tickets(State(state): State<AppState>, _caller: Viewer, ApiQuery(query): ApiQuery<TicketQuery>) -> ApiResult<TicketList> {
    let limit = query.limit.unwrap_or(500).clamp(1, 5000);
    let offset = query.offset.unwrap_or(0).max(0);
    let mut states = state.pipeline.store().ticket_page(query.q.trim(), limit + 1, offset).await?;
    let more = states.len() as i64 > limit;
    states.truncate(limit as usize);
    Ok(Json(TicketList {
        tickets: states.iter().map(ticket_row).collect(),
        offset,
        more,
    }))
}

/// One step of a ticket's timeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// Position in the audit log.
    pub seq: i64,
    /// When.
    pub at: String,
    /// What happened (ticket_seen, normalized, decided, comment_posted, …).
    pub kind: String,
    /// One line saying what it was.
    pub summary: String,
    /// The record's hash (the audit chain links them).
    pub hash: String,
    /// The record's payload.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// One ticket: its latest stored version (raw, as the ITSM gave it) and its timeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketDetail {
    /// As in the list (absent when the ticket was never normalized).
    pub ticket: Option<TicketRow>,
    /// Connector instance.
    pub connector: String,
    /// Ticket key.
    pub key: String,
    /// Number.
    pub number: String,
    /// The latest stored version, as the connector read it (`{source, key, number, url, updated, version, raw}`).
    #[schema(value_type = Object)]
    pub stored: Value,
    /// Every audit record of the ticket, in order.
    pub timeline: Vec<TimelineEntry>,
}

/// A ticket's latest stored version and its audit timeline.
#[utoipa::path(
    get,
    path = "/api/tickets/{connector}/{key}",
    params(("connector" = String, Path, description = "connector instance"), ("key" = String, Path, description = "ticket key")),
    responses((status = 200, body = TicketDetail), (status = 404, description = "no such ticket"), (status = 401, description = "no valid token"))
)]
async fn ticket(State(state): State<AppState>, _caller: Viewer, Path((connector, key)): Path<(String, String)>) -> ApiResult<TicketDetail> {
    let store = state.pipeline.store();
    let Some(row) = store.latest_ticket(&connector, &key).await? else {
        return Err(ApiError::not_found(format!("no ticket {key:?} from connector {connector:?}")));
    };
    let ticket = row.ticket()?;
    let timeline = store
        .audit_for_ticket(&connector, &key)
        .await?
        .into_iter()
        .map(|r| {
            let payload: Value = serde_json::from_str(&r.payload).unwrap_or(Value::Null);
            TimelineEntry {
                summary: crate::audit::trace::summary(&r.kind, &payload),
                seq: r.seq,
                at: r.at,
                kind: r.kind,
                hash: r.hash,
                payload,
            }
        })
        .collect();
    let listed = store.ticket_state(&connector, &key).await?.as_ref().map(ticket_row);
    Ok(Json(TicketDetail {
        ticket: listed,
        number: row.number.clone(),
        connector,
        key,
        stored: serde_json::to_value(&ticket).map_err(anyhow::Error::from)?,
        timeline,
    }))
}

/// What a re-decide did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redecided {
    /// New versions of the ticket read from the ITSM now (each is decided if its ask changed).
    pub new_versions: usize,
    /// Requests waiting for a decision retry that were made due at once.
    pub pending_made_due: u64,
    /// What happens next, in words.
    pub detail: String,
}

/// Operator: read the ticket from the ITSM again now and decide what is due at once. A changed
/// ask gets a new decision and comment; a request waiting for a decision retry is retried now;
/// an ask already decided keeps its decision (one decision, one comment per ask). Audited.
#[utoipa::path(
    post,
    path = "/api/tickets/{connector}/{key}/redecide",
    params(("connector" = String, Path, description = "connector instance"), ("key" = String, Path, description = "ticket key")),
    responses((status = 200, body = Redecided), (status = 401, description = "no valid token"), (status = 403, description = "needs the operator role"), (status = 404, description = "no such ticket"), (status = 503, description = "the ITSM could not be read"))
)]
async fn redecide(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path((connector, key)): Path<(String, String)>,
) -> ApiResult<Redecided> {
    let pipeline = &state.pipeline;
    let Some(instance) = pipeline.instance(&connector) else {
        return Err(ApiError::not_found(format!("no connector {connector:?}")));
    };
    if pipeline.store().latest_ticket(&connector, &key).await?.is_none() {
        return Err(ApiError::not_found(format!("no ticket {key:?} from connector {connector:?}")));
    }
    let fetched = instance.connector.fetch(&key).await.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not read the ticket from the ITSM: {e}"),
        )
    })?;
    let new_versions = match fetched {
        Some(t) => pipeline
            .store()
            .ingest_webhook(&connector, None, std::slice::from_ref(&t), instance.connector.volatile_fields())
            .await?
            .unwrap_or(0),
        None => 0,
    };
    let due = pipeline
        .store()
        .redecide_now(&connector, &key, &caller.actor(), new_versions)
        .await?;
    tracing::info!(connector = %connector, ticket = %key, actor = %caller.actor(), new_versions, pending_made_due = due, "re-decide requested");
    state.wake.notify_one();
    let detail = match (new_versions, due) {
        (0, 0) => "the ticket has not changed and nothing was waiting: its decision stands".to_owned(),
        (n, 0) => format!("{n} new version(s) read; decided within moments"),
        (_, d) => format!("{d} pending request(s) decided within moments"),
    };
    Ok(Json(Redecided {
        new_versions,
        pending_made_due: due,
        detail,
    }))
}

/// A bar of a chart: a label and a count.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Bar {
    /// What the bar counts.
    pub label: String,
    /// How many.
    pub count: usize,
}

/// The drift report with the figures the console charts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DriftReport {
    /// Every finding, by kind then ticket.
    pub findings: Vec<crate::report::drift::Finding>,
    /// Findings per kind (every kind, zeros included).
    pub by_kind: Vec<Bar>,
    /// Requests for an entitlement the same beneficiary asked for before, per target system.
    pub repeated_by_system: Vec<Bar>,
    /// Requests still waiting for a decision, by how long they have waited.
    pub pending_age: Vec<Bar>,
}

/// The drift report: where the service desk and the policy disagree.
#[utoipa::path(get, path = "/api/reports/drift", responses((status = 200, body = DriftReport), (status = 401, description = "no valid token")))]
async fn drift(State(state): State<AppState>, _caller: Viewer) -> ApiResult<DriftReport> {
    // The states are charted as they stream past the report, not read into memory first: at
    // 100,000 tickets they are about 300 MB.
    let mut charts = Charts::new(chrono::Utc::now());
    let findings = crate::report::drift::drift_each(state.pipeline.store(), &Default::default(), |t| charts.add(&ticket_row(t))).await?;
    crate::metrics::global().findings(&findings);
    let by_kind = crate::report::drift::KINDS
        .iter()
        .map(|k| Bar {
            label: (*k).into(),
            count: findings.iter().filter(|f| f.kind == *k).count(),
        })
        .collect();
    let (repeated_by_system, pending_age) = charts.bars();
    Ok(Json(DriftReport {
        findings,
        by_kind,
        repeated_by_system,
        pending_age,
    }))
}

/// How long requests have waited for a decision, the console's buckets.
const PENDING_AGE: [(&str, i64); 5] = [
    ("under 1 h", 3600),
    ("1–4 h", 4 * 3600),
    ("4–24 h", 24 * 3600),
    ("1–3 days", 72 * 3600),
    ("over 3 days", i64::MAX),
];

/// The drift report's charts, counted ticket by ticket.
struct Charts {
    now: chrono::DateTime<chrono::Utc>,
    /// Requests per (target system, beneficiary, entitlement).
    asks: std::collections::BTreeMap<(String, String, String), usize>,
    /// Requests waiting, per [`PENDING_AGE`] bucket.
    waiting: [usize; PENDING_AGE.len()],
}

impl Charts {
    fn new(now: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            now,
            asks: Default::default(),
            waiting: [0; PENDING_AGE.len()],
        }
    }

    fn add(&mut self, r: &TicketRow) {
        if let (Some(s), Some(b), Some(e)) = (&r.system, &r.beneficiary, &r.entitlement) {
            *self.asks.entry((s.clone(), b.clone(), e.clone())).or_default() += 1;
        }
        if matches!(r.state.as_str(), "pending" | "received") {
            let age = chrono::DateTime::parse_from_rfc3339(&r.received_at)
                .map(|at| (self.now - at.with_timezone(&chrono::Utc)).num_seconds())
                .unwrap_or(0);
            if let Some(i) = PENDING_AGE.iter().position(|(_, limit)| age < *limit) {
                self.waiting[i] += 1;
            }
        }
    }

    /// Repeated requests per target system (the most first), and the waiting requests' ages.
    fn bars(self) -> (Vec<Bar>, Vec<Bar>) {
        let mut by_system: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for ((system, _, _), n) in self.asks {
            if n >= 2 {
                *by_system.entry(system).or_default() += n;
            }
        }
        let mut repeated: Vec<Bar> = by_system.into_iter().map(|(label, count)| Bar { label, count }).collect();
        repeated.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
        let ages = PENDING_AGE
            .iter()
            .zip(self.waiting)
            .map(|((label, _), count)| Bar {
                label: (*label).into(),
                count,
            })
            .collect();
        (repeated, ages)
    }
}

/// Shadow agreement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShadowReport {
    /// Requests the shadow decision point also decided.
    pub compared: usize,
    /// Of those, how many it agreed on.
    pub agreed: usize,
    /// Every comparison, newest first.
    pub rows: Vec<crate::store::ShadowRow>,
}

/// `GET /api/reports/access` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessQuery {
    /// Every lifecycle (approved and waiting, revoked, superseded, extended), not only access
    /// held now.
    #[serde(default)]
    pub all: bool,
}

/// Access granted through deskbridge's decisions: who holds which entitlement, since when
/// (the grant's evidence), until when, under which decision.
#[utoipa::path(get, path = "/api/reports/access", params(AccessQuery), responses((status = 200, body = Vec<crate::store::lifecycle::LifecycleRow>), (status = 400, description = "a parameter that does not parse"), (status = 401, description = "no valid token")))]
async fn access(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiQuery(query): ApiQuery<AccessQuery>,
) -> ApiResult<Vec<crate::store::lifecycle::LifecycleRow>> {
    Ok(Json(crate::report::access::access(state.pipeline.store(), query.all).await?))
}

/// How often the shadow decision point agrees with the primary.
#[utoipa::path(get, path = "/api/reports/shadow", responses((status = 200, body = ShadowReport), (status = 401, description = "no valid token")))]
async fn shadow(State(state): State<AppState>, _caller: Viewer) -> ApiResult<ShadowReport> {
    let rows = state.pipeline.store().shadow_results().await?;
    Ok(Json(ShadowReport {
        compared: rows.len(),
        agreed: rows.iter().filter(|r| r.agree).count(),
        rows,
    }))
}

/// Parked work and halted connectors.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedReport {
    /// Ticket versions and comments waiting for a retry.
    pub parked: Vec<crate::store::Parked>,
    /// Connectors that post nothing until an operator retries them.
    pub halts: Vec<crate::store::Halt>,
}

/// Parked work and halted connectors.
#[utoipa::path(get, path = "/api/parked", responses((status = 200, body = ParkedReport), (status = 401, description = "no valid token")))]
async fn parked(State(state): State<AppState>, _caller: Viewer) -> ApiResult<ParkedReport> {
    let store = state.pipeline.store();
    Ok(Json(ParkedReport {
        parked: store.parked().await?,
        halts: store.halts().await?,
    }))
}

/// Which parked work to retry; both absent means all of it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Only this connector's work (also lifts its halt).
    #[serde(default)]
    pub connector: Option<String>,
    /// Only this ticket's (number or key).
    #[serde(default)]
    pub ticket: Option<String>,
}

/// Operator: put parked work back to work. Audited with the caller's name.
#[utoipa::path(
    post,
    path = "/api/parked/retry",
    request_body = RetryRequest,
    responses((status = 200, body = crate::store::Retried), (status = 400, description = "a body that is not this JSON"), (status = 401, description = "no valid token"), (status = 403, description = "needs the operator role"), (status = 415, description = "the body is not application/json"))
)]
async fn retry(
    State(state): State<AppState>,
    Operator(caller): Operator,
    ApiJson(request): ApiJson<RetryRequest>,
) -> ApiResult<crate::store::Retried> {
    let retried = state
        .pipeline
        .store()
        .retry_parked(request.connector.as_deref(), request.ticket.as_deref(), &caller.actor())
        .await?;
    tracing::info!(actor = %caller.actor(), comments = retried.comments, tickets = retried.tickets, halts = retried.halts, "retry requested");
    state.wake.notify_one();
    Ok(Json(retried))
}

/// A connector instance's mapping.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MappingInfo {
    /// Connector instance.
    pub connector: String,
    /// Connector kind.
    pub kind: String,
    /// `[mapping] name`.
    pub name: String,
    /// `[mapping] version`.
    pub version: String,
    /// The mapping file's text.
    pub text: String,
}

/// Each connector instance's mapping, as loaded.
#[utoipa::path(get, path = "/api/mappings", responses((status = 200, body = [MappingInfo]), (status = 401, description = "no valid token")))]
async fn mappings(State(state): State<AppState>, _caller: Viewer) -> Json<Vec<MappingInfo>> {
    let pipeline = &state.pipeline;
    Json(
        pipeline
            .connector_ids()
            .iter()
            .filter_map(|id| pipeline.instance(id))
            .map(|i| MappingInfo {
                connector: i.connector.id().to_owned(),
                kind: i.connector.kind().to_owned(),
                name: i.mapping.name.clone(),
                version: i.mapping.version.clone(),
                text: i.mapping.text.clone(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, beneficiary: &str, state: &str, received_at: &str) -> TicketRow {
        TicketRow {
            connector: "c".into(),
            key: "k".into(),
            number: "n".into(),
            url: String::new(),
            state: state.into(),
            outcome: None,
            decision_id: None,
            requester: None,
            beneficiary: Some(beneficiary.into()),
            system: Some(system.into()),
            entitlement: Some("e".into()),
            received_at: received_at.into(),
            attempts: 0,
        }
    }

    #[test]
    fn charts_count_repeats_per_system_and_pending_by_age() {
        let rows = vec![
            row("sap", "ann", "decided", "2026-01-01T00:00:00Z"),
            row("sap", "ann", "decided", "2026-01-01T00:00:00Z"),
            row("sap", "bob", "pending", "2026-01-01T10:00:00Z"),
            row("git", "ann", "received", "2026-01-01T11:30:00Z"),
        ];
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let mut charts = Charts::new(now);
        for r in &rows {
            charts.add(r);
        }
        let (repeated, ages) = charts.bars();
        assert_eq!(repeated.len(), 1);
        assert_eq!((repeated[0].label.as_str(), repeated[0].count), ("sap", 2));
        let ages: Vec<usize> = ages.iter().map(|b| b.count).collect();
        assert_eq!(ages, vec![1, 1, 0, 0, 0]);
    }

    #[test]
    fn the_document_names_every_route_and_the_bearer_scheme() {
        let doc = serde_json::to_value(openapi()).expect("json");
        for path in [
            "/api/tickets",
            "/api/tickets/{connector}/{key}",
            "/api/tickets/{connector}/{key}/redecide",
            "/api/parked/retry",
            "/api/preview",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
