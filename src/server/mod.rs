//! The HTTP side of `deskbridge serve`: liveness and readiness, `/status`, Prometheus
//! `/metrics`, webhooks, the authenticated admin API (`/api`, described at
//! `/api/openapi.json`) and the web console (`/ui`).
//!
//! Without a token only `/healthz`, `/readyz`, webhooks (verified by their own signatures) and,
//! when `server.metrics_public` is set, `/metrics` answer. The console and the API take the
//! token as an `Authorization: Bearer` header and never as a cookie, so another site cannot
//! make a browser act with it (no CSRF); operator actions are JSON POSTs, which a cross-site
//! form cannot send.

pub mod api;
pub mod auth;
mod events;
mod preview;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::pipeline::{ConnectorState, Pipeline};
use auth::{HasTokens, Tokens, Viewer};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pipeline: Arc<Pipeline>,
    wake: Arc<tokio::sync::Notify>,
    tokens: Arc<Tokens>,
    metrics_public: bool,
    liveness: Duration,
}

impl HasTokens for AppState {
    fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

/// How the server is set up.
pub struct Options {
    /// `[server] tokens`.
    pub tokens: Vec<crate::config::ApiToken>,
    /// `[server] metrics_public`.
    pub metrics_public: bool,
    /// `/healthz` fails when the work loop has not turned for this long.
    pub liveness: Duration,
}

impl Options {
    /// From the config: the loop is live while it turns within three poll intervals, twice the
    /// claim lease (a slow post renews it), or two minutes, whichever is longest.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let interval = config.pipeline.poll_interval_secs.saturating_mul(3);
        let lease = config.store.lease_secs.saturating_mul(2);
        Self {
            tokens: config.server.tokens.clone(),
            metrics_public: config.server.metrics_public,
            liveness: Duration::from_secs(interval.max(lease).max(120)),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            metrics_public: false,
            liveness: Duration::from_secs(120),
        }
    }
}

/// Every route of `serve`. `wake` is notified when a webhook delivery stored something, so
/// decisions follow within moments rather than at the next poll.
pub fn app(pipeline: Arc<Pipeline>, wake: Arc<tokio::sync::Notify>, options: Options) -> Router {
    let limit = pipeline.webhook_body_limit();
    let state = AppState {
        pipeline,
        wake,
        tokens: Arc::new(Tokens::new(&options.tokens)),
        metrics_public: options.metrics_public,
        liveness: options.liveness,
    };
    let hooks = Router::new()
        .route("/webhooks/{connector}", axum::routing::post(webhook))
        .route("/events/{source}", axum::routing::post(events::events))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .nest("/api", api::routes())
        .merge(ui::routes())
        .with_state(state)
        .merge(hooks)
}

/// Liveness: 200 while the work loop turns, 503 when it has been stuck past the window.
async fn healthz(State(state): State<AppState>) -> Response {
    let since = state.pipeline.since_heartbeat();
    if since <= state.liveness {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stuck: the work loop has not turned for {} s (limit {} s)\n",
                since.as_secs(),
                state.liveness.as_secs()
            ),
        )
            .into_response()
    }
}

/// One readiness check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// What was checked (`store`, `policy`, `catalog`, `connector snow`).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it found, or why it failed.
    pub detail: String,
}

/// `/readyz`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Every check passed.
    pub ready: bool,
    /// Each check.
    pub checks: Vec<Check>,
}

