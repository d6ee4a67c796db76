//! `deskbridge serve` as its own process: metrics move as work flows, readiness follows the
//! store and the ITSM's answer to the credentials, logs honour RUST_LOG and `--log-format
//! json`, and `config check` checks everything while posting nothing.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deskbridge_servicenow::simulator::{Fault, SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};
use serde_json::Value;

use crate::helpers::{deskbridge, root, write_config, Killed};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// `deskbridge serve --config config`, killed when dropped.
fn serve(config: &std::path::Path) -> Killed {
    Killed(
        deskbridge()
            .args(["serve", "--config"])
            .arg(config)
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    )
}

/// `deskbridge config check --config config`.
async fn config_check(config: std::path::PathBuf) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        deskbridge()
            .args(["config", "check", "--config"])
            .arg(&config)
            .output()
            .expect("runs")
    })
    .await
    .expect("join")
}

fn connector_lines(sim: &Simulator, password: &str) -> String {
    format!(
        "base_url = \"{}\"\nlag_secs = 0\nauth = {{ type = \"basic\", username = \"{INTEGRATION_USER}\", password = \"{password}\" }}\n",
        sim.base_url()
    )
}

/// A config for `serve`: `store` lines, one pass a second, the tokens, on `port`.
fn serve_config(dir: &std::path::Path, sim: &Simulator, store: Option<&str>, port: u16, tokens: &str) -> std::path::PathBuf {
    let path = write_config(dir, None, &connector_lines(sim, INTEGRATION_PASSWORD));
    let text = std::fs::read_to_string(&path).expect("config");
    let mut text = text.replacen(
        "\n[decision]",
        &format!("\n[pipeline]\npoll_interval_secs = 1\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n{tokens}\n[decision]"),
        1,
    );
    if let Some(store) = store {
        let start = text.find("[store]").expect("store");
        let end = text[start..].find("\n\n").expect("end") + start;
        text.replace_range(start..end, &format!("[store]\n{store}"));
    }
    std::fs::write(&path, text).expect("write");
    path
}

/// `[[server.tokens]]` come after every other table of `[server]`.
fn token_tables(tokens: &super::Tokens) -> String {
    tokens.toml.clone()
}

async fn get(url: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut request = reqwest::Client::new().get(url).timeout(Duration::from_secs(5));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// Waits until `check` holds for `url`'s answer; returns it.
async fn wait_for(url: &str, token: Option<&str>, what: &str, check: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let mut last = None;
    for _ in 0..200 {
        if let Some((code, body)) = get(url, token).await {
            if check(code, &body) {
                return (code, body);
            }
            last = Some((code, body));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: never happened; last answer {last:?}")
}

/// The value of the sample `name{labels}` (all of `labels` present), summed over matches.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_as_work_flows() {
    let sim = Simulator::start(SimConfig {
        seed: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let tokens = super::tokens();
    let config = serve_config(dir.path(), &sim, None, port, &token_tables(&tokens));
    let _serve = serve(&config);
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/readyz"), None, "ready", |code, _| code == 200).await;
    // Not public unless configured.
    let (code, _) = get(&format!("{base}/metrics"), None).await.expect("answer");
    assert_eq!(code, 401);
    // Ready means the first poll succeeded; the pass it belongs to ends a moment later.
    let (_, before) = wait_for(&format!("{base}/metrics"), Some(&tokens.viewer), "a first pass", |_, m| {
        sample(m, "deskbridge_passes_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(sample(&before, "deskbridge_tickets_read_total", &[]), 0.0, "{before}");
    assert_eq!(sample(&before, "deskbridge_decisions_total", &[]), 0.0);
    let polls_before = sample(
        &before,
        "deskbridge_itsm_responses_total",
        &["connector=\"snow\"", "status=\"200\""],
    );
    assert!(polls_before >= 1.0, "{before}");
    // Work arrives.
    sim.generate(4);
    let (_, after) = wait_for(&format!("{base}/metrics"), Some(&tokens.viewer), "4 comments posted", |_, m| {
        sample(m, "deskbridge_comment_posts_total", &["result=\"posted\""]) >= 4.0
    })
    .await;
    let after_text: String = after.lines().filter(|l| !l.contains("_bucket")).collect::<Vec<_>>().join("\n");
    assert_eq!(
        sample(&after, "deskbridge_tickets_read_total", &["connector=\"snow\""]),
        4.0,
        "{after_text}"
    );
    assert_eq!(sample(&after, "deskbridge_decisions_total", &[]), 4.0, "{after_text}");
    // Every call to the policy is timed (needs-info for missing fields is deskbridge's own).
    let by_policy = sample(&after, "deskbridge_decisions_total", &["decision_point=\"rego:deskbridge.access\""]);
    assert!(by_policy >= 1.0, "{after_text}");
    assert_eq!(
        sample(
            &after,
            "deskbridge_decision_duration_seconds_count",
            &["decision_point=\"rego:deskbridge.access\""]
        ),
        by_policy
    );
    assert!(sample(&after, "deskbridge_itsm_responses_total", &["connector=\"snow\"", "status=\"200\""]) > polls_before);
    assert!(
        sample(&after, "deskbridge_itsm_request_duration_seconds_count", &["method=\"PATCH\""]) >= 4.0,
        "{after_text}"
    );
    assert_eq!(sample(&after, "deskbridge_outbox_rows", &["state=\"queued\""]), 0.0);
    assert!(after.contains("deskbridge_poll_lag_seconds{connector=\"snow\"}"), "{after}");
    assert!(
        after.contains("deskbridge_drift_findings{kind=\"approved_without_expiry\"}"),
        "{after}"
    );
    assert!(after.contains("# UNIT deskbridge_decision_duration_seconds seconds"), "{after}");
    // A 429 is counted by connector.
    sim.inject(Fault::throttle(0), 1, Some("/api/now/table/sc_req_item"));
    wait_for(&format!("{base}/metrics"), Some(&tokens.viewer), "a 429 counted", |_, m| {
        sample(m, "deskbridge_itsm_rate_limited_total", &["connector=\"snow\""]) >= 1.0
    })
    .await;
}

/// A TCP proxy to PostgreSQL that can be cut: while cut, it drops every open connection and
/// every new one.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (o, c) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = c.notified() => {}
                    }
                });
            }
        });
        Self { port, open, cut }
    }

    fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if !open {
            self.cut.notify_waiters();
        }
    }
}

