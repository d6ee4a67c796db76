//! Decision points written for the tests, following the specs: an AuthZEN 1.0 PDP (discovery,
//! evaluation, evaluations with all three batch semantics, the spec's error codes, X-Request-ID
//! echo), OPA's Data API evaluating real Rego, and a webhook adapter signing its answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deskbridge::decision::webhook;
use serde_json::{json, Value};

/// How the AuthZEN PDP answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// `context.outcome`, reasons, route and obligations for known entitlements.
    Rich,
    /// Booleans only: `request` is refused for `payroll-approver`; `auto_approve` only outside
    /// production for unprivileged entitlements.
    Boolean,
}

#[derive(Debug)]
pub struct Behaviour {
    pub mode: Mode,
    pub token: Option<String>,
    pub batch_supported: bool,
    pub advertised_pdp: Option<String>,
    pub wrong_request_id: bool,
    pub status: Option<u16>,
    pub body: Option<String>,
    pub delay: Option<Duration>,
    pub item_error: bool,
    /// Discovery advertises its evaluation endpoints under this base instead of its own.
    pub endpoints_base: Option<String>,
    /// Boolean mode: obligations attached to the answer for the `request` action.
    pub request_obligations: Option<Value>,
    pub calls: Vec<(String, Value)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            mode: Mode::Rich,
            token: Some("pdp-token".into()),
            batch_supported: true,
            advertised_pdp: None,
            wrong_request_id: false,
            status: None,
            body: None,
            delay: None,
            item_error: false,
            endpoints_base: None,
            request_obligations: None,
            calls: Vec::new(),
        }
    }
}

pub struct Server {
    pub url: String,
    pub state: Arc<Mutex<Behaviour>>,
}

