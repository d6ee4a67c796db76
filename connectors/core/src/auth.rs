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
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("Auth::None"),
            Self::Basic { username, .. } => write!(f, "Auth::Basic {{ username: {username:?}, password: [REDACTED] }}"),
            Self::OAuth(o) => write!(f, "Auth::OAuth {{ username: {:?}, client_id: {:?}, .. }}", o.username, o.client_id),
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
        })
    }

    /// The user the ITSM sees as the author of what we write.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::None => None,
            Self::Basic { username, .. } => Some(username),
            Self::OAuth(o) => Some(&o.username),
        }
    }

    /// Whether a refused token may be renewed by asking again.
    pub fn is_refreshable(&self) -> bool {
        matches!(self, Self::OAuth(_))
    }

    /// Forgets the cached access token (after the ITSM refused it).
    pub async fn invalidate(&self) {
        if let Self::OAuth(o) = self {
            if let Some(token) = o.token.lock().await.as_mut() {
                token.expires_at = Instant::now();
            }
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
        // Renew a little early so a token never expires in flight.
        if let Some(token) = guard.as_ref() {
            if token.expires_at > Instant::now() + Duration::from_secs(5) {
                return Ok(token.access.clone());
            }
        }
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose_secret().to_owned()))
            .set_token_uri(self.token_url.clone())
            .set_auth_type(AuthType::RequestBody);
        let refresh = guard.as_ref().and_then(|t| t.refresh.clone());
        let response = match refresh {
            Some(refresh) => {
                let refreshed = client
                    .exchange_refresh_token(&RefreshToken::new(refresh.expose_secret().to_owned()))
                    .request_async(http)
                    .await;
                match refreshed {
                    Ok(r) => Ok(r),
                    // An expired or revoked refresh token: start over with the password grant.
                    Err(RequestTokenError::ServerResponse(_)) => self.password_grant(&client, http).await,
                    Err(e) => Err(e),
                }
            }
            None => self.password_grant(&client, http).await,
        }
        .map_err(|e| token_error(connector, e))?;
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

    async fn password_grant(&self, client: &TokenClient, http: &reqwest::Client) -> Result<oauth2::basic::BasicTokenResponse, TokenError> {
        client
            .exchange_password(
                &ResourceOwnerUsername::new(self.username.clone()),
                &ResourceOwnerPassword::new(self.password.expose_secret().to_owned()),
            )
            .request_async(http)
            .await
    }
}

/// An oauth2 client whose token endpoint is set.
type TokenClient =
    BasicClient<oauth2::EndpointNotSet, oauth2::EndpointNotSet, oauth2::EndpointNotSet, oauth2::EndpointNotSet, oauth2::EndpointSet>;

type TokenError = RequestTokenError<oauth2::HttpClientError<reqwest::Error>, oauth2::StandardErrorResponse<BasicErrorResponseType>>;

fn token_error(connector: &str, e: TokenError) -> ConnectorError {
    let connector = connector.to_owned();
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
            message: format!("token endpoint: {}", error_chain(&e)),
        },
        RequestTokenError::Parse(e, _) => ConnectorError::Permanent {
            connector,
            message: format!("token endpoint answered malformed JSON: {e}"),
        },
        RequestTokenError::Other(m) => ConnectorError::Permanent {
            connector,
            message: format!("token endpoint: {m}"),
        },
    }
}

/// An error and its causes, `outer: inner: …` (reqwest and hyper put the useful part in causes).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
