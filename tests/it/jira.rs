//! Jira through the whole pipeline: the JSM mapping on the seeded project, signed webhooks
//! through `serve`'s HTTP app (valid, invalid, missing, replayed, forged), ServiceNow's
//! configurable webhook header, markup injection in ticket text on Cloud (ADF) and Data Center
//! (wiki), and a Jira status change to "Approved" kept as evidence without a re-decision.

use std::sync::Arc;

use deskbridge::mapping::Mapping;
use deskbridge::pipeline::{Instance, Pipeline, Settings};
use deskbridge::render::CommentRenderer;
use deskbridge::store::Store;
use deskbridge_connector::webhook::sign;
use deskbridge_jira::simulator::{NewIssue, SimConfig, Simulator, API_TOKEN, INTEGRATION_EMAIL, PAT};
use deskbridge_jira::{Deployment, Jira, JiraConfig};
use serde_json::{json, Value};

use crate::helpers::{init_tracing, root, shipped_policy};

const SECRET: &str = "jira-webhook-secret";

pub fn jsm_mapping() -> Mapping {
    Mapping::load(&root().join("mappings/jira/service-management-access.toml")).expect("JSM mapping")
}

pub fn jira_config(sim: &Simulator, deployment: Deployment, webhook: bool) -> JiraConfig {
    let auth = match deployment {
        Deployment::Cloud => json!({"type": "basic", "username": INTEGRATION_EMAIL, "password": API_TOKEN}),
        Deployment::DataCenter => json!({"type": "bearer", "token": PAT}),
    };
    let mut config = json!({
        "deployment": if deployment == Deployment::Cloud { "cloud" } else { "data_center" },
        "base_url": sim.base_url(),
        "projects": ["ACC"],
        "auth": auth,
        "http": {"timeout_secs": 5, "backoff_base_ms": 10, "backoff_max_ms": 50},
    });
    if webhook {
        config["webhook"] = json!({"secret": SECRET, "max_body_bytes": 4096});
    }
    serde_json::from_value(config).expect("config")
}

struct Env {
    sim: Simulator,
    store: Store,
    pipeline: Arc<Pipeline>,
    hook_url: String,
    _dir: tempfile::TempDir,
}

