//! A stateful simulator of the ServiceNow Table API subset deskbridge and ServiceNow's own
//! Python client use: list with `sysparm_query` (`^`, `^OR`, `^NQ`, `=`, `!=`, `>`, `>=`, `<`,
//! `<=`, `IN`, `LIKE`, `ORDERBY`, `ORDERBYDESC`), `sysparm_limit/offset/fields/display_value/
//! exclude_reference_link`, `X-Total-Count` and `Link` headers, get one, create, PATCH with
//! journal fields appended to `sys_journal_field`, `/oauth_token.do`, basic and bearer auth,
//! error bodies in ServiceNow's shape, optional TLS, and injectable faults.
//!
//! Like an instance with `glide.invalid_query.returns_no_rows=true`, a query naming an unknown
//! field returns no rows rather than silently ignoring the term.

mod db;
mod query;
mod routes;
mod seed;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::oneshot;

pub use db::Record;
use deskbridge_connector::simkit::SimKit;
pub use deskbridge_connector::simkit::{Fault, RecordedRequest, Target};
pub use seed::SEEDED_ACCESS_TICKETS;

/// A user who can sign in to the simulated instance.
#[derive(Debug, Clone)]
pub struct SimUser {
    /// `user_name`.
    pub username: String,
    /// Password (plain; this is a test double).
    pub password: String,
    /// A user without write access gets 403 on create and update.
    pub read_only: bool,
    /// Roles held (`sys_user_has_role`), e.g. `itil`.
    pub roles: Vec<String>,
    /// Tables this user may not read: listing them answers 403, as an ACL would.
    pub unreadable: Vec<String>,
}

/// How the simulated instance behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Users accepted by basic auth and the password grant.
    pub users: Vec<SimUser>,
    /// OAuth clients `(client_id, client_secret)`.
    pub oauth_clients: Vec<(String, String)>,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// Serve HTTPS with a self-signed certificate (see [`Simulator::ca_pem`]).
    pub tls: bool,
    /// Load the seeded access requests.
    pub seed: bool,
}

/// The integration user of the default configuration.
pub const INTEGRATION_USER: &str = "deskbridge.integration";
/// Its password.
pub const INTEGRATION_PASSWORD: &str = "sim-password";
/// The default OAuth client.
pub const OAUTH_CLIENT: (&str, &str) = ("deskbridge-client", "sim-client-secret");

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            users: vec![
                SimUser {
                    username: INTEGRATION_USER.into(),
                    password: INTEGRATION_PASSWORD.into(),
                    read_only: false,
                    roles: vec!["itil".into()],
                    unreadable: Vec::new(),
                },
                SimUser {
                    username: "readonly.user".into(),
                    password: "readonly".into(),
                    read_only: true,
                    roles: vec!["sn_request_read".into()],
                    unreadable: Vec::new(),
                },
            ],
            oauth_clients: vec![(OAUTH_CLIENT.0.into(), OAUTH_CLIENT.1.into())],
            token_ttl: Duration::from_secs(1800),
            tls: false,
            seed: true,
        }
    }
}

/// One journal entry (`sys_journal_field` row).
#[derive(Debug, Clone)]
pub struct JournalEntry {
    /// Its sys_id.
    pub sys_id: String,
    /// `work_notes` or `comments`.
    pub element: String,
    /// The text.
    pub value: String,
    /// Who wrote it.
    pub created_by: String,
}

pub(crate) struct State {
    db: Mutex<db::Db>,
    config: SimConfig,
    access_tokens: Mutex<HashMap<String, (String, Instant)>>,
    refresh_tokens: Mutex<HashMap<String, String>>,
    kit: Arc<SimKit>,
    base_url: String,
}

pub(crate) use deskbridge_connector::simkit::lock;

impl State {
    fn new_id(&self) -> String {
        // 32 lowercase hex characters, like a sys_id.
        format!("{:032x}", rand::random::<u128>())
    }
}

/// The current time as `sys_updated_on`.
pub fn now_stamp() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<State>,
    ca_pem: Option<String>,
    _shutdown: oneshot::Sender<()>,
}

