//! An OpenID AuthZEN Authorization API 1.0 PDP.
//!
//! - Discovery through `/.well-known/authzen-configuration` (optionally per tenant), refusing
//!   metadata whose `policy_decision_point` is not the configured URL (PDP mix-up), and
//!   endpoints on any origin but the configured URL's or `allowed_origins` (the PDP's
//!   credentials go with every call).
//! - `/access/v1/evaluation`, or `/access/v1/evaluations` for two evaluations in one call
//!   (`batch = false` makes single calls: PDPs differ in batch support).
//! - Every call sends a fresh `X-Request-ID`; an echoed value must match.
//! - A rich PDP answers with `context.outcome`, `context.reasons`, `context.route_to` and
//!   Obligations-profile `context.obligations`; a boolean PDP is given two evaluations
//!   (`outcomes`), may the request be made at all and may it be approved without a person,
//!   which become deny / review / approve; the obligations of both answers bind the decision.
//!   An obligation deskbridge cannot fulfil turns approve into review. Absent values are
//!   omitted from requests, never sent as `null`. Anything else unexpected fails closed.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use super::remote::{PdpHttp, PdpTransport};
use super::{Decided, DecisionError, DecisionPoint, PolicyOutput};
use crate::mapping::path::{scalar_text, FieldPath};
use crate::schema::AccessRequest;

/// `[decision]` with `kind = "authzen"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzenConfig {
    /// The PDP's base URL (its `policy_decision_point`).
    #[serde(deserialize_with = "deskbridge_connector::urls::http_url")]
    pub url: url::Url,
    /// Read endpoints from `/.well-known/authzen-configuration`.
    #[serde(default = "yes")]
    pub discovery: bool,
    /// Origins besides `url`'s that discovered endpoints may use (`https://pdp-eu.example.com`).
    /// An endpoint anywhere else is refused: the PDP's credentials go with every call.
    #[serde(default)]
    pub allowed_origins: Vec<url::Url>,
    /// Multi-tenant discovery: `/.well-known/authzen-configuration/{tenant}`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Use `/access/v1/evaluations` when two evaluations are needed and the PDP offers it.
    #[serde(default = "yes")]
    pub batch: bool,
    /// `options.evaluations_semantic` of batch calls.
    #[serde(default)]
    pub evaluations_semantic: Semantic,
    /// How a request becomes subject, resource, action and context.
    #[serde(default)]
    pub request: RequestMapping,
    /// For a boolean PDP: the two actions evaluated to tell deny, review and approve apart.
    #[serde(default)]
    pub outcomes: Option<OutcomeEvaluations>,
    /// Who reviews when the PDP asks for review without naming anyone, or attaches an
    /// obligation deskbridge cannot fulfil.
    #[serde(default = "default_reviewer")]
    pub review_route_to: String,
    /// Recorded as the policy id (default `authzen:<host>`).
    #[serde(default)]
    pub policy_id: Option<String>,
    /// Recorded as the policy version.
    #[serde(default)]
    pub policy_version: Option<String>,
    /// Time limit, CA and credentials (`[decision.transport]`).
    #[serde(default)]
    pub transport: PdpTransport,
}

fn yes() -> bool {
    true
}
fn default_reviewer() -> String {
    "IAM Governance".into()
}

/// Batch semantics deskbridge can use (`permit_on_first_permit` cannot tell review apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Semantic {
    /// Evaluate all, answer all.
    #[default]
    ExecuteAll,
    /// Stop at the first deny: a refused request is not asked about auto-approval.
    DenyOnFirstDeny,
}

/// Paths into the access request (as in `deskbridge schema`) that build the AuthZEN request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestMapping {
    /// `subject.type`; `person` becomes `user`.
    pub subject_type: String,
    /// `subject.id`.
    pub subject_id: String,
    /// `resource.type` (a literal).
    pub resource_type: String,
    /// `resource.id`.
    pub resource_id: String,
    /// `action.name` for a rich PDP.
    pub action_name: String,
}

