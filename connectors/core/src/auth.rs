//! Credentials for ITSM APIs. Secrets stay in [`SecretString`] and are exposed only where the
//! `Authorization` header is built; that header is marked sensitive so it never reaches a log.

use std::time::{Duration, Instant};

use base64::Engine as _;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, ClientSecret, RefreshToken, RequestTokenError, ResourceOwnerPassword, ResourceOwnerUsername, TokenResponse,
    TokenUrl,
};
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::ConnectorError;

/// Credentials as configured (`[connectors.auth]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// HTTP basic authentication.
    Basic {
        /// The integration user.
        username: String,
        /// Its password; use `${VAR}` in the config file.
        password: SecretString,
    },
    /// OAuth 2.0 resource-owner password grant, renewed with the refresh-token grant.
    OauthPassword {
        /// The token endpoint, e.g. `https://acme.service-now.com/oauth_token.do`.
        #[serde(deserialize_with = "crate::urls::http_url_string")]
        token_url: String,
        /// The OAuth client id.
        client_id: String,
        /// The OAuth client secret.
        client_secret: SecretString,
        /// The integration user.
        username: String,
        /// Its password.
        password: SecretString,
    },
    /// `Authorization: Bearer <token>` with a long-lived token (a Jira Data Center personal
    /// access token).
    Bearer {
        /// The token; use `${VAR}` in the config file.
        token: SecretString,
    },
    /// OAuth 2.0 authorization-code grant (Atlassian 3LO): an admin consents once, deskbridge
    /// holds the refresh token and renews with the refresh-token grant. Refresh tokens rotate:
    /// every renewal returns a new one and disables the old, so the new one is written to
    /// `state_file` (and synced to disk) before the new access token is used.
    OauthRefresh {
        /// The token endpoint (`https://auth.atlassian.com/oauth/token`).
        #[serde(deserialize_with = "crate::urls::http_url_string")]
        token_url: String,
        /// The OAuth client id.
        client_id: String,
        /// The OAuth client secret.
        client_secret: SecretString,
        /// The refresh token from the consent; used only until `state_file` holds a newer one.
        refresh_token: SecretString,
        /// Where the current refresh token is kept across restarts (created with mode 0600).
        state_file: std::path::PathBuf,
    },
}

struct Token {
    access: SecretString,
    refresh: Option<SecretString>,
    expires_at: Instant,
}

/// OAuth 2.0 password grant with refresh, through the `oauth2` crate (form-encoded token
/// requests, client credentials in the body as ServiceNow expects).
pub struct OAuthPassword {
    token_url: TokenUrl,
    client_id: String,
    client_secret: SecretString,
    username: String,
    password: SecretString,
    token: Mutex<Option<Token>>,
}

/// Credentials in use by one connector instance.
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The integration user.
        username: String,
        /// Its password.
        password: SecretString,
    },
    /// `Authorization: Bearer <access token>` from an OAuth password grant.
    OAuth(Box<OAuthPassword>),
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// `Authorization: Bearer <access token>` from a rotating refresh token.
    OAuthRefresh(Box<OAuthRefresh>),
}

/// The refresh-token grant with rotation and a durable refresh token.
pub struct OAuthRefresh {
    token_url: TokenUrl,
    client_id: String,
    client_secret: SecretString,
    initial_refresh: SecretString,
    state_file: std::path::PathBuf,
    token: Mutex<Option<Token>>,
    vault: std::sync::OnceLock<(std::sync::Arc<dyn TokenVault>, String)>,
}

/// A shared place for one rotating refresh-token chain, so any number of replicas (processes)
/// use one chain instead of each rotating the others' tokens away. deskbridge's store
/// implements it (a row locked for the rotation).
#[async_trait::async_trait]
pub trait TokenVault: Send + Sync {
    /// Locks the chain `name`, waiting while another holder rotates it, and returns what it
    /// holds. Dropping the guard without [`VaultGuard::save`] leaves the chain as it was.
    async fn lock(&self, name: &str) -> Result<Box<dyn VaultGuard>, String>;
}