impl Simulator {
    /// Starts a simulator on an ephemeral loopback port.
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let scheme = if config.tls { "https" } else { "http" };
        let host = if config.tls { "localhost" } else { "127.0.0.1" };
        let mut database = db::Db::default();
        if config.seed {
            seed::seed(&mut database);
        } else {
            seed::seed_reference_data(&mut database);
        }
        seed::seed_accounts(&mut database, &config.users);
        let state = Arc::new(State {
            db: Mutex::new(database),
            access_tokens: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            kit: SimKit::new(routes::Flavor),
            base_url: format!("{scheme}://{host}:{}", addr.port()),
            config,
        });
        let app = routes::router(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let ca_pem = if state.config.tls {
            let (acceptor, pem) = tls::acceptor()?;
            tokio::spawn(tls::serve(listener, app, acceptor, rx));
            Some(pem)
        } else {
            tokio::spawn(async move {
                let server = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "ServiceNow simulator stopped");
                }
            });
            None
        };
        Ok(Self {
            addr,
            state,
            ca_pem,
            _shutdown: tx,
        })
    }

    /// The instance URL (`http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS).
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM of the self-signed certificate when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Answers the next `times` requests whose path contains `path_contains` (any path when
    /// `None`) with `fault`.
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

    /// How often each fault fired (`applied-then-502 PATCH`, `429 GET`, …).
    pub fn faults_fired(&self) -> BTreeMap<String, usize> {
        self.state.kit.fired()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.kit.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.kit.clear_requests();
    }

    /// Stops (or resumes) recording requests, for long soaks.
    pub fn set_recording(&self, on: bool) {
        self.state.kit.set_recording(on);
    }

    /// Inserts or replaces a record (missing `sys_id`, `sys_updated_on`, `sys_mod_count` and
    /// `sys_created_on` are filled in). Returns its sys_id.
    pub fn insert(&self, table: &str, mut record: Record) -> String {
        let id = record.entry("sys_id".into()).or_insert_with(|| self.state.new_id()).clone();
        let now = now_stamp();
        record.entry("sys_created_on".into()).or_insert_with(|| now.clone());
        record.entry("sys_updated_on".into()).or_insert(now);
        record.entry("sys_mod_count".into()).or_insert_with(|| "0".into());
        lock(&self.state.db).tables.entry(table.into()).or_default().insert(record);
        id
    }

    /// Changes fields of a record as a user in the UI would: `sys_mod_count` increments and
    /// `sys_updated_on` becomes now, unless `fields` sets them.
    pub fn update(&self, table: &str, sys_id: &str, fields: &[(&str, &str)]) -> bool {
        let mut db = lock(&self.state.db);
        let Some(record) = db.tables.get_mut(table).and_then(|t| t.get_mut(sys_id)) else {
            return false;
        };
        bump(record, "admin");
        for (k, v) in fields {
            record.insert((*k).into(), (*v).into());
        }
        true
    }

    /// Adds `count` synthetic access requests (see the seed module); returns their numbers.
    pub fn generate(&self, count: usize) -> Vec<String> {
        let mut db = lock(&self.state.db);
        seed::generate(&mut db, &self.state, count)
    }

    /// Adds a catalog variable to a requested item.
    pub fn set_variable(&self, ritm_sys_id: &str, name: &str, value: &str) {
        let mut db = lock(&self.state.db);
        seed::set_variable(&mut db, &self.state, ritm_sys_id, name, value);
    }

    /// One record, raw.
    pub fn record(&self, table: &str, sys_id: &str) -> Option<Record> {
        lock(&self.state.db).table(table).and_then(|t| t.get(sys_id)).cloned()
    }

    /// The sys_id of the record with this `number`.
    pub fn sys_id_of(&self, table: &str, number: &str) -> Option<String> {
        let db = lock(&self.state.db);
        let table = db.table(table)?;
        table
            .rows
            .iter()
            .find(|r| r.get("number").map(String::as_str) == Some(number))
            .and_then(|r| r.get("sys_id").cloned())
    }

    /// Journal entries written to a record, oldest first.
    pub fn journal(&self, sys_id: &str) -> Vec<JournalEntry> {
        let mut db = lock(&self.state.db);
        if let Some(t) = db.tables.get_mut("sys_journal_field") {
            t.refresh();
        }
        db.table("sys_journal_field")
            .and_then(|t| t.rows_where("element_id", std::iter::once(sys_id)))
            .map(|rows| {
                rows.into_iter()
                    .map(|r| JournalEntry {
                        sys_id: r.get("sys_id").cloned().unwrap_or_default(),
                        element: r.get("element").cloned().unwrap_or_default(),
                        value: r.get("value").cloned().unwrap_or_default(),
                        created_by: r.get("sys_created_by").cloned().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Appends a journal entry as `user` would from the UI (bumps the record's version).
    pub fn add_journal(&self, table: &str, sys_id: &str, element: &str, value: &str, user: &str) {
        let mut db = lock(&self.state.db);
        routes::append_journal(&mut db, &self.state, table, sys_id, element, value, user);
    }

    /// Numbers and sys_ids of every record of `table`.
    pub fn numbers(&self, table: &str) -> Vec<(String, String)> {
        let db = lock(&self.state.db);
        db.table(table)
            .map(|t| {
                t.rows
                    .iter()
                    .map(|r| {
                        (
                            r.get("number").cloned().unwrap_or_default(),
                            r.get("sys_id").cloned().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub(crate) fn bump(record: &mut Record, user: &str) {
    let count = record.get("sys_mod_count").and_then(|c| c.parse::<u64>().ok()).unwrap_or(0) + 1;
    record.insert("sys_mod_count".into(), count.to_string());
    record.insert("sys_updated_on".into(), now_stamp());
    record.insert("sys_updated_by".into(), user.into());
}

pub(crate) fn value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
