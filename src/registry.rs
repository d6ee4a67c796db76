//! Connector kinds, each registered by its crate's `KIND`. An unknown kind fails start-up and
//! lists the known ones.

use std::sync::Arc;

use deskbridge_connector::Connector;

type Factory = fn(&str, toml::Table) -> Result<Arc<dyn Connector>, String>;

/// Every connector kind deskbridge knows.
pub const KINDS: &[(&str, Factory)] = &[(deskbridge_servicenow::KIND, servicenow), (deskbridge_jira::KIND, jira)];

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
    let message = |e: toml::de::Error| e.message().to_owned();
    match kind {
        k if k == deskbridge_servicenow::KIND => settings
            .try_into::<deskbridge_servicenow::ServiceNowConfig>()
            .map(drop)
            .map_err(message),
        k if k == deskbridge_jira::KIND => settings.try_into::<deskbridge_jira::JiraConfig>().map(drop).map_err(message),
        _ => Ok(()),
    }
}

/// Builds connector `id` of `kind` from its settings table.
pub fn build(kind: &str, id: &str, settings: toml::Table) -> Result<Arc<dyn Connector>, String> {
    match KINDS.iter().find(|(k, _)| *k == kind) {
        Some((_, factory)) => factory(id, settings),
        None => {
            let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            Err(format!("unknown connector kind {kind:?}; known kinds: {}", known.join(", ")))
        }
    }
}
