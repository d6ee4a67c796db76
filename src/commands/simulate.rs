//! `deskbridge simulate`: the ServiceNow, Jira and SCIM simulators on loopback, seeded, with a
//! ready config file, so an admin can try configs and mappings without a real instance.

use std::io::Write as _;
use std::path::Path;

use super::demo;

/// Starts the simulators, writes the config beside a catalog, policy and mappings, prints how to
/// use them, and serves until Ctrl-C or SIGTERM.
///
/// `tickets` more access requests (modelled on the seeded ones) are added to ServiceNow and to
/// Jira before anything is printed, for load runs against simulators in their own process; with
/// them the simulators keep no log of requests, which would grow without bound in a long run.
pub async fn simulate(dir: Option<&Path>, tickets: usize) -> anyhow::Result<String> {
    use deskbridge_jira::simulator as jira;
    use deskbridge_scim::simulator as scim;
    use deskbridge_servicenow::simulator as snow;
    let temp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.to_path_buf()
        }
        None => {
            temp = tempfile::Builder::new().prefix("deskbridge-simulate-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // HTTPS, as every instance is (ServiceNow's Python client refuses plain http), with its own
    // CA written beside the config.
    let servicenow = snow::Simulator::start(snow::SimConfig {
        tls: true,
        ..snow::SimConfig::default()
    })
    .await?;
    std::fs::write(dir.join("servicenow-ca.pem"), servicenow.ca_pem().unwrap_or_default())?;
    let jira_sim = jira::Simulator::start(jira::SimConfig::default()).await?;
    let directory = scim::Simulator::start(scim::SimConfig::default()).await?;
    if tickets > 0 {
        servicenow.generate(tickets);
        jira_sim.generate(tickets);
        servicenow.set_recording(false);
        jira_sim.set_recording(false);
        directory.set_recording(false);
    }
    // The directory pushes its membership changes as signed SETs to the deskbridge this config
    // serves (they are refused with a connection error until it runs).
    directory.set_receiver(Some(scim::Receiver {
        url: "http://127.0.0.1:8080/events/scim".into(),
        audience: "http://127.0.0.1:8080/events/scim".into(),
        token: None,
    }));
    std::fs::write(dir.join("catalog.toml"), demo::CATALOG)?;
    std::fs::write(dir.join("access.rego"), demo::ACCESS_POLICY)?;
    std::fs::write(dir.join("servicenow.toml"), demo::SERVICENOW_MAPPING)?;
    std::fs::write(dir.join("jira.toml"), demo::JSM_MAPPING)?;
    let (token, entry) = crate::server::auth::new_token("admin", crate::config::Role::Operator);
    let config = format!(
        r#"# Written by `deskbridge simulate` for its simulators; they live as long as that command.
[store]
path = "deskbridge.db"

[decision]
kind = "rego"
policies = ["access.rego"]

[catalog]
path = "catalog.toml"

[directory]
kind = "scim"
base_url = "{scim_url}"
token = "{scim_token}"

[provisioning]
reconcile_every_secs = 300

[[provisioning.sources]]
kind = "set"
id = "scim"
issuer = "{scim_url}"
audience = "http://127.0.0.1:8080/events/scim"
jwks_url = "{jwks_url}"

[pipeline]
poll_interval_secs = 5

[server]
listen = "127.0.0.1:8080"
metrics_public = true

{entry}
[[connectors]]
id = "servicenow"
kind = "servicenow"
mapping = "servicenow.toml"
base_url = "{snow_url}"
filter = "active=true"
lag_secs = 0
auth = {{ type = "basic", username = "{snow_user}", password = "{snow_password}" }}
http = {{ ca_cert_file = {ca} }}

[[connectors]]
id = "jira"
kind = "jira"
mapping = "jira.toml"
deployment = "cloud"
base_url = "{jira_url}"
projects = ["{jira_project}"]
auth = {{ type = "basic", username = "{jira_user}", password = "{jira_token}" }}
"#,
        scim_url = directory.base_url(),
        scim_token = scim::TOKEN,
        jwks_url = directory.jwks_url(),
        snow_url = servicenow.base_url(),
        snow_user = snow::INTEGRATION_USER,
        snow_password = snow::INTEGRATION_PASSWORD,
        ca = toml::Value::String(dir.join("servicenow-ca.pem").display().to_string()),
        jira_url = jira_sim.base_url(),
        jira_project = jira::SEEDED_PROJECT,
        jira_user = jira::INTEGRATION_EMAIL,
        jira_token = jira::API_TOKEN,
    );
    let config_path = dir.join("deskbridge.toml");
    std::fs::write(&config_path, config)?;
    let text = format!(
        "deskbridge simulators, seeded{more}, on loopback (they stop with this command):\n\
         \n  ServiceNow  {snow_url}   basic {snow_user} / {snow_password}   (OAuth client {client_id} / {client_secret}; CA {dir}/servicenow-ca.pem)\
         \n  Jira Cloud  {jira_url}   basic {jira_user} / {jira_token}   project {jira_project}\
         \n  SCIM 2.0    {scim_url}   bearer {scim_token}   (pushes signed SETs to /events/scim)\
         \n\nconfig: {config}\n\
         \n  deskbridge config check --config {config}\
         \n  deskbridge serve --config {config}\
         \n\nthen open http://127.0.0.1:8080/ui and sign in with the operator token (shown once):\n  {token}\n\
         \nCtrl-C stops the simulators.\n",
        snow_url = servicenow.base_url(),
        snow_user = snow::INTEGRATION_USER,
        snow_password = snow::INTEGRATION_PASSWORD,
        client_id = snow::OAUTH_CLIENT.0,
        client_secret = snow::OAUTH_CLIENT.1,
        jira_url = jira_sim.base_url(),
        jira_user = jira::INTEGRATION_EMAIL,
        jira_token = jira::API_TOKEN,
        jira_project = jira::SEEDED_PROJECT,
        scim_url = directory.base_url(),
        scim_token = scim::TOKEN,
        config = config_path.display(),
        dir = dir.display(),
        more = if tickets > 0 {
            format!(" with {tickets} more access requests each in ServiceNow and Jira")
        } else {
            String::new()
        },
    );
    let mut stdout = std::io::stdout();
    stdout.write_all(crate::text::for_terminal(&text).as_bytes())?;
    stdout.flush()?;
    super::run::shutdown_signal().await;
    drop((servicenow, jira_sim, directory));
    Ok("simulators stopped\n".into())
}