impl Default for RequestMapping {
    fn default() -> Self {
        Self {
            subject_type: "beneficiary.type".into(),
            subject_id: "beneficiary.id".into(),
            resource_type: "entitlement".into(),
            resource_id: "entitlement.id".into(),
            action_name: "kind".into(),
        }
    }
}

/// `[decision.outcomes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeEvaluations {
    /// May this request be made at all? false → deny.
    pub request_action: String,
    /// May it be approved without a person? true → approve, false → review.
    pub auto_approve_action: String,
}

#[derive(Debug, Clone)]
struct Endpoints {
    evaluation: String,
    evaluations: Option<String>,
}

struct Paths {
    subject_type: FieldPath,
    subject_id: FieldPath,
    resource_id: FieldPath,
    action_name: FieldPath,
}

/// An AuthZEN PDP.
pub struct AuthzenDecisionPoint {
    config: AuthzenConfig,
    paths: Paths,
    http: PdpHttp,
    endpoints: OnceCell<Endpoints>,
    policy_id: String,
}

/// One AuthZEN answer.
#[derive(Debug, Clone)]
struct Answer {
    decision: bool,
    context: Value,
}

impl AuthzenDecisionPoint {
    /// Builds the client; bad paths are configuration errors.
    pub fn new(config: AuthzenConfig) -> anyhow::Result<Self> {
        let path = |key: &str, p: &str| FieldPath::parse(p).map_err(|e| anyhow::anyhow!("decision.request.{key}: {e}"));
        let paths = Paths {
            subject_type: path("subject_type", &config.request.subject_type)?,
            subject_id: path("subject_id", &config.request.subject_id)?,
            resource_id: path("resource_id", &config.request.resource_id)?,
            action_name: path("action_name", &config.request.action_name)?,
        };
        let policy_id = config
            .policy_id
            .clone()
            .unwrap_or_else(|| format!("authzen:{}", config.url.host_str().unwrap_or("pdp")));
        Ok(Self {
            http: PdpHttp::new("AuthZEN PDP", &config.transport)?,
            paths,
            endpoints: OnceCell::new(),
            policy_id,
            config,
        })
    }

    fn base(&self) -> String {
        self.config.url.as_str().trim_end_matches('/').to_owned()
    }

