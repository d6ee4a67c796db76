//! Shared HTTP plumbing: one client per connector instance, bounded concurrency, authentication,
//! retries with jittered exponential backoff, `Retry-After`, and the status-to-error mapping.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::ConnectorError;

/// Transport settings shared by every connector kind (`[connectors.http]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Seconds before one request is abandoned as a transient failure.
    pub timeout_secs: u64,
    /// Attempts per call, the first included, before a retryable error is returned.
    pub max_attempts: u32,
    /// First backoff step in milliseconds; each further attempt doubles it, with full jitter.
    pub backoff_base_ms: u64,
    /// Upper bound of one backoff step in milliseconds.
    pub backoff_max_ms: u64,
    /// The longest `Retry-After` honoured by waiting inside a call, in seconds. A longer one is
    /// returned to the caller as `RateLimited` so the pipeline can reschedule instead of blocking.
    pub max_inline_retry_after_secs: u64,
    /// Requests in flight to this instance at once; keeps deskbridge from causing throttling.
    pub max_concurrency: usize,
    /// PEM file of an extra CA certificate to trust (private PKI, the TLS simulator).
    pub ca_cert_file: Option<std::path::PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            max_attempts: 5,
            backoff_base_ms: 200,
            backoff_max_ms: 10_000,
            max_inline_retry_after_secs: 60,
            max_concurrency: 4,
            ca_cert_file: None,
        }
    }
}

/// A response body and what the ITSM said about it.
#[derive(Debug)]
pub struct Response {
    /// HTTP status (always a success status when returned by [`HttpClient::send`]).
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Raw body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// Decodes the body as JSON, mapping a malformed body to a permanent error.
    pub fn json<T: serde::de::DeserializeOwned>(&self, connector: &str) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|e| ConnectorError::Permanent {
            connector: connector.to_owned(),
            message: format!("malformed response body: {e}"),
        })
    }
}

/// Extracts a safe, human-readable message from an ITSM error body.
pub type ErrorMessageFn = fn(&[u8]) -> Option<String>;

/// Builds the reqwest client for one connector instance: a request timeout, an optional extra
/// CA, and redirects followed only within the same origin, so credentials are never replayed to
/// another host.
pub fn build_client(settings: &HttpSettings, connector: &str) -> Result<reqwest::Client, ConnectorError> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(settings.timeout_secs))
        .connect_timeout(Duration::from_secs(settings.timeout_secs.min(10)))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt.previous().first().is_some_and(|first| {
                first.scheme() == attempt.url().scheme()
                    && first.host_str() == attempt.url().host_str()
                    && first.port_or_known_default() == attempt.url().port_or_known_default()
            });
            if same_origin && attempt.previous().len() < 5 {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }))
        .user_agent(concat!("deskbridge/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.ca_cert_file {
        let config_err = |message: String| ConnectorError::Config {
            connector: connector.to_owned(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| config_err(format!("http.ca_cert_file {}: {e}", path.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| config_err(format!("http.ca_cert_file {}: {e}", path.display())))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| ConnectorError::Config {
        connector: connector.to_owned(),
        message: format!("building the HTTP client: {e}"),
    })
}

/// Parses `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_delay(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

/// Delta-seconds, epoch seconds (ServiceNow's `X-RateLimit-Reset`), an HTTP date or an
/// ISO-8601 instant (`2026-11-22T10:15Z`, Jira's `X-RateLimit-Reset`), as the time to wait
/// from now.
fn parse_delay(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        // No server asks for a wait of decades: a number this large is an instant.
        if secs >= 1_000_000_000 {
            let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
            return Some(Duration::from_secs(secs.saturating_sub(now)));
        }
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(value))
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%MZ").map(|t| t.and_utc()))
        .ok()?;
    let delta = when - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// How long a throttled response asks us to wait: the longest of `Retry-After`,
/// `X-RateLimit-Reset` and `Beta-Retry-After` (Atlassian's beta quota header), when any is
/// present.
pub fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    ["retry-after", "x-ratelimit-reset", "beta-retry-after"]
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()).and_then(parse_delay))
        .max()
}

/// Maps a non-success status to the error that says what the caller does next. The one place
/// where HTTP statuses become [`ConnectorError`] variants.
pub fn error_for_status(connector: &str, status: StatusCode, headers: &HeaderMap, message: Option<String>) -> ConnectorError {
    let connector = connector.to_owned();
    let message = message.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    match status {
        StatusCode::UNAUTHORIZED => ConnectorError::Unauthorized {
            connector,
            message: format!("credentials refused (401): {message}"),
        },
        StatusCode::FORBIDDEN => ConnectorError::Unauthorized {
            connector,
            message: format!("permission denied (403): {message}"),
        },
        StatusCode::NOT_FOUND => ConnectorError::NotFound { connector, message },
        StatusCode::TOO_MANY_REQUESTS => ConnectorError::RateLimited {
            connector,
            retry_after: rate_limit_wait(headers).unwrap_or(Duration::from_secs(1)),
        },
        s if s == StatusCode::SERVICE_UNAVAILABLE && rate_limit_wait(headers).is_some() => ConnectorError::RateLimited {
            connector,
            retry_after: rate_limit_wait(headers).unwrap_or(Duration::from_secs(1)),
        },
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => ConnectorError::Transient {
            connector,
            message: format!("{} {message}", s.as_u16()),
        },
        s => ConnectorError::Permanent {
            connector,
            message: format!("{} {message}", s.as_u16()),
        },
    }
}

