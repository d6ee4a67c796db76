//! A stateful simulator of the Jira Cloud platform REST API v3, the Jira Data Center v2 subset
//! and the Jira Service Management request-comment API, as deskbridge uses them:
//!
//! - `POST /rest/api/3/search/jql` (bounded JQL, `nextPageToken`, `isLast`, explicit `fields`);
//!   `POST /rest/api/2/search` (`startAt`, `total`, the 10,000-result window); the old
//!   `/rest/api/3/search` answers 410 Gone as on Cloud;
//! - issues with custom fields (ids differ per simulator start, so only name resolution through
//!   `/rest/api/{2,3}/field` works) and JSM request types (`com.atlassian.servicedesk:vp-origin`);
//! - comments in ADF (v3; an invalid document is a 400) or wiki text (v2), comment properties
//!   set in the create call or with `PUT .../properties/{key}`, `orderBy=-created`,
//!   `expand=properties`; `POST /rest/servicedeskapi/request/{key}/comment` with `public`;
//! - `/myself`, `/mypermissions`; basic (email + API token), bearer (personal access token or
//!   OAuth access token) auth; an OAuth token endpoint with rotating refresh tokens;
//! - signed admin-webhook deliveries (`X-Hub-Signature`, `X-Atlassian-Webhook-Identifier`) to a
//!   configured URL when an issue is created or updated;
//! - 429s with `Retry-After`, `X-RateLimit-Reset` and `Beta-Retry-After`, other faults, and a
//!   log of every request for contract assertions.

mod jql;
mod routes;
mod seed;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

use deskbridge_connector::simkit::SimKit;
pub use deskbridge_connector::simkit::{Fault, RecordedRequest, Target};
pub use jql::Jql;
pub use seed::{REQUEST_TYPES, SEEDED_ACCESS_ISSUES, SEEDED_PROJECT};

/// A user of the simulated site.
#[derive(Debug, Clone)]
pub struct SimUser {
    /// Atlassian account id.
    pub account_id: String,
    /// Display name.
    pub display_name: String,
    /// Email (also the basic-auth user name).
    pub email: String,
    /// API token for basic auth (Cloud), if the user may call the API.
    pub api_token: Option<String>,
    /// Personal access token (Data Center bearer), if any.
    pub pat: Option<String>,
    /// Project permissions held (`BROWSE_PROJECTS`, `ADD_COMMENTS`, ...).
    pub permissions: Vec<String>,
}

/// The integration user's email.
pub const INTEGRATION_EMAIL: &str = "deskbridge@example.com";
/// Its API token.
pub const API_TOKEN: &str = "sim-api-token";
/// Its personal access token.
pub const PAT: &str = "sim-personal-access-token";
/// The OAuth client `(client_id, client_secret)`.
pub const OAUTH_CLIENT: (&str, &str) = ("deskbridge-3lo", "sim-3lo-secret");
/// A user who may browse but not comment.
pub const READ_ONLY_EMAIL: &str = "auditor@example.com";
/// Its API token.
pub const READ_ONLY_TOKEN: &str = "sim-readonly-token";

/// How the simulated site behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Load the seeded JSM project.
    pub seed: bool,
    /// Lifetime of OAuth access tokens.
    pub token_ttl: Duration,
    /// First custom field number; custom field ids are `customfield_<base + n>`.
    pub field_id_base: u32,
    /// Deliver signed webhooks `(url, secret)` on issue create and update.
    pub webhook: Option<(String, String)>,
    /// How long a search's `nextPageToken` stays valid (7 days on Cloud).
    pub page_token_ttl: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: true,
            token_ttl: Duration::from_secs(3600),
            field_id_base: 10_000 + rand::random::<u32>() % 9000,
            webhook: None,
            page_token_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A comment on an issue.
#[derive(Debug, Clone)]
pub struct SimComment {
    /// Comment id.
    pub id: u64,
    /// Author account id.
    pub author: String,
    /// The body as sent: an ADF document (v3) or a string (v2, JSM).
    pub body: Value,
    /// Plain text of the body (ADF text nodes joined).
    pub text: String,
    /// Created, epoch ms.
    pub created_ms: i64,
    /// Comment properties.
    pub properties: BTreeMap<String, Value>,
    /// Visible to customers in the portal.
    pub public: bool,
}

