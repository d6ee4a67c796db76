//! `POST /events/<source>`: entitlement changes pushed by a directory (Security Event Tokens,
//! RFC 8935) or an IGA tool (signed JSON). Everything is verified before anything is stored;
//! a SET refusal answers 400 with RFC 8935's `{"err", "description"}`, a bad transmitter token
//! 401 with `authentication_failed`. An accepted delivery is stored durably, then answered 202.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::provisioning::set::SetError;
use crate::provisioning::{intake, Source};

fn refuse(status: StatusCode, e: &SetError) -> Response {
    (status, Json(json!({"err": e.code, "description": e.description}))).into_response()
}

fn stored_failed(source: &str, e: &anyhow::Error) -> Response {
    tracing::error!(source = %source, error = %format!("{e:#}"), "storing an entitlement change failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "store unavailable; send again later"})),
    )
        .into_response()
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
    let response = match prov.source_by_id(&id) {
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such event source"}))).into_response(),
        Some(Source::Set { verifier, token_sha256 }) => {
            if let Some(expected) = token_sha256 {
                use sha2::Digest as _;
                let presented = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| <[u8; 32]>::from(sha2::Sha256::digest(t.trim().as_bytes())));
                if !presented.is_some_and(|p| super::auth::digest_eq(&p, expected)) {
                    tracing::warn!(source = %id, "SET delivery refused: transmitter token missing or wrong");
                    let e = SetError::new("authentication_failed", "the transmitter's bearer token is missing or wrong");
                    return refuse(StatusCode::UNAUTHORIZED, &e);
                }
            }
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !content_type.to_ascii_lowercase().starts_with("application/secevent+jwt") {
                let e = SetError::new("invalid_request", "Content-Type must be application/secevent+jwt");
                return refuse(StatusCode::BAD_REQUEST, &e);
            }
            let token = String::from_utf8_lossy(&body);
            let verified = match verifier.verify(&token).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(source = %id, err = e.code, reason = %e.description, "SET refused; nothing stored");
                    return refuse(StatusCode::BAD_REQUEST, &e);
                }
            };
            let changes = match intake::set_changes(&verified) {
                Ok(c) => c,
                Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
            };
            let evidence = json!({
                "via": "set", "iss": verified.iss, "jti": verified.jti, "txn": verified.txn, "iat": verified.iat,
                "set_sha256": crate::store::sha256_hex(token.trim().as_bytes()),
                "events": verified.claims["events"].as_object().map(|e| e.keys().cloned().collect::<Vec<_>>()),
                "sub_id": verified.claims["sub_id"],
            });
            let delivery = format!("{}|{}", verified.iss, verified.jti);
            match state
                .pipeline
                .store()
                .record_access_delivery(&id, &delivery, &changes, evidence)
                .await
            {
                Ok(Some(_)) => {
                    state.wake.notify_one();
                    StatusCode::ACCEPTED.into_response()
                }
                Ok(None) => {
                    tracing::info!(source = %id, jti = %verified.jti, "SET replayed; nothing stored");
                    let e = SetError::new(
                        "invalid_request",
                        format!(
                            "jti {:?} from this issuer was already received; a replay is not stored again",
                            verified.jti
                        ),
                    );
                    refuse(StatusCode::BAD_REQUEST, &e)
                }
                Err(e) => stored_failed(&id, &e),
            }
        }
        Some(Source::Webhook(verifier)) => {
            if body.len() > verifier.max_body_bytes {
                return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"error": "body too large"}))).into_response();
            }
            if let Err(why) = verifier.verify(&headers, &body) {
                tracing::warn!(source = %id, reason = %why, "provisioning webhook refused");
                return (StatusCode::UNAUTHORIZED, Json(json!({"error": "signature missing or invalid"}))).into_response();
            }
            let catalog = state.pipeline.enricher().map(|e| e.catalog.get());
            let (delivery, changes) = match intake::webhook_changes(&body, catalog.as_deref()) {
                Ok(parsed) => parsed,
                Err(why) => return (StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response(),
            };
            let evidence = json!({"via": "webhook", "id": delivery, "body_sha256": crate::store::sha256_hex(&body)});
            match state
                .pipeline
                .store()
                .record_access_delivery(&id, &delivery, &changes, evidence)
                .await
            {
                Ok(Some(_)) => {
                    state.wake.notify_one();
                    (StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response()
                }
                Ok(None) => (StatusCode::OK, Json(json!({"status": "duplicate delivery ignored"}))).into_response(),
                Err(e) => stored_failed(&id, &e),
            }
        }
    };
    response
}
