//! The CLI's contracts: the committed schema, `mapping test`, configuration errors and
//! `sync --once` against the simulator through a config file.

use std::process::Command;

use deskbridge_servicenow::simulator::{SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};

use crate::helpers::{deskbridge, root};

#[test]
fn the_committed_schema_is_what_deskbridge_schema_prints() {
    let committed = std::fs::read_to_string(root().join("src/schema.json")).expect("src/schema.json is committed");
    let printed = deskbridge::commands::schema().expect("schema");
    assert_eq!(committed, printed, "run `cargo run -- schema > src/schema.json` and commit it");
}

#[test]
fn mapping_test_prints_the_request_or_every_error() {
    let ok = deskbridge()
        .args([
            "mapping",
            "test",
            "mappings/servicenow/sc_req_item.toml",
            "tests/fixtures/servicenow/RITM0010002.json",
        ])
        .output()
        .expect("runs");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON");
    assert_eq!(out["status"], "access_request");
    assert_eq!(out["request"]["entitlement"]["privileged"], true);

    let bad = deskbridge()
        .args([
            "mapping",
            "test",
            "mappings/servicenow/sc_req_item.toml",
            "tests/fixtures/servicenow/incomplete-RITM0019001.json",
        ])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    let out: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("JSON");
    assert_eq!(out["problems"].as_array().map(Vec::len), Some(4));
}

#[test]
fn the_example_config_loads_when_its_secrets_are_set() {
    let dir = tempfile::tempdir().expect("dir");
    let out = deskbridge()
        .args(["sync", "--once", "--config", "examples/deskbridge.toml"])
        .env("SERVICENOW_USER", "svc")
        .env("SERVICENOW_PASSWORD", "p\"w")
        .env("SERVICENOW_CLIENT_SECRET", "s")
        .env("DESKBRIDGE_DB", dir.path().join("x.db").display().to_string())
        .env("SERVICENOW_URL", "http://127.0.0.1:9")
        .env("SCIM_URL", "http://127.0.0.1:9/scim/v2")
        .env("SCIM_TOKEN", "t")
        .output()
        .expect("runs");
    // Everything loads; the instance is unreachable, which is reported and fails the pass.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("connector acme-servicenow: transient failure: token endpoint"),
        "{stderr}"
    );
    assert!(
        stderr.contains("127.0.0.1:9/oauth_token.do"),
        "the cause names the endpoint: {stderr}"
    );
    assert!(!stderr.contains("p\"w"));
}

#[test]
fn config_problems_are_all_reported_with_file_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[store]
path = "x.db"

[decision]
kind = "rego"
policies = ["missing.rego"]

[[connectors]]
id = "one"
kind = "servicenow"
mapping = "nope.toml"
base_url = "http://127.0.0.1:9"
bse_url = "typo"
auth = { type = "basic", username = "u", password = "p" }

[[connectors]]
id = "two"
kind = "zendesk"
mapping = "nope.toml"
"#,
    )
    .expect("write");
    let out = deskbridge().args(["sync", "--once", "--config"]).arg(&path).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    for needle in [
        "bad.toml:14: unknown key connectors[0].bse_url (id \"one\")",
        "nope.toml",
        "unknown connector kind \"zendesk\"; known kinds: servicenow",
        "missing.rego",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
}

#[test]
fn an_unset_secret_names_the_variable_and_line() {
    let out = deskbridge()
        .args(["sync", "--once", "--config", "examples/deskbridge.toml"])
        .env_remove("SERVICENOW_PASSWORD")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("examples/deskbridge.toml:") && stderr.contains("SERVICENOW_PASSWORD is not set"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sync_once_runs_the_pipeline_from_a_config_file_and_a_401_names_the_connector() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let config = |password: &str| {
        format!(
            r#"
[store]
path = "{db}"

[decision]
kind = "rego"
policies = ["{root}/examples/policies/access.rego"]

[[connectors]]
id = "snow-test"
kind = "servicenow"
mapping = "{root}/mappings/servicenow/sc_req_item.toml"
base_url = "{url}"
lag_secs = 0
auth = {{ type = "basic", username = "{user}", password = "${{SNOW_PASSWORD}}" }}
"#,
            db = dir.path().join("d.db").display(),
            root = root().display(),
            url = sim.base_url(),
            user = INTEGRATION_USER,
        )
        .replace("SNOW_PASSWORD", password)
    };
    let path = dir.path().join("deskbridge.toml");
    std::fs::write(&path, config("SNOW_PASSWORD")).expect("write");
    let run = |password: &'static str| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            deskbridge()
                .args(["sync", "--once", "--config"])
                .arg(&path)
                .env("SNOW_PASSWORD", password)
                .output()
                .expect("runs")
        })
    };
    let ok = run(INTEGRATION_PASSWORD).await.expect("join");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("6 decided"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let refused = run("wrong-password").await.expect("join");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("connector snow-test: credentials refused (401)"), "{stderr}");
    assert!(!stderr.contains("wrong-password"));
}