/// An issue.
#[derive(Debug, Clone)]
pub struct Issue {
    /// Numeric id.
    pub id: u64,
    /// Project key.
    pub project: String,
    /// Number within the project (`ACC-<number>`).
    pub number: u64,
    /// Issue type name.
    pub issue_type: String,
    /// Status name.
    pub status: String,
    /// Summary.
    pub summary: String,
    /// Description (plain text).
    pub description: String,
    /// Reporter account id.
    pub reporter: String,
    /// Created, epoch ms.
    pub created_ms: i64,
    /// Updated, epoch ms.
    pub updated_ms: i64,
    /// JSM request type `(id, name)`.
    pub request_type: Option<(String, String)>,
    /// Custom field values by field name, in API shape.
    pub custom: BTreeMap<String, Value>,
    /// Comments, oldest first.
    pub comments: Vec<SimComment>,
}

impl Issue {
    /// `PROJECT-n`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.project, self.number)
    }
}

/// A custom field definition.
#[derive(Debug, Clone)]
pub struct FieldDef {
    /// Display name.
    pub name: String,
    /// `schema.type`.
    pub schema_type: &'static str,
    /// `schema.custom`.
    pub schema_custom: &'static str,
}

/// A webhook delivery the simulator made.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-Atlassian-Webhook-Identifier`.
    pub identifier: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// The HTTP status deskbridge answered (0 when unreachable).
    pub status: u16,
}

pub(crate) struct Db {
    issues: Vec<Issue>,
    /// Where each issue is in `issues`, by id and by key: issues are only ever appended and
    /// neither changes, so a look-up never scans every issue (a load run holds 100,000).
    by_id: HashMap<u64, usize>,
    by_key: HashMap<String, usize>,
    /// Every issue's `(updated, id)`, in order: a search ordered by `updated` walks from its
    /// position instead of scanning every issue for every page.
    by_updated: BTreeSet<(i64, u64)>,
    /// The issue last lent out to change, with the `updated` it had then: its place in
    /// `by_updated` is corrected before the next lending or ordered read.
    lent: Option<(i64, usize)>,
    /// Which issue each comment is on, by comment id.
    comment_on: HashMap<u64, usize>,
    next_id: u64,
    next_comment: u64,
    numbers: HashMap<String, u64>,
}

impl Db {
    fn new() -> Self {
        Self {
            issues: Vec::new(),
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            by_updated: BTreeSet::new(),
            lent: None,
            comment_on: HashMap::new(),
            next_id: 10_001,
            next_comment: 20_001,
            numbers: HashMap::new(),
        }
    }

    fn add(&mut self, issue: Issue) {
        let at = self.issues.len();
        self.by_id.insert(issue.id, at);
        self.by_key.insert(issue.key(), at);
        self.by_updated.insert((issue.updated_ms, issue.id));
        self.issues.push(issue);
    }

    /// Where the issue with this id (its digits exactly) or key is.
    fn position(&self, id_or_key: &str) -> Option<usize> {
        id_or_key
            .parse::<u64>()
            .ok()
            .filter(|id| id.to_string() == id_or_key)
            .and_then(|id| self.by_id.get(&id))
            .or_else(|| self.by_key.get(id_or_key))
            .copied()
    }

    /// The issue with this id or key.
    pub(crate) fn get(&self, id_or_key: &str) -> Option<&Issue> {
        self.issues.get(self.position(id_or_key)?)
    }

    /// The issue with this id or key, to change. Its place in `by_updated` is corrected before
    /// the next lending or ordered read ([`Db::replace_lent`]).
    pub(crate) fn get_mut(&mut self, id_or_key: &str) -> Option<&mut Issue> {
        self.replace_lent();
        let at = self.position(id_or_key)?;
        let issue = self.issues.get_mut(at)?;
        self.lent = Some((issue.updated_ms, at));
        Some(issue)
    }

    /// Moves the issue last lent out to its `updated`'s place in `by_updated`.
    fn replace_lent(&mut self) {
        if let Some((before, at)) = self.lent.take() {
            let issue = &self.issues[at];
            self.by_updated.remove(&(before, issue.id));
            self.by_updated.insert((issue.updated_ms, issue.id));
        }
    }

