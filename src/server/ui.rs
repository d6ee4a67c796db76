//! The web console at `/ui`: one HTML page, one script and one stylesheet, compiled into the
//! binary (no separate build chain). The page holds no data until the user gives a token; the
//! script renders everything with `textContent` (never as markup), and a strict Content
//! Security Policy forbids inline scripts, so ticket text cannot run in the page.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route("/ui/", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route("/ui/app.js", get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui/app.css", get(|| async { page("text/css; charset=utf-8", STYLE) }))
}
