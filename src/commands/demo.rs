//! `deskbridge demo`: the whole path on embedded defaults, nothing installed. A seeded
//! ServiceNow simulator, the shipped mapping and Rego policy, SQLite in a temporary folder; then
//! the SCIM directory's signed events carried through one access lifecycle and one finding.

use std::sync::Arc;
use std::time::Duration;

use deskbridge_connector::auth::AuthConfig;
use deskbridge_servicenow::simulator::{SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};
use deskbridge_servicenow::{ServiceNow, ServiceNowConfig};

use crate::decision::rego::RegoDecisionPoint;
use crate::mapping::Mapping;
use crate::pipeline::{Instance, Pipeline, Settings};
use crate::render::CommentRenderer;
use crate::store::Store;

/// The shipped ServiceNow mapping, embedded so the demo runs from any folder.
pub const SERVICENOW_MAPPING: &str = include_str!("../../mappings/servicenow/sc_req_item.toml");
/// The shipped Jira Service Management mapping.
pub const JSM_MAPPING: &str = include_str!("../../mappings/jira/service-management-access.toml");

/// The Jira Cloud connector configuration the demo uses against a simulator: the seeded JSM
/// project `ACC`, API-token auth, ADF comments as internal notes.
pub fn jira_config(base_url: &str) -> anyhow::Result<deskbridge_jira::JiraConfig> {
    use deskbridge_jira::simulator::{API_TOKEN, INTEGRATION_EMAIL, SEEDED_PROJECT};
    Ok(serde_json::from_value(serde_json::json!({
        "deployment": "cloud",
        "base_url": base_url,
        "projects": [SEEDED_PROJECT],
        "auth": {"type": "basic", "username": INTEGRATION_EMAIL, "password": API_TOKEN},
    }))?)
}
/// The shipped access policy.
pub const ACCESS_POLICY: &str = include_str!("../../examples/policies/access.rego");
/// Its entrypoint.
pub const ENTRYPOINT: &str = "data.deskbridge.access.decision";
/// The example entitlement catalog, embedded so the demo runs from any folder.
pub const CATALOG: &str = include_str!("../../examples/catalog.toml");

/// The connector configuration the demo uses against a simulator.
pub fn servicenow_config(base_url: &str) -> anyhow::Result<ServiceNowConfig> {
    let mut config: ServiceNowConfig = serde_json::from_value(serde_json::json!({
        "base_url": base_url,
        "auth": {"type": "basic", "username": INTEGRATION_USER, "password": INTEGRATION_PASSWORD},
        "lag_secs": 0,
        "page_size": 100,
    }))?;
    config.auth = AuthConfig::Basic {
        username: INTEGRATION_USER.into(),
        password: INTEGRATION_PASSWORD.to_string().into(),
    };
    Ok(config)
}

/// The shipped mapping and policy.
pub fn shipped() -> anyhow::Result<(Mapping, RegoDecisionPoint)> {
    let mapping = Mapping::parse(SERVICENOW_MAPPING, "mappings/servicenow/sc_req_item.toml")?;
    let policy = RegoDecisionPoint::from_sources(
        vec![("examples/policies/access.rego".into(), ACCESS_POLICY.into())],
        ENTRYPOINT,
        Duration::from_millis(100),
    )?;
    Ok((mapping, policy))
}

/// The embedded example catalog (`examples/catalog.toml`), fixed.
pub fn example_catalog() -> anyhow::Result<Arc<crate::pipeline::enrich::CatalogHandle>> {
    Ok(Arc::new(crate::pipeline::enrich::CatalogHandle::fixed(crate::catalog::parse(
        CATALOG,
        "examples/catalog.toml",
    )?)))
}

/// The embedded example catalog without a directory (`decide` without a config): identities
/// stay unverified, so the shipped policy reviews what it would otherwise approve.
pub fn catalog_only() -> anyhow::Result<Arc<crate::pipeline::enrich::Enricher>> {
    Ok(Arc::new(crate::pipeline::enrich::Enricher {
        catalog: example_catalog()?,
        directory: None,
    }))
}

