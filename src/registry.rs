//! Connector kinds, each registered by its crate's `KIND`. An unknown kind fails start-up and
//! lists the known ones.

use std::sync::Arc;

use deskbridge_connector::Connector;

type Factory = fn(&str, toml::Table) -> Result<Arc<dyn Connector>, String>;

/// One connector kind: how its settings are checked, and how an instance is built.
pub struct Kind {
    /// Its `kind` in configuration.
    pub name: &'static str,
    check: fn(toml::Table) -> Result<(), toml::de::Error>,
    build: Factory,
}

/// Every connector kind deskbridge knows.
pub const KINDS: &[Kind] = &[
    Kind {
        name: deskbridge_servicenow::KIND,
        check: check_as::<deskbridge_servicenow::ServiceNowConfig>,
        build: servicenow,
    },
    Kind {
        name: deskbridge_jira::KIND,
        check: check_as::<deskbridge_jira::JiraConfig>,
        build: jira,
    },
];

/// Reads settings as a kind's configuration type, for checking only.
fn check_as<T: serde::de::DeserializeOwned>(settings: toml::Table) -> Result<(), toml::de::Error> {
    settings.try_into::<T>().map(drop)
}

/// A settings error with the key it is at, when toml knows it: `message (at webhook.secret)`.
fn settings_error(e: toml::de::Error) -> String {
    let text = e.to_string();
    let mut lines = text.lines();
    let message = lines.next().unwrap_or_default().to_owned();
    match lines.find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`'))) {
        Some(at) => format!("{at}: {message}"),
        None => message,
    }
}

fn jira(id: &str, settings: toml::Table) -> Result<Arc<dyn Connector>, String> {
    let config: deskbridge_jira::JiraConfig = settings.try_into().map_err(settings_error)?;
    Ok(Arc::new(deskbridge_jira::Jira::new(id, config).map_err(|e| e.to_string())?))
}

fn servicenow(id: &str, settings: toml::Table) -> Result<Arc<dyn Connector>, String> {
    let config: deskbridge_servicenow::ServiceNowConfig = settings.try_into().map_err(settings_error)?;
    Ok(Arc::new(
        deskbridge_servicenow::ServiceNow::new(id, config).map_err(|e| e.to_string())?,
    ))
}

/// Checks a settings table against its kind's configuration, building nothing: the first
/// problem's message, or `Ok` (also for an unknown kind, which [`build`] reports).
pub fn check(kind: &str, settings: toml::Table) -> Result<(), String> {
    match KINDS.iter().find(|k| k.name == kind) {
        Some(k) => (k.check)(settings).map_err(|e| e.message().to_owned()),
        None => Ok(()),
    }
}

/// Builds connector `id` of `kind` from its settings table.
pub fn build(kind: &str, id: &str, settings: toml::Table) -> Result<Arc<dyn Connector>, String> {
    match KINDS.iter().find(|k| k.name == kind) {
        Some(k) => (k.build)(id, settings),
        None => {
            let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
            Err(format!("unknown connector kind {kind:?}; known kinds: {}", known.join(", ")))
        }
    }
}