/// Full-jitter exponential backoff: a random wait in `[0, min(max, base * 2^attempt)]`.
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let cap = base.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(max);
    let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// A failed attempt: the error, and the status when the ITSM answered at all.
struct Failure {
    error: ConnectorError,
    status: Option<StatusCode>,
}

impl From<ConnectorError> for Failure {
    fn from(error: ConnectorError) -> Self {
        Self { error, status: None }
    }
}

/// One ITSM request as metrics see it: the connector instance, the method, the status
/// (`None` when no answer came: a timeout or a dropped connection) and how long it took.
pub type CallObserver = dyn Fn(&str, &str, Option<u16>, Duration) + Send + Sync;

static OBSERVER: std::sync::OnceLock<Box<CallObserver>> = std::sync::OnceLock::new();

/// Sets the process's observer of ITSM requests (the metrics registry); the first one set wins.
/// Every request every [`HttpClient`] makes, retries included, is reported to it once.
pub fn observe_calls(observer: Box<CallObserver>) {
    let _ = OBSERVER.set(observer);
}

fn observe(connector: &str, method: &str, status: Option<u16>, elapsed: Duration) {
    if let Some(observer) = OBSERVER.get() {
        observer(connector, method, status, elapsed);
    }
}

/// An authenticated, rate-aware HTTP client for one connector instance.
pub struct HttpClient {
    connector: String,
    client: reqwest::Client,
    auth: Arc<Auth>,
    settings: HttpSettings,
    permits: Semaphore,
    error_message: ErrorMessageFn,
}

impl HttpClient {
    /// A client for `connector` with its own transport settings and credentials.
    pub fn new(connector: &str, settings: HttpSettings, auth: Auth, error_message: ErrorMessageFn) -> Result<Self, ConnectorError> {
        let client = build_client(&settings, connector)?;
        Ok(Self {
            connector: connector.to_owned(),
            permits: Semaphore::new(settings.max_concurrency.max(1)),
            client,
            auth: Arc::new(auth),
            settings,
            error_message,
        })
    }

    /// Requests in flight to this instance at once.
    pub fn max_concurrency(&self) -> usize {
        self.settings.max_concurrency.max(1)
    }

