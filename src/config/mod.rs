//! The configuration file: one TOML file, `${VAR}` for secrets, unknown keys rejected, every
//! problem reported at once with the file and key. Relative paths are relative to the file.

mod keys;
mod vars;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::store::StoreConfig;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where deskbridge keeps its state.
    pub store: StoreConfig,
    /// The decision point.
    pub decision: DecisionConfig,
    /// Pipeline tuning.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The HTTP server of `deskbridge serve`.
    #[serde(default)]
    pub server: ServerConfig,
    /// Audit evidence.
    #[serde(default)]
    pub audit: AuditConfig,
    /// A second decision point evaluated beside the primary; disagreements are recorded, and
    /// it never changes an outcome.
    #[serde(default)]
    pub shadow: Option<DecisionConfig>,
    /// Circuit breaker for remote decision points.
    #[serde(default)]
    pub breaker: crate::decision::breaker::BreakerConfig,
    /// The entitlement catalog the policy's facts come from. Without one, every request is
    /// "not in the catalog" and reviewed.
    #[serde(default)]
    pub catalog: Option<CatalogConfig>,
    /// The identity directory. Without one, identities are unverified and requests reviewed.
    #[serde(default)]
    pub directory: Option<crate::directory::DirectoryConfig>,
    /// Provisioning evidence: where entitlement changes come from and how the access lifecycle
    /// is timed.
    #[serde(default)]
    pub provisioning: Option<crate::provisioning::ProvisioningConfig>,
    /// ITSM instances.
    pub connectors: Vec<ConnectorEntry>,
    /// The `${VAR}` values substituted into the file, kept out of every error.
    #[serde(skip)]
    pub redactor: vars::Redactor,
    /// The line of every key in `[[connectors]]` entries (`connectors[0].http.timeout_secs`),
    /// for errors found when the connector is built.
    #[serde(skip)]
    pub key_lines: std::collections::HashMap<String, usize>,
}

/// `[catalog]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// The catalog file (`examples/catalog.toml` shows one). `serve` reloads it when it changes
    /// and on SIGHUP; a broken edit keeps the catalog in use and logs why.
    pub path: PathBuf,
}

/// `[decision]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecisionConfig {
    /// Embedded Rego (regorus).
    Rego {
        /// Policy files.
        policies: Vec<PathBuf>,
        /// The rule returning the decision object.
        #[serde(default = "default_entrypoint")]
        entrypoint: String,
        /// Evaluation time limit in milliseconds.
        #[serde(default = "default_rego_timeout")]
        timeout_ms: u64,
    },
    /// OPA's Data API.
    Opa(crate::decision::opa::OpaConfig),
    /// An AuthZEN 1.0 PDP.
    Authzen(Box<crate::decision::authzen::AuthzenConfig>),
    /// A webhook adapter with HMAC-signed bodies.
    Webhook(crate::decision::webhook::WebhookConfig),
}

impl DecisionConfig {
    fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            Self::Rego { policies, .. } => policies.iter_mut().for_each(fix),
            Self::Opa(c) => c.transport.ca_cert_file.iter_mut().for_each(fix),
            Self::Authzen(c) => c.transport.ca_cert_file.iter_mut().for_each(fix),
            Self::Webhook(c) => c.transport.ca_cert_file.iter_mut().for_each(fix),
        }
    }
}

fn default_entrypoint() -> String {
    "data.deskbridge.access.decision".into()
}
fn default_rego_timeout() -> u64 {
    100
}

/// `[pipeline]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Seconds between polls in `serve`.
    pub poll_interval_secs: u64,
    /// Tickets and comments handled per batch.
    pub batch_size: i64,
    /// First wait before a failed decision is retried, in seconds; doubles per attempt.
    pub decision_retry_base_secs: u64,
    /// Longest wait between decision retries, in seconds.
    pub decision_retry_max_secs: u64,
    /// A minijinja template replacing the shipped comment template.
    pub comment_template: Option<PathBuf>,
    /// A request still undecided this many seconds after it arrived gets one "decision
    /// delayed" comment (not one per retry). Off when absent.
    pub decision_delayed_comment_after_secs: Option<u64>,
    /// First wait before a failed comment post is tried again, in seconds; doubles per
    /// attempt. Every attempt first looks for the comment on the ticket (an earlier attempt
    /// may have landed and lost its answer), then writes once.
    pub post_retry_base_secs: u64,
    /// Longest wait between comment post attempts, in seconds.
    pub post_retry_max_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            poll_interval_secs: 30,
            // What a batch holds while it is decided and posted is most of serve's peak RSS
            // with a large backlog: 250 keeps it near 82 MiB at 100,000 waiting, 500 near 105 MiB,
            // at the same rate.
            batch_size: 250,
            decision_retry_base_secs: 5,
            decision_retry_max_secs: 600,
            comment_template: None,
            decision_delayed_comment_after_secs: Some(4 * 3600),
            post_retry_base_secs: 2,
            post_retry_max_secs: 600,
        }
    }
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address of the health/status API.
    pub listen: String,
    /// Whether `/metrics` answers without a token (for a scraper on a private network).
    /// Without, it needs a viewer token like the admin API.
    pub metrics_public: bool,
    /// Who may use the admin API and console: `deskbridge token new` makes a token and prints
    /// its entry. Only the token's SHA-256 is kept here. Without any, only `/healthz`,
    /// `/readyz` and webhooks answer.
    pub tokens: Vec<ApiToken>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            metrics_public: false,
            tokens: Vec::new(),
        }
    }
}

