//! `deskbridge serve` as its own process: a webhook between polls is decided and commented at
//! once, by a pass over what the webhook stored, without polling the ITSM again.

use std::time::{Duration, Instant};

use deskbridge_servicenow::simulator::{SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};

use crate::helpers::{deskbridge, root, Killed};

const SECRET: &str = "serve-webhook-secret-0123456789";

/// The list requests of a poll (every poll query bounds `sys_updated_on`; a webhook's read of
/// one ticket names its `sys_id` only).
fn polls(sim: &Simulator) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/sc_req_item"))
        .filter(|r| r.param("sysparm_query").is_some_and(|q| q.contains("sys_updated_on")))
        .count()
}

fn ours(sim: &Simulator, sys_id: &str) -> usize {
    sim.journal(sys_id).iter().filter(|e| e.created_by == INTEGRATION_USER).count()
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_between_polls_is_commented_at_once_without_a_poll() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let root = root();
    let config = dir.path().join("deskbridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"[store]
path = "{db}"

[decision]
kind = "rego"
policies = ["{root}/examples/policies/access.rego"]

[catalog]
path = "{root}/examples/catalog.toml"

[directory]
kind = "file"
path = "{root}/examples/directory.json"

[pipeline]
poll_interval_secs = 3600

[server]
listen = "127.0.0.1:{port}"

[[connectors]]
id = "snow"
kind = "servicenow"
mapping = "{root}/mappings/servicenow/sc_req_item.toml"
base_url = "{url}"
lag_secs = 0
auth = {{ type = "basic", username = "{INTEGRATION_USER}", password = "{INTEGRATION_PASSWORD}" }}
webhook = {{ secret = "{SECRET}" }}
"#,
            db = dir.path().join("d.db").display(),
            root = root.display(),
            url = sim.base_url(),
        ),
    )
    .expect("config");
    let mut serve = Killed(
        deskbridge()
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let ticket = sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    // The first pass (a poll) comments the seeded tickets; the next poll is an hour away.
    wait_for("the first pass's comment", Duration::from_secs(60), || ours(&sim, &ticket) == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let polled = polls(&sim);
    assert!(polled > 0, "the first pass polled");

    // The requester changes the ask; the ITSM's webhook names the ticket. Twice: the second
    // arrives while the pass the first started waits for more.
    for (n, duration) in [(2, "30 days"), (3, "20 days")] {
        sim.set_variable(&ticket, "access_duration", duration);
        sim.update("sc_req_item", &ticket, &[]);
        let body = serde_json::json!({"sys_id": ticket}).to_string();
        let answer = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/webhooks/snow"))
            .header(
                "X-Deskbridge-Signature",
                deskbridge_connector::webhook::sign(SECRET, body.as_bytes()),
            )
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("webhook");
        assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
        wait_for("the changed ask's comment", Duration::from_secs(20), || ours(&sim, &ticket) == n).await;
    }
    assert_eq!(
        polls(&sim),
        polled,
        "the webhooks' pass decided what they stored without polling again"
    );

    // SIGTERM ends the waiting pass at once: serve stops cleanly, long before the next poll.
    let pid = serve.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = serve.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "serve stopped with {status}");
}
