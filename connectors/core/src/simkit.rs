//! What every simulator shares (feature `simkit`): injectable faults and a log of the requests
//! received, as axum middleware.
//!
//! Faults come in the two kinds real ITSMs produce. *Before* the handler: the request is
//! refused (a 429 with the simulator's own rate-limit headers, a 5xx) or delayed, and nothing
//! is applied. *After* the handler: the request is served — a comment is created, a journal
//! entry appended — and then the answer is lost: replaced by a 5xx (a proxy's 502, a gateway's
//! 504), cut off mid-answer (a dropped connection), or held back past the client's timeout. The
//! second kind is what makes a blind retry of a write post twice.
//!
//! A fault fires a given number of times, or at random with a rate (for soaks); either kind can
//! be limited to one method and paths containing a string. [`SimKit::fired`] counts what fired,
//! so a test can show its faults really happened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

/// A fault a simulator answers with.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Before the handler: 429 with rate-limit headers in the simulated ITSM's own shape.
    RateLimit {
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
        /// A reset header this many seconds from now, in the ITSM's format.
        reset_in: Option<u64>,
        /// Atlassian's `Beta-Retry-After` seconds.
        beta_retry_after: Option<u64>,
    },
    /// Before the handler: this status with the ITSM's error body; nothing is applied.
    Status(u16),
    /// Before the handler: serve normally after this delay.
    Delay(Duration),
    /// Before the handler: a 200 whose body is not what the API returns (an HTML error page from
    /// a proxy, a truncated document).
    Garbage,
    /// After the handler: the request is applied, then answered with this status instead.
    AppliedThenStatus(u16),
    /// After the handler: the request is applied, then the connection drops mid-answer.
    AppliedThenDrop,
    /// After the handler: the request is applied, and the answer comes only after this long
    /// (make it longer than the client's timeout).
    AppliedThenStall(Duration),
}

impl Fault {
    /// A 429 with `Retry-After: secs` (and the reset header at the same moment).
    pub fn throttle(secs: u64) -> Self {
        Self::RateLimit {
            retry_after: Some(secs),
            reset_in: Some(secs),
            beta_retry_after: None,
        }
    }

    /// A short name for counts: `429`, `500`, `delay`, `applied-then-502`, ….
    pub fn name(&self) -> String {
        match self {
            Self::RateLimit { .. } => "429".into(),
            Self::Status(code) => code.to_string(),
            Self::Delay(_) => "delay".into(),
            Self::Garbage => "garbage".into(),
            Self::AppliedThenStatus(code) => format!("applied-then-{code}"),
            Self::AppliedThenDrop => "applied-then-drop".into(),
            Self::AppliedThenStall(_) => "applied-then-timeout".into(),
        }
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Only this method (`POST`, `PATCH`, …); any when `None`.
    pub method: Option<String>,
    /// Only paths containing this; any when `None`.
    pub path_contains: Option<String>,
}

impl Target {
    /// Any request whose path contains `path` (any path when `None`).
    pub fn path(path: Option<&str>) -> Self {
        Self {
            method: None,
            path_contains: path.map(String::from),
        }
    }

    /// Requests with `method` whose path contains `path`.
    pub fn route(method: &str, path: &str) -> Self {
        Self {
            method: Some(method.to_ascii_uppercase()),
            path_contains: Some(path.into()),
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
    }
}

struct Rule {
    fault: Fault,
    target: Target,
    /// Fires this many more times; unlimited when `None`.
    remaining: Option<usize>,
    /// Chance of firing on a matching request.
    rate: f64,
}

/// One request as the simulator received it, for contract assertions.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// `Basic`, `Bearer` or empty.
    pub auth_scheme: String,
    /// `Content-Type` header.
    pub content_type: String,
    /// Request body, as text.
    pub body: String,
}

impl RecordedRequest {
    /// The value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How one simulated ITSM words its refusals.
pub trait Flavor: Send + Sync + 'static {
    /// An error response with this status in the ITSM's error shape.
    fn error(&self, status: StatusCode, message: &str) -> Response;
    /// A 429 with the ITSM's rate-limit headers.
    fn throttled(&self, retry_after: Option<u64>, reset_in: Option<u64>, beta_retry_after: Option<u64>) -> Response;
}

/// How many requests the log keeps: a long run (a load harness) forgets the oldest instead of
/// growing without bound.
pub const REQUEST_LOG_CAPACITY: usize = 20_000;

/// Faults and the request log of one simulator.
pub struct SimKit {
    rules: Mutex<Vec<Rule>>,
    /// The latest [`REQUEST_LOG_CAPACITY`] requests, oldest first.
    log: Mutex<std::collections::VecDeque<RecordedRequest>>,
    fired: Mutex<BTreeMap<String, usize>>,
    record_requests: std::sync::atomic::AtomicBool,
    flavor: Box<dyn Flavor>,
}

/// Locks a simulator's state; a panicking handler must not wedge the simulator for the rest of
/// a test run, so a poisoned lock is taken as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SimKit {
    /// A kit answering in `flavor`'s shapes.
    pub fn new(flavor: impl Flavor) -> Arc<Self> {
        Arc::new(Self {
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(std::collections::VecDeque::new()),
            fired: Mutex::new(BTreeMap::new()),
            record_requests: std::sync::atomic::AtomicBool::new(true),
            flavor: Box::new(flavor),
        })
    }