/// The locked chain.
#[async_trait::async_trait]
pub trait VaultGuard: Send {
    /// The current refresh token; `None` before the first rotation (the configured one is used).
    fn refresh_token(&self) -> Option<SecretString>;
    /// An access token another holder obtained, with its expiry.
    fn access_token(&self) -> Option<(SecretString, chrono::DateTime<chrono::Utc>)>;
    /// Stores the rotated tokens and releases the lock.
    async fn save(
        self: Box<Self>,
        refresh: &SecretString,
        access: &SecretString,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), String>;
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("Auth::None"),
            Self::Basic { username, .. } => write!(f, "Auth::Basic {{ username: {username:?}, password: [REDACTED] }}"),
            Self::OAuth(o) => write!(f, "Auth::OAuth {{ username: {:?}, client_id: {:?}, .. }}", o.username, o.client_id),
            Self::Bearer(_) => f.write_str("Auth::Bearer([REDACTED])"),
            Self::OAuthRefresh(o) => write!(
                f,
                "Auth::OAuthRefresh {{ client_id: {:?}, state_file: {:?}, .. }}",
                o.client_id, o.state_file
            ),
        }
    }
}

impl Auth {
    /// Builds credentials from configuration; a malformed token URL is a config error.
    pub fn from_config(config: &AuthConfig, connector: &str) -> Result<Self, ConnectorError> {
        Ok(match config {
            AuthConfig::Basic { username, password } => Self::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            AuthConfig::OauthPassword {
                token_url,
                client_id,
                client_secret,
                username,
                password,
            } => {
                let token_url = TokenUrl::new(token_url.clone()).map_err(|e| ConnectorError::Config {
                    connector: connector.to_owned(),
                    message: format!("auth.token_url: {e}"),
                })?;
                Self::OAuth(Box::new(OAuthPassword {
                    token_url,
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    username: username.clone(),
                    password: password.clone(),
                    token: Mutex::new(None),
                }))
            }
            AuthConfig::Bearer { token } => Self::Bearer(token.clone()),
            AuthConfig::OauthRefresh {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                state_file,
            } => {
                let token_url = TokenUrl::new(token_url.clone()).map_err(|e| ConnectorError::Config {
                    connector: connector.to_owned(),
                    message: format!("auth.token_url: {e}"),
                })?;
                Self::OAuthRefresh(Box::new(OAuthRefresh {
                    token_url,
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    initial_refresh: refresh_token.clone(),
                    state_file: state_file.clone(),
                    token: Mutex::new(None),
                    vault: std::sync::OnceLock::new(),
                }))
            }
        })
    }

    /// The user the ITSM sees as the author of what we write.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::None | Self::Bearer(_) | Self::OAuthRefresh(_) => None,
            Self::Basic { username, .. } => Some(username),
            Self::OAuth(o) => Some(&o.username),
        }
    }

    /// Keeps a rotating refresh token's chain in `vault` under `name` instead of only in the
    /// state file, so replicas share it. No effect on other credentials. Returns whether the
    /// credentials use the vault.
    pub fn share_tokens(&self, vault: std::sync::Arc<dyn TokenVault>, name: &str) -> bool {
        match self {
            Self::OAuthRefresh(o) => o.vault.set((vault, name.to_owned())).is_ok(),
            _ => false,
        }
    }

    /// Whether a refused token may be renewed by asking again.
    pub fn is_refreshable(&self) -> bool {
        matches!(self, Self::OAuth(_) | Self::OAuthRefresh(_))
    }

    /// Forgets the cached access token (after the ITSM refused it).
    pub async fn invalidate(&self) {
        let slot = match self {
            Self::OAuth(o) => &o.token,
            Self::OAuthRefresh(o) => &o.token,
            _ => return,
        };
        if let Some(token) = slot.lock().await.as_mut() {
            token.expires_at = Instant::now();
        }
    }

    /// The `Authorization` header value, fetching or refreshing a token when needed.
    pub async fn header(&self, connector: &str, http: &reqwest::Client) -> Result<Option<HeaderValue>, ConnectorError> {
        let value = match self {
            Self::None => return Ok(None),
            Self::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose_secret());
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
            }
            Self::OAuth(o) => format!("Bearer {}", o.access_token(connector, http).await?.expose_secret()),
            Self::Bearer(token) => format!("Bearer {}", token.expose_secret()),
            Self::OAuthRefresh(o) => format!("Bearer {}", o.access_token(connector, http).await?.expose_secret()),
        };
        let mut header = HeaderValue::from_str(&value).map_err(|_| ConnectorError::Config {
            connector: connector.to_owned(),
            message: "credentials contain characters not allowed in an HTTP header".into(),
        })?;
        header.set_sensitive(true);
        Ok(Some(header))
    }
}