    async fn endpoints(&self) -> Result<&Endpoints, DecisionError> {
        self.endpoints.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Endpoints, DecisionError> {
        let base = self.base();
        if !self.config.discovery {
            return Ok(Endpoints {
                evaluation: format!("{base}/access/v1/evaluation"),
                evaluations: Some(format!("{base}/access/v1/evaluations")),
            });
        }
        let mut url = format!("{base}/.well-known/authzen-configuration");
        if let Some(tenant) = &self.config.tenant {
            url.push('/');
            url.push_str(tenant);
        }
        let response = self.http.get(&url).await?;
        #[derive(Deserialize)]
        struct Metadata {
            policy_decision_point: String,
            access_evaluation_endpoint: String,
            #[serde(default)]
            access_evaluations_endpoint: Option<String>,
        }
        let metadata: Metadata =
            serde_json::from_slice(&response.body).map_err(|e| DecisionError::Malformed(format!("AuthZEN metadata at {url}: {e}")))?;
        if metadata.policy_decision_point.trim_end_matches('/') != base {
            return Err(DecisionError::Malformed(format!(
                "AuthZEN metadata at {url} names policy_decision_point {:?}, not {base:?}: refusing it (PDP mix-up)",
                metadata.policy_decision_point
            )));
        }
        let evaluation = self.same_origin("access_evaluation_endpoint", &metadata.access_evaluation_endpoint, &url)?;
        let evaluations = match &metadata.access_evaluations_endpoint {
            Some(e) => Some(self.same_origin("access_evaluations_endpoint", e, &url)?),
            None => None,
        };
        Ok(Endpoints { evaluation, evaluations })
    }

    /// An endpoint from discovery, if it is on the configured origin or an allowed one.
    fn same_origin(&self, key: &str, endpoint: &str, metadata_url: &str) -> Result<String, DecisionError> {
        let parsed = url::Url::parse(endpoint)
            .map_err(|e| DecisionError::Malformed(format!("AuthZEN metadata at {metadata_url}: {key} {endpoint:?}: {e}")))?;
        let origin = parsed.origin();
        let allowed = std::iter::once(&self.config.url)
            .chain(&self.config.allowed_origins)
            .any(|u| u.origin() == origin);
        // An opaque origin (a scheme without host) equals no configured one.
        if !allowed {
            return Err(DecisionError::Malformed(format!(
                "AuthZEN metadata at {metadata_url} puts {key} on origin {}, not the PDP's {}: refusing it, \
                 the PDP's credentials go only to its own origin (list others in decision.allowed_origins)",
                origin.ascii_serialization(),
                self.config.url.origin().ascii_serialization()
            )));
        }
        Ok(parsed.into())
    }

    fn text(&self, path: &FieldPath, input: &Value) -> Result<String, DecisionError> {
        path.lookup(input)
            .and_then(scalar_text)
            .ok_or_else(|| DecisionError::Engine(format!("the request has nothing at {}", path.as_str())))
    }

    /// subject, resource, context and the default action of a request.
    fn parts(&self, request: &AccessRequest) -> Result<(Value, Value, Value, Value), DecisionError> {
        let input = serde_json::to_value(request).map_err(|e| DecisionError::Engine(e.to_string()))?;
        let subject_type = match self.text(&self.paths.subject_type, &input)?.as_str() {
            "person" => "user".to_owned(),
            other => other.to_owned(),
        };
        let subject = json!({"type": subject_type, "id": self.text(&self.paths.subject_id, &input)?,
            "properties": {"display_name": request.beneficiary.display_name}});
        let mut resource = json!({"type": self.config.request.resource_type, "id": self.text(&self.paths.resource_id, &input)?,
            "properties": {"system": request.target.system, "environment": request.target.environment,
                "privileged": request.entitlement.privileged, "name": request.entitlement.name}});
        // The catalog's entry: tier, owner, maximum duration, SoD conflicts.
        if let Some(catalog) = &request.catalog {
            resource["properties"]["catalog"] = json!(catalog);
        }
        let action = json!({"name": self.text(&self.paths.action_name, &input)?,
            "properties": {"kind": request.kind, "duration_days": request.duration_days, "expires_at": request.expires_at}});
        let context = json!({"ticket": request.source, "requester": request.requester, "justification": request.justification,
            "urgency": request.urgency, "approver_context": request.approver_context, "nhi": request.nhi, "attributes": request.attributes,
            // The directory's answers about the people involved, and what the ticket claimed.
            "directory": request.context, "claims": request.claims,
            "supported_obligations": ["step-up", "custom:max_duration_days"]});
        // AuthZEN: absent values are omitted, never sent as null.
        Ok((
            strip_nulls(subject),
            strip_nulls(resource),
            strip_nulls(action),
            strip_nulls(context),
        ))
    }

    async fn call(&self, url: &str, body: &Value, calls: &mut Vec<Value>) -> Result<Value, DecisionError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let bytes = serde_json::to_vec(body).map_err(|e| DecisionError::Engine(e.to_string()))?;
        let response = self.http.post(url, bytes, &[("x-request-id", request_id.clone())]).await?;
        if let Some(echoed) = response.headers.get("x-request-id") {
            if echoed.to_str().ok() != Some(request_id.as_str()) {
                return Err(DecisionError::Malformed(format!(
                    "the PDP echoed X-Request-ID {echoed:?} for {request_id}"
                )));
            }
        }
        let answer: Value =
            serde_json::from_slice(&response.body).map_err(|e| DecisionError::Malformed(format!("the PDP's answer is not JSON: {e}")))?;
        calls.push(json!({"url": url, "request_id": request_id, "request": body, "response": answer}));
        Ok(answer)
    }

    async fn evaluate_one(&self, body: Value, calls: &mut Vec<Value>) -> Result<Answer, DecisionError> {
        let url = self.endpoints().await?.evaluation.clone();
        answer(&self.call(&url, &body, calls).await?)
    }