#[test]
fn policy_test_runs_the_rego_tests() {
    let out = deskbridge().args(["policy", "test"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PASS test_justification_text_cannot_approve"), "{text}");
    assert!(text.trim_end().ends_with("passed, 0 failed"), "{text}");

    let dir = tempfile::tempdir().expect("dir");
    let failing = dir.path().join("bad_test.rego");
    std::fs::write(
        &failing,
        "package bad_test\n\nimport data.deskbridge.access\n\ntest_wrong if {\n\taccess.policy_version == \"0\"\n}\n",
    )
    .expect("write");
    let out = deskbridge()
        .args(["policy", "test", "examples/policies/access.rego"])
        .arg(&failing)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL test_wrong"));
}

#[tokio::test]
async fn decide_prints_the_configured_decision_points_decision() {
    let dir = tempfile::tempdir().expect("dir");
    let request = dir.path().join("request.json");
    let normalized = deskbridge::mapping::Mapping::load(&root().join("mappings/servicenow/sc_req_item.toml"))
        .expect("mapping")
        .normalize(&crate::helpers::fixture("RITM0010002.json"));
    let deskbridge::schema::Normalized::AccessRequest { request: r } = normalized else {
        panic!()
    };
    std::fs::write(&request, serde_json::to_string(&r).expect("json")).expect("write");

    let embedded = deskbridge().args(["decide", "--request"]).arg(&request).output().expect("runs");
    let out: serde_json::Value = serde_json::from_slice(&embedded.stdout).expect("JSON");
    assert_eq!(out["decision"]["outcome"], "review");

    let opa = crate::pdp_servers::opa(std::sync::Arc::new(std::sync::Mutex::new(None))).await;
    let config = dir.path().join("deskbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"x.db\"\n\n[decision]\nkind = \"opa\"\nurl = \"{opa}\"\npath = \"deskbridge/access/decision\"\n\n[decision.transport]\ntimeout_ms = 1000\n\n[[connectors]]\nid = \"c\"\nkind = \"servicenow\"\nmapping = \"{root}/mappings/servicenow/sc_req_item.toml\"\nbase_url = \"http://127.0.0.1:9\"\nauth = {{ type = \"basic\", username = \"u\", password = \"p\" }}\n",
            root = root().display()
        ),
    )
    .expect("write");
    let remote = tokio::task::spawn_blocking(move || {
        deskbridge()
            .args(["decide", "--request"])
            .arg(&request)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("runs")
    })
    .await
    .expect("join");
    assert!(remote.status.success(), "{}", String::from_utf8_lossy(&remote.stderr));
    let out: serde_json::Value = serde_json::from_slice(&remote.stdout).expect("JSON");
    assert_eq!(out["decision"]["policy_id"], "opa:deskbridge.access.decision");
    assert_eq!(out["decision"]["outcome"], "review");
}

#[tokio::test]
async fn serve_reports_refused_credentials_on_status_and_stops_on_sigterm() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let config = dir.path().join("deskbridge.toml");
    let tokens = crate::operators::tokens();
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{db}\"\n\n[decision]\nkind = \"rego\"\npolicies = [\"{root}/examples/policies/access.rego\"]\n\n[pipeline]\npoll_interval_secs = 1\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n{tokens}\n[[connectors]]\nid = \"snow-serve\"\nkind = \"servicenow\"\nmapping = \"{root}/mappings/servicenow/sc_req_item.toml\"\nbase_url = \"{url}\"\nauth = {{ type = \"basic\", username = \"{user}\", password = \"wrong\" }}\n",
            db = dir.path().join("s.db").display(),
            root = root().display(),
            url = sim.base_url(),
            user = INTEGRATION_USER,
            tokens = tokens.toml,
        ),
    )
    .expect("write");
    // Refused at start-up: the start-up check names the connector and nothing runs.
    let refused = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || deskbridge().args(["serve", "--config"]).arg(&config).output().expect("runs"))
            .await
            .expect("join")
    };
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("start-up check failed") && stderr.contains("connector snow-serve: credentials refused (401)"),
        "{stderr}"
    );
    assert!(!stderr.contains("password = \"wrong\""), "{stderr}");
    // Credentials revoked while serve runs: /status says so.
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace("password = \"wrong\"", &format!("password = \"{INTEGRATION_PASSWORD}\"")),
    )
    .expect("write");
    let mut child = deskbridge()
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let mut status = serde_json::Value::Null;
    let mut revoked = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if let Ok(r) = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/status"))
            .bearer_auth(&tokens.viewer)
            .send()
            .await
        {
            status = r.json().await.expect("json");
            if !status["last_pass"].is_null() && !revoked {
                sim.inject(
                    deskbridge_servicenow::simulator::Fault::Status(401),
                    10_000,
                    Some("/api/now/table/sc_req_item"),
                );
                revoked = true;
            }
            if status["last_pass"]["connector_errors"].to_string().contains("401") {
                break;
            }
        }
    }
    assert!(
        status["connectors"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("credentials refused (401)")),
        "{status}"
    );
    let errors = status["last_pass"]["connector_errors"].to_string();
    assert!(errors.contains("connector snow-serve: credentials refused (401)"), "{status}");
    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .expect("health")
            .text()
            .await
            .expect("text"),
        "ok\n"
    );
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(kill.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    assert!(exit.success(), "a graceful stop exits 0: {exit:?}");
}