/// `[[server.tokens]]`: one bearer token of the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it: written to the audit log with every operator action.
    pub name: String,
    /// `viewer` reads; `operator` also retries parked work and re-decides tickets.
    pub role: Role,
    /// SHA-256 of the token, 64 hex characters.
    pub sha256: String,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything the admin API shows, and previews mappings.
    Viewer,
    /// A viewer who may also act: retry parked work, re-decide a ticket.
    Operator,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 seed (64 hex characters) for signed checkpoints after every pass and on export;
    /// `deskbridge audit keygen` makes one. Use `${VAR}`.
    pub signing_key: Option<secrecy::SecretString>,
}

/// One `[[connectors]]` entry. Keys other than these belong to the connector kind, which
/// rejects unknown ones.
#[derive(Deserialize)]
pub struct ConnectorEntry {
    /// Instance id, unique; names the instance in logs, evidence and errors.
    pub id: String,
    /// Connector kind (`servicenow`).
    pub kind: String,
    /// Mapping file for this instance's tickets.
    pub mapping: PathBuf,
    /// Kind-specific settings.
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// The settings hold credentials: only their keys are shown.
impl std::fmt::Debug for ConnectorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorEntry")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("mapping", &self.mapping)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Config {
    /// Reads, interpolates and parses a config file; paths become relative to its folder. The
    /// problems found while parsing (unknown keys, say) come back beside the configuration:
    /// [`crate::wiring::load`] adds what building it finds, and reports them all at once.
    pub fn read(path: &Path) -> anyhow::Result<(Self, Vec<String>)> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading config {file}: {e}"))?;
        let (text, redactor) = vars::interpolate(&text, &file, &|name| std::env::var(name).ok())
            .map_err(|problems| anyhow::anyhow!("config {file} is invalid:\n  {}", problems.join("\n  ")))?;
        let (config, problems) = keys::parse(&text, &file);
        let Some(mut config) = config else {
            anyhow::bail!("config {file} is invalid:\n  {}", redactor.redact(&problems.join("\n  ")));
        };
        config.redactor = redactor;
        config.rebase(path.parent().unwrap_or(Path::new(".")));
        Ok((config, problems))
    }

    fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = &mut self.store.path {
            fix(p);
        }
        self.decision.rebase(base);
        if let Some(shadow) = &mut self.shadow {
            shadow.rebase(base);
        }
        if let Some(t) = &mut self.pipeline.comment_template {
            fix(t);
        }
        if let Some(c) = &mut self.catalog {
            fix(&mut c.path);
        }
        if let Some(d) = &mut self.directory {
            d.rebase(base);
        }
        if let Some(p) = &mut self.provisioning {
            for source in &mut p.sources {
                source.rebase(base);
            }
        }
        for c in &mut self.connectors {
            fix(&mut c.mapping);
        }
    }

    /// A claim on a comment must outlast one write attempt with room for a missed renewal
    /// (the claim is renewed every third of the lease while a post is in flight), or another
    /// replica could take the comment over while the write is on the wire and post it again.
    pub(crate) fn lease_problems(&self, file: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, entry) in self.connectors.iter().enumerate() {
            let timeout = entry
                .settings
                .get("http")
                .and_then(|h| h.get("timeout_secs"))
                .and_then(toml::Value::as_integer)
                .map_or(deskbridge_connector::http::HttpSettings::default().timeout_secs, |t| {
                    t.max(0) as u64
                });
            if self.store.lease_secs < timeout.saturating_mul(2) {
                problems.push(format!(
                    "{file}: store.lease_secs = {} is shorter than twice connectors[{i}].http.timeout_secs = {timeout} (id {:?}): a claim must outlast one write attempt with room for a missed renewal; raise store.lease_secs to at least {} or lower the timeout",
                    self.store.lease_secs,
                    entry.id,
                    timeout * 2
                ));
            }
        }
        problems
    }

    /// Every admin token entry must name a holder once and carry a SHA-256.
    pub(crate) fn token_problems(&self, file: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, token) in self.server.tokens.iter().enumerate() {
            if token.name.trim().is_empty() {
                problems.push(format!("{file}: server.tokens[{i}].name: must name who holds the token"));
            } else if !names.insert(token.name.as_str()) {
                problems.push(format!("{file}: server.tokens[{i}].name: {:?} is used more than once", token.name));
            }
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!(
                    "{file}: server.tokens[{i}].sha256: must be the token's SHA-256 as 64 hex characters (`deskbridge token new` prints it); never put the token itself here"
                ));
            }
        }
        problems
    }
}