    /// The underlying reqwest client (shares its connection pool).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The credentials in use.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Sends a read (or an idempotent write such as a `PUT` of a fixed value) that `build`
    /// makes, authenticated, retrying timeouts, 5xx and 429 with backoff (honouring `Retry-After` up to `max_inline_retry_after_secs`). One refused
    /// OAuth access token is refreshed and the call retried once.
    pub async fn send(&self, build: impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response, ConnectorError> {
        let base = Duration::from_millis(self.settings.backoff_base_ms);
        let max = Duration::from_millis(self.settings.backoff_max_ms);
        let max_inline = Duration::from_secs(self.settings.max_inline_retry_after_secs);
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.send_once(&build).await;
            let err = match result {
                Ok(response) => return Ok(response),
                Err(err) => err,
            };
            if matches!(err, ConnectorError::Unauthorized { .. }) && self.auth.is_refreshable() && !refreshed {
                refreshed = true;
                self.auth.invalidate().await;
                continue;
            }
            if !err.is_retryable() || attempt >= self.settings.max_attempts {
                return Err(err);
            }
            let wait = match err.retry_after() {
                Some(after) if after > max_inline => return Err(err),
                Some(after) => after,
                None => backoff_delay(attempt, base, max),
            };
            tracing::debug!(connector = %self.connector, attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying ITSM call");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends a write that is not idempotent (a comment create, a journal append) exactly once:
    /// no retry on a timeout, a 5xx, a dropped connection or a 429, because the ITSM may have
    /// applied the write before its answer was lost. The caller (the outbox) retries later,
    /// after looking on the ticket for what the earlier attempt may have written. The one
    /// exception is a refused OAuth access token: a 401 means the request was not
    /// authenticated, so nothing was applied, and it is sent again once with a fresh token.
    ///
    /// This is the connector contract's rule for every write: see
    /// [`crate::Connector::post_comment`].
    pub async fn send_write(&self, build: impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response, ConnectorError> {
        match self.attempt(&build).await {
            Ok(response) => Ok(response),
            Err(Failure {
                status: Some(StatusCode::UNAUTHORIZED),
                ..
            }) if self.auth.is_refreshable() => {
                self.auth.invalidate().await;
                self.send_once(&build).await
            }
            Err(failure) => Err(failure.error),
        }
    }

    async fn send_once(&self, build: &impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response, ConnectorError> {
        self.attempt(build).await.map_err(|f| f.error)
    }

    /// One request, no retry; a failure keeps the status the ITSM answered, if any.
    async fn attempt(&self, build: &impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response, Failure> {
        let _permit = self.permits.acquire().await.map_err(|_| {
            Failure::from(ConnectorError::Transient {
                connector: self.connector.clone(),
                message: "client is shutting down".into(),
            })
        })?;
        let mut request = build(&self.client);
        if let Some(header) = self.auth.header(&self.connector, &self.client).await? {
            request = request.header(reqwest::header::AUTHORIZATION, header);
        }
        let request = request.build().map_err(|e| self.transport_error(e))?;
        let method = request.method().clone();
        let started = std::time::Instant::now();
        let (status, headers, body) = match self.exchange(request).await {
            Ok(answer) => answer,
            Err(e) => {
                observe(&self.connector, method.as_str(), None, started.elapsed());
                return Err(Failure::from(self.transport_error(e)));
            }
        };
        observe(&self.connector, method.as_str(), Some(status.as_u16()), started.elapsed());
        if status.is_success() {
            return Ok(Response { status, headers, body });
        }
        Err(Failure {
            error: error_for_status(&self.connector, status, &headers, (self.error_message)(&body)),
            status: Some(status),
        })
    }

    /// Sends one request and reads its whole answer.
    async fn exchange(&self, request: reqwest::Request) -> Result<(StatusCode, HeaderMap, Vec<u8>), reqwest::Error> {
        let response = self.client.execute(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        Ok((status, headers, response.bytes().await?.to_vec()))
    }

    fn transport_error(&self, e: reqwest::Error) -> ConnectorError {
        // reqwest errors carry the URL but never headers; strip the query anyway.
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "transport error"
        };
        let url = e
            .url()
            .map(|u| format!("{}{}", u.origin().ascii_serialization(), u.path()))
            .unwrap_or_default();
        ConnectorError::Transient {
            connector: self.connector.clone(),
            message: format!("{what}: {url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn atlassian_rate_limit_headers_are_honoured() {
        let mut headers = HeaderMap::new();
        headers.insert("beta-retry-after", "9".parse().expect("header"));
        headers.insert(RETRY_AFTER, "2".parse().expect("header"));
        assert_eq!(rate_limit_wait(&headers), Some(Duration::from_secs(9)), "the longest wait wins");
        let reset = (chrono::Utc::now() + chrono::Duration::minutes(3))
            .format("%Y-%m-%dT%H:%MZ")
            .to_string();
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-reset", reset.parse().expect("header"));
        let wait = rate_limit_wait(&headers).expect("reset parsed");
        assert!(wait > Duration::from_secs(60) && wait <= Duration::from_secs(180), "{wait:?}");
        let e = error_for_status("c", StatusCode::SERVICE_UNAVAILABLE, &headers, None);
        let mut epoch = HeaderMap::new();
        let at = chrono::Utc::now().timestamp() + 30;
        epoch.insert("x-ratelimit-reset", at.to_string().parse().expect("header"));
        let wait = rate_limit_wait(&epoch).expect("epoch seconds");
        assert!(wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28), "{wait:?}");
        assert!(
            matches!(e, ConnectorError::RateLimited { .. }),
            "a 503 with a reset header is throttling"
        );
    }

    #[test]
    fn statuses_map_to_what_the_caller_does_next() {
        let h = HeaderMap::new();
        let e = |s: u16| error_for_status("c", StatusCode::from_u16(s).expect("status"), &h, None);
        assert!(matches!(e(401), ConnectorError::Unauthorized { .. }));
        assert!(matches!(e(403), ConnectorError::Unauthorized { .. }));
        assert!(matches!(e(404), ConnectorError::NotFound { .. }));
        assert!(matches!(e(429), ConnectorError::RateLimited { .. }));
        assert!(e(500).is_retryable() && e(502).is_retryable() && e(503).is_retryable() && e(408).is_retryable());
        assert!(matches!(e(400), ConnectorError::Permanent { .. }));
        assert!(!e(400).is_retryable());
    }

    #[test]
    fn backoff_never_exceeds_its_cap() {
        for attempt in 0..30 {
            let d = backoff_delay(attempt, Duration::from_millis(100), Duration::from_secs(2));
            assert!(d <= Duration::from_secs(2));
        }
    }
}
