//! Operators and admins: metrics, health and readiness, logs, the admin API and its tokens,
//! the mapping preview, the web console in a real browser, `config check` and the simulators
//! answering admins' own clients.

mod api;
mod browser;
mod serve;
mod sims;

use std::sync::Arc;

use deskbridge::config::{ApiToken, Role};

use crate::helpers::TestApp;

/// Every request in `requests` that could change something (`METHOD path`).
pub fn writes(requests: &[deskbridge_connector::simkit::RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// A viewer and an operator token with their config entries.
pub struct Tokens {
    pub viewer: String,
    pub operator: String,
    pub entries: Vec<ApiToken>,
    /// The same entries as config text.
    pub toml: String,
}

pub fn tokens() -> Tokens {
    let (viewer, v_entry) = deskbridge::server::auth::new_token("vera", Role::Viewer);
    let (operator, o_entry) = deskbridge::server::auth::new_token("otto", Role::Operator);
    let parse = |entry: &str| -> ApiToken {
        let table: toml::Table = toml::from_str(entry).expect("entry");
        let t = &table["server"]["tokens"][0];
        ApiToken {
            name: t["name"].as_str().expect("name").into(),
            role: if t["role"].as_str() == Some("operator") {
                Role::Operator
            } else {
                Role::Viewer
            },
            sha256: t["sha256"].as_str().expect("sha256").into(),
        }
    };
    Tokens {
        entries: vec![parse(&v_entry), parse(&o_entry)],
        toml: format!("{v_entry}\n{o_entry}"),
        viewer,
        operator,
    }
}

/// The HTTP side of `serve` in-process over a seeded simulator, after one pass.
pub struct Console {
    pub app: TestApp,
    pub url: String,
    pub tokens: Tokens,
    _server: tokio::task::JoinHandle<()>,
}

impl Console {
    pub async fn start() -> Self {
        Self::over(TestApp::spawn().await).await
    }

    pub async fn over(app: TestApp) -> Self {
        let pipeline = app.pipeline();
        Self::with(app, pipeline).await
    }

    /// Over `app` with its `pipeline`, after one pass.
    pub async fn with(app: TestApp, pipeline: deskbridge::pipeline::Pipeline) -> Self {
        let pipeline = Arc::new(pipeline);
        pipeline.run_once().await.expect("first pass");
        let tokens = tokens();
        let router = deskbridge::server::app(
            pipeline.clone(),
            Arc::new(tokio::sync::Notify::new()),
            deskbridge::server::Options {
                tokens: tokens.entries.clone(),
                ..Default::default()
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            app,
            url,
            tokens,
            _server: server,
        }
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}
