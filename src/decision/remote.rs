//! What remote decision points share: one HTTP client per PDP (timeout, optional CA, no
//! redirects), authentication by bearer token or OAuth 2.0 client credentials, and the mapping
//! of every transport outcome onto a [`DecisionError`], so that each one fails closed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::DecisionError;

/// How deskbridge authenticates to a PDP.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PdpAuthConfig {
    /// No credentials (a PDP on a private network or loopback).
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token; use `${VAR}`.
        token: SecretString,
    },
    /// OAuth 2.0 client credentials (the AuthZEN spec's recommendation).
    ClientCredentials {
        /// Token endpoint.
        #[serde(deserialize_with = "deskbridge_connector::urls::http_url_string")]
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret; use `${VAR}`.
        client_secret: SecretString,
        /// Space-separated scopes.
        #[serde(default)]
        scope: Option<String>,
    },
}

/// Transport settings of a PDP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdpTransport {
    /// Per-call time limit in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificate (PEM) to trust.
    #[serde(default)]
    pub ca_cert_file: Option<PathBuf>,
    /// Credentials.
    #[serde(default)]
    pub auth: PdpAuthConfig,
}

impl Default for PdpTransport {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            ca_cert_file: None,
            auth: PdpAuthConfig::None,
        }
    }
}

fn default_timeout_ms() -> u64 {
    2000
}

struct CachedToken {
    token: SecretString,
    expires_at: Instant,
}

/// An HTTP client for one PDP.
pub struct PdpHttp {
    name: String,
    client: reqwest::Client,
    auth: PdpAuthConfig,
    token: Mutex<Option<CachedToken>>,
}

/// A successful response.
pub struct PdpResponse {
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl PdpHttp {
    /// A client named `name` (used in errors).
    pub fn new(name: &str, transport: &PdpTransport) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(transport.timeout_ms))
            .connect_timeout(Duration::from_millis(transport.timeout_ms))
            // A PDP that redirects is misconfigured; never replay credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deskbridge/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &transport.ca_cert_file {
            let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("{name}: ca_cert_file {}: {e}", path.display()))?;
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).map_err(|e| anyhow::anyhow!("{name}: ca_cert_file {}: {e}", path.display()))?,
            );
        }
        Ok(Self {
            name: name.to_owned(),
            client: builder.build()?,
            auth: transport.auth.clone(),
            token: Mutex::new(None),
        })
    }

    async fn authorization(&self) -> Result<Option<HeaderValue>, DecisionError> {
        let token = match &self.auth {
            PdpAuthConfig::None => return Ok(None),
            PdpAuthConfig::Bearer { token } => token.clone(),
            PdpAuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let mut cached = self.token.lock().await;
                match cached.as_ref().filter(|t| t.expires_at > Instant::now() + Duration::from_secs(5)) {
                    Some(t) => t.token.clone(),
                    None => {
                        let url = TokenUrl::new(token_url.clone())
                            .map_err(|e| DecisionError::Engine(format!("{}: token_url: {e}", self.name)))?;
                        let client = BasicClient::new(ClientId::new(client_id.clone()))
                            .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_owned()))
                            .set_token_uri(url);
                        let mut request = client.exchange_client_credentials();
                        for s in scope.iter().flat_map(|s| s.split_whitespace()) {
                            request = request.add_scope(Scope::new(s.to_owned()));
                        }
                        let response = request.request_async(&self.client).await.map_err(|e| {
                            DecisionError::Unavailable(deskbridge_connector::urls::strip_userinfo(&format!(
                                "{}: token endpoint: {e}",
                                self.name
                            )))
                        })?;
                        let token = SecretString::from(response.access_token().secret().to_owned());
                        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(300));
                        *cached = Some(CachedToken {
                            token: token.clone(),
                            expires_at: Instant::now() + lifetime,
                        });
                        token
                    }
                }
            }
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| DecisionError::Engine(format!("{}: the token is not a valid header value", self.name)))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// GETs `url`.
    pub async fn get(&self, url: &str) -> Result<PdpResponse, DecisionError> {
        self.send(self.client.get(url)).await
    }

    /// POSTs `body` (already serialized JSON) to `url` with extra headers.
    pub async fn post(&self, url: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Result<PdpResponse, DecisionError> {
        let mut request = self.client.post(url).header("content-type", "application/json").body(body);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        self.send(request).await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<PdpResponse, DecisionError> {
        if let Some(auth) = self.authorization().await? {
            request = request.header(AUTHORIZATION, auth);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                DecisionError::Timeout(format!("{}: no answer in time", self.name))
            } else {
                DecisionError::Unavailable(format!(
                    "{}: {}",
                    self.name,
                    if e.is_connect() { "connection failed" } else { "transport error" }
                ))
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|_| DecisionError::Unavailable(format!("{}: the answer was cut off", self.name)))?
            .to_vec();
        if status.is_success() {
            return Ok(PdpResponse { headers, body });
        }
        let message: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        Err(if status.is_server_error() {
            DecisionError::Unavailable(format!("{}: {} {}", self.name, status.as_u16(), message.trim()))
        } else {
            DecisionError::Rejected(format!("{}: {} {}", self.name, status.as_u16(), message.trim()))
        })
    }
}