    /// The comment with this id (its digits exactly), to change.
    pub(crate) fn comment_mut(&mut self, id: &str) -> Option<&mut SimComment> {
        let id = id.parse::<u64>().ok().filter(|n| n.to_string() == id)?;
        let at = *self.comment_on.get(&id)?;
        self.issues.get_mut(at)?.comments.iter_mut().find(|c| c.id == id)
    }

    /// The comment with this id (its digits exactly).
    pub(crate) fn comment(&self, id: &str) -> Option<&SimComment> {
        let id = id.parse::<u64>().ok().filter(|n| n.to_string() == id)?;
        let at = *self.comment_on.get(&id)?;
        self.issues.get(at)?.comments.iter().find(|c| c.id == id)
    }

    /// Issues in `(updated, id)` order from `updated` = `from` on, with `by_updated` first
    /// brought up to date.
    pub(crate) fn ordered(&mut self, from: i64) -> impl Iterator<Item = &Issue> {
        self.replace_lent();
        let (by_updated, by_id, issues) = (&self.by_updated, &self.by_id, &self.issues);
        by_updated
            .range((from, 0)..)
            .filter_map(move |(_, id)| by_id.get(id).map(|at| &issues[*at]))
    }
}

pub(crate) struct State {
    db: Mutex<Db>,
    users: Vec<SimUser>,
    fields: Vec<FieldDef>,
    config: SimConfig,
    access_tokens: Mutex<HashMap<String, (String, Instant)>>,
    refresh_tokens: Mutex<HashMap<String, String>>,
    grants: Mutex<Vec<String>>,
    kit: Arc<SimKit>,
    deliveries: Mutex<Vec<Delivery>>,
    base_url: String,
    http: reqwest::Client,
}

pub(crate) use deskbridge_connector::simkit::lock;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Jira's timestamp format (`2026-11-22T10:15:30.123+0000`).
pub fn jira_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
        .to_string()
}

impl State {
    pub(crate) fn field_id(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .position(|f| f.name == name)
            .map(|n| format!("customfield_{}", self.config.field_id_base + n as u32))
    }

    /// The name of custom field `customfield_<n>`.
    pub(crate) fn field_name(&self, id: &str) -> Option<&str> {
        let n: u32 = id.strip_prefix("customfield_")?.parse().ok()?;
        self.fields
            .get(n.checked_sub(self.config.field_id_base)? as usize)
            .map(|f| f.name.as_str())
    }

