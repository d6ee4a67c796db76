//! A stateful SCIM 2.0 service provider: `/Users` and `/Groups` (list with `filter`,
//! `startIndex`, `count`; get one with `ETag` and `If-None-Match` → 304; PATCH as Entra ID and
//! Okta send it — capitalised ops, `"False"` strings, path-less `replace`, `remove` of members by
//! value list or by `members[value eq …]`), `/ServiceProviderConfig`, bearer authentication
//! (401 with `WWW-Authenticate: Bearer`), errors in the RFC 7644 shape, and the shared faults
//! (`deskbridge_connector::simkit`). Like Entra's SCIM API, it does not return `User.groups`
//! unless asked to (`SimConfig::user_groups`), so clients must query `members[value eq …]`.

mod events;
pub mod filter;
mod routes;
mod seed;

use std::sync::{Arc, Mutex};

use deskbridge_connector::simkit::SimKit;
pub use deskbridge_connector::simkit::{Fault, RecordedRequest, Target};
use serde_json::Value;
use tokio::sync::oneshot;

pub use events::{Delivery, Receiver};
pub use seed::{LEAVER, NHI_OWNER_WHO_LEFT, SOD_HOLDER};

/// The bearer token the simulator accepts by default.
pub const TOKEN: &str = "sim-scim-token";

/// How the simulated directory behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The accepted bearer token.
    pub token: String,
    /// Return `groups` on User resources (many directories do not).
    pub user_groups: bool,
    /// Load the people of the ITSM simulators' seeds.
    pub seed: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            token: TOKEN.into(),
            user_groups: false,
            seed: true,
        }
    }
}

pub(crate) struct Db {
    users: Vec<Value>,
    groups: Vec<Value>,
}

pub(crate) struct State {
    db: Mutex<Db>,
    config: SimConfig,
    kit: Arc<SimKit>,
    events: Arc<events::Transmitter>,
    issuer: String,
}

impl State {
    /// Pushes the membership change of group `id` (unless no receiver is set).
    pub(crate) fn membership_changed(&self, group: &Value, added: &[String], removed: &[String]) {
        if added.is_empty() && removed.is_empty() {
            return;
        }
        let uri = format!("/Groups/{}", group["id"].as_str().unwrap_or_default());
        let payload = events::membership_patch(&group["meta"]["version"], added, removed);
        self.events.emit(&self.issuer, &uri, "prov:patch:full", payload);
    }

    /// Whether this removal is to be "forgotten" (acknowledged, not applied, no event).
    pub(crate) fn forget_revocation(&self) -> bool {
        events::Transmitter::take(&self.events.forget_next_revocations)
    }
}

pub(crate) use deskbridge_connector::simkit::lock;

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The id of the user named `user_name`.
fn user_id(db: &Db, user_name: &str) -> Option<String> {
    db.users
        .iter()
        .find(|u| u["userName"] == user_name)
        .and_then(|u| u["id"].as_str().map(String::from))
}

/// Bumps a resource's `meta.version` (its ETag).
fn touch(resource: &mut Value) {
    let n = resource["meta"]["version"]
        .as_str()
        .and_then(|v| v.trim_start_matches("W/\"").trim_end_matches('"').parse::<u64>().ok())
        .unwrap_or(0);
    resource["meta"]["version"] = Value::String(format!("W/\"{}\"", n + 1));
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    state: Arc<State>,
    base_url: String,
    _shutdown: oneshot::Sender<()>,
}

