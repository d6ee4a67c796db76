//! Security Event Tokens (RFC 8417) pushed by a directory (RFC 8935), carrying SCIM events
//! (RFC 9967). Every check happens before anything is stored, in this order: the transmitter's
//! bearer token (when configured), the JOSE header (`typ`, an allowed `alg` — never `none` — and
//! a known `kid`), the signature, `iss`, `aud`, `iat` (not in the future, not older than the
//! source allows), then the claims (`jti`, non-empty `events`, no `sub`). A refusal carries the
//! RFC 8935 error code and a description that never quotes a key or a secret.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// An RFC 8935 §2.4 error: `err` and a description for the transmitter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct SetError {
    /// `invalid_request`, `invalid_key`, `invalid_issuer`, `invalid_audience`,
    /// `authentication_failed` or `access_denied`.
    pub code: &'static str,
    /// What was wrong.
    pub description: String,
}

impl SetError {
    pub(crate) fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

/// Not an RFC 8935 code: the SET could not be checked now (the issuer's keys could not be
/// read). Answered 503 so the transmitter sends it again, never 400, which would drop it.
pub const UNAVAILABLE: &str = "temporarily_unavailable";

fn invalid_request(d: impl Into<String>) -> SetError {
    SetError::new("invalid_request", d)
}

fn invalid_key(d: impl Into<String>) -> SetError {
    SetError::new("invalid_key", d)
}

/// Where a source's verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS given in the config (inline JSON or a file read at start-up).
    Fixed(JwkSet),
    /// A JWKS URL, fetched at first use and again (at most once a minute) for an unknown `kid`.
    Url(url::Url),
}

/// Verifies the SETs of one source.
pub struct SetVerifier {
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    keys: KeySource,
    max_age: Duration,
    http: reqwest::Client,
    fetched: Mutex<Option<(Instant, JwkSet)>>,
}

/// A verified SET's claims.
#[derive(Debug, Clone)]
pub struct VerifiedSet {
    /// `iss`.
    pub iss: String,
    /// `jti`.
    pub jti: String,
    /// `txn`, when present.
    pub txn: Option<String>,
    /// `iat` (seconds since the epoch).
    pub iat: i64,
    /// `toe`, when present.
    pub toe: Option<i64>,
    /// All claims.
    pub claims: Value,
}

/// The `alg` names deskbridge accepts in an allow-list. HMAC algorithms are left out: a
/// directory signs with its private key, and a shared secret would let the receiver forge.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    Ok(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "none" => return Err("`none` is never accepted: an unsigned SET proves nothing".into()),
        other if other.starts_with("HS") => {
            return Err(format!(
                "{other} is a shared-secret algorithm; SETs must be signed with the directory's private key"
            ))
        }
        other => {
            return Err(format!(
                "{other:?} is not a supported algorithm (RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
            ))
        }
    })
}

/// The JOSE header, read before anything is trusted.
fn header_of(token: &str) -> Result<Value, SetError> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(invalid_request(
            "the body is not a compact JWS (three base64url parts separated by dots)",
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| invalid_request("the JOSE header is not base64url"))?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| invalid_request("the JOSE header is not JSON"))?;
    if !header.is_object() {
        return Err(invalid_request("the JOSE header is not a JSON object"));
    }
    Ok(header)
}