/// Runs the demo and returns what it prints. With `keep`, the SQLite file is kept there (for
/// `deskbridge trace` and `deskbridge report drift`); otherwise it lives in a temporary folder.
pub async fn run(keep: Option<&std::path::Path>) -> anyhow::Result<String> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let path = keep.map_or_else(|| dir.path().join("deskbridge.db"), std::path::Path::to_path_buf);
    if keep.is_some() && path.exists() {
        anyhow::bail!("{} exists; the demo starts from an empty store", path.display());
    }
    let store = Store::open(&path).await?;
    let jira_sim = deskbridge_jira::simulator::Simulator::start(deskbridge_jira::simulator::SimConfig::default()).await?;
    let connector = Arc::new(ServiceNow::new("servicenow-demo", servicenow_config(sim.base_url())?)?);
    let jira = Arc::new(deskbridge_jira::Jira::new("jsm-demo", jira_config(jira_sim.base_url())?)?);
    let (mapping, policy) = shipped()?;
    let jsm_mapping = Mapping::parse(JSM_MAPPING, "mappings/jira/service-management-access.toml")?;
    // The facts: the example catalog, and a SCIM directory holding the simulators' people.
    let scim = deskbridge_scim::simulator::Simulator::start(deskbridge_scim::simulator::SimConfig::default()).await?;
    let directory = crate::directory::scim::ScimDirectory::new(serde_json::from_value(serde_json::json!({
        "base_url": scim.base_url(),
        "token": deskbridge_scim::simulator::TOKEN,
    }))?)?;
    let enricher = Arc::new(crate::pipeline::enrich::Enricher {
        catalog: example_catalog()?,
        directory: Some(Arc::new(directory)),
    });
    let pipeline = Pipeline::new(
        store.clone(),
        vec![
            Instance {
                connector,
                mapping: Arc::new(mapping),
            },
            Instance {
                connector: jira,
                mapping: Arc::new(jsm_mapping),
            },
        ],
        Arc::new(policy),
        CommentRenderer::new(None)?,
        Settings::default(),
    )
    .with_enricher(Some(enricher))
    .with_provisioning(Some(super::demo_evidence::provisioning(&scim)?));
    let pipeline = Arc::new(pipeline);
    let server = super::demo_evidence::serve(pipeline.clone(), &scim).await?;
    let problems = pipeline.check_connectors().await;
    if !problems.is_empty() {
        anyhow::bail!("the demo's start-up check failed: {}", problems.join("; "));
    }
    let report = pipeline.run_once().await?;
    if !report.connector_errors.is_empty() {
        anyhow::bail!("the demo could not talk to its simulators: {}", report.connector_errors.join("; "));
    }
    let mut out = format!(
        "deskbridge demo:\n  ServiceNow simulator at {} → mapping servicenow-sc_req_item → work notes\n  Jira Service Management simulator at {} (project ACC) → mapping jira-service-management-access → internal comments (ADF)\n  facts from the entitlement catalog examples/catalog.toml and the SCIM directory at {}\n  both → embedded Rego policy deskbridge.access\n\n",
        sim.base_url(),
        jira_sim.base_url(),
        scim.base_url()
    );
    out.push_str(&super::table::render(&store.ticket_states().await?));
    let counts = store.counts().await?;
    out.push_str(&format!(
        "\n{} ticket versions read, {} decisions, {} comments posted, {} pending. The tickets granted nothing: each outcome above is the policy's.\n",
        counts.inbox, counts.decisions, counts.posted, counts.pending
    ));
    let sample = sim
        .sys_id_of("sc_req_item", "RITM0010002")
        .map(|id| sim.journal(&id))
        .unwrap_or_default();
    if let Some(entry) = sample.first() {
        out.push_str(&format!(
            "\nWork note posted on RITM0010002 (journal entry {}):\n\n{}\n",
            entry.sys_id,
            indent(&entry.value)
        ));
    }
    if let Some(comment) = jira_sim.comments("ACC-2").first() {
        out.push_str(&format!(
            "\nInternal comment posted on ACC-2 (Jira comment {}):\n\n{}\n",
            comment.id,
            indent(&comment.text)
        ));
    }
    out.push_str(&super::demo_evidence::show(&pipeline, &scim, &sim, &jira_sim).await?);
    server.abort();
    let counts = store.counts().await?;
    if counts.pending > 0 || counts.queued > 0 {
        anyhow::bail!(
            "{out}\nthe demo left {} requests pending and {} comments queued",
            counts.pending,
            counts.queued
        );
    }
    Ok(out)
}

pub(super) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
