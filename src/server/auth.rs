//! Bearer tokens of the admin API: the config keeps each token's SHA-256 with its holder's name
//! and role. A presented token is hashed and compared with every entry in constant time; the
//! token itself is never stored or logged.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::{ApiToken, Role};

/// The configured tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], String, Role)>,
}

impl Tokens {
    /// From `[[server.tokens]]` (already validated: 64 hex characters each).
    pub fn new(tokens: &[ApiToken]) -> Self {
        let entries = tokens
            .iter()
            .filter_map(|t| {
                let bytes: [u8; 32] = hex::decode(&t.sha256).ok()?.try_into().ok()?;
                Some((bytes, t.name.clone(), t.role))
            })
            .collect();
        Self { entries }
    }

    /// Who holds `token`, if anyone. Every entry is compared, each in constant time.
    pub fn identify(&self, token: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, name, role) in &self.entries {
            if digest_eq(hash, &digest) {
                found = Some(Caller {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }

    /// Whether any token is configured.
    pub fn any(&self) -> bool {
        !self.entries.is_empty()
    }
}

/// A new token and its config entry: 32 random bytes, URL-safe base64, prefixed `dbt_` so a
/// secret scanner can spot one.
pub fn new_token(name: &str, role: Role) -> (String, String) {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    let token = format!("dbt_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let role = match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
    };
    let entry = format!(
        "[[server.tokens]]\nname = {}\nrole = \"{role}\"\nsha256 = \"{hash}\"\n",
        toml_string(name)
    );
    (token, entry)
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Who called, from a valid bearer token.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Caller {
    /// The token's holder, as configured.
    pub name: String,
    /// What the token may do.
    pub role: Role,
}

impl Caller {
    /// The caller as the audit log names it.
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }
}

/// Why a request was refused.
pub enum Refused {
    /// No token, or one no entry matches.
    Unauthenticated,
    /// A valid token whose role may not do this.
    Forbidden(Role),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"deskbridge\"")],
                axum::Json(serde_json::json!({"error": "a valid bearer token is required"})),
            )
                .into_response(),
            Self::Forbidden(role) => (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({"error": format!("this needs the {} role", role_name(role))})),
            )
                .into_response(),
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
    }
}

/// Anything that keeps the tokens.
pub trait HasTokens {
    /// The configured tokens.
    fn tokens(&self) -> &Tokens;
}

fn caller<S: HasTokens>(parts: &Parts, state: &S) -> Result<Caller, Refused> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(Refused::Unauthenticated)?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(Refused::Unauthenticated)?;
    state.tokens().identify(token.trim()).ok_or(Refused::Unauthenticated)
}

/// A caller with at least the viewer role.
pub struct Viewer(pub Caller);

/// A caller with the operator role.
pub struct Operator(pub Caller);

impl<S: HasTokens + Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        caller(parts, state).map(Viewer)
    }
}

impl<S: HasTokens + Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = caller(parts, state)?;
        if caller.role < Role::Operator {
            return Err(Refused::Forbidden(Role::Operator));
        }
        Ok(Operator(caller))
    }
}

/// Whether two SHA-256 digests are equal, compared in constant time.
pub(crate) fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_known_by_its_hash_only() {
        let (token, entry) = new_token("alice \"ops\"", Role::Operator);
        let parsed: toml::Table = toml::from_str(&entry).expect("entry is TOML");
        let t = &parsed["server"]["tokens"][0];
        assert_eq!(t["name"].as_str(), Some("alice \"ops\""));
        assert!(!entry.contains(&token));
        let tokens = Tokens::new(&[ApiToken {
            name: "alice".into(),
            role: Role::Operator,
            sha256: t["sha256"].as_str().expect("hash").into(),
        }]);
        assert_eq!(tokens.identify(&token).map(|c| c.role), Some(Role::Operator));
        assert!(tokens.identify("dbt_wrong").is_none());
        assert!(tokens.identify(t["sha256"].as_str().expect("hash")).is_none());
    }
}