#[tokio::test]
async fn sync_backfill_reads_since_a_date_and_a_bad_date_or_store_is_named() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("deskbridge.toml");
    let write = |store: &str| {
        std::fs::write(
            &path,
            format!(
                "[store]\n{store}\n\n[decision]\nkind = \"rego\"\npolicies = [\"{root}/examples/policies/access.rego\"]\n\n[[connectors]]\nid = \"snow-backfill\"\nkind = \"servicenow\"\nmapping = \"{root}/mappings/servicenow/sc_req_item.toml\"\nbase_url = \"{url}\"\nlag_secs = 0\nauth = {{ type = \"basic\", username = \"{user}\", password = \"{password}\" }}\n",
                root = root().display(),
                url = sim.base_url(),
                user = INTEGRATION_USER,
                password = INTEGRATION_PASSWORD,
            ),
        )
        .expect("write");
    };
    let run = |args: &[&str]| {
        let mut cmd = deskbridge();
        cmd.args(args).arg("--config").arg(&path);
        tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
    };
    write(&format!("path = \"{}\"", dir.path().join("b.db").display()));
    let since = (chrono::Utc::now() - chrono::TimeDelta::minutes(75))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let ok = run(&["sync", "--backfill", "--since", &since]).await.expect("join");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // The seeded tickets updated 60, 30 and 15 minutes ago (one is the support ticket), not the
    // older ones.
    assert!(
        stdout.contains(&format!(
            "backfill since {since} complete: 3 new ticket versions, 2 decided, 1 settled"
        )),
        "{stdout}"
    );

    let bad = run(&["sync", "--backfill", "--since", "last tuesday"]).await.expect("join");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("\"last tuesday\" is neither a date (2026-01-31) nor an RFC 3339 time"),
        "{stderr}"
    );
    let alone = run(&["sync", "--backfill"]).await.expect("join");
    assert!(
        String::from_utf8_lossy(&alone.stderr).contains("--since"),
        "a backfill needs a start"
    );

    // A refused PostgreSQL login names the store, never its password.
    write("url = \"postgres://deskbridge:hunter2-secret@127.0.0.1:5432/test\"");
    let refused = run(&["sync", "--once"]).await.expect("join");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("connecting to the PostgreSQL store"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
    write("path = \"x.db\"\nurl = \"postgres://127.0.0.1/test\"");
    let both = run(&["sync", "--once"]).await.expect("join");
    assert!(String::from_utf8_lossy(&both.stderr).contains("set exactly one of `path` (SQLite) or `url` (PostgreSQL)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jira_example_runs_against_the_simulator_and_a_missing_permission_stops_start_up() {
    use deskbridge_jira::simulator::{API_TOKEN, INTEGRATION_EMAIL, READ_ONLY_EMAIL, READ_ONLY_TOKEN};
    let sim = deskbridge_jira::simulator::Simulator::start(deskbridge_jira::simulator::SimConfig::default())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let run = |email: &str, token: &str| {
        deskbridge()
            .args(["sync", "--once", "--config", "examples/deskbridge-jira.toml"])
            .env("DESKBRIDGE_DB", dir.path().join("jira.db").display().to_string())
            .env("DESKBRIDGE_LISTEN", "127.0.0.1:0")
            .env("JIRA_URL", sim.base_url())
            .env("JIRA_EMAIL", email)
            .env("JIRA_API_TOKEN", token)
            .env("JIRA_WEBHOOK_SECRET", "jira-webhook-secret-0123")
            .output()
            .expect("runs")
    };
    let denied = run(READ_ONLY_EMAIL, READ_ONLY_TOKEN);
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success());
    assert!(
        stderr.contains("start-up check failed") && stderr.contains("acme-jsm") && stderr.contains("ADD_COMMENTS on project ACC"),
        "{stderr}"
    );
    assert!(!stderr.contains(READ_ONLY_TOKEN));
    assert_eq!(sim.comments("ACC-1").len(), 0, "nothing ran");

    let ok = run(INTEGRATION_EMAIL, API_TOKEN);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("6 decided") && stdout.contains("6 comments posted"), "{stdout}");
    assert_eq!(sim.comments("ACC-2").len(), 1);
}