    /// Answers the next `times` requests matching `target` with `fault`.
    pub fn inject(&self, fault: Fault, times: usize, target: Target) {
        lock(&self.rules).push(Rule {
            fault,
            target,
            remaining: Some(times),
            rate: 1.0,
        });
    }

    /// Answers each request matching `target` with `fault` with probability `rate`, until
    /// [`SimKit::clear_faults`].
    pub fn inject_random(&self, fault: Fault, rate: f64, target: Target) {
        lock(&self.rules).push(Rule {
            fault,
            target,
            remaining: None,
            rate: rate.clamp(0.0, 1.0),
        });
    }

    /// Removes every fault not yet fired.
    pub fn clear_faults(&self) {
        lock(&self.rules).clear();
    }

    /// How often each fault fired, by [`Fault::name`] and method.
    pub fn fired(&self) -> BTreeMap<String, usize> {
        lock(&self.fired).clone()
    }

    /// The requests received so far (the latest [`REQUEST_LOG_CAPACITY`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.log).iter().cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    /// Turns the request log off (long soaks) or on.
    pub fn set_recording(&self, on: bool) {
        self.record_requests.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The first rule that matches and fires, consumed once.
    fn take(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let mut hit = None;
        for (i, rule) in rules.iter_mut().enumerate() {
            if rule.remaining == Some(0) || !rule.target.matches(method, path) {
                continue;
            }
            if rule.rate < 1.0 && rand::random::<f64>() >= rule.rate {
                continue;
            }
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
            hit = Some((i, rule.fault.clone()));
            break;
        }
        let (i, fault) = hit?;
        if rules[i].remaining == Some(0) {
            rules.remove(i);
        }
        drop(rules);
        *lock(&self.fired).entry(format!("{} {method}", fault.name())).or_insert(0) += 1;
        Some(fault)
    }
}

/// Middleware: records every request (method, path, query, auth scheme, body).
pub async fn record(State(kit): State<Arc<SimKit>>, request: Request, next: Next) -> Response {
    if !kit.record_requests.load(std::sync::atomic::Ordering::SeqCst) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 10 * 1024 * 1024).await.unwrap_or_default();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let entry = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default(),
        auth_scheme: header("authorization").split_whitespace().next().unwrap_or_default().to_owned(),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    {
        let mut log = lock(&kit.log);
        if log.len() >= REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Middleware: answers with the injected fault, before or after the handler.
pub async fn faults(State(kit): State<Arc<SimKit>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let Some(fault) = kit.take(&method, &path) else {
        return next.run(request).await;
    };
    match fault {
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            next.run(request).await
        }
        Fault::RateLimit {
            retry_after,
            reset_in,
            beta_retry_after,
        } => kit.flavor.throttled(retry_after, reset_in, beta_retry_after),
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            kit.flavor.error(status, "injected by the simulator")
        }
        Fault::Garbage => {
            let mut response = Response::new(Body::from("<html><body>Bad gateway</body></html>"));
            response
                .headers_mut()
                .insert("content-type", axum::http::HeaderValue::from_static("text/html"));
            response
        }
        Fault::AppliedThenStatus(code) => {
            let _applied = next.run(request).await;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            kit.flavor.error(status, "the upstream answer was lost (injected by the simulator)")
        }
        Fault::AppliedThenDrop => {
            let _applied = next.run(request).await;
            // A body that fails at once: the server aborts the connection mid-answer.
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped by the simulator"))
            });
            let mut response = Response::new(Body::from_stream(broken));
            *response.status_mut() = StatusCode::OK;
            response
        }
        Fault::AppliedThenStall(d) => {
            let applied = next.run(request).await;
            tokio::time::sleep(d).await;
            applied
        }
    }
}