impl SetVerifier {
    /// A verifier for SETs from `issuer` addressed to `audience`.
    pub fn new(issuer: String, audience: String, algorithms: Vec<Algorithm>, keys: KeySource, max_age: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Self {
            issuer,
            audience,
            algorithms,
            keys,
            max_age,
            http,
            fetched: Mutex::new(None),
        })
    }

    async fn key_set(&self, refresh: bool) -> Result<JwkSet, SetError> {
        let url = match &self.keys {
            KeySource::Fixed(set) => return Ok(set.clone()),
            KeySource::Url(url) => url,
        };
        if let Ok(cached) = self.fetched.lock() {
            if let Some((at, set)) = cached.as_ref() {
                if !refresh || at.elapsed() < Duration::from_secs(60) {
                    return Ok(set.clone());
                }
            }
        }
        let fetched = async {
            let response = self.http.get(url.clone()).send().await.map_err(|e| e.without_url().to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status().as_u16()));
            }
            response.json::<JwkSet>().await.map_err(|e| e.without_url().to_string())
        }
        .await
        .map_err(|e| {
            SetError::new(
                UNAVAILABLE,
                format!("the issuer's JWKS could not be read ({e}); send the SET again later"),
            )
        })?;
        if let Ok(mut cached) = self.fetched.lock() {
            *cached = Some((Instant::now(), fetched.clone()));
        }
        Ok(fetched)
    }

    /// Reads the issuer's keys now (for `config check`): how many there are, and their ids.
    pub async fn check_keys(&self) -> Result<String, String> {
        let set = self.key_set(true).await.map_err(|e| e.description)?;
        let kids: Vec<String> = set.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
        if set.keys.is_empty() {
            return Err("the issuer's key set is empty".into());
        }
        Ok(format!(
            "{} key(s) for issuer {} (kid {})",
            set.keys.len(),
            self.issuer,
            kids.join(", ")
        ))
    }

    /// Verifies `token` completely; nothing about it is trusted before this returns `Ok`.
    pub async fn verify(&self, token: &str) -> Result<VerifiedSet, SetError> {
        let token = token.trim();
        let header = header_of(token)?;
        match header["typ"].as_str() {
            Some(t) if t.eq_ignore_ascii_case("secevent+jwt") || t.eq_ignore_ascii_case("application/secevent+jwt") => {}
            Some(t) => {
                return Err(invalid_request(format!(
                    "typ {:?} is not secevent+jwt; other JWTs are not accepted here",
                    crate::text::cap(t, 40)
                )))
            }
            None => return Err(invalid_request("the JOSE header has no typ; a SET must say secevent+jwt")),
        }
        let alg_name = header["alg"].as_str().unwrap_or("none");
        let alg = parse_algorithm(alg_name).map_err(|why| invalid_key(format!("alg {}: {why}", crate::text::cap(alg_name, 20))))?;
        if !self.algorithms.contains(&alg) {
            return Err(invalid_key(format!("alg {alg_name} is not in this source's allow-list")));
        }
        let Some(kid) = header["kid"].as_str() else {
            return Err(invalid_key("the JOSE header has no kid"));
        };
        let mut set = self.key_set(false).await?;
        if set.find(kid).is_none() {
            set = self.key_set(true).await?;
        }
        let Some(jwk) = set.find(kid) else {
            return Err(invalid_key(format!(
                "kid {:?} is not among the issuer's keys",
                crate::text::cap(kid, 60)
            )));
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid_key(format!("the key {kid:?} cannot verify {alg_name}")))?;
        let mut validation = Validation::new(alg);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => invalid_key(format!("the signature does not verify with key {kid:?}")),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    invalid_key(format!("alg {alg_name} does not fit key {kid:?}"))
                }
                ErrorKind::InvalidKeyFormat | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
                    invalid_key(format!("the key {kid:?} is not usable"))
                }
                _ => invalid_request("the SET's claims are not a JSON object"),
            }
        })?;
        let claims = data.claims;
        let iss = claims["iss"].as_str().unwrap_or_default();
        if iss != self.issuer {
            return Err(SetError::new(
                "invalid_issuer",
                format!("iss {:?} is not the issuer this source accepts", crate::text::cap(iss, 100)),
            ));
        }
        let audience_ok = match &claims["aud"] {
            Value::String(a) => *a == self.audience,
            Value::Array(list) => list.iter().any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(SetError::new("invalid_audience", format!("aud does not include {}", self.audience)));
        }
        let Some(iat) = claims["iat"].as_i64() else {
            return Err(invalid_request("iat is missing or not a number"));
        };
        let now = chrono::Utc::now().timestamp();
        if iat > now + 300 {
            return Err(invalid_request("iat is more than 5 minutes in the future"));
        }
        if now - iat > self.max_age.as_secs() as i64 {
            return Err(invalid_request(format!(
                "iat is {} s old, more than this source accepts ({} s): an old SET replayed",
                now - iat,
                self.max_age.as_secs()
            )));
        }
        let jti = claims["jti"].as_str().filter(|j| !j.is_empty() && j.len() <= 200);
        let Some(jti) = jti else {
            return Err(invalid_request("jti is missing, empty or longer than 200 characters"));
        };
        if claims.get("sub").is_some() {
            return Err(invalid_request("a SCIM SET names its subject in sub_id, never sub"));
        }
        if claims["events"].as_object().is_none_or(|e| e.is_empty()) {
            return Err(invalid_request("events is missing or empty"));
        }
        Ok(VerifiedSet {
            iss: iss.to_owned(),
            jti: jti.to_owned(),
            txn: claims["txn"].as_str().map(String::from),
            iat,
            toe: claims["toe"].as_i64(),
            claims: claims.clone(),
        })
    }
}