impl Simulator {
    /// Starts on an ephemeral loopback port.
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut db = Db {
            users: Vec::new(),
            groups: Vec::new(),
        };
        if config.seed {
            seed::seed(&mut db);
        }
        let base_url = format!("http://127.0.0.1:{}/scim/v2", addr.port());
        let state = Arc::new(State {
            db: Mutex::new(db),
            config,
            kit: SimKit::new(routes::Flavor),
            events: events::Transmitter::start(),
            issuer: base_url.clone(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let app = routes::router(state.clone());
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "SCIM simulator stopped");
            }
        });
        Ok(Self {
            state,
            base_url,
            _shutdown: tx,
        })
    }

    /// The SCIM base URL (`http://127.0.0.1:PORT/scim/v2`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Adds a user; returns its id.
    pub fn add_user(&self, user_name: &str, active: bool, groups: &[&str]) -> String {
        let mut db = lock(&self.state.db);
        let id = seed::add_user(&mut db, user_name, &format!("{user_name}@example.com"), active, None, "Employee");
        for g in groups {
            seed::add_member(&mut db, g, &id);
        }
        id
    }

    /// Sets a user's `active` as a deprovisioning would (a deactivation is pushed as
    /// `prov:deactivate`, an activation as `prov:activate`).
    pub fn set_active(&self, user_name: &str, active: bool) -> bool {
        let mut db = lock(&self.state.db);
        let Some(user) = db.users.iter_mut().find(|u| u["userName"] == user_name) else {
            return false;
        };
        user["active"] = Value::Bool(active);
        touch(user);
        let uri = format!("/Users/{}", user["id"].as_str().unwrap_or_default());
        let event = if active { "prov:activate" } else { "prov:deactivate" };
        self.state.events.emit(&self.state.issuer, &uri, event, serde_json::json!({}));
        true
    }

    /// Removes `user_name` from the group `display_name`, as a provisioning tool's revocation
    /// would (pushed as a membership PATCH). A "forgotten" revocation changes nothing.
    pub fn remove_from_group(&self, user_name: &str, display_name: &str) -> bool {
        if self.state.forget_revocation() {
            return true;
        }
        let mut db = lock(&self.state.db);
        let Some(id) = user_id(&db, user_name) else {
            return false;
        };
        let Some(group) = db.groups.iter_mut().find(|g| g["displayName"] == display_name) else {
            return false;
        };
        let before = group["members"].as_array().map_or(0, Vec::len);
        if let Some(members) = group["members"].as_array_mut() {
            members.retain(|m| m["value"] != id.as_str());
        }
        if group["members"].as_array().map_or(0, Vec::len) == before {
            return false;
        }
        touch(group);
        let group = group.clone();
        drop(db);
        self.state.membership_changed(&group, &[], &[id]);
        true
    }

    /// The issuer of this directory's SETs (its base URL).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// Pushes SETs to `receiver` from now on (`None` stops).
    pub fn set_receiver(&self, receiver: Option<Receiver>) {
        self.state.events.set_receiver(receiver);
    }

    /// The public JWKS the SETs verify with.
    pub fn jwks(&self) -> Value {
        self.state.events.jwks()
    }

    /// Where the JWKS is served (no authentication, as JWKS endpoints are).
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.base_url.trim_end_matches("/scim/v2"))
    }

    /// Signs arbitrary claims with this directory's key (to build replays and odd SETs in tests).
    pub fn sign_set(&self, claims: &Value) -> String {
        self.state.events.sign(claims)
    }

    /// Waits until every SET queued so far was pushed.
    pub async fn flush_events(&self) {
        self.state.events.flush().await;
    }

    /// Every push so far, with the receiver's answer.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.events.deliveries()
    }

    /// Loses the next `n` events (the change is applied; its SET is never sent).
    pub fn drop_next_events(&self, n: usize) {
        self.state.events.drop_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// "Forgets" the next `n` revocations: the removal is acknowledged but not applied, and no
    /// event is sent, as a provisioning job that failed silently.
    pub fn forget_next_revocations(&self, n: usize) {
        self.state
            .events
            .forget_next_revocations
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Adds `user_name` to the group `display_name` (created when missing).
    pub fn add_to_group(&self, user_name: &str, display_name: &str) -> bool {
        let mut db = lock(&self.state.db);
        let Some(id) = user_id(&db, user_name) else {
            return false;
        };
        let group = seed::add_member(&mut db, display_name, &id);
        drop(db);
        if let Some(group) = group {
            self.state.membership_changed(&group, &[id], &[]);
        }
        true
    }

    /// One user resource as stored.
    pub fn user(&self, user_name: &str) -> Option<Value> {
        lock(&self.state.db).users.iter().find(|u| u["userName"] == user_name).cloned()
    }

    /// One group resource as stored.
    pub fn group(&self, display_name: &str) -> Option<Value> {
        lock(&self.state.db)
            .groups
            .iter()
            .find(|g| g["displayName"] == display_name)
            .cloned()
    }

    /// Answers the next `times` requests matching `target` with `fault`.
    pub fn inject_on(&self, target: Target, fault: Fault, times: usize) {
        self.state.kit.inject(fault, times, target);
    }

    /// Answers each request matching `target` with `fault` with probability `rate`.
    pub fn inject_random(&self, target: Target, fault: Fault, rate: f64) {
        self.state.kit.inject_random(fault, rate, target);
    }

    /// Removes every fault not yet fired.
    pub fn clear_faults(&self) {
        self.state.kit.clear_faults();
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.kit.requests()
    }

    /// How often each fault fired.
    pub fn faults_fired(&self) -> std::collections::BTreeMap<String, usize> {
        self.state.kit.fired()
    }

    /// Stops (or resumes) recording requests, for long runs.
    pub fn set_recording(&self, on: bool) {
        self.state.kit.set_recording(on);
    }
}