    /// Creates an issue (the portal, `POST /rest/api/3/issue`, JSM's create request).
    pub(crate) fn create(self: &Arc<Self>, new: NewIssue) -> Issue {
        let issue = {
            let mut db = lock(&self.db);
            let id = db.next_id;
            db.next_id += 1;
            let number = {
                let n = db.numbers.entry(new.project.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let at = new.updated_ms.unwrap_or_else(now_ms);
            let reporter = self
                .users
                .iter()
                .find(|u| u.email == new.reporter || u.account_id == new.reporter)
                .map_or_else(|| new.reporter.clone(), |u| u.account_id.clone());
            let request_type = new
                .request_type
                .as_deref()
                .and_then(|name| seed::REQUEST_TYPES.iter().find(|(id, n)| *n == name || *id == name))
                .map(|(id, name)| (id.to_string(), name.to_string()));
            let issue = Issue {
                id,
                project: new.project,
                number,
                issue_type: new.issue_type,
                status: new.status.unwrap_or_else(|| "Waiting for support".into()),
                summary: new.summary,
                description: new.description,
                reporter,
                created_ms: at,
                updated_ms: at,
                request_type,
                custom: new.custom.into_iter().collect(),
                comments: Vec::new(),
            };
            db.add(issue.clone());
            issue
        };
        self.deliver("jira:issue_created", &issue);
        issue
    }

    /// Changes fields by name (`status`, `summary`, `description`, a custom field's name);
    /// `updated` becomes now. `None` when the issue does not exist.
    pub(crate) fn change(self: &Arc<Self>, id_or_key: &str, changes: &[(&str, Value)]) -> Option<Issue> {
        let issue = {
            let mut db = lock(&self.db);
            let issue = db.get_mut(id_or_key)?;
            for (name, value) in changes {
                let text = value.as_str().unwrap_or_default().to_owned();
                match *name {
                    "status" => issue.status = text,
                    "summary" => issue.summary = text,
                    "description" => issue.description = text,
                    other => {
                        issue.custom.insert(other.to_owned(), value.clone());
                    }
                }
            }
            State::touch(issue);
            issue.clone()
        };
        self.deliver("jira:issue_updated", &issue);
        Some(issue)
    }

    pub(crate) fn user(&self, account_id: &str) -> Option<&SimUser> {
        self.users.iter().find(|u| u.account_id == account_id)
    }

    /// Bumps `updated` strictly forward (two changes in one millisecond still order).
    fn touch(issue: &mut Issue) {
        issue.updated_ms = now_ms().max(issue.updated_ms + 1);
    }

    /// Sends a signed `jira:issue_*` delivery for `issue`, when a webhook is configured.
    fn deliver(self: &Arc<Self>, event: &str, issue: &Issue) {
        let Some((url, secret)) = self.config.webhook.clone() else { return };
        let body = serde_json::to_vec(&serde_json::json!({
            "timestamp": now_ms(),
            "webhookEvent": event,
            "issue_event_type_name": if event == "jira:issue_created" { "issue_created" } else { "issue_generic" },
            "user": {"accountId": issue.reporter},
            "issue": routes::issue_json(self, issue, &["summary", "status", "updated"], 3),
        }))
        .unwrap_or_default();
        let identifier = uuid_like();
        let state = self.clone();
        tokio::spawn(async move {
            state.send_delivery(&url, &secret, identifier, body).await;
        });
    }

    async fn send_delivery(&self, url: &str, secret: &str, identifier: String, body: Vec<u8>) -> u16 {
        let signature = deskbridge_connector::webhook::sign(secret, &body);
        let status = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("X-Hub-Signature", signature)
            .header("X-Atlassian-Webhook-Identifier", &identifier)
            .header("X-Atlassian-Webhook-Flow", "Primary")
            .body(body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        lock(&self.deliveries).push(Delivery { identifier, body, status });
        status
    }
}

fn uuid_like() -> String {
    let n = rand::random::<u128>();
    let h = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A new issue for [`Simulator::create_issue`].
#[derive(Debug, Clone, Default)]
pub struct NewIssue {
    /// Project key.
    pub project: String,
    /// Issue type name.
    pub issue_type: String,
    /// Summary.
    pub summary: String,
    /// Description.
    pub description: String,
    /// Reporter email.
    pub reporter: String,
    /// JSM request type name (one of the seeded ones), if a service-desk request.
    pub request_type: Option<String>,
    /// Custom field values by field name, in API shape.
    pub custom: Vec<(String, Value)>,
    /// Status; "Waiting for support" when absent.
    pub status: Option<String>,
    /// Created and updated time; now when absent.
    pub updated_ms: Option<i64>,
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    state: Arc<State>,
    _shutdown: oneshot::Sender<()>,
}

impl Simulator {
    /// Starts a simulator on an ephemeral loopback port.
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            db: Mutex::new(Db::new()),
            users: seed::users(),
            fields: seed::fields(),
            access_tokens: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            grants: Mutex::new(Vec::new()),
            kit: SimKit::new(routes::Flavor),
            deliveries: Mutex::new(Vec::new()),
            base_url: format!("http://127.0.0.1:{}", addr.port()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(std::io::Error::other)?,
            config,
        });
        let sim = {
            let (tx, rx) = oneshot::channel::<()>();
            let app = routes::router(state.clone());
            tokio::spawn(async move {
                let server = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "Jira simulator stopped");
                }
            });
            Self { state, _shutdown: tx }
        };
        if sim.state.config.seed {
            seed::seed(&sim);
        }
        Ok(sim)
    }

    /// The site URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// The id of the custom field called `name` on this site.
    pub fn field_id(&self, name: &str) -> Option<String> {
        self.state.field_id(name)
    }

    /// The account id of the user with `email`.
    pub fn account_id(&self, email: &str) -> Option<String> {
        self.state.users.iter().find(|u| u.email == email).map(|u| u.account_id.clone())
    }

    /// Creates an issue as a user would in the portal; returns `(id, key)`.
    pub fn create_issue(&self, new: NewIssue) -> (String, String) {
        let issue = self.state.create(new);
        (issue.id.to_string(), issue.key())
    }

