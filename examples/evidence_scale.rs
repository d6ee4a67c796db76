//! What provisioning evidence costs, beside what it depends on: prints figures, asserts nothing.
//!
//!     cargo run --release --example evidence_scale -- [CHANGES]
//!
//! Starts the SCIM simulator with CHANGES users (default 2,000) and deskbridge's HTTP side on
//! loopback with a SET source, then times, side by side in one run:
//!
//! - `sign`: the simulator signing CHANGES SETs (EdDSA), the transmitter's own cost;
//! - `intake`: POSTing them to `/events/scim` (8 at a time): verify, dedupe, store, audit;
//! - `process`: one provisioning pass matching every change (each resolves a user and a group
//!   id through the SCIM directory, records the membership and a finding);
//! - `directory`: the same reads straight from the SCIM simulator (the user, and the group's
//!   name without its members), the ceiling `process` works under (deskbridge names each group
//!   once per pass, so it reads less than this);
//! - peak RSS of the process (deskbridge and the simulator share it).

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::Instant;

use deskbridge::directory::scim::ScimDirectory;
use deskbridge::pipeline::{Pipeline, Settings};
use deskbridge::provisioning::{Provisioning, ProvisioningConfig};
use deskbridge::store::Store;
use deskbridge_scim::simulator::{SimConfig, Simulator, TOKEN};
use serde_json::json;

fn rate(n: usize, secs: f64) -> String {
    format!("{:>9.0}/s  ({secs:.3} s for {n})", n as f64 / secs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let scim = Simulator::start(SimConfig::default()).await?;
    let users: Vec<String> = (0..n).map(|i| scim.add_user(&format!("user{i:06}"), true, &[])).collect();
    let group = scim
        .group("jira-developers")
        .and_then(|g| g["id"].as_str().map(String::from))
        .unwrap_or_default();
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("deskbridge.db")).await?;
    let directory_config = json!({"base_url": scim.base_url(), "token": TOKEN, "cache_ttl_secs": 0});
    let audience = "https://deskbridge.bench/events/scim";
    let config: ProvisioningConfig = serde_json::from_value(json!({
        "comments": false,
        "sources": [{"kind": "set", "id": "scim", "issuer": scim.issuer(), "audience": audience, "jwks": scim.jwks().to_string()}],
    }))?;
    let directory = deskbridge::directory::DirectoryConfig::Scim(serde_json::from_value(directory_config.clone())?);
    let provisioning = Arc::new(Provisioning::build(&config, Some(&directory))?);
    let enricher = Arc::new(deskbridge::pipeline::enrich::Enricher {
        catalog: Arc::new(deskbridge::pipeline::enrich::CatalogHandle::load(std::path::Path::new(
            "examples/catalog.toml",
        ))?),
        directory: None,
    });
    let (_, policy) = deskbridge::commands::demo::shipped()?;
    let pipeline = Arc::new(
        Pipeline::new(
            store.clone(),
            Vec::new(),
            Arc::new(policy),
            deskbridge::render::CommentRenderer::new(None)?,
            Settings::default(),
        )
        .with_enricher(Some(enricher))
        .with_provisioning(Some(provisioning.clone())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events/scim", listener.local_addr()?);
    let app = deskbridge::server::app(pipeline.clone(), Arc::new(tokio::sync::Notify::new()), Default::default());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let started = Instant::now();
    let sets: Vec<String> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            scim.sign_set(&json!({
                "iss": scim.issuer(), "iat": chrono::Utc::now().timestamp(), "jti": format!("bench-{i}"), "aud": [audience],
                "sub_id": {"format": "scim", "uri": format!("/Groups/{group}")},
                "events": {"urn:ietf:params:scim:event:prov:patch:full": {"data": {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": user}]}]}}},
            }))
        })
        .collect();
    let sign = started.elapsed().as_secs_f64();

    let client = reqwest::Client::new();
    let started = Instant::now();
    let sets = Arc::new(sets);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (client, sets, next, url) = (client.clone(), sets.clone(), next.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut refused = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(set) = sets.get(i) else { return refused };
                let status = client
                    .post(&url)
                    .header("content-type", "application/secevent+jwt")
                    .body(set.clone())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                refused += usize::from(status != 202);
            }
        }));
    }
    let mut refused = 0;
    for w in workers {
        refused += w.await?;
    }
    let intake = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let report = deskbridge::provisioning::engine::run(pipeline.as_ref(), &provisioning).await?;
    let process = started.elapsed().as_secs_f64();

    let reader = ScimDirectory::new(serde_json::from_value(directory_config)?)?;
    let started = Instant::now();
    for user in &users {
        reader.user_by_id(user).await.map_err(anyhow::Error::msg)?;
        reader.group_name_by_id(&group).await.map_err(anyhow::Error::msg)?;
    }
    let ceiling = started.elapsed().as_secs_f64();

    println!("evidence_scale: {n} membership changes, SQLite, SCIM simulator and deskbridge in one process");
    println!("  sign       {}   the simulator signing SETs (EdDSA)", rate(n, sign));
    println!(
        "  intake     {}   POST /events/scim, 8 at a time: verify, dedupe, store, audit ({refused} refused)",
        rate(n, intake)
    );
    println!(
        "  process    {}   one pass: resolve ids, match, membership, finding ({} processed, {} findings)",
        rate(n, process),
        report.processed,
        report.findings
    );
    println!(
        "  directory  {}   the same user + group reads alone (2 GETs per change), the ceiling of process",
        rate(n, ceiling)
    );
    println!("  peak RSS   {:.1} MiB", common::peak_rss_mib("self"));
    Ok(())
}
