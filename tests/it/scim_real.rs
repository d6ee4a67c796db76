//! The SCIM directory client against a real SCIM 2.0 server implementation: `scim2-server`
//! (PyPI), in-memory Users and Groups with the Enterprise User extension, filters, ETags and
//! bearer authentication. `.ci/scim2-server` installs it; set `DESKBRIDGE_SCIM2_SERVER` to its
//! executable (default: `scim2-server` on the PATH). The test fails, never skips, without it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deskbridge::directory::scim::{ScimDirectory, ScimDirectoryConfig};
use deskbridge::directory::Directory;
use serde_json::{json, Value};

use crate::helpers::Killed;

const TOKEN: &str = "real-server-token";

async fn start() -> (Killed, String) {
    let exe = std::env::var("DESKBRIDGE_SCIM2_SERVER").unwrap_or_else(|_| "scim2-server".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(&exe)
        .args(["--hostname", "127.0.0.1", "--port", &port.to_string(), "--bearer-token", TOKEN])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("scim2-server is not installed ({exe}: {e}); run .ci/scim2-server or set DESKBRIDGE_SCIM2_SERVER"));
    let child = Killed(child);
    let base = format!("http://127.0.0.1:{port}/v2");
    let started = Instant::now();
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{base}/ServiceProviderConfig")).bearer_auth(TOKEN).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "scim2-server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, base)
}

async fn create(http: &reqwest::Client, base: &str, kind: &str, body: Value) -> Value {
    let r = http
        .post(format!("{base}/{kind}"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .expect("create");
    let status = r.status();
    let v: Value = r.json().await.expect("json");
    assert!(status.is_success(), "{kind}: {status} {v}");
    v
}

#[tokio::test]
async fn the_scim_client_reads_a_real_scim2_server() {
    let (_server, base) = start().await;
    let http = reqwest::Client::new();
    let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let boss = create(
        &http,
        &base,
        "Users",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "david.loo", "active": true}),
    )
    .await;
    let boss_id = boss["id"].as_str().expect("id");
    let beth = create(
        &http,
        &base,
        "Users",
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", enterprise],
            "userName": "beth.anglin", "active": true, "userType": "Employee",
            "emails": [{"value": "beth.anglin@example.com", "type": "work", "primary": true}],
            enterprise: {"department": "Finance", "employeeNumber": "40002", "manager": {"value": boss_id}},
        }),
    )
    .await;
    let beth_id = beth["id"].as_str().expect("id");
    create(
        &http,
        &base,
        "Users",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "o\"neil", "active": false}),
    )
    .await;
    create(
        &http,
        &base,
        "Groups",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "sap-fi-payment-release", "members": [{"value": beth_id}]}),
    )
    .await;
    let config: ScimDirectoryConfig = serde_json::from_value(json!({
        "base_url": base, "token": TOKEN, "cache_ttl_secs": 0,
        "http": {"timeout_secs": 5, "backoff_base_ms": 10, "backoff_max_ms": 50},
    }))
    .expect("config");
    let dir = ScimDirectory::new(config).expect("client");
    let keys: Vec<String> = ["beth.anglin@example.com", "o\"neil", "nobody"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let found = dir.lookup(&keys).await.expect("the real server answers");
    let b = found["beth.anglin@example.com"].clone().expect("found by e-mail");
    assert_eq!(b.user_name, "beth.anglin");
    assert!(b.active);
    assert_eq!(b.department.as_deref(), Some("Finance"));
    assert_eq!(b.manager.as_deref(), Some("david.loo"));
    assert_eq!(b.groups, vec!["sap-fi-payment-release"]);
    assert!(!found["o\"neil"].as_ref().expect("escaped filter finds it").active);
    assert!(found["nobody"].is_none());
    // Past the TTL the cached identity is revalidated by ETag, and a deactivation shows.
    let patched = http
        .patch(format!("{base}/Users/{beth_id}"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "active", "value": false}]}).to_string())
        .send()
        .await
        .expect("patch");
    assert!(patched.status().is_success(), "{}", patched.status());
    let again = dir.lookup(&keys[..1]).await.expect("answers");
    assert!(!again["beth.anglin@example.com"].as_ref().expect("beth").active);
    // A wrong token is an error, never "not found".
    let wrong: ScimDirectoryConfig = serde_json::from_value(json!({"base_url": base, "token": "wrong"})).expect("config");
    assert!(ScimDirectory::new(wrong).expect("client").lookup(&keys[..1]).await.is_err());
}