impl OAuthPassword {
    async fn access_token(&self, connector: &str, http: &reqwest::Client) -> Result<SecretString, ConnectorError> {
        let mut guard = self.token.lock().await;
        if let Some(access) = still_valid(guard.as_ref()) {
            return Ok(access);
        }
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose_secret().to_owned()))
            .set_token_uri(self.token_url.clone())
            .set_auth_type(AuthType::RequestBody);
        let refresh = guard.as_ref().and_then(|t| t.refresh.clone());
        let http = TokenHttp::new(http);
        let response = match refresh {
            Some(refresh) => {
                let refreshed = client
                    .exchange_refresh_token(&RefreshToken::new(refresh.expose_secret().to_owned()))
                    .request_async(&http)
                    .await;
                match refreshed {
                    Ok(r) => Ok(r),
                    // An expired or revoked refresh token: start over with the password grant.
                    Err(RequestTokenError::ServerResponse(_)) => self.password_grant(&client, &http).await,
                    Err(e) => Err(e),
                }
            }
            None => self.password_grant(&client, &http).await,
        }
        .map_err(|e| token_error(connector, e, http.status()))?;
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(1800));
        let access = SecretString::from(response.access_token().secret().to_owned());
        let refresh = response
            .refresh_token()
            .map(|r| SecretString::from(r.secret().to_owned()))
            .or_else(|| guard.as_ref().and_then(|t| t.refresh.clone()));
        *guard = Some(Token {
            access: access.clone(),
            refresh,
            expires_at: Instant::now() + lifetime,
        });
        Ok(access)
    }

    async fn password_grant(&self, client: &TokenClient, http: &TokenHttp<'_>) -> Result<oauth2::basic::BasicTokenResponse, TokenError> {
        client
            .exchange_password(
                &ResourceOwnerUsername::new(self.username.clone()),
                &ResourceOwnerPassword::new(self.password.expose_secret().to_owned()),
            )
            .request_async(http)
            .await
    }
}

/// The cached access token, unless it expires within five seconds (renewed a little early so
/// a token never expires in flight).
fn still_valid(token: Option<&Token>) -> Option<SecretString> {
    token
        .filter(|t| t.expires_at > Instant::now() + Duration::from_secs(5))
        .map(|t| t.access.clone())
}

/// What `state_file` holds.
#[derive(serde::Serialize, Deserialize)]
struct RefreshState {
    refresh_token: String,
    rotated_at: chrono::DateTime<chrono::Utc>,
}