    /// The two outcome evaluations, batched when possible.
    async fn evaluate_pair(
        &self,
        request: &AccessRequest,
        pair: &OutcomeEvaluations,
        calls: &mut Vec<Value>,
    ) -> Result<Vec<Answer>, DecisionError> {
        let (subject, resource, action, context) = self.parts(request)?;
        let with_name = |name: &str| {
            let mut a = action.clone();
            a["name"] = json!(name);
            a
        };
        let actions = [with_name(&pair.request_action), with_name(&pair.auto_approve_action)];
        let batch_url = self.endpoints().await?.evaluations.clone().filter(|_| self.config.batch);
        let Some(url) = batch_url else {
            let mut answers = Vec::new();
            for a in actions {
                let answer = self
                    .evaluate_one(
                        json!({"subject": subject, "resource": resource, "action": a, "context": context}),
                        calls,
                    )
                    .await?;
                let stop = !answer.decision;
                answers.push(answer);
                if stop {
                    break;
                }
            }
            return Ok(answers);
        };
        let semantic = match self.config.evaluations_semantic {
            Semantic::ExecuteAll => "execute_all",
            Semantic::DenyOnFirstDeny => "deny_on_first_deny",
        };
        let body = json!({"subject": subject, "resource": resource, "context": context,
            "evaluations": actions.iter().map(|a| json!({"action": a})).collect::<Vec<_>>(),
            "options": {"evaluations_semantic": semantic}});
        let raw = self.call(&url, &body, calls).await?;
        let items = raw
            .get("evaluations")
            .and_then(Value::as_array)
            .ok_or_else(|| DecisionError::Malformed("a batch answer without `evaluations`".into()))?;
        let answers = items.iter().map(answer).collect::<Result<Vec<_>, _>>()?;
        let complete = answers.len() == 2
            || (answers.len() == 1 && !answers[0].decision && self.config.evaluations_semantic == Semantic::DenyOnFirstDeny);
        if !complete {
            return Err(DecisionError::Malformed(format!("asked 2 evaluations, got {}", answers.len())));
        }
        Ok(answers)
    }

