use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deskbridge::decision::rego::RegoDecisionPoint;
use deskbridge::decision::DecisionPoint;
use deskbridge::mapping::Mapping;
use deskbridge::pipeline::{Instance, Pipeline, Settings};
use deskbridge::render::CommentRenderer;
use deskbridge::store::Store;
use deskbridge_connector::Ticket;
use deskbridge_servicenow::simulator::{SimConfig, Simulator};
use deskbridge_servicenow::ServiceNow;

pub const CONNECTOR: &str = "servicenow";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `deskbridge` binary, run from the repository root, with no config from the environment.
pub fn deskbridge() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_deskbridge"));
    cmd.current_dir(root()).env_remove("DESKBRIDGE_CONFIG");
    cmd
}

/// `dir/deskbridge.toml`: a SQLite store in `dir`, `decision` (the shipped Rego policy when
/// `None`), and one ServiceNow connector `snow` on the shipped mapping, ending with the
/// `connector` lines (its `base_url`, `auth`, …).
pub fn write_config(dir: &Path, decision: Option<&str>, connector: &str) -> PathBuf {
    let root = root();
    let decision = decision.map_or_else(
        || format!("kind = \"rego\"\npolicies = [\"{}/examples/policies/access.rego\"]", root.display()),
        str::to_owned,
    );
    let path = dir.join("deskbridge.toml");
    std::fs::write(
        &path,
        format!(
            "\n[store]\npath = \"{db}\"\n\n[decision]\n{decision}\n\n[[connectors]]\nid = \"snow\"\nkind = \"servicenow\"\nmapping = \"{root}/mappings/servicenow/sc_req_item.toml\"\n{connector}\n",
            db = dir.join("d.db").display(),
            root = root.display(),
        ),
    )
    .expect("write the config");
    path
}

pub fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("debug").with_test_writer().try_init();
    }
}

/// A seeded simulator, a fresh SQLite file and the shipped mapping.
pub struct TestApp {
    pub sim: Simulator,
    pub store: Store,
    /// Keeps the SQLite file alive for the test's duration.
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::with(SimConfig::default()).await
    }

    /// A simulator with reference data but no requested items.
    pub async fn spawn_empty() -> Self {
        Self::with(SimConfig {
            seed: false,
            ..SimConfig::default()
        })
        .await
    }

    async fn with(config: SimConfig) -> Self {
        init_tracing();
        let sim = Simulator::start(config).await.expect("simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("deskbridge.db")).await.expect("store");
        Self { sim, store, _dir: dir }
    }

    pub fn db_path(&self) -> PathBuf {
        self._dir.path().join("deskbridge.db")
    }

    pub fn connector(&self) -> Arc<ServiceNow> {
        let mut config = deskbridge::commands::demo::servicenow_config(self.sim.base_url()).expect("config");
        config.http.backoff_base_ms = 10;
        config.http.backoff_max_ms = 100;
        Arc::new(ServiceNow::new(CONNECTOR, config).expect("connector"))
    }

    /// A pipeline over this app's store with the given decision point.
    pub fn pipeline_with(&self, decision_point: Arc<dyn DecisionPoint>) -> Pipeline {
        let settings = Settings {
            decision_retry_base: Duration::ZERO,
            decision_retry_max: Duration::ZERO,
            post_retry_base: Duration::ZERO,
            post_retry_max: Duration::ZERO,
            ..Settings::default()
        };
        self.pipeline_with_settings(decision_point, settings)
    }

    /// A pipeline with the given decision point and settings, deciding on the example catalog
    /// and directory export.
    pub fn pipeline_with_settings(&self, decision_point: Arc<dyn DecisionPoint>, settings: Settings) -> Pipeline {
        Pipeline::new(
            self.store.clone(),
            vec![Instance {
                connector: self.connector(),
                mapping: Arc::new(shipped_mapping()),
            }],
            decision_point,
            CommentRenderer::new(None).expect("template"),
            settings,
        )
        .with_enricher(Some(example_enricher()))
    }

    /// A pipeline with the shipped policy.
    pub fn pipeline(&self) -> Pipeline {
        self.pipeline_with(Arc::new(shipped_policy()))
    }

    pub fn journal_of(&self, number: &str) -> Vec<deskbridge_servicenow::simulator::JournalEntry> {
        let id = self.sim.sys_id_of("sc_req_item", number).expect("seeded ticket");
        self.sim.journal(&id)
    }
}

pub fn shipped_mapping() -> Mapping {
    Mapping::load(&root().join("mappings/servicenow/sc_req_item.toml")).expect("shipped mapping")
}

pub fn shipped_policy() -> RegoDecisionPoint {
    policy_from_text(&std::fs::read_to_string(root().join("examples/policies/access.rego")).expect("policy"))
}

pub fn policy_from_text(text: &str) -> RegoDecisionPoint {
    RegoDecisionPoint::from_sources(
        vec![("policy.rego".into(), text.into())],
        "data.deskbridge.access.decision",
        Duration::from_millis(100),
    )
    .expect("policy loads")
}

pub fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/servicenow")
}

pub fn fixture(name: &str) -> Ticket {
    read_ticket(&fixture_dir().join(name))
}

pub fn read_ticket(path: &Path) -> Ticket {
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture is a ticket")
}

/// Every fixture file, sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

/// A child process killed when the test ends, even when it panics (a `serve` left running
/// would hold the test runner's output open).
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example catalog and the example directory export.
pub fn example_enricher() -> Arc<deskbridge::pipeline::enrich::Enricher> {
    enricher_with(Arc::new(
        deskbridge::directory::file::FileDirectory::load(&root().join("examples/directory.json")).expect("directory export"),
    ))
}

/// The example catalog with the given directory.
pub fn enricher_with(directory: Arc<dyn deskbridge::directory::Directory>) -> Arc<deskbridge::pipeline::enrich::Enricher> {
    Arc::new(deskbridge::pipeline::enrich::Enricher {
        catalog: Arc::new(deskbridge::pipeline::enrich::CatalogHandle::load(&root().join("examples/catalog.toml")).expect("catalog")),
        directory: Some(directory),
    })
}

/// The store's disk refuses every inbox insert once `stored` rows are in: a trigger raises
/// SQLite's I/O error, as a full or failing disk would, until [`accept_inbox_inserts`].
pub async fn refuse_inbox_inserts_after(store: &Store, stored: usize) {
    sqlx::query(&format!(
        "CREATE TRIGGER refuse_inbox_inserts BEFORE INSERT ON inbox WHEN (SELECT COUNT(*) FROM inbox) >= {stored}
         BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    ))
    .execute(store.pool())
    .await
    .expect("trigger");
}

/// The disk recovers (see [`refuse_inbox_inserts_after`]).
pub async fn accept_inbox_inserts(store: &Store) {
    sqlx::query("DROP TRIGGER refuse_inbox_inserts")
        .execute(store.pool())
        .await
        .expect("drop the trigger");
}
