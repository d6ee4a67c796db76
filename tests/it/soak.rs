//! The fault soak: `deskbridge serve` over 2,000 tickets on ServiceNow and Jira while everything
//! fails the way it does in production — 10 % of comment writes applied and then answered with a
//! 502/504 or a dropped connection, 5 % throttled with `Retry-After`, 1 % applied and then
//! timed out, 5xx on reads, the decision point (OPA protocol, the shipped Rego) flapping, and
//! the process SIGKILLed at random. Once on SQLite with a second process trying to join (and
//! refused), once on PostgreSQL with two replicas, one of them killed over and over.
//!
//! Afterwards, in the simulators' own data: every access ticket carries exactly one deskbridge
//! comment, none is missing, every comment states the outcome the policy returns for that
//! request, and the audit log verifies. The faults that fired are printed. `SOAK_SEED=<n>`
//! replays a kill schedule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deskbridge::decision::DecisionPoint as _;
use deskbridge::schema::{AccessRequest, Outcome};
use deskbridge::store::{audit, Store};
use deskbridge_jira::simulator as jira_sim;
use deskbridge_servicenow::simulator as sn_sim;
use rand::{Rng, SeedableRng};

use crate::helpers::{root, shipped_policy, Killed};

/// Tickets generated on each ITSM (plus the seeded ones).
const PER_ITSM: usize = 1_000;
/// Access requests among the seeded tickets of each simulator.
const SEEDED_ACCESS: usize = 6;
const KILLS: usize = 6;

struct Soak {
    sn: sn_sim::Simulator,
    jira: jira_sim::Simulator,
    scim: deskbridge_scim::simulator::Simulator,
    opa: String,
    flaps: Arc<Mutex<usize>>,
    dir: tempfile::TempDir,
    rng: rand::rngs::StdRng,
    name: &'static str,
}

fn arm_faults(sn: &sn_sim::Simulator, jira: &jira_sim::Simulator) {
    use deskbridge_connector::simkit::{Fault, Target};
    let sn_write = || Target::route("PATCH", "/api/now/table/sc_req_item/");
    sn.inject_random(sn_write(), Fault::AppliedThenStatus(502), 0.05);
    sn.inject_random(sn_write(), Fault::AppliedThenStatus(504), 0.025);
    sn.inject_random(sn_write(), Fault::AppliedThenDrop, 0.025);
    sn.inject_random(sn_write(), Fault::throttle(1), 0.05);
    sn.inject_random(sn_write(), Fault::AppliedThenStall(Duration::from_millis(1500)), 0.01);
    sn.inject_random(
        Target {
            method: Some("GET".into()),
            path_contains: None,
        },
        Fault::Status(503),
        0.03,
    );
    let jira_write = || Target::route("POST", "/comment");
    jira.inject_random(jira_write(), Fault::AppliedThenStatus(502), 0.05);
    jira.inject_random(jira_write(), Fault::AppliedThenStatus(504), 0.025);
    jira.inject_random(jira_write(), Fault::AppliedThenDrop, 0.025);
    // Retry-After only: Jira's X-RateLimit-Reset has minute precision and would rightly hold
    // the comment for a minute.
    jira.inject_random(
        jira_write(),
        Fault::RateLimit {
            retry_after: Some(1),
            reset_in: None,
            beta_retry_after: None,
        },
        0.05,
    );
    jira.inject_random(jira_write(), Fault::AppliedThenStall(Duration::from_millis(1500)), 0.01);
    jira.inject_random(Target::route("POST", "/search/jql"), Fault::Status(503), 0.03);
    jira.inject_random(Target::route("GET", "/comment"), Fault::Status(500), 0.03);
}