    /// Changes fields as a user would (`status`, `summary`, `description` or a custom field
    /// name); `updated` becomes now. Returns false when the issue does not exist.
    pub fn update_issue(&self, id_or_key: &str, changes: &[(&str, Value)]) -> bool {
        self.state.change(id_or_key, changes).is_some()
    }

    /// Sets an issue's `updated` directly (no webhook), for paging tests.
    pub fn set_updated(&self, id_or_key: &str, ms: i64) {
        let mut db = lock(&self.state.db);
        if let Some(issue) = db.get_mut(id_or_key) {
            issue.updated_ms = ms;
        }
    }

    /// One issue.
    pub fn issue(&self, id_or_key: &str) -> Option<Issue> {
        lock(&self.state.db).get(id_or_key).cloned()
    }

    /// Every issue of `project`.
    pub fn issues(&self, project: &str) -> Vec<Issue> {
        lock(&self.state.db)
            .issues
            .iter()
            .filter(|i| i.project == project)
            .cloned()
            .collect()
    }

    /// Comments on an issue, oldest first.
    pub fn comments(&self, id_or_key: &str) -> Vec<SimComment> {
        self.issue(id_or_key).map(|i| i.comments).unwrap_or_default()
    }

    /// Adds a comment as the user with `email` (bumps `updated`, no webhook).
    pub fn add_comment_as(&self, id_or_key: &str, email: &str, text: &str) {
        let author = self.account_id(email).unwrap_or_default();
        let mut db = lock(&self.state.db);
        routes::add_comment(
            &mut db,
            id_or_key,
            author,
            Value::String(text.into()),
            text.into(),
            BTreeMap::new(),
            true,
        );
    }

    /// Adds `count` generated access requests to the JSM project, `updated` spread one second
    /// apart ending a minute ago; returns their keys.
    pub fn generate(&self, count: usize) -> Vec<String> {
        seed::generate(self, count)
    }

    /// A refresh token as if an admin had just granted consent (`offline_access`).
    pub fn consent(&self) -> String {
        let token = format!("rt-{:032x}", rand::random::<u128>());
        lock(&self.state.refresh_tokens).insert(token.clone(), INTEGRATION_EMAIL.into());
        token
    }

    /// `grant_type` of every token request, in order, with `ok`/`refused`.
    pub fn grants(&self) -> Vec<String> {
        lock(&self.state.grants).clone()
    }

    /// Answers the next `times` requests whose path contains `path_contains` with `fault`.
    pub fn inject(&self, fault: Fault, times: usize, path_contains: Option<&str>) {
        self.state.kit.inject(fault, times, Target::path(path_contains));
    }

    /// Answers the next `times` requests matching `target` with `fault`.
    pub fn inject_on(&self, target: Target, fault: Fault, times: usize) {
        self.state.kit.inject(fault, times, target);
    }

    /// Answers each request matching `target` with `fault` with probability `rate`, until
    /// [`Simulator::clear_faults`].
    pub fn inject_random(&self, target: Target, fault: Fault, rate: f64) {
        self.state.kit.inject_random(fault, rate, target);
    }

    /// Removes every fault not yet fired.
    pub fn clear_faults(&self) {
        self.state.kit.clear_faults();
    }

    /// How often each fault fired (`applied-then-502 POST`, `429 GET`, …).
    pub fn faults_fired(&self) -> BTreeMap<String, usize> {
        self.state.kit.fired()
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.kit.requests()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        self.state.kit.clear_requests();
    }

    /// Stops (or resumes) recording requests, for long soaks.
    pub fn set_recording(&self, on: bool) {
        self.state.kit.set_recording(on);
    }

    /// Webhook deliveries made so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state.deliveries).clone()
    }

    /// Sends delivery `n` again, same identifier and body (Jira's retry); returns the status.
    pub async fn redeliver(&self, n: usize) -> u16 {
        let Some((url, secret)) = self.state.config.webhook.clone() else {
            return 0;
        };
        let Some(d) = lock(&self.state.deliveries).get(n).cloned() else {
            return 0;
        };
        self.state.send_delivery(&url, &secret, d.identifier, d.body).await
    }

    /// Waits until `n` deliveries were made (or 5 s pass).
    pub async fn wait_for_deliveries(&self, n: usize) -> Vec<Delivery> {
        for _ in 0..500 {
            if lock(&self.state.deliveries).len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.deliveries()
    }
}