#[tokio::test]
async fn readiness_follows_the_store_and_the_credentials() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let schema_url = deskbridge::store::testing::fresh_postgres_schema().await;
    let mut url = url::Url::parse(&schema_url).expect("url");
    let target = format!("{}:{}", url.host_str().expect("host"), url.port().unwrap_or(5432));
    let proxy = Proxy::start(target).await;
    url.set_port(Some(proxy.port)).expect("port");
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let tokens = super::tokens();
    let store = format!("url = \"{url}\"");
    let config = serve_config(dir.path(), &sim, Some(&store), port, &token_tables(&tokens));
    let _serve = serve(&config);
    let base = format!("http://127.0.0.1:{port}");
    let ready = format!("{base}/readyz");
    let (_, body) = wait_for(&ready, None, "ready", |code, _| code == 200).await;
    let checks: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(checks["ready"], true);
    // The store goes away: not ready, saying why; the process is still live.
    proxy.set(false);
    let (_, body) = wait_for(&ready, None, "not ready without the store", |code, _| code == 503).await;
    let checks: Value = serde_json::from_str(&body).expect("json");
    let store_check = checks["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "store")
        .expect("store check")
        .clone();
    assert_eq!(store_check["ok"], false, "{body}");
    assert!(store_check["detail"].as_str().expect("detail").starts_with("unreachable"), "{body}");
    assert!(!body.contains("password"), "{body}");
    assert_eq!(get(&format!("{base}/healthz"), None).await.expect("health").0, 200);
    // It comes back.
    proxy.set(true);
    wait_for(&ready, None, "ready again with the store", |code, _| code == 200).await;
    // The ITSM refuses the password: not ready, naming the connector.
    // Reads only: a refused write halts the connector until an operator retries it.
    sim.inject_on(
        deskbridge_connector::simkit::Target {
            method: Some("GET".into()),
            path_contains: Some("/api/now/table/sc_req_item".into()),
        },
        Fault::Status(401),
        1_000_000,
    );
    let (_, body) = wait_for(&ready, None, "not ready when the password is refused", |code, _| code == 503).await;
    assert!(
        body.contains("connector snow") && body.contains("credentials refused (401)"),
        "{body}"
    );
    let (_, status) = get(&format!("{base}/status"), Some(&tokens.viewer)).await.expect("status");
    let status: Value = serde_json::from_str(&status).expect("json");
    assert_eq!(status["connectors"][0]["id"], "snow");
    assert_eq!(status["connectors"][0]["fatal"], true, "{status}");
    assert!(status["connectors"][0]["last_error"].as_str().expect("error").contains("401"));
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    // The password works again: ready.
    sim.clear_faults();
    wait_for(&ready, None, "ready again with the password", |code, _| code == 200).await;
}

