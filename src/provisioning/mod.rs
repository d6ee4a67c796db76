//! Provisioning evidence and time-bound access: what the directory or IGA tool actually did
//! after a decision, matched to the decision, and followed to its expiry.
//!
//! Changes come in three ways, each authenticated before anything is stored and deduplicated:
//! Security Event Tokens pushed by the directory ([`set`], RFC 8935/9967), a signed JSON webhook
//! from an IGA or provisioning tool ([`intake`]), and periodic reconciliation of the catalog's
//! groups against the SCIM directory ([`reconcile`]). [`engine`] matches each grant to its
//! approving decision, moves the decision's lifecycle (approved → granted → expired or revoked),
//! fires the durable expiry and fulfilment timers, records findings and queues the two lifecycle
//! comments. The ticket never grants access, and deskbridge never grants or revokes: it records.

pub mod engine;
pub mod intake;
pub mod reconcile;
pub mod set;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deskbridge_connector::webhook::{WebhookConfig, WebhookVerifier};
use secrecy::ExposeSecret as _;
use serde::Deserialize;

pub use engine::PassReport;

/// `[provisioning]` in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningConfig {
    /// Hours after an access's expiry before it counts as not revoked.
    #[serde(default = "default_grace")]
    pub grace_hours: u64,
    /// Hours after an approval within which the grant should be seen (`approved_not_fulfilled`).
    #[serde(default = "default_fulfil")]
    pub fulfil_within_hours: u64,
    /// Seconds between reconciliations of the catalog's groups with the SCIM `[directory]`; 0
    /// turns reconciliation off.
    #[serde(default)]
    pub reconcile_every_secs: u64,
    /// Post the "granted" and "expired, still present" comments on the decision's ticket.
    #[serde(default = "default_true")]
    pub comments: bool,
    /// Where changes are pushed from.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

fn default_grace() -> u64 {
    24
}
fn default_fulfil() -> u64 {
    72
}
fn default_true() -> bool {
    true
}

/// One `[[provisioning.sources]]` entry: `POST /events/<id>` takes its deliveries.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// SCIM events as Security Event Tokens, pushed per RFC 8935.
    Set {
        /// The source id (the path segment of `/events/<id>`).
        id: String,
        /// The `iss` the SETs must carry.
        issuer: String,
        /// The `aud` the SETs must name (deskbridge's receiver URL for this source).
        audience: String,
        /// Accepted `alg` values; `none` and HMAC are refused at load.
        #[serde(default = "default_algorithms")]
        algorithms: Vec<String>,
        /// The issuer's JWKS URL (fetched at first use; again for an unknown `kid`).
        #[serde(default)]
        jwks_url: Option<url::Url>,
        /// A JWKS file (relative to the config file).
        #[serde(default)]
        jwks_file: Option<PathBuf>,
        /// A JWKS as inline JSON.
        #[serde(default)]
        jwks: Option<String>,
        /// The bearer token the transmitter sends (optional; RFC 8935 leaves it to agreement).
        #[serde(default)]
        token: Option<secrecy::SecretString>,
        /// Oldest `iat` accepted, in seconds.
        #[serde(default = "default_max_age")]
        max_age_secs: u64,
    },
    /// Signed JSON from an IGA or provisioning tool (grant, revoke, identity disabled).
    Webhook {
        /// The source id.
        id: String,
        /// HMAC-SHA256 secret and headers, as for ITSM webhooks (default signature header
        /// `X-Deskbridge-Signature`).
        #[serde(flatten)]
        webhook: WebhookConfig,
    },
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_max_age() -> u64 {
    24 * 3600
}

impl SourceConfig {
    /// Its id.
    pub fn id(&self) -> &str {
        match self {
            Self::Set { id, .. } | Self::Webhook { id, .. } => id,
        }
    }