/// Every readiness check; `halts` are the store's halted connectors (read by the caller, which
/// may need them too).
async fn readiness(pipeline: &Pipeline, halts: &[crate::store::Halt]) -> Readiness {
    let mut checks = Vec::new();
    let store = pipeline.store().ping(Duration::from_secs(2)).await;
    checks.push(Check {
        name: "store".into(),
        ok: store.is_ok(),
        detail: match &store {
            Ok(()) => format!("{:?} answers", pipeline.store().backend()).to_lowercase(),
            Err(e) => format!("unreachable: {e:#}"),
        },
    });
    let failures = pipeline.last_failures();
    let pending = |(at, why): &(chrono::DateTime<chrono::Utc>, String)| {
        format!("failing since {}: {why}; requests stay pending until it answers", at.to_rfc3339())
    };
    checks.push(Check {
        name: "decision point".into(),
        ok: failures.decision.is_none(),
        detail: failures
            .decision
            .as_ref()
            .map_or_else(|| format!("{} loaded", pipeline.decision_point_name()), pending),
    });
    if let Some(enricher) = pipeline.enricher() {
        checks.push(Check {
            name: "catalog".into(),
            ok: true,
            detail: format!("{} loaded", enricher.catalog.get().label()),
        });
        if let Some(directory) = &enricher.directory {
            checks.push(Check {
                name: "directory".into(),
                ok: failures.facts.is_none(),
                detail: failures
                    .facts
                    .as_ref()
                    .map_or_else(|| format!("{} answering", directory.describe()), pending),
            });
        }
    }
    for (id, state) in pipeline.connector_states() {
        let halt = halts.iter().find(|h| h.connector == id);
        let (ok, detail) = connector_readiness(&state, halt);
        checks.push(Check {
            name: format!("connector {id}"),
            ok,
            detail,
        });
    }
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

fn connector_readiness(state: &ConnectorState, halt: Option<&crate::store::Halt>) -> (bool, String) {
    if let Some(halt) = halt {
        return (
            false,
            format!(
                "halted since {}: {} (fix it, then `deskbridge retry --connector`)",
                halt.at, halt.reason
            ),
        );
    }
    if let Some(error) = &state.last_error {
        return (false, format!("last poll failed: {error}"));
    }
    if state.polled_elsewhere {
        return (true, "polled by another replica".into());
    }
    match state.last_success {
        Some(at) => (true, format!("last poll ok at {}", at.to_rfc3339())),
        None => (false, "not polled yet".into()),
    }
}

/// Readiness: 200 when the store answers, the policy and catalog are loaded and every
/// connector's last poll succeeded; 503 with the reasons otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    // An unreachable store fails the store check; its halts then count as none.
    let halts = state.pipeline.store().halts().await.unwrap_or_default();
    let ready = readiness(&state.pipeline, &halts).await;
    let code = if ready.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(ready)).into_response()
}

/// `/status` and `/api/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// deskbridge's version.
    pub version: String,
    /// The decision point.
    pub decision_point: String,
    /// The catalog in use.
    pub catalog: Option<String>,
    /// The directory in use.
    pub directory: Option<String>,
    /// The last pass of this process (null before the first).
    #[schema(value_type = Option<Object>)]
    pub last_pass: serde_json::Value,
    /// Unfinished work (counted over the unfinished rows only).
    pub backlog: Option<crate::store::Backlog>,
    /// Each connector instance.
    pub connectors: Vec<ConnectorStatus>,
    /// Provisioning evidence, when configured.
    pub provisioning: Option<ProvisioningStatus>,
    /// Readiness, as `/readyz` says it.
    pub ready: bool,
}

/// Provisioning evidence on `/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProvisioningStatus {
    /// The event sources (`POST /events/<id>`).
    pub sources: Vec<String>,
    /// Entitlement changes stored and not processed yet.
    pub waiting: i64,
    /// Why processing waits, when this process's last pass stopped at a change the directory
    /// could not resolve (cleared by a pass that was not blocked).
    pub blocked: Option<String>,
}

/// One connector instance on `/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorStatus {
    /// Its id.
    pub id: String,
    /// Poll state.
    #[serde(flatten)]
    pub state: ConnectorState,
    /// Parked ticket versions and comments.
    pub parked: usize,
    /// Why it posts nothing, when halted.
    pub halted: Option<String>,
}

pub(crate) async fn status_of(pipeline: &Pipeline) -> anyhow::Result<Status> {
    let store = pipeline.store();
    let parked = store.parked().await?;
    let halts = store.halts().await?;
    let backlog = store.backlog().await?;
    let ready = readiness(pipeline, &halts).await.ready;
    let connectors = pipeline
        .connector_states()
        .into_iter()
        .map(|(id, state)| ConnectorStatus {
            parked: parked.iter().filter(|p| p.connector == id).count(),
            halted: halts.iter().find(|h| h.connector == id).map(|h| h.reason.clone()),
            id,
            state,
        })
        .collect();
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        decision_point: pipeline.decision_point_name().into(),
        catalog: pipeline.enricher().map(|e| e.catalog.get().label()),
        directory: pipeline.enricher().and_then(|e| e.directory.as_ref().map(|d| d.describe())),
        last_pass: pipeline.last_report().map_or(serde_json::Value::Null, |(at, r)| {
            serde_json::json!({
                "finished_at": at, "ingested": r.ingested, "decided": r.decided, "failed_decisions": r.failed_decisions,
                "held_back_by_open_circuit": r.held_back,
                "posted": r.posted, "failed_posts": r.failed_posts, "parked": r.parked, "connector_errors": r.connector_errors,
            })
        }),
        backlog: Some(backlog),
        connectors,
        provisioning: match pipeline.provisioning() {
            Some(prov) => Some(ProvisioningStatus {
                sources: prov.sources().into_iter().map(|(id, _)| id.to_owned()).collect(),
                waiting: store.access_events_waiting().await?,
                blocked: pipeline.provisioning_blocked(),
            }),
            None => None,
        },
        ready,
    })
}

