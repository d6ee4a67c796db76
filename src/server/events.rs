//! `POST /events/<source>`: entitlement changes pushed by a directory (Security Event Tokens,
//! RFC 8935) or an IGA tool (signed JSON). Everything is verified before anything is stored;
//! a SET refusal answers 400 with RFC 8935's `{"err", "description"}`, a bad transmitter token
//! 401 with `authentication_failed`, and a SET that cannot be checked now (the issuer's keys
//! unreachable) 503, so the transmitter sends it again. An accepted delivery is stored durably,
//! then answered 202.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::provisioning::set::{SetError, SetVerifier, UNAVAILABLE};
use crate::provisioning::{intake, Source};
use deskbridge_connector::webhook::WebhookVerifier;

/// A response and the result it is counted under.
type Answer = (Response, String);

fn refuse(e: &SetError) -> Answer {
    let status = match e.code {
        "authentication_failed" => StatusCode::UNAUTHORIZED,
        UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = (status, Json(json!({"err": e.code, "description": e.description}))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("30"));
    }
    (response, e.code.to_owned())
}

fn plain(status: StatusCode, body: serde_json::Value, result: &str) -> Answer {
    ((status, Json(body)).into_response(), result.to_owned())
}

fn store_failed(source: &str, e: &anyhow::Error) -> Answer {
    tracing::error!(source = %source, error = %format!("{e:#}"), "storing an entitlement change failed");
    let mut answer = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"err": UNAVAILABLE, "description": "store unavailable; send again later"}),
        "store_unavailable",
    );
    answer
        .0
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("30"));
    answer
}

/// The route.
pub(super) async fn events(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(prov) = state.pipeline.provisioning().cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "provisioning evidence is not configured"})),
        )
            .into_response();
    };
    let (response, result) = match prov.source_by_id(&id) {
        // An unknown id is not counted: the label set stays the configured sources.
        None => return (StatusCode::NOT_FOUND, Json(json!({"error": "no such event source"}))).into_response(),
        Some(Source::Set { verifier, token_sha256 }) => set(&state, &id, verifier, token_sha256.as_ref(), &headers, &body).await,
        Some(Source::Webhook(verifier)) => webhook(&state, &id, verifier, &headers, &body).await,
    };
    crate::metrics::global().access_delivery(&id, &result);
    response
}

async fn set(state: &AppState, id: &str, verifier: &SetVerifier, token: Option<&[u8; 32]>, headers: &HeaderMap, body: &[u8]) -> Answer {
    if let Some(expected) = token {
        use sha2::Digest as _;
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(sha2::Sha256::digest(t.trim().as_bytes())));
        if !presented.is_some_and(|p| super::auth::digest_eq(&p, expected)) {
            tracing::warn!(source = %id, "SET delivery refused: transmitter token missing or wrong");
            return refuse(&SetError::new(
                "authentication_failed",
                "the transmitter's bearer token is missing or wrong",
            ));
        }
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.to_ascii_lowercase().starts_with("application/secevent+jwt") {
        return refuse(&SetError::new("invalid_request", "Content-Type must be application/secevent+jwt"));
    }
    let token = String::from_utf8_lossy(body);
    let verified = match verifier.verify(&token).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(source = %id, err = e.code, reason = %e.description, "SET refused; nothing stored");
            return refuse(&e);
        }
    };
    let changes = match intake::set_changes(&verified) {
        Ok(c) => c,
        Err(e) => return refuse(&e),
    };
    let evidence = json!({
        "via": "set", "iss": verified.iss, "jti": verified.jti, "txn": verified.txn, "iat": verified.iat,
        "set_sha256": crate::store::sha256_hex(token.trim().as_bytes()),
        "events": verified.claims["events"].as_object().map(|e| e.keys().cloned().collect::<Vec<_>>()),
        "sub_id": verified.claims["sub_id"],
    });
    let delivery = format!("{}|{}", verified.iss, verified.jti);
    let replay = || {
        tracing::info!(source = %id, jti = %verified.jti, "SET replayed; nothing stored");
        let (response, _) = refuse(&SetError::new(
            "invalid_request",
            format!(
                "jti {:?} from this issuer was already received; a replay is not stored again",
                verified.jti
            ),
        ));
        (response, "duplicate".to_owned())
    };
    let accepted = || (StatusCode::ACCEPTED.into_response(), "accepted".to_owned());
    store(state, id, &delivery, &changes, evidence, accepted, replay).await
}

/// Stores a verified delivery durably (then wakes the worker), or answers as a replay.
async fn store(
    state: &AppState,
    id: &str,
    delivery: &str,
    changes: &[crate::store::lifecycle::NewAccessEvent],
    evidence: serde_json::Value,
    accepted: impl FnOnce() -> Answer,
    replay: impl FnOnce() -> Answer,
) -> Answer {
    match state.pipeline.store().record_access_delivery(id, delivery, changes, evidence).await {
        Ok(Some(_)) => {
            state.wake.notify_one();
            accepted()
        }
        Ok(None) => replay(),
        Err(e) => store_failed(id, &e),
    }
}

async fn webhook(state: &AppState, id: &str, verifier: &WebhookVerifier, headers: &HeaderMap, body: &[u8]) -> Answer {
    if body.len() > verifier.max_body_bytes {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, json!({"error": "body too large"}), "too_large");
    }
    if let Err(why) = verifier.verify(headers, body) {
        tracing::warn!(source = %id, reason = %why, "provisioning webhook refused");
        return plain(
            StatusCode::UNAUTHORIZED,
            json!({"error": "signature missing or invalid"}),
            "refused",
        );
    }
    let catalog = state.pipeline.enricher().map(|e| e.catalog.get());
    let (delivery, changes) = match intake::webhook_changes(body, catalog.as_deref()) {
        Ok(parsed) => parsed,
        Err(why) => return plain(StatusCode::BAD_REQUEST, json!({"error": why}), "invalid"),
    };
    let evidence = json!({"via": "webhook", "id": delivery, "body_sha256": crate::store::sha256_hex(body)});
    let accepted = || plain(StatusCode::ACCEPTED, json!({"status": "accepted"}), "accepted");
    let replay = || plain(StatusCode::OK, json!({"status": "duplicate delivery ignored"}), "duplicate");
    store(state, id, &delivery, &changes, evidence, accepted, replay).await
}