impl OAuthRefresh {
    /// The newest refresh token: the state file's when it exists, else the configured one.
    fn current_refresh(&self, connector: &str) -> Result<SecretString, ConnectorError> {
        match std::fs::read(&self.state_file) {
            Ok(bytes) => {
                let state: RefreshState = serde_json::from_slice(&bytes).map_err(|e| ConnectorError::Config {
                    connector: connector.to_owned(),
                    message: format!(
                        "auth.state_file {}: not a deskbridge token state file: {e}",
                        self.state_file.display()
                    ),
                })?;
                Ok(SecretString::from(state.refresh_token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.initial_refresh.clone()),
            Err(e) => Err(ConnectorError::Config {
                connector: connector.to_owned(),
                message: format!("auth.state_file {}: {e}", self.state_file.display()),
            }),
        }
    }

    /// Writes the rotated refresh token durably: a temporary file in the same folder, synced,
    /// renamed over the old one, and the folder synced, so a crash leaves either the old or the
    /// new token, never a torn file.
    fn persist(&self, refresh: &str, connector: &str) -> Result<(), ConnectorError> {
        use std::io::Write as _;
        let fail = |what: &str, e: std::io::Error| ConnectorError::Config {
            connector: connector.to_owned(),
            message: format!("auth.state_file {}: {what}: {e}", self.state_file.display()),
        };
        let dir = self
            .state_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let body = serde_json::to_vec(&RefreshState {
            refresh_token: refresh.to_owned(),
            rotated_at: chrono::Utc::now(),
        })
        .map_err(|e| fail("encoding", std::io::Error::other(e)))?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            self.state_file.file_name().and_then(|n| n.to_str()).unwrap_or("oauth-state")
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| fail("writing", e))?;
        file.write_all(&body).map_err(|e| fail("writing", e))?;
        file.sync_all().map_err(|e| fail("syncing", e))?;
        std::fs::rename(&tmp, &self.state_file).map_err(|e| fail("replacing", e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all().map_err(|e| fail("syncing its folder", e))?;
        }
        Ok(())
    }

    async fn access_token(&self, connector: &str, http: &reqwest::Client) -> Result<SecretString, ConnectorError> {
        let mut guard = self.token.lock().await;
        if let Some(access) = still_valid(guard.as_ref()) {
            return Ok(access);
        }
        if let Some((vault, name)) = self.vault.get() {
            let token = self.rotate_in_vault(vault.as_ref(), name, connector, http).await?;
            let access = token.access.clone();
            *guard = Some(token);
            return Ok(access);
        }
        // The state file is the source of truth, so a restart (or a sibling process sharing
        // the file) never reuses a token that was already rotated away.
        let refresh = self.current_refresh(connector)?;
        let response = self.exchange(&refresh, connector, http).await?;
        // Rotation: the old refresh token is dead from now on. Keep the new one on disk before
        // anything uses the new access token; if that fails, fail the call.
        let refresh = match response.refresh_token() {
            Some(new) => {
                self.persist(new.secret(), connector)?;
                SecretString::from(new.secret().to_owned())
            }
            None => refresh,
        };
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(3600));
        let access = SecretString::from(response.access_token().secret().to_owned());
        *guard = Some(Token {
            access: access.clone(),
            refresh: Some(refresh),
            expires_at: Instant::now() + lifetime,
        });
        Ok(access)
    }

    /// One rotation under the vault's lock: another replica's fresh access token is reused;
    /// otherwise the chain's current refresh token is exchanged and the new pair saved before
    /// the lock is released. A failed exchange leaves the chain untouched.
    async fn rotate_in_vault(
        &self,
        vault: &dyn TokenVault,
        name: &str,
        connector: &str,
        http: &reqwest::Client,
    ) -> Result<Token, ConnectorError> {
        let vault_error = |e: String| ConnectorError::Transient {
            connector: connector.to_owned(),
            message: format!("shared OAuth token store: {e}"),
        };
        let locked = vault.lock(name).await.map_err(vault_error)?;
        let now = chrono::Utc::now();
        if let Some((access, expires_at)) = locked.access_token().filter(|(_, at)| *at > now + chrono::Duration::seconds(30)) {
            let left = (expires_at - now).to_std().unwrap_or(Duration::ZERO);
            return Ok(Token {
                access,
                refresh: locked.refresh_token(),
                expires_at: Instant::now() + left,
            });
        }
        let refresh = match locked.refresh_token() {
            Some(r) => r,
            None => self.current_refresh(connector)?,
        };
        let response = self.exchange(&refresh, connector, http).await?;
        let refresh = response
            .refresh_token()
            .map(|r| SecretString::from(r.secret().to_owned()))
            .unwrap_or(refresh);
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(3600));
        let access = SecretString::from(response.access_token().secret().to_owned());
        let expires_at = now + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1));
        locked.save(&refresh, &access, expires_at).await.map_err(vault_error)?;
        Ok(Token {
            access,
            refresh: Some(refresh),
            expires_at: Instant::now() + lifetime,
        })
    }

    async fn exchange(
        &self,
        refresh: &SecretString,
        connector: &str,
        http: &reqwest::Client,
    ) -> Result<oauth2::basic::BasicTokenResponse, ConnectorError> {
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose_secret().to_owned()))
            .set_token_uri(self.token_url.clone())
            .set_auth_type(AuthType::RequestBody);
        let http = TokenHttp::new(http);
        client
            .exchange_refresh_token(&RefreshToken::new(refresh.expose_secret().to_owned()))
            .request_async(&http)
            .await
            .map_err(|e| match token_error(connector, e, http.status()) {
                ConnectorError::Unauthorized { connector, message } => ConnectorError::Unauthorized {
                    connector,
                    message: format!(
                        "{message}; the refresh token is no longer valid: an admin must grant consent again and set auth.refresh_token"
                    ),
                },
                other => other,
            })
    }
}