    /// Makes a relative JWKS file relative to the config file's folder.
    pub fn rebase(&mut self, base: &std::path::Path) {
        if let Self::Set { jwks_file: Some(f), .. } = self {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
    }
}

/// A configured source, ready to verify deliveries.
pub enum Source {
    /// SETs.
    Set {
        /// The verifier.
        verifier: set::SetVerifier,
        /// SHA-256 of the transmitter's bearer token, when one is required.
        token_sha256: Option<[u8; 32]>,
    },
    /// Signed JSON.
    Webhook(WebhookVerifier),
}

/// Timing of the lifecycle.
#[derive(Debug, Clone)]
pub struct Settings {
    /// After expiry, before "not revoked".
    pub grace: Duration,
    /// After approval, before "not fulfilled".
    pub fulfil_within: Duration,
    /// Between reconciliations (`None`: off).
    pub reconcile_every: Option<Duration>,
    /// Whether lifecycle comments are posted.
    pub comments: bool,
}

/// Provisioning evidence, as configured.
pub struct Provisioning {
    /// Timing.
    pub settings: Settings,
    sources: HashMap<String, Source>,
    directory: Option<Arc<crate::directory::scim::ScimDirectory>>,
    last_reconcile: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Provisioning {
    /// Builds sources and the SCIM reader; every problem is named with its source id.
    pub fn build(config: &ProvisioningConfig, directory: Option<&crate::directory::DirectoryConfig>) -> anyhow::Result<Self> {
        let mut sources = HashMap::new();
        let mut problems = Vec::new();
        for source in &config.sources {
            let id = source.id().to_owned();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                problems.push(format!("[[provisioning.sources]] id {id:?}: use letters, digits, - and _"));
                continue;
            }
            if sources.contains_key(&id) {
                problems.push(format!("[[provisioning.sources]] id {id:?} appears twice"));
                continue;
            }
            match Self::source(source) {
                Ok(s) => {
                    sources.insert(id, s);
                }
                Err(e) => problems.push(format!("[[provisioning.sources]] {id}: {e:#}")),
            }
        }
        let directory = match directory {
            Some(crate::directory::DirectoryConfig::Scim(c)) => Some(Arc::new(crate::directory::scim::ScimDirectory::new(c.clone())?)),
            _ => None,
        };
        if directory.is_none() && config.sources.iter().any(|s| matches!(s, SourceConfig::Set { .. })) {
            problems.push(
                "[[provisioning.sources]] of kind \"set\" need a [directory] of kind \"scim\": SETs name users and groups by SCIM id"
                    .into(),
            );
        }
        if config.reconcile_every_secs > 0 && directory.is_none() {
            problems.push("[provisioning] reconcile_every_secs needs a [directory] of kind \"scim\" to read groups from".into());
        }
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("\n"));
        }
        Ok(Self {
            settings: Settings {
                grace: Duration::from_secs(config.grace_hours * 3600),
                fulfil_within: Duration::from_secs(config.fulfil_within_hours * 3600),
                reconcile_every: (config.reconcile_every_secs > 0).then(|| Duration::from_secs(config.reconcile_every_secs)),
                comments: config.comments,
            },
            sources,
            directory,
            last_reconcile: std::sync::Mutex::new(None),
        })
    }

    fn source(config: &SourceConfig) -> anyhow::Result<Source> {
        Ok(match config {
            SourceConfig::Set {
                issuer,
                audience,
                algorithms,
                jwks_url,
                jwks_file,
                jwks,
                token,
                max_age_secs,
                ..
            } => {
                let algorithms = algorithms
                    .iter()
                    .map(|a| set::parse_algorithm(a).map_err(|e| anyhow::anyhow!("algorithms: {e}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if algorithms.is_empty() {
                    anyhow::bail!("algorithms: list at least one");
                }
                let keys = match (jwks_url, jwks_file, jwks) {
                    (Some(url), None, None) => set::KeySource::Url(url.clone()),
                    (None, Some(file), None) => {
                        let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("jwks_file {}: {e}", file.display()))?;
                        set::KeySource::Fixed(
                            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("jwks_file {}: not a JWKS: {e}", file.display()))?,
                        )
                    }
                    (None, None, Some(text)) => {
                        set::KeySource::Fixed(serde_json::from_str(text).map_err(|e| anyhow::anyhow!("jwks: not a JWKS: {e}"))?)
                    }
                    _ => anyhow::bail!("set exactly one of jwks_url, jwks_file or jwks"),
                };
                if issuer.trim().is_empty() || audience.trim().is_empty() {
                    anyhow::bail!("issuer and audience must not be empty");
                }
                let token_sha256 = token.as_ref().map(|t| {
                    use sha2::Digest as _;
                    sha2::Sha256::digest(t.expose_secret().as_bytes()).into()
                });
                Source::Set {
                    verifier: set::SetVerifier::new(
                        issuer.clone(),
                        audience.clone(),
                        algorithms,
                        keys,
                        Duration::from_secs(*max_age_secs),
                    )?,
                    token_sha256,
                }
            }
            SourceConfig::Webhook { webhook, .. } => Source::Webhook(WebhookVerifier::new(webhook, "X-Deskbridge-Signature", None)),
        })
    }

    /// Every source, by id (sorted).
    pub fn sources(&self) -> Vec<(&str, &Source)> {
        let mut all: Vec<(&str, &Source)> = self.sources.iter().map(|(id, s)| (id.as_str(), s)).collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// The source `id`.
    pub fn source_by_id(&self, id: &str) -> Option<&Source> {
        self.sources.get(id)
    }

    /// The SCIM directory evidence is resolved and reconciled against.
    pub fn directory(&self) -> Option<&Arc<crate::directory::scim::ScimDirectory>> {
        self.directory.as_ref()
    }

    /// Whether a reconciliation is due now (and, if so, records that it starts).
    fn reconcile_due(&self) -> bool {
        let Some(every) = self.settings.reconcile_every else { return false };
        let Ok(mut last) = self.last_reconcile.lock() else { return false };
        if last.is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(sources: serde_json::Value, with_directory: bool) -> Result<Provisioning, String> {
        let config: ProvisioningConfig = serde_json::from_value(serde_json::json!({"sources": sources})).map_err(|e| e.to_string())?;
        let directory = crate::directory::DirectoryConfig::Scim(
            serde_json::from_value(serde_json::json!({"base_url": "https://dir.example/scim/v2", "token": "t"})).expect("scim config"),
        );
        Provisioning::build(&config, with_directory.then_some(&directory)).map_err(|e| format!("{e:#}"))
    }

    fn set_source(id: &str, algorithms: &[&str]) -> serde_json::Value {
        serde_json::json!({"kind": "set", "id": id, "issuer": "https://dir.example", "audience": "https://db.example/events/x",
                           "algorithms": algorithms, "jwks": "{\"keys\": []}"})
    }

    #[test]
    fn every_source_problem_is_named_at_load() {
        let err = build(serde_json::json!([set_source("a", &["none"])]), true)
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("[[provisioning.sources]] a: algorithms: `none` is never accepted"),
            "{err}"
        );
        let err = build(serde_json::json!([set_source("a", &["HS256"])]), true)
            .err()
            .unwrap_or_default();
        assert!(err.contains("shared-secret algorithm"), "{err}");
        let err = build(serde_json::json!([set_source("a", &["RS256"]), set_source("a", &["RS256"])]), true)
            .err()
            .unwrap_or_default();
        assert!(err.contains("id \"a\" appears twice"), "{err}");
        let err = build(serde_json::json!([set_source("a b", &["RS256"])]), true)
            .err()
            .unwrap_or_default();
        assert!(err.contains("use letters, digits"), "{err}");
        let err = build(serde_json::json!([set_source("a", &["RS256"])]), false)
            .err()
            .unwrap_or_default();
        assert!(err.contains("need a [directory] of kind \"scim\""), "{err}");
        let mut two_keys = set_source("a", &["RS256"]);
        two_keys["jwks_url"] = serde_json::json!("https://dir.example/keys");
        let err = build(serde_json::json!([two_keys]), true).err().unwrap_or_default();
        assert!(err.contains("exactly one of jwks_url, jwks_file or jwks"), "{err}");
        let short = serde_json::json!([{"kind": "webhook", "id": "iga", "secret": "short"}]);
        let err = build(short, true).err().unwrap_or_default();
        assert!(err.contains("at least 16 are needed"), "{err}");
        assert!(build(serde_json::json!([set_source("okta", &["RS256", "ES256"])]), true).is_ok());
    }
}
