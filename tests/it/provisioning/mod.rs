//! Provisioning evidence end to end: the ServiceNow simulator's tickets decided on the example
//! catalog and the SCIM directory, the SCIM simulator pushing signed SETs to deskbridge's real
//! HTTP endpoint, an IGA tool's signed webhook, reconciliation, the lifecycle timers, findings
//! and the two lifecycle comments.

mod findings;
mod lifecycle;
mod sets;

use std::sync::Arc;

use deskbridge::directory::scim::{ScimDirectory, ScimDirectoryConfig};
use deskbridge::pipeline::Pipeline;
use deskbridge::provisioning::{Provisioning, ProvisioningConfig};
use deskbridge::store::Store;
use deskbridge_scim::simulator::{Receiver, SimConfig, Simulator, TOKEN};
use serde_json::{json, Value};

use crate::helpers::{enricher_with, shipped_policy, TestApp};

pub const AUDIENCE: &str = "https://deskbridge.test/events/scim";
pub const IGA_SECRET: &str = "iga-webhook-secret-0123456789";

/// The ServiceNow app, the SCIM simulator pushing to deskbridge, and deskbridge serving.
pub struct ProvApp {
    pub app: TestApp,
    pub scim: Simulator,
    pub pipeline: Arc<Pipeline>,
    pub base: String,
    pub http: reqwest::Client,
    /// A viewer and an operator token the admin API takes.
    pub tokens: crate::operators::Tokens,
    _server: tokio::task::JoinHandle<()>,
}

pub fn directory_config(scim: &Simulator) -> ScimDirectoryConfig {
    serde_json::from_value(json!({
        "base_url": scim.base_url(),
        "token": TOKEN,
        "cache_ttl_secs": 0,
        "http": {"timeout_secs": 2, "backoff_base_ms": 10, "backoff_max_ms": 50, "max_attempts": 2},
    }))
    .expect("directory config")
}

/// `[provisioning]` for these tests: the SCIM simulator's SETs (its JWKS URL), an IGA webhook,
/// no grace after expiry, and `extra` on top.
pub fn provisioning_config(scim: &Simulator, extra: Value) -> ProvisioningConfig {
    let mut config = json!({
        "grace_hours": 0,
        "sources": [
            {"kind": "set", "id": "scim", "issuer": scim.issuer(), "audience": AUDIENCE, "jwks_url": scim.jwks_url(), "max_age_secs": 600},
            {"kind": "webhook", "id": "iga", "secret": IGA_SECRET},
        ],
    });
    if let (Some(base), Some(more)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(config).expect("provisioning config")
}

impl ProvApp {
    pub async fn start(extra: Value) -> Self {
        let app = TestApp::spawn().await;
        let scim = Simulator::start(SimConfig::default()).await.expect("SCIM simulator");
        Self::on(app, scim, extra).await
    }

    pub async fn on(app: TestApp, scim: Simulator, extra: Value) -> Self {
        let store = app.store.clone();
        let pipeline = Arc::new(Self::pipeline_on(&app, &scim, store, extra));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tokens = crate::operators::tokens();
        let options = deskbridge::server::Options {
            tokens: tokens.entries.clone(),
            ..Default::default()
        };
        let router = deskbridge::server::app(pipeline.clone(), Arc::new(tokio::sync::Notify::new()), options);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let base = format!("http://{addr}");
        scim.set_receiver(Some(Receiver {
            url: format!("{base}/events/scim"),
            audience: AUDIENCE.into(),
            token: None,
        }));
        Self {
            app,
            scim,
            pipeline,
            base,
            http: reqwest::Client::new(),
            tokens,
            _server: server,
        }
    }

    /// A pipeline on `store` with the example catalog, the SCIM directory and provisioning.
    pub fn pipeline_on(app: &TestApp, scim: &Simulator, store: Store, extra: Value) -> Pipeline {
        let directory = Arc::new(ScimDirectory::new(directory_config(scim)).expect("directory"));
        let provisioning = Provisioning::build(
            &provisioning_config(scim, extra),
            Some(&deskbridge::directory::DirectoryConfig::Scim(directory_config(scim))),
        )
        .expect("provisioning");
        Pipeline::new(
            store,
            vec![deskbridge::pipeline::Instance {
                connector: app.connector(),
                mapping: Arc::new(crate::helpers::shipped_mapping()),
            }],
            Arc::new(shipped_policy()),
            deskbridge::render::CommentRenderer::new(None).expect("template"),
            deskbridge::pipeline::Settings {
                post_retry_base: std::time::Duration::ZERO,
                post_retry_max: std::time::Duration::ZERO,
                ..Default::default()
            },
        )
        .with_enricher(Some(enricher_with(directory)))
        .with_provisioning(Some(Arc::new(provisioning)))
    }

    /// One pass after every SET queued so far was pushed.
    pub async fn pass(&self) -> deskbridge::pipeline::Report {
        self.scim.flush_events().await;
        self.pipeline.run_once().await.expect("pass")
    }

    /// Posts a signed IGA webhook body.
    pub async fn iga(&self, body: &Value) -> (u16, Value) {
        let text = body.to_string();
        let response = self
            .http
            .post(format!("{}/events/iga", self.base))
            .header(
                "X-Deskbridge-Signature",
                deskbridge_connector::webhook::sign(IGA_SECRET, text.as_bytes()),
            )
            .header("content-type", "application/json")
            .body(text)
            .send()
            .await
            .expect("webhook");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts a SET (or anything) to the SCIM source.
    pub async fn post_set(&self, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/events/scim", self.base))
            .header("content-type", "application/secevent+jwt")
            .body(body.to_owned())
            .send()
            .await
            .expect("push");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every comment on a ticket.
    pub fn comments(&self, number: &str) -> Vec<String> {
        self.app.journal_of(number).into_iter().map(|e| e.value).collect()
    }

    /// The comments on a ticket whose first line starts with `prefix`.
    pub fn comments_starting(&self, number: &str, prefix: &str) -> Vec<String> {
        self.comments(number).into_iter().filter(|c| c.starts_with(prefix)).collect()
    }

    /// Every stored lifecycle.
    pub async fn lifecycles(&self) -> Vec<deskbridge::store::lifecycle::LifecycleRow> {
        self.app.store.lifecycles().await.expect("lifecycles")
    }

    /// The lifecycle of the latest decision on `number`.
    pub async fn lifecycle(&self, number: &str) -> deskbridge::store::lifecycle::LifecycleRow {
        self.lifecycles()
            .await
            .into_iter()
            .find(|r| r.number == number)
            .unwrap_or_else(|| panic!("no lifecycle for {number}"))
    }

    /// Open provisioning findings as `(kind, ticket, detail)`.
    pub async fn findings(&self) -> Vec<(String, String, String)> {
        self.app
            .store
            .open_access_findings()
            .await
            .expect("findings")
            .into_iter()
            .map(|f| (f.kind, f.number, f.detail))
            .collect()
    }

    /// Rows of a table, to show nothing was stored.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.app.store.pool())
            .await
            .expect("count")
    }
}

/// Moves a lifecycle's expiry into the past, as if its days had gone by.
pub async fn expire_now(store: &Store, decision_id: &str) {
    let past = deskbridge::store::stamp(chrono::Utc::now() - chrono::Duration::minutes(1));
    sqlx::query("UPDATE access_lifecycle SET expires_at = $1 WHERE decision_id = $2")
        .bind(&past)
        .bind(decision_id)
        .execute(store.pool())
        .await
        .expect("backdate");
}