/// An oauth2 client whose token endpoint is set.
type TokenClient =
    BasicClient<oauth2::EndpointNotSet, oauth2::EndpointNotSet, oauth2::EndpointNotSet, oauth2::EndpointNotSet, oauth2::EndpointSet>;

type TokenError = RequestTokenError<oauth2::HttpClientError<reqwest::Error>, oauth2::StandardErrorResponse<BasicErrorResponseType>>;

/// The token endpoint's HTTP client, keeping the status of the last answer: oauth2 reports an
/// answer it cannot parse without it, and a 502 from a proxy is not a 404 from a wrong URL.
struct TokenHttp<'a> {
    http: &'a reqwest::Client,
    status: std::sync::Mutex<Option<reqwest::StatusCode>>,
}

impl<'a> TokenHttp<'a> {
    fn new(http: &'a reqwest::Client) -> Self {
        Self {
            http,
            status: std::sync::Mutex::new(None),
        }
    }

    fn status(&self) -> Option<reqwest::StatusCode> {
        *self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for TokenHttp<'_> {
    type Error = oauth2::HttpClientError<reqwest::Error>;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = oauth2::AsyncHttpClient::call(self.http, request).await?;
            *self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(response.status());
            Ok(response)
        })
    }
}

fn token_error(connector: &str, e: TokenError, status: Option<reqwest::StatusCode>) -> ConnectorError {
    let connector = connector.to_owned();
    let answered_with = status.map(|s| format!("HTTP {s} ")).unwrap_or_default();
    match e {
        RequestTokenError::ServerResponse(r) => ConnectorError::Unauthorized {
            connector,
            message: format!(
                "token endpoint refused the credentials: {}{}",
                r.error(),
                r.error_description().map(|d| format!(" ({d})")).unwrap_or_default()
            ),
        },
        RequestTokenError::Request(e) => ConnectorError::Transient {
            connector,
            message: format!("token endpoint: {}", crate::urls::error_chain(&e)),
        },
        // A server or proxy failing (5xx, 429) may recover; anything else is the wrong URL.
        RequestTokenError::Parse(e, body) if status.is_some_and(|s| s.is_server_error() || s.as_u16() == 429) => ConnectorError::Transient {
            connector,
            message: format!(
                "token endpoint answered {answered_with}with something that is not an OAuth 2.0 token response ({e}); it said: {}",
                answered(&body)
            ),
        },
        RequestTokenError::Parse(e, body) => ConnectorError::Permanent {
            connector,
            message: format!(
                "token endpoint answered {answered_with}with something that is not an OAuth 2.0 token response ({e}); it said: {}; check auth.token_url",
                answered(&body)
            ),
        },
        RequestTokenError::Other(m) => ConnectorError::Permanent {
            connector,
            message: format!("token endpoint: {m}"),
        },
    }
}

/// The start of a server's answer, on one line, for an error message.
fn answered(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(an empty body)".into()
    } else {
        format!("{text:?}")
    }
}
