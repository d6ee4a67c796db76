//! Errors people read: every unknown key at once with file:line, URLs normalised and the
//! server's answer quoted, an unreachable PostgreSQL named with its cause.

use std::time::{Duration, Instant};

use deskbridge_servicenow::simulator::{SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};

use crate::helpers::{deskbridge, root, write_config};

#[test]
fn every_unknown_key_is_reported_at_once_with_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("typos.toml");
    std::fs::write(
        &path,
        format!(
            r#"[store]
path = "{db}"
leas_secs = 60

[decision]
kind = "rego"
policies = ["{root}/examples/policies/access.rego"]
timeout = 100

[pipline]
batch_size = 10

[[connectors]]
id = "snow"
kind = "servicenow"
mapping = "{root}/mappings/servicenow/sc_req_item.toml"
base_url = "http://127.0.0.1:9"
auth = {{ type = "basic", username = "u", password = "p" }}
pagesize = 10

[connectors.http]
timout_secs = 5
"#,
            db = dir.path().join("d.db").display(),
            root = root().display()
        ),
    )
    .expect("write");
    let out = deskbridge().args(["sync", "--once", "--config"]).arg(&path).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [
        "typos.toml:3: unknown key store.leas_secs",
        "typos.toml:8: unknown key decision.timeout",
        "typos.toml:10: unknown key pipline",
        "typos.toml:19: unknown key connectors[0].pagesize",
        "typos.toml:22: unknown key connectors[0].http.timout_secs",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in:\n{stderr}");
    }
}

async fn sync_with(auth: &str, base_url: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_config(dir.path(), None, &format!("base_url = \"{base_url}\"\nlag_secs = 0\nauth = {auth}"));
    let out = tokio::task::spawn_blocking(move || deskbridge().args(["sync", "--once", "--config"]).arg(&path).output().expect("runs"))
        .await
        .expect("join");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test]
async fn urls_are_normalised_and_a_token_endpoint_that_is_not_one_is_quoted() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let base = sim.base_url().trim_end_matches('/').to_owned();
    // `${BASE}/oauth_token.do` with a trailing slash in BASE: the same endpoint.
    let oauth = format!(
        r#"{{ type = "oauth_password", token_url = "{base}//oauth_token.do", client_id = "{id}", client_secret = "{secret}", username = "{INTEGRATION_USER}", password = "{INTEGRATION_PASSWORD}" }}"#,
        id = deskbridge_servicenow::simulator::OAUTH_CLIENT.0,
        secret = deskbridge_servicenow::simulator::OAUTH_CLIENT.1,
    );
    let (ok, text) = sync_with(&oauth, &format!("{base}/")).await;
    assert!(ok, "{text}");
    assert!(text.contains("6 decided"), "{text}");

    // A token URL that answers something else: the error says what it answered.
    let wrong = oauth.replace("//oauth_token.do", "/api/now/table/sc_req_item");
    let (ok, text) = sync_with(&wrong, &base).await;
    assert!(!ok, "{text}");
    assert!(text.contains("not an OAuth 2.0 token response"), "{text}");
    assert!(text.contains("it said:"), "{text}");
    assert!(text.contains("answered HTTP 4"), "the status is named: {text}");
}

#[tokio::test]
async fn an_unreachable_postgresql_is_named_with_its_cause() {
    let started = Instant::now();
    let err = deskbridge::store::Store::connect_postgres("postgres://deskbridge:pg-secret-pw@127.0.0.1:1/deskbridge")
        .await
        .err()
        .expect("unreachable");
    let text = format!("{err:#}");
    assert!(started.elapsed() < Duration::from_secs(12), "{:?}", started.elapsed());
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("database \"deskbridge\""), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("pg-secret-pw"), "{text}");
}