    /// A decision object from one answer's `context`, checked like any policy output.
    fn interpret(&self, a: &Answer, default_deny_reason: &str) -> Result<PolicyOutput, DecisionError> {
        let ctx = &a.context;
        let outcome = match ctx.get("outcome").and_then(Value::as_str) {
            None => if a.decision { "approve" } else { "deny" }.to_owned(),
            Some("route_to_approver") => "review".to_owned(),
            Some("needs_more_info") => "needs_info".to_owned(),
            Some(o) => o.to_owned(),
        };
        if a.decision != (outcome == "approve") {
            return Err(DecisionError::Malformed(format!(
                "decision {} contradicts context.outcome {outcome:?}",
                a.decision
            )));
        }
        let mut reasons: Vec<String> = match ctx.get("reasons") {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(_) => return Err(DecisionError::Malformed("context.reasons is not a list".into())),
            None => ctx
                .get("reason")
                .and_then(Value::as_str)
                .map(|r| vec![r.to_owned()])
                .unwrap_or_default(),
        };
        if reasons.is_empty() {
            reasons.push(if a.decision {
                "the PDP permits this request".into()
            } else {
                default_deny_reason.to_owned()
            });
        }
        let (obligations, unknown) = obligations(ctx.get("obligations"))?;
        let mut outcome = outcome;
        let mut route_to = ctx
            .get("route_to")
            .or_else(|| ctx.get("approver"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if outcome == "approve" && !unknown.is_empty() {
            outcome = "review".into();
            reasons.push(format!(
                "the PDP attached obligations deskbridge cannot fulfil ({}), so a person must review",
                unknown.join(", ")
            ));
        }
        if outcome == "review" && route_to.is_none() {
            route_to = Some(self.config.review_route_to.clone());
        }
        PolicyOutput::from_json(&json!({
            "outcome": outcome, "reasons": reasons, "route_to": route_to,
            "missing": ctx.get("missing").cloned().unwrap_or(json!([])), "obligations": obligations,
        }))
    }
}

/// `second` with the obligations of both answers.
fn merged(first: &Answer, second: &Answer) -> Result<Answer, DecisionError> {
    let list = |a: &Answer| match a.context.get("obligations") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(DecisionError::Malformed("context.obligations is not a list".into())),
    };
    let all: Vec<Value> = list(first)?.into_iter().chain(list(second)?).collect();
    let mut answer = second.clone();
    if !all.is_empty() {
        answer.context["obligations"] = Value::Array(all);
    }
    Ok(answer)
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// One evaluation result; a per-item error fails closed (it is not a policy deny).
fn answer(raw: &Value) -> Result<Answer, DecisionError> {
    let decision = raw
        .get("decision")
        .and_then(Value::as_bool)
        .ok_or_else(|| DecisionError::Malformed(format!("no boolean `decision` in {raw}")))?;
    let context = raw.get("context").cloned().unwrap_or(json!({}));
    if !context.is_object() {
        return Err(DecisionError::Malformed("`context` is not an object".into()));
    }
    if let Some(error) = context.get("error") {
        return Err(DecisionError::Unavailable(format!("the PDP reported an evaluation error: {error}")));
    }
    Ok(Answer { decision, context })
}

/// Obligations deskbridge understands, and the types it does not.
fn obligations(raw: Option<&Value>) -> Result<(Value, Vec<String>), DecisionError> {
    let mut understood = json!({"step_up": false});
    let mut unknown = Vec::new();
    let Some(raw) = raw else { return Ok((understood, unknown)) };
    let items = raw
        .as_array()
        .ok_or_else(|| DecisionError::Malformed("context.obligations is not a list".into()))?;
    for o in items {
        let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "step-up" => understood["step_up"] = json!(true),
            "custom" if o["properties"]["max_duration_days"].is_u64() => {
                understood["max_duration_days"] = o["properties"]["max_duration_days"].clone()
            }
            _ => unknown.push(if kind.is_empty() { "untyped".to_owned() } else { kind.to_owned() }),
        }
    }
    Ok((understood, unknown))
}

#[async_trait]
impl DecisionPoint for AuthzenDecisionPoint {
    fn describe(&self) -> String {
        self.policy_id.clone()
    }

    async fn decide(&self, request: &AccessRequest) -> Result<Decided, DecisionError> {
        let mut calls = Vec::new();
        let output = match &self.config.outcomes {
            None => {
                let (subject, resource, action, context) = self.parts(request)?;
                let a = self
                    .evaluate_one(
                        json!({"subject": subject, "resource": resource, "action": action, "context": context}),
                        &mut calls,
                    )
                    .await?;
                self.interpret(&a, "the PDP denies this request")?
            }
            Some(pair) => {
                let answers = self.evaluate_pair(request, pair, &mut calls).await?;
                match answers.as_slice() {
                    [may_request, ..] if !may_request.decision => self.interpret(may_request, "the PDP does not allow this request")?,
                    // Obligations from either answer bind the decision: merge them.
                    [may_request, auto] if auto.decision => self.interpret(&merged(may_request, auto)?, "")?,
                    [may_request, auto] => {
                        let mut review = merged(may_request, auto)?;
                        if review.context.get("outcome").is_none() {
                            review.context["outcome"] = json!("review");
                            if review.context.get("reasons").is_none() && review.context.get("reason").is_none() {
                                review.context["reasons"] = json!(["the PDP allows the request but not without a person's approval"]);
                            }
                        }
                        self.interpret(&review, "")?
                    }
                    _ => return Err(DecisionError::Malformed("no evaluation answer".into())),
                }
            }
        };
        Ok(Decided {
            decision: output.into_decision(
                self.policy_id.clone(),
                self.config.policy_version.clone().unwrap_or_else(|| "unversioned".into()),
                super::new_decision_id(),
            ),
            raw: json!({"calls": calls}),
        })
    }
}