#[tokio::test]
async fn logs_honour_rust_log_and_json_and_carry_no_colour_codes() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), None, &connector_lines(&sim, INTEGRATION_PASSWORD));
    let run = |envs: Vec<(&'static str, &'static str)>, args: Vec<&'static str>| {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut cmd = deskbridge();
                cmd.env_remove("DESKBRIDGE_LOG")
                    .env_remove("RUST_LOG")
                    .env_remove("DESKBRIDGE_LOG_FORMAT");
                for (k, v) in envs {
                    cmd.env(k, v);
                }
                let out = cmd
                    .args(args)
                    .args(["sync", "--once", "--config"])
                    .arg(&config)
                    .output()
                    .expect("runs");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8(out.stderr).expect("utf-8")
            })
            .await
            .expect("join")
        }
    };
    // The first run decides the seeded tickets: it has info lines to show.
    let json = run(vec![("RUST_LOG", "info")], vec!["--log-format", "json"]).await;
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"decided\"")), "{json}");
    let debug = run(vec![("RUST_LOG", "debug")], vec![]).await;
    assert!(debug.contains(" DEBUG "), "RUST_LOG=debug was ignored:\n{debug}");
    assert!(!debug.contains('\u{1b}'), "colour codes in a log that is not a terminal");
    let quiet = run(vec![("RUST_LOG", "debug"), ("DESKBRIDGE_LOG", "error")], vec![]).await;
    assert!(
        !quiet.contains(" INFO ") && !quiet.contains(" DEBUG "),
        "DESKBRIDGE_LOG wins:\n{quiet}"
    );
    let bad = run(vec![("RUST_LOG", "debug=[")], vec![]).await;
    assert!(bad.contains("RUST_LOG") && bad.contains("is not a log filter"), "{bad}");
}

#[tokio::test]
async fn config_check_checks_everything_and_posts_nothing() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let good = write_config(dir.path(), None, &connector_lines(&sim, INTEGRATION_PASSWORD));
    let text = std::fs::read_to_string(&good).expect("config");
    std::fs::write(
        &good,
        text.replacen(
            "\n[decision]",
            &format!(
                "\n[catalog]\npath = \"{root}/examples/catalog.toml\"\n\n[directory]\nkind = \"file\"\npath = \"{root}/examples/directory.json\"\n\n[decision]",
                root = root().display()
            ),
            1,
        ),
    )
    .expect("write");
    let out = config_check(good.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "ok    store",
        "ok    connector snow",
        "ok    catalog",
        "ok    directory",
        "ok    decision point",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    let bad_dir = tempfile::tempdir().expect("dir");
    let bad = write_config(bad_dir.path(), None, &connector_lines(&sim, "wrong"));
    let out = config_check(bad).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  connector snow: connector snow: credentials refused (401)"),
        "{stdout}"
    );
    assert!(!stdout.contains("wrong"), "{stdout}");
    let writes = super::writes(&sim.requests());
    assert!(writes.is_empty(), "config check wrote to the ITSM: {writes:?}");
}

#[tokio::test]
async fn simulate_writes_a_config_that_passes_every_check() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("dir");
    let mut child = deskbridge()
        .args(["simulate", "--tickets", "30", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulate");
    let stdout = child.stdout.take().expect("stdout");
    let child = Killed(child);
    let printed = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("line");
            text.push_str(&line);
            text.push('\n');
            if line.contains("Ctrl-C stops the simulators") {
                break;
            }
        }
        text
    })
    .await
    .expect("join");
    for what in [
        "ServiceNow  https://",
        "Jira Cloud  http://",
        "SCIM 2.0    http://",
        "dbt_",
        "with 30 more access requests",
    ] {
        assert!(printed.contains(what), "{what}: {printed}");
    }
    // `--tickets 30` seeded 30 more requested items, read over the Table API with the CA it wrote.
    let config = dir.path().join("deskbridge.toml");
    let written: toml::Table = toml::from_str(&std::fs::read_to_string(&config).expect("config")).expect("toml");
    let snow_url = written["connectors"].as_array().expect("connectors")[0]["base_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let ca = std::fs::read(dir.path().join("servicenow-ca.pem")).expect("ca");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("client");
    let items: Value = client
        .get(format!("{snow_url}/api/now/table/sc_req_item"))
        .basic_auth(INTEGRATION_USER, Some(INTEGRATION_PASSWORD))
        .query(&[("sysparm_query", "numberSTARTSWITHRITM2"), ("sysparm_fields", "number")])
        .send()
        .await
        .expect("table api")
        .json()
        .await
        .expect("json");
    assert_eq!(items["result"].as_array().map(Vec::len), Some(30), "{items}");
    let out = config_check(config).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "ok    connector servicenow",
        "ok    connector jira",
        "ok    directory",
        "ok    decision point",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    // SIGTERM stops the simulators cleanly.
    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.0.wait().expect("wait"))
        .await
        .expect("join");
    assert!(status.success(), "{status:?}");
}
