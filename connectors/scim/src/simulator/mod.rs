//! A stateful SCIM 2.0 service provider: `/Users` and `/Groups` (list with `filter`,
//! `startIndex`, `count`; get one with `ETag` and `If-None-Match` → 304; PATCH as Entra ID and
//! Okta send it — capitalised ops, `"False"` strings, path-less `replace`, `remove` of members by
//! value list or by `members[value eq …]`), `/ServiceProviderConfig`, bearer authentication
//! (401 with `WWW-Authenticate: Bearer`), errors in the RFC 7644 shape, and the shared faults
//! (`deskbridge_connector::simkit`). Like Entra's SCIM API, it does not return `User.groups`
//! unless asked to (`SimConfig::user_groups`), so clients must query `members[value eq …]`.

pub mod filter;
mod routes;
mod seed;

use std::sync::{Arc, Mutex};

use deskbridge_connector::simkit::SimKit;
pub use deskbridge_connector::simkit::{Fault, RecordedRequest, Target};
use serde_json::Value;
use tokio::sync::oneshot;

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
}

pub(crate) use deskbridge_connector::simkit::lock;

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
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
        let state = Arc::new(State {
            db: Mutex::new(db),
            config,
            kit: SimKit::new(routes::Flavor),
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
            base_url: format!("http://127.0.0.1:{}/scim/v2", addr.port()),
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

    /// Sets a user's `active` as a deprovisioning would.
    pub fn set_active(&self, user_name: &str, active: bool) -> bool {
        let mut db = lock(&self.state.db);
        let Some(user) = db.users.iter_mut().find(|u| u["userName"] == user_name) else {
            return false;
        };
        user["active"] = Value::Bool(active);
        touch(user);
        true
    }

    /// Adds `user_name` to the group `display_name` (created when missing).
    pub fn add_to_group(&self, user_name: &str, display_name: &str) -> bool {
        let mut db = lock(&self.state.db);
        let Some(id) = db
            .users
            .iter()
            .find(|u| u["userName"] == user_name)
            .and_then(|u| u["id"].as_str().map(String::from))
        else {
            return false;
        };
        seed::add_member(&mut db, display_name, &id);
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
}