async fn status(State(state): State<AppState>, _caller: Viewer) -> Result<Json<Status>, (StatusCode, &'static str)> {
    status_of(&state.pipeline).await.map(Json).map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "status query failed");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

/// Prometheus text format; needs a viewer token unless `server.metrics_public`.
async fn metrics(State(state): State<AppState>, caller: Result<Viewer, auth::Refused>) -> Response {
    if let (false, Err(refused)) = (state.metrics_public, caller) {
        return refused.into_response();
    }
    state.pipeline.refresh_lag();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::global().encode(),
    )
        .into_response()
}

/// One webhook delivery: verified on the raw body before anything is read or stored (401),
/// dropped if its delivery id was seen (200), then the tickets it names are read again from the
/// ITSM and stored with the delivery id in one transaction (202). A failure to read them is a
/// 503, so the ITSM retries; nothing is stored.
async fn webhook(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let (code, text, result) = take_delivery(&state, &id, &headers, &body).await;
    // An id that names no connector is not counted: the label set stays the configured ones.
    if result != UNKNOWN_CONNECTOR {
        crate::metrics::global().webhook(&id, result);
    }
    (code, text)
}

const UNKNOWN_CONNECTOR: &str = "unknown_connector";

async fn take_delivery(
    state: &AppState,
    id: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (StatusCode, &'static str, &'static str) {
    let Some(instance) = state.pipeline.instance(id) else {
        return (StatusCode::NOT_FOUND, "no such connector\n", UNKNOWN_CONNECTOR);
    };
    let connector = instance.connector.clone();
    let Some(verifier) = connector.webhook() else {
        return (
            StatusCode::NOT_FOUND,
            "webhooks are not configured for this connector\n",
            "not_configured",
        );
    };
    if body.len() > verifier.max_body_bytes {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n", "too_large");
    }
    if let Err(why) = verifier.verify(headers, body) {
        tracing::warn!(connector = %id, reason = %why, "webhook delivery refused");
        return (StatusCode::UNAUTHORIZED, "signature missing or invalid\n", "refused");
    }
    let event = match connector.webhook_event(headers, body) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(connector = %id, error = %e, "webhook delivery unreadable");
            return (StatusCode::BAD_REQUEST, "payload names no ticket\n", "unreadable");
        }
    };
    let store = state.pipeline.store();
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n", "store_unavailable");
    let duplicate = (StatusCode::OK, "duplicate delivery ignored\n", "duplicate");
    if let Some(delivery) = &event.delivery_id {
        match store.delivery_seen(id, delivery).await {
            Ok(true) => return duplicate,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(connector = %id, error = %format!("{e:#}"), "webhook dedup query failed");
                return unavailable;
            }
        }
    }
    let mut tickets = Vec::new();
    for key in &event.keys {
        match connector.fetch(key).await {
            Ok(Some(ticket)) => tickets.push(ticket),
            // Gone, or outside the projects/filter this connector reads.
            Ok(None) => tracing::info!(connector = %id, ticket = %key, "webhook names a ticket this connector does not read"),
            Err(e) => {
                tracing::warn!(connector = %id, ticket = %key, error = %e, "could not read the ticket a webhook named; the ITSM will retry");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "could not read the ticket; retry later\n",
                    "itsm_unavailable",
                );
            }
        }
    }
    match store
        .ingest_webhook(id, event.delivery_id.as_deref(), &tickets, connector.volatile_fields())
        .await
    {
        Ok(None) => duplicate,
        Ok(Some(inserted)) => {
            tracing::info!(connector = %id, tickets = tickets.len(), new_versions = inserted, "webhook delivery taken in");
            crate::metrics::global().tickets_read(id, inserted);
            if inserted > 0 {
                state.wake.notify_one();
                state.pipeline.versions_stored();
            }
            (StatusCode::ACCEPTED, "accepted\n", "accepted")
        }
        Err(e) => {
            tracing::error!(connector = %id, error = %format!("{e:#}"), "storing a webhook delivery failed");
            unavailable
        }
    }
}