impl Soak {
    async fn start(name: &'static str) -> Self {
        let sn = sn_sim::Simulator::start(sn_sim::SimConfig::default())
            .await
            .expect("ServiceNow simulator");
        sn.generate(PER_ITSM);
        sn.set_recording(false);
        let jira = jira_sim::Simulator::start(jira_sim::SimConfig::default())
            .await
            .expect("Jira simulator");
        jira.generate(PER_ITSM);
        jira.set_recording(false);
        arm_faults(&sn, &jira);
        // The identity directory fails too: 5xx and throttling on lookups.
        let scim = deskbridge_scim::simulator::Simulator::start(deskbridge_scim::simulator::SimConfig::default())
            .await
            .expect("SCIM simulator");
        {
            use deskbridge_connector::simkit::{Fault, Target};
            scim.inject_random(Target::path(Some("/Users")), Fault::Status(500), 0.03);
            scim.inject_random(Target::path(Some("/Groups")), Fault::throttle(1), 0.02);
        }
        // The decision point flaps: unavailable for 300 ms of every second.
        let fail = Arc::new(Mutex::new(None));
        let opa = crate::pdp_servers::opa(fail.clone()).await;
        let flaps = Arc::new(Mutex::new(0));
        let counter = flaps.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(700)).await;
                *fail.lock().expect("lock") = Some(503);
                *counter.lock().expect("lock") += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
                *fail.lock().expect("lock") = None;
            }
        });
        let seed = std::env::var("SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        eprintln!("soak {name}: kill schedule seed {seed} (SOAK_SEED={seed} replays it)");
        Self {
            sn,
            jira,
            scim,
            opa,
            flaps,
            dir: tempfile::tempdir().expect("dir"),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            name,
        }
    }

    fn config(&self, replica: &str, store: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{replica}.toml"));
        let http = "http = { timeout_secs = 1, backoff_base_ms = 20, backoff_max_ms = 200 }";
        let text = format!(
            "[store]\n{store}\nlease_secs = 3\n\n\
             [decision]\nkind = \"opa\"\nurl = \"{opa}\"\n\n\
             [decision.transport]\ntimeout_ms = 1000\n\n\
             [breaker]\nfailures = 1000\ncooldown_secs = 1\n\n\
             [catalog]\npath = \"{root}/examples/catalog.toml\"\n\n\
             [directory]\nkind = \"scim\"\nbase_url = \"{scim}\"\ntoken = \"{scim_token}\"\ncache_ttl_secs = 30\n{http}\n\n\
             [pipeline]\npoll_interval_secs = 1\nbatch_size = 100\ndecision_retry_base_secs = 1\ndecision_retry_max_secs = 2\n\
             post_retry_base_secs = 1\npost_retry_max_secs = 2\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\n\
             [[connectors]]\nid = \"snow\"\nkind = \"servicenow\"\nmapping = \"{root}/mappings/servicenow/sc_req_item.toml\"\n\
             base_url = \"{sn}\"\npage_size = 200\nlag_secs = 0\n\
             auth = {{ type = \"basic\", username = \"{sn_user}\", password = \"{sn_password}\" }}\n{http}\n\n\
             [[connectors]]\nid = \"jsm\"\nkind = \"jira\"\nmapping = \"{root}/mappings/jira/service-management-access.toml\"\n\
             base_url = \"{jira}\"\nprojects = [\"ACC\"]\npage_size = 100\n\
             auth = {{ type = \"basic\", username = \"{jira_user}\", password = \"{jira_token}\" }}\n{http}\n",
            opa = self.opa,
            root = root().display(),
            sn = self.sn.base_url(),
            sn_user = sn_sim::INTEGRATION_USER,
            sn_password = sn_sim::INTEGRATION_PASSWORD,
            jira = self.jira.base_url(),
            jira_user = jira_sim::INTEGRATION_EMAIL,
            jira_token = jira_sim::API_TOKEN,
            scim = self.scim.base_url(),
            scim_token = deskbridge_scim::simulator::TOKEN,
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn command(&self, args: &[&str], config: &Path, log: &str) -> Command {
        let log = std::fs::File::create(self.dir.path().join(log)).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deskbridge"));
        cmd.args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .env_remove("DESKBRIDGE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    fn spawn(&self, config: &Path, replica: &str, run: usize) -> Killed {
        Killed(
            self.command(&["serve"], config, &format!("{replica}-{run}.log"))
                .spawn()
                .expect("serve starts"),
        )
    }

    async fn kill_repeatedly(&mut self, config: &Path, replica: &str) {
        for run in 0..KILLS {
            let child = self.spawn(config, replica, run);
            let after = Duration::from_millis(self.rng.random_range(400..2_000));
            tokio::time::sleep(after).await;
            drop(child); // SIGKILL
        }
    }

    fn expected_access(&self) -> i64 {
        (2 * (PER_ITSM + SEEDED_ACCESS)) as i64
    }

    async fn wait_settled(&self, store: &Store, live: &mut [Killed]) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(240);
        let mut settled = 0;
        while settled < 2 {
            for child in live.iter_mut() {
                assert!(
                    child.0.try_wait().expect("status").is_none(),
                    "{}: a replica exited on its own; logs in {}",
                    self.name,
                    self.dir.path().display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: not settled: {:?}; logs in {}",
                self.name,
                store.counts().await,
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            let c = store.counts().await.expect("counts");
            if std::env::var_os("SOAK_PROGRESS").is_some() {
                eprintln!("soak {}: {:?} {c:?}", self.name, started.elapsed());
            }
            let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE status IN ('received', 'pending', 'parked')")
                .fetch_one(store.pool())
                .await
                .expect("open");
            settled = if c.posted == self.expected_access() && c.queued == 0 && open == 0 {
                settled + 1
            } else {
                0
            };
        }
    }

    /// The promises, checked in the simulators' own data and the store.
    async fn check(&self, store: &Store) {
        // The policy's outcome for each ticket's request, recomputed here with the shipped Rego.
        let policy = shipped_policy();
        let rows: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT d.connector, i.number, d.outcome, i.normalized FROM decisions d JOIN inbox i ON i.id = d.inbox_id")
                .fetch_all(store.pool())
                .await
                .expect("decisions");
        let mut expected: BTreeMap<(String, String), Outcome> = BTreeMap::new();
        for (connector, number, stored, normalized) in rows {
            let normalized: serde_json::Value = serde_json::from_str(&normalized).expect("normalized");
            let outcome = if normalized["status"] == "access_request" {
                let request: AccessRequest = serde_json::from_value(normalized["request"].clone()).expect("request");
                let decided = policy.decide(&request).await.expect("the policy decides");
                assert_eq!(
                    decided.decision.outcome.as_str(),
                    stored,
                    "{connector} {number}: the stored outcome is the policy's"
                );
                decided.decision.outcome
            } else {
                assert_eq!(stored, "needs_info", "{connector} {number}: an incomplete request asks for more");
                Outcome::NeedsInfo
            };
            assert!(
                expected.insert((connector.clone(), number.clone()), outcome).is_none(),
                "{connector} {number} decided twice"
            );
        }
        assert_eq!(expected.len() as i64, self.expected_access(), "every access ticket decided");
        let label = |o: Outcome| match o {
            Outcome::Approve => "deskbridge decision: APPROVED by policy",
            Outcome::Deny => "deskbridge decision: DENIED by policy",
            Outcome::Review => "deskbridge decision: REVIEW required",
            Outcome::NeedsInfo => "deskbridge decision: MORE INFORMATION needed",
        };
        let mut problems = Vec::new();
        let mut check_ticket =
            |connector: &str, number: &str, ours: Vec<String>| match expected.get(&(connector.to_owned(), number.to_owned())) {
                None if ours.is_empty() => {}
                None => problems.push(format!("{connector} {number}: commented but not an access request")),
                Some(outcome) => {
                    if ours.len() != 1 {
                        problems.push(format!("{connector} {number}: {} deskbridge comments", ours.len()));
                    } else if !ours[0].starts_with(label(*outcome)) {
                        problems.push(format!(
                            "{connector} {number}: posted {:?}, the policy said {outcome:?}",
                            ours[0].lines().next()
                        ));
                    }
                }
            };
        for (number, sys_id) in self.sn.numbers("sc_req_item") {
            let ours = self
                .sn
                .journal(&sys_id)
                .into_iter()
                .filter(|e| e.created_by == sn_sim::INTEGRATION_USER && e.value.contains("deskbridge-id:"))
                .map(|e| e.value)
                .collect();
            check_ticket("snow", &number, ours);
        }
        let me = self.jira.account_id(jira_sim::INTEGRATION_EMAIL).expect("integration user");
        for issue in self.jira.issues("ACC") {
            let ours = issue
                .comments
                .iter()
                .filter(|c| c.author == me && c.text.contains("deskbridge-id:"))
                .map(|c| c.text.clone())
                .collect();
            check_ticket("jsm", &issue.key(), ours);
        }
        assert!(
            problems.is_empty(),
            "{}: {} problems: {:?}",
            self.name,
            problems.len(),
            &problems[..problems.len().min(20)]
        );
        let records = store.audit_records().await.expect("audit");
        assert_eq!(audit::verify(&records), Ok(records.len()), "{}: the audit log verifies", self.name);
        let posted = records.iter().filter(|r| r.kind == "comment_posted").count() as i64;
        assert_eq!(posted, self.expected_access(), "{}: one post recorded per comment", self.name);
    }

    /// Prints what fired, and checks each kind of fault really happened.
    fn report(&self) {
        let (sn, jira) = (self.sn.faults_fired(), self.jira.faults_fired());
        eprintln!("soak {}: directory faults fired: {:?}", self.name, self.scim.faults_fired());
        let flaps = *self.flaps.lock().expect("lock");
        eprintln!("soak {}: ServiceNow faults fired: {sn:?}", self.name);
        eprintln!("soak {}: Jira faults fired: {jira:?}", self.name);
        eprintln!("soak {}: decision point unavailable {flaps} times; {KILLS} SIGKILLs", self.name);
        for kind in ["applied-then-502", "applied-then-504", "applied-then-drop", "429", "503"] {
            let n: usize = sn
                .iter()
                .chain(jira.iter())
                .filter(|(k, _)| k.starts_with(kind))
                .map(|(_, n)| n)
                .sum();
            assert!(n > 0, "{}: no {kind} fault fired", self.name);
        }
        assert!(flaps > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_sqlite_with_faults_kills_and_a_refused_second_writer() {
    let mut soak = Soak::start("sqlite").await;
    let db = soak.dir.path().join("deskbridge.db");
    let config = soak.config("solo", &format!("path = \"{}\"", db.display()));
    let store = Store::open(&db).await.expect("reader").with_holder("soak-reader");
    soak.kill_repeatedly(&config, "solo").await;
    let mut last = [soak.spawn(&config, "solo", KILLS)];
    // A cron `sync --once` on the same file while serve works: refused, nothing posted twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut cron = soak.command(&["sync", "--once"], &config, "cron.log");
    let out = tokio::task::spawn_blocking(move || cron.output().expect("runs"))
        .await
        .expect("join");
    assert!(!out.status.success(), "the second writer is refused");
    let cron_log = std::fs::read_to_string(soak.dir.path().join("cron.log")).unwrap_or_default();
    assert!(cron_log.contains("is in use by another deskbridge process"), "{cron_log}");
    soak.wait_settled(&store, &mut last).await;
    drop(last);
    soak.report();
    soak.check(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_two_postgres_replicas_with_faults_and_kills() {
    let mut soak = Soak::start("postgres").await;
    let url = deskbridge::store::testing::fresh_postgres_schema().await;
    let store = Store::connect_postgres(&url).await.expect("reader").with_holder("soak-reader");
    let steady_config = soak.config("steady", &format!("url = \"{url}\""));
    let flaky_config = soak.config("flaky", &format!("url = \"{url}\""));
    let steady = soak.spawn(&steady_config, "steady", 0);
    soak.kill_repeatedly(&flaky_config, "flaky").await;
    let mut replicas = [steady, soak.spawn(&flaky_config, "flaky", KILLS)];
    soak.wait_settled(&store, &mut replicas).await;
    drop(replicas);
    soak.report();
    soak.check(&store).await;
}