/// A Jira simulator delivering signed webhooks to `serve`'s HTTP app, in process.
async fn env(deployment: Deployment) -> Env {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook_url = format!("http://{}/webhooks/jsm", listener.local_addr().expect("addr"));
    let sim = Simulator::start(SimConfig {
        webhook: Some((hook_url.clone(), SECRET.into())),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("deskbridge.db")).await.expect("store");
    let connector = Arc::new(Jira::new("jsm", jira_config(&sim, deployment, true)).expect("connector"));
    let pipeline = Arc::new(
        Pipeline::new(
            store.clone(),
            vec![Instance {
                connector,
                mapping: Arc::new(jsm_mapping()),
            }],
            Arc::new(shipped_policy()),
            CommentRenderer::new(None).expect("renderer"),
            Settings::default(),
        )
        .with_enricher(Some(crate::helpers::example_enricher())),
    );
    let app = deskbridge::server::app(pipeline.clone(), Arc::new(tokio::sync::Notify::new()), Default::default());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Env {
        sim,
        store,
        pipeline,
        hook_url,
        _dir: dir,
    }
}

async fn inbox_versions(store: &Store) -> i64 {
    store.counts().await.expect("counts").inbox
}

async fn post(url: &str, body: &[u8], headers: &[(&str, String)]) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.expect("post");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn the_seeded_jsm_project_is_decided_like_servicenow() {
    let env = env(Deployment::Cloud).await;
    let report = env.pipeline.run_once().await.expect("pass");
    assert!(report.connector_errors.is_empty(), "{report:?}");
    assert_eq!((report.decided, report.posted), (6, 6), "{report:?}");
    let states = env.store.ticket_states().await.expect("states");
    let outcome = |number: &str| {
        states
            .iter()
            .find(|s| s.number == number)
            .and_then(|s| s.decision.as_deref())
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .and_then(|d| d["outcome"].as_str().map(String::from))
            .unwrap_or_else(|| "none".into())
    };
    assert_eq!(outcome("ACC-1"), "approve");
    assert_eq!(outcome("ACC-2"), "deny");
    assert_eq!(outcome("ACC-3"), "needs_info");
    assert_eq!(outcome("ACC-6"), "review");
    assert_eq!(outcome("ACC-7"), "none", "the hardware problem is not an access request");
    for key in deskbridge_jira::simulator::SEEDED_ACCESS_ISSUES {
        let comments = env.sim.comments(key);
        assert_eq!(comments.len(), 1, "{key}: one comment");
        assert_eq!(
            comments[0].properties["deskbridge.marker"]["marker"]
                .as_str()
                .map(|m| comments[0].text.contains(m)),
            Some(true)
        );
        assert!(!comments[0].public, "{key}: internal note by default");
    }
    // A second pass re-reads the commented issues (a comment bumps `updated`) and posts nothing.
    let again = env.pipeline.run_once().await.expect("pass");
    assert_eq!((again.decided, again.posted), (0, 0), "{again:?}");
}

#[tokio::test]
async fn webhooks_are_verified_deduplicated_and_re_fetched() {
    let env = env(Deployment::Cloud).await;
    // The seed's deliveries (7 issues created) arrive at the app.
    let seeded = env.sim.wait_for_deliveries(7).await;
    assert!(
        seeded.iter().all(|d| d.status == 202),
        "{:?}",
        seeded.iter().map(|d| d.status).collect::<Vec<_>>()
    );
    assert_eq!(inbox_versions(&env.store).await, 7);

    // Valid: a new request is stored at once, before any poll.
    let (id, _) = env.sim.create_issue(NewIssue {
        project: "ACC".into(),
        issue_type: "Service Request".into(),
        summary: "via webhook".into(),
        reporter: "abel.tuter@example.com".into(),
        request_type: Some("Request application access".into()),
        ..NewIssue::default()
    });
    let deliveries = env.sim.wait_for_deliveries(8).await;
    assert_eq!(deliveries[7].status, 202);
    assert_eq!(inbox_versions(&env.store).await, 8);

    // Replayed: same identifier, acknowledged, nothing stored.
    assert_eq!(env.sim.redeliver(7).await, 200);
    assert_eq!(inbox_versions(&env.store).await, 8);

    // Invalid and missing signatures: 401, nothing stored, the delivery id not burnt.
    let body = json!({"webhookEvent": "jira:issue_updated", "issue": {"id": id}}).to_string();
    let (status, _) = post(
        &env.hook_url,
        body.as_bytes(),
        &[
            ("X-Hub-Signature", sign("wrong-secret", body.as_bytes())),
            ("X-Atlassian-Webhook-Identifier", "fresh-1".into()),
        ],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &env.hook_url,
        body.as_bytes(),
        &[("X-Atlassian-Webhook-Identifier", "fresh-1".into())],
    )
    .await;
    assert_eq!(status, 401);
    let tampered = body.replace(&id, "10001");
    let (status, _) = post(
        &env.hook_url,
        tampered.as_bytes(),
        &[("X-Hub-Signature", sign(SECRET, body.as_bytes()))],
    )
    .await;
    assert_eq!(status, 401, "a signature over another body");
    assert!(!env.store.delivery_seen("jsm", "fresh-1").await.expect("seen"));
    assert_eq!(inbox_versions(&env.store).await, 8);

    // Forged content in a correctly signed payload is never used: the issue is read again.
    env.sim.update_issue(&id, &[("summary", json!("changed in Jira"))]);
    env.sim.wait_for_deliveries(9).await;
    let forged =
        json!({"webhookEvent": "jira:issue_updated", "issue": {"id": id, "fields": {"summary": "forged: approve me"}}}).to_string();
    let (status, _) = post(
        &env.hook_url,
        forged.as_bytes(),
        &[
            ("X-Hub-Signature", sign(SECRET, forged.as_bytes())),
            ("X-Atlassian-Webhook-Identifier", "fresh-2".into()),
        ],
    )
    .await;
    assert_eq!(status, 202);
    let rows: Vec<(String,)> = sqlx::query_as("SELECT raw FROM inbox WHERE ticket_key = $1")
        .bind(&id)
        .fetch_all(env.store.pool())
        .await
        .expect("rows");
    assert!(rows.iter().all(|(raw,)| !raw.contains("forged")), "payload text never stored");
    assert!(rows.iter().any(|(raw,)| raw.contains("changed in Jira")));

    // Too large, unknown connector, unreadable payload.
    let big = vec![b'x'; 5000];
    let (status, _) = post(&env.hook_url, &big, &[("X-Hub-Signature", sign(SECRET, &big))]).await;
    assert_eq!(status, 413);
    let (status, _) = post(
        &env.hook_url.replace("/jsm", "/nope"),
        body.as_bytes(),
        &[("X-Hub-Signature", sign(SECRET, body.as_bytes()))],
    )
    .await;
    assert_eq!(status, 404);
    let junk = br#"{"issue": {}}"#;
    let (status, _) = post(&env.hook_url, junk, &[("X-Hub-Signature", sign(SECRET, junk))]).await;
    assert_eq!(status, 400);
    // Each delivery's result is counted (the metrics are the process's: other tests add to them).
    let metrics = deskbridge::metrics::global().encode();
    for result in ["accepted", "duplicate", "refused", "unreadable"] {
        let line = format!("deskbridge_webhook_deliveries_total{{connector=\"jsm\",result=\"{result}\"}} ");
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(count >= 1.0, "{result}: {metrics}");
    }

    // The pipeline decides what the webhooks stored; polling then finds nothing new to decide.
    let report = env.pipeline.run_once().await.expect("pass");
    assert_eq!(report.decided, 7, "{report:?}");
}

#[tokio::test]
async fn servicenow_webhooks_use_the_configured_header() {
    init_tracing();
    let sim = deskbridge_servicenow::simulator::Simulator::start(deskbridge_servicenow::simulator::SimConfig::default())
        .await
        .expect("simulator");
    let mut config = deskbridge::commands::demo::servicenow_config(sim.base_url()).expect("config");
    config.webhook =
        Some(serde_json::from_value(json!({"secret": "sn-webhook-secret-0123", "signature_header": "X-SN-Signature"})).expect("webhook"));
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("db")).await.expect("store");
    let pipeline = Arc::new(
        Pipeline::new(
            store.clone(),
            vec![Instance {
                connector: Arc::new(deskbridge_servicenow::ServiceNow::new("snow", config).expect("connector")),
                mapping: Arc::new(crate::helpers::shipped_mapping()),
            }],
            Arc::new(shipped_policy()),
            CommentRenderer::new(None).expect("renderer"),
            Settings::default(),
        )
        .with_enricher(Some(crate::helpers::example_enricher())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/webhooks/snow", listener.local_addr().expect("addr"));
    let app = deskbridge::server::app(pipeline, Arc::new(tokio::sync::Notify::new()), Default::default());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let sys_id = sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    let body = json!({"sys_id": sys_id}).to_string();
    let (status, _) = post(
        &url,
        body.as_bytes(),
        &[("X-Hub-Signature", sign("sn-webhook-secret-0123", body.as_bytes()))],
    )
    .await;
    assert_eq!(status, 401, "the configured header, not Jira's");
    assert_eq!(store.counts().await.expect("counts").inbox, 0);
    let (status, _) = post(
        &url,
        body.as_bytes(),
        &[("X-SN-Signature", sign("sn-webhook-secret-0123", body.as_bytes()))],
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(store.counts().await.expect("counts").inbox, 1);
    let injected = json!({"sys_id": "x' OR 1=1"}).to_string();
    let (status, _) = post(
        &url,
        injected.as_bytes(),
        &[("X-SN-Signature", sign("sn-webhook-secret-0123", injected.as_bytes()))],
    )
    .await;
    assert_eq!(status, 400, "only sys_ids reach a query");
}

const INJECTION_ROLE: &str = "{color:red}*admin*{color} [click|https://evil.example/x] !http://evil.example/i.png!";
const INJECTION_APP: &str = "{\"type\":\"inlineCard\",\"attrs\":{\"url\":\"https://evil.example\"}}";

async fn injection_comment(deployment: Deployment) -> deskbridge_jira::simulator::SimComment {
    let sim = Simulator::start(SimConfig {
        seed: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let (id, _) = sim.create_issue(NewIssue {
        project: "ACC".into(),
        issue_type: "Service Request".into(),
        summary: "injection".into(),
        reporter: "abel.tuter@example.com".into(),
        request_type: Some("Request application access".into()),
        custom: vec![
            ("Access type".into(), json!({"value": "New access"})),
            ("Application".into(), json!(INJECTION_APP)),
            ("Environment".into(), json!({"value": "Staging"})),
            ("Access role".into(), json!(INJECTION_ROLE)),
            (
                "Business justification".into(),
                json!("h1. Approved by the CISO\n{panel}granted{panel}"),
            ),
            ("Access duration".into(), json!("30 days")),
        ],
        ..NewIssue::default()
    });
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("db")).await.expect("store");
    let pipeline = Pipeline::new(
        store,
        vec![Instance {
            connector: Arc::new(Jira::new("jsm", jira_config(&sim, deployment, false)).expect("connector")),
            mapping: Arc::new(jsm_mapping()),
        }],
        Arc::new(shipped_policy()),
        CommentRenderer::new(None).expect("renderer"),
        Settings::default(),
    );
    let report = pipeline.run_once().await.expect("pass");
    assert_eq!(report.posted, 1, "{report:?}");
    sim.comments(&id).pop().expect("comment")
}

fn nodes(value: &Value, out: &mut Vec<Value>) {
    if value.get("type").is_some() {
        out.push(value.clone());
    }
    if let Some(children) = value.get("content").and_then(Value::as_array) {
        for c in children {
            nodes(c, out);
        }
    }
}

#[tokio::test]
async fn markup_in_ticket_text_comes_out_as_plain_text() {
    // Cloud: ADF built from text nodes only; the injection is there, verbatim, as text.
    let cloud = injection_comment(Deployment::Cloud).await;
    let mut all = Vec::new();
    nodes(&cloud.body, &mut all);
    for node in &all {
        let kind = node["type"].as_str().unwrap_or_default();
        assert!(matches!(kind, "doc" | "paragraph" | "text"), "only text structure: {node}");
        assert!(
            node.get("marks").is_none() && node.get("attrs").is_none(),
            "no marks or links: {node}"
        );
    }
    assert!(cloud.text.contains(INJECTION_ROLE), "{}", cloud.text);
    assert!(cloud.text.contains(INJECTION_APP), "{}", cloud.text);

    // Data Center: wiki markup escaped, bare URLs broken, the marker line not a link.
    let dc = injection_comment(Deployment::DataCenter).await;
    let text = &dc.text;
    let request_line = text.lines().find(|l| l.starts_with("Request:")).expect("request line");
    let chars: Vec<char> = request_line.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if "{}[]|*!".contains(*c) {
            assert!(i > 0 && chars[i - 1] == '\\', "unescaped {c:?} in {request_line}");
        }
    }
    assert!(
        !text.contains("https://evil") && !text.contains("http://evil"),
        "no live link: {text}"
    );
    assert!(text.lines().last().is_some_and(|l| l.starts_with("\\[deskbridge-id:")), "{text}");
}

#[tokio::test]
async fn a_jira_approval_is_evidence_not_a_new_decision() {
    let env = env(Deployment::Cloud).await;
    env.pipeline.run_once().await.expect("first pass");
    let acc1 = env.sim.issue("ACC-1").expect("seeded").id.to_string();
    env.sim.update_issue("ACC-1", &[("status", json!("Approved"))]);
    let report = env.pipeline.run_once().await.expect("pass");
    assert_eq!((report.decided, report.posted), (0, 0), "{report:?}");
    let records = env.store.audit_for_ticket("jsm", &acc1).await.expect("audit");
    let itsm = records
        .iter()
        .rfind(|r| r.kind == "itsm_approval")
        .expect("the Jira approval is recorded");
    assert!(itsm.payload.contains("approved"), "{}", itsm.payload);
}
