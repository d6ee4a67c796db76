//! Replicas never undo each other's OAuth state: with Atlassian's rotating refresh tokens, two
//! replicas that each kept their own state file would rotate each other's token away. With the
//! chain in the shared store, any number of replicas take turns on one chain.

use std::sync::Arc;
use std::time::Duration;

use deskbridge::store::Store;
use deskbridge_connector::auth::{AuthConfig, TokenVault};
use deskbridge_connector::{Connector, Cursor};
use deskbridge_jira::simulator::{SimConfig, Simulator, OAUTH_CLIENT};
use deskbridge_jira::{Deployment, Jira};

use crate::jira::jira_config;

fn replica(sim: &Simulator, consent: &str, state_file: std::path::PathBuf) -> Jira {
    let mut config = jira_config(sim, Deployment::Cloud, false);
    config.auth = AuthConfig::OauthRefresh {
        token_url: format!("{}/oauth/token", sim.base_url()),
        client_id: OAUTH_CLIENT.0.into(),
        client_secret: OAUTH_CLIENT.1.to_string().into(),
        refresh_token: consent.to_string().into(),
        state_file,
    };
    Jira::new("jsm", config).expect("connector")
}

/// Two replicas polling at once, each access token living 2 s (so nearly every call rotates).
async fn two_replicas_share_one_chain(a: Store, b: Store) {
    let sim = Simulator::start(SimConfig {
        token_ttl: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let consent = sim.consent();
    let dir = tempfile::tempdir().expect("dir");
    let mut replicas = Vec::new();
    for (n, store) in [a, b].into_iter().enumerate() {
        let jira = Arc::new(replica(&sim, &consent, dir.path().join(format!("replica-{n}.json"))));
        let vault: Arc<dyn TokenVault> = Arc::new(store.token_vault());
        assert!(jira.auth().expect("auth").share_tokens(vault, "oauth:jsm"));
        replicas.push(jira);
    }
    let mut tasks = Vec::new();
    for jira in replicas {
        tasks.push(tokio::spawn(async move {
            for _ in 0..8 {
                jira.poll(&Cursor::start()).await.expect("every poll authenticates");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("replica");
    }
    let grants = sim.grants();
    assert!(grants.len() >= 2, "the chain rotated: {grants:?}");
    assert!(
        grants.iter().all(|g| g == "refresh_token:ok"),
        "no refresh token was reused: {grants:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_share_one_refresh_token_chain() {
    let url = deskbridge::store::testing::fresh_postgres_schema().await;
    let a = Store::connect_postgres(&url).await.expect("a");
    let b = Store::connect_postgres(&url).await.expect("b");
    two_replicas_share_one_chain(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_handles_share_one_refresh_token_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("d.db");
    let a = Store::open(&path).await.expect("a");
    let b = Store::open(&path).await.expect("b");
    two_replicas_share_one_chain(a, b).await;
}