impl Server {
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.state.lock().expect("lock"));
    }

    pub fn calls(&self) -> Vec<(String, Value)> {
        self.state.lock().expect("lock").calls.clone()
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

type Shared = (Arc<Mutex<Behaviour>>, String);

pub async fn authzen() -> Server {
    let state = Arc::new(Mutex::new(Behaviour::default()));
    // Metadata names the PDP's own URL, so bind before building the router.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/.well-known/authzen-configuration", get(metadata))
        .route("/access/v1/evaluation", post(evaluation))
        .route("/access/v1/evaluations", post(evaluations))
        .route("/token", post(token))
        .with_state((state.clone(), url.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { url, state }
}

async fn metadata(State((state, base)): State<Shared>) -> Response {
    let s = state.lock().expect("lock");
    let endpoints = s.endpoints_base.clone().unwrap_or_else(|| base.clone());
    let mut doc = json!({
        "policy_decision_point": s.advertised_pdp.clone().unwrap_or_else(|| base.clone()),
        "access_evaluation_endpoint": format!("{endpoints}/access/v1/evaluation"),
    });
    if s.batch_supported {
        doc["access_evaluations_endpoint"] = json!(format!("{endpoints}/access/v1/evaluations"));
    }
    drop(s);
    state.lock().expect("lock").calls.push(("metadata".into(), Value::Null));
    Json(doc).into_response()
}

/// OAuth 2.0 client credentials (RFC 6749 §4.4), client authenticated with HTTP Basic.
async fn token(State((state, _)): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    use base64::Engine as _;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let grant_ok = form.iter().any(|(k, v)| k == "grant_type" && v == "client_credentials");
    if !grant_ok || basic.as_deref() != Some("deskbridge:client-secret") {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    state.lock().expect("lock").calls.push(("token".into(), json!(form)));
    let token = state.lock().expect("lock").token.clone().unwrap_or_default();
    Json(json!({"access_token": token, "token_type": "bearer", "expires_in": 3600})).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

/// Transport-level checks every AuthZEN call gets: auth, content type, a JSON object.
fn admit(state: &Mutex<Behaviour>, headers: &HeaderMap, body: &Bytes) -> Result<Value, Box<Response>> {
    let s = state.lock().expect("lock");
    if let Some(token) = &s.token {
        let ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(format!("Bearer {token}").as_str());
        if !ok {
            let mut r = error(StatusCode::UNAUTHORIZED, "Unauthorized");
            r.headers_mut().insert("www-authenticate", "Bearer".parse().expect("header"));
            return Err(Box::new(r));
        }
    }
    if !headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
    {
        return Err(Box::new(error(StatusCode::BAD_REQUEST, "Content-Type must be application/json")));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(Box::new(error(StatusCode::BAD_REQUEST, "the body must be a JSON object"))),
    }
}

fn well_formed(item: &Value) -> bool {
    item["subject"]["type"].is_string()
        && item["subject"]["id"].is_string()
        && item["resource"]["type"].is_string()
        && item["resource"]["id"].is_string()
        && item["action"]["name"].is_string()
}

fn decide(mode: &Mode, item: &Value, request_obligations: Option<&Value>) -> Value {
    let entitlement = item["resource"]["id"].as_str().unwrap_or_default();
    let privileged = item["resource"]["properties"]["privileged"] == json!(true);
    let prod = item["resource"]["properties"]["environment"] == json!("prod");
    match mode {
        Mode::Boolean => match item["action"]["name"].as_str() {
            Some("request") => match request_obligations {
                Some(o) => json!({"decision": entitlement != "payroll-approver", "context": {"obligations": o}}),
                None => json!({"decision": entitlement != "payroll-approver"}),
            },
            Some("auto_approve") => json!({"decision": !privileged && !prod}),
            _ => json!({"decision": false}),
        },
        Mode::Rich => match entitlement {
            "FI_POSTING_ADMIN" => json!({"decision": false, "context": {"outcome": "review", "route_to": "SAP Access Owners",
                "reasons": ["privileged SAP access needs the owner"],
                "obligations": [{"id": "o1", "type": "step-up", "properties": {"acr_values": "phr"}},
                                {"id": "o2", "type": "custom", "properties": {"max_duration_days": 7}}]}}),
            "jira-developers" => json!({"decision": true, "context": {"outcome": "approve", "reasons": ["standard developer access"],
                "obligations": [{"id": "o3", "type": "notification", "properties": {"to": "manager"}}]}}),
            "payroll-approver" => json!({"decision": false, "context": {"reason": "separation of duties"}}),
            "reports-viewer" => {
                json!({"decision": false, "context": {"outcome": "needs_info", "missing": ["justification"], "reasons": ["say why"]}})
            }
            _ => json!({"decision": true}),
        },
    }
}

/// Applies the configured faults, then answers with `answer` and the X-Request-ID echo.
async fn respond(state: &Mutex<Behaviour>, headers: &HeaderMap, answer: Value) -> Response {
    let (status, body, delay, wrong_id) = {
        let s = state.lock().expect("lock");
        (s.status, s.body.clone(), s.delay, s.wrong_request_id)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(code) = status {
        return error(StatusCode::from_u16(code).expect("status"), "Internal error");
    }
    let mut response = match body {
        Some(raw) => ([("content-type", "application/json")], raw).into_response(),
        None => Json(answer).into_response(),
    };
    if let Some(id) = headers.get("x-request-id") {
        let echoed = if wrong_id {
            "not-your-id".parse().expect("header")
        } else {
            id.clone()
        };
        response.headers_mut().insert("x-request-id", echoed);
    }
    response
}

async fn evaluation(State((state, _)): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match admit(&state, &headers, &body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    state.lock().expect("lock").calls.push(("evaluation".into(), request.clone()));
    if !well_formed(&request) {
        return error(StatusCode::BAD_REQUEST, "subject, resource and action are required");
    }
    let (mode, obligations) = {
        let s = state.lock().expect("lock");
        (s.mode.clone(), s.request_obligations.clone())
    };
    respond(&state, &headers, decide(&mode, &request, obligations.as_ref())).await
}

async fn evaluations(State((state, _)): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match admit(&state, &headers, &body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    state.lock().expect("lock").calls.push(("evaluations".into(), request.clone()));
    let items = request["evaluations"].as_array().cloned().unwrap_or_default();
    let (mode, item_error, obligations) = {
        let s = state.lock().expect("lock");
        (s.mode.clone(), s.item_error, s.request_obligations.clone())
    };
    if items.is_empty() {
        // Backwards compatible with a single evaluation.
        if !well_formed(&request) {
            return error(StatusCode::BAD_REQUEST, "subject, resource and action are required");
        }
        return respond(&state, &headers, decide(&mode, &request, obligations.as_ref())).await;
    }
    let semantic = request["options"]["evaluations_semantic"]
        .as_str()
        .unwrap_or("execute_all")
        .to_owned();
    let mut answers = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let mut merged = json!({});
        for key in ["subject", "resource", "action", "context"] {
            // An item's own key overrides the top-level default.
            let value = item.get(key).or_else(|| request.get(key)).cloned().unwrap_or(Value::Null);
            if !value.is_null() {
                merged[key] = value;
            }
        }
        let answer = if item_error && n == 1 {
            json!({"decision": false, "context": {"error": {"status": 500, "message": "evaluation failed"}}})
        } else if well_formed(&merged) {
            decide(&mode, &merged, obligations.as_ref())
        } else {
            json!({"decision": false, "context": {"error": {"status": 400, "message": "subject, resource and action are required"}}})
        };
        let decision = answer["decision"] == json!(true);
        answers.push(answer);
        match semantic.as_str() {
            "deny_on_first_deny" if !decision => break,
            "permit_on_first_permit" if decision => break,
            _ => {}
        }
    }
    respond(&state, &headers, json!({ "evaluations": answers })).await
}

/// OPA's Data API over the shipped policy, evaluated by regorus.
pub async fn opa(fail: Arc<Mutex<Option<u16>>>) -> String {
    let policy = std::fs::read_to_string(crate::helpers::root().join("examples/policies/access.rego")).expect("policy");
    let mut engine = regorus::Engine::new();
    engine.add_policy("access.rego".into(), policy).expect("policy loads");
    let engine = Arc::new(Mutex::new(engine));
    let app = Router::new().route(
        "/v1/data/{*path}",
        post(move |Path(path): Path<String>, Json(body): Json<Value>| {
            let (engine, fail) = (engine.clone(), fail.clone());
            async move {
                if let Some(code) = *fail.lock().expect("lock") {
                    return (
                        StatusCode::from_u16(code).expect("status"),
                        Json(json!({"code": "internal_error", "message": "boom"})),
                    )
                        .into_response();
                }
                let mut engine = engine.lock().expect("lock").clone();
                let decision_id = uuid::Uuid::new_v4().to_string();
                if let Some(input) = body.get("input") {
                    engine.set_input(regorus::Value::from_json_str(&input.to_string()).expect("input"));
                }
                let rule = format!("data.{}", path.trim_matches('/').replace('/', "."));
                match engine.eval_rule(rule) {
                    Ok(v) if v != regorus::Value::Undefined => {
                        let result: Value = serde_json::from_str(&v.to_json_str().expect("json")).expect("json");
                        Json(json!({"result": result, "decision_id": decision_id})).into_response()
                    }
                    // Undefined: 200 without `result`, as OPA answers.
                    _ => Json(json!({"decision_id": decision_id})).into_response(),
                }
            }
        }),
    );
    serve(app).await
}

/// How the webhook adapter misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFault {
    None,
    BadSignature,
    WrongRequestId,
}

/// A webhook adapter deciding with the shipped policy and signing its answers.
pub async fn webhook_adapter(secret: &str, fault: WebhookFault) -> String {
    let secret: secrecy::SecretString = secret.to_owned().into();
    let (_, policy) = deskbridge::commands::demo::shipped().expect("policy");
    let policy = Arc::new(policy);
    let app = Router::new().route(
        "/decide",
        post(move |headers: HeaderMap, body: Bytes| {
            let (secret, policy) = (secret.clone(), policy.clone());
            async move {
                let signature = headers.get(webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
                if !webhook::verify(&secret, &body, signature) {
                    return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
                }
                let request: Value = serde_json::from_slice(&body).expect("json");
                let decision = policy.evaluate(&request["request"]).expect("decides");
                let request_id = if fault == WebhookFault::WrongRequestId {
                    json!("someone-else")
                } else {
                    request["request_id"].clone()
                };
                let answer = serde_json::to_vec(&json!({"request_id": request_id, "decision": decision, "decision_id": "iga-42",
                    "policy_id": "iga-adapter", "policy_version": "7"}))
                .expect("json");
                let sig = if fault == WebhookFault::BadSignature {
                    "sha256=00".to_owned()
                } else {
                    webhook::sign(&secret, &answer)
                };
                (
                    [("content-type", "application/json"), (webhook::SIGNATURE_HEADER, sig.as_str())],
                    answer,
                )
                    .into_response()
            }
        }),
    );
    serve(app).await
}
