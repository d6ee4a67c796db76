//! The ServiceNow client held to the connector contract against its simulator, over real HTTP.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use deskbridge_connector::auth::AuthConfig;
use deskbridge_connector::http::HttpSettings;
use deskbridge_connector::testkit::LostAnswer;
use deskbridge_connector::{Comment, Connector, ConnectorError, Cursor};
use deskbridge_servicenow::simulator::{Fault, Record, SimConfig, Simulator, Target, INTEGRATION_PASSWORD, INTEGRATION_USER, OAUTH_CLIENT};
use deskbridge_servicenow::{ServiceNow, ServiceNowConfig};

fn basic(user: &str, password: &str) -> AuthConfig {
    AuthConfig::Basic {
        username: user.into(),
        password: password.to_string().into(),
    }
}

fn config(sim: &Simulator, auth: AuthConfig, page_size: u32) -> ServiceNowConfig {
    let mut config: ServiceNowConfig = serde_json::from_value(serde_json::json!({
        "base_url": sim.base_url(),
        "page_size": page_size,
        "lag_secs": 0,
        "auth": {"type": "basic", "username": "replaced", "password": "replaced"},
    }))
    .expect("test config");
    config.auth = auth;
    config.http = HttpSettings {
        timeout_secs: 2,
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        ..HttpSettings::default()
    };
    config
}

async fn drain(connector: &ServiceNow, mut cursor: Cursor) -> (Vec<(String, String)>, Cursor) {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let page = connector.poll(&cursor).await.expect("poll");
        seen.extend(page.tickets.iter().map(|t| (t.number.clone(), t.version.clone())));
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    (seen, cursor)
}

/// The shared connector contract, against the simulator.
struct Harness {
    sim: Simulator,
}

#[async_trait::async_trait]
impl deskbridge_connector::testkit::Harness for Harness {
    async fn connector(&self, page_size: u32) -> std::sync::Arc<dyn Connector> {
        std::sync::Arc::new(
            ServiceNow::new("snow", config(&self.sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), page_size)).expect("connector"),
        )
    }

    async fn create(&self, title: &str, updated: chrono::DateTime<chrono::Utc>) -> String {
        let stamp = updated.format("%Y-%m-%d %H:%M:%S").to_string();
        let mut record = ritm(&format!("RITM9{:06}", rand_number()), &stamp);
        record.insert("short_description".into(), title.into());
        self.sim.insert("sc_req_item", record)
    }

    async fn touch(&self, key: &str) {
        assert!(self.sim.update("sc_req_item", key, &[("short_description", "touched")]));
    }

    async fn comments(&self, key: &str) -> Vec<String> {
        self.sim.journal(key).into_iter().map(|e| e.value).collect()
    }

    async fn comment_as_someone_else(&self, key: &str, text: &str) {
        self.sim.add_journal("sc_req_item", key, "work_notes", text, "beth.anglin");
    }

    async fn lose_next_comment_answer(&self, how: LostAnswer) {
        let fault = match how {
            LostAnswer::Status(code) => Fault::AppliedThenStatus(code),
            LostAnswer::Dropped => Fault::AppliedThenDrop,
            LostAnswer::Timeout => Fault::AppliedThenStall(Duration::from_secs(3)),
        };
        // The journal append is a PATCH of the record.
        self.sim.inject_on(Target::route("PATCH", "/api/now/table/sc_req_item/"), fault, 1);
    }
}

fn rand_number() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

#[tokio::test]
async fn servicenow_passes_the_connector_contract() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    deskbridge_connector::testkit::run_contract(&Harness { sim }).await;
}

fn ritm(number: &str, updated: &str) -> Record {
    [
        ("number", number),
        ("sys_updated_on", updated),
        ("short_description", "boundary"),
        ("sys_mod_count", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test]
async fn paging_across_a_shared_second_misses_and_repeats_nothing() {
    let sim = Simulator::start(SimConfig {
        seed: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let t = "2026-01-05 10:00:00";
    for n in ["RITM1", "RITM2", "RITM3"] {
        sim.insert("sc_req_item", ritm(n, t));
    }
    sim.insert("sc_req_item", ritm("RITM0", "2026-01-05 09:59:59"));
    sim.insert("sc_req_item", ritm("RITM4", "2026-01-05 10:00:01"));
    let connector = ServiceNow::new("snow", config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 2)).expect("connector");
    let (seen, cursor) = drain(&connector, Cursor::start()).await;
    let numbers: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(numbers.len(), 5, "{numbers:?}");
    assert_eq!(numbers.iter().collect::<BTreeSet<_>>().len(), 5, "no repeats: {numbers:?}");
    assert_eq!(numbers[0], "RITM0");
    assert_eq!(numbers[4], "RITM4");

    // A late row in the same second as the cursor, with a sys_id after it, is still found;
    // a re-poll from the saved cursor repeats nothing.
    let (again, _) = drain(&connector, cursor.clone()).await;
    assert!(again.is_empty(), "nothing new: {again:?}");
    let mut late = ritm("RITM5", "2026-01-05 10:00:01");
    late.insert("sys_id".into(), "ffffffffffffffffffffffffffffffff".into());
    sim.insert("sc_req_item", late);
    let (late_seen, _) = drain(&connector, cursor).await;
    assert_eq!(late_seen.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["RITM5"]);
}

#[tokio::test]
async fn poll_sends_the_documented_table_api_request_and_batches_variables() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let connector = ServiceNow::new("snow", config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100)).expect("connector");
    let page = connector.poll(&Cursor::start()).await.expect("poll");
    assert_eq!(page.tickets.len(), 7);
    let requests = sim.requests();
    let list = requests.iter().find(|r| r.path == "/api/now/table/sc_req_item").expect("list call");
    assert_eq!(list.method, "GET");
    assert_eq!(list.auth_scheme, "Basic");
    assert!(list
        .param("sysparm_query")
        .expect("query")
        .ends_with("^ORDERBYsys_updated_on^ORDERBYsys_id"));
    assert_eq!(list.param("sysparm_display_value"), Some("false"));
    assert_eq!(list.param("sysparm_exclude_reference_link"), Some("true"));
    assert!(list
        .param("sysparm_fields")
        .expect("fields")
        .contains("request.requested_for.user_name"));
    let variable_calls = requests.iter().filter(|r| r.path == "/api/now/table/sc_item_option_mtom").count();
    assert_eq!(variable_calls, 1, "one batched variables query per page, not one per ticket");
    let first = page.tickets.iter().find(|t| t.number == "RITM0010001").expect("seeded");
    assert_eq!(first.raw["variables"]["application"], "jira-software");
    assert_eq!(first.raw["request.requested_for.user_name"], "abel.tuter");
    assert_eq!(first.raw["approvals"][0]["approver"], "david.loo");
    assert!(first.url.starts_with(sim.base_url()) && first.url.contains("nav_to.do"));
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_then_succeeds() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let connector = ServiceNow::new("snow", config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100)).expect("connector");
    sim.inject(Fault::throttle(1), 1, Some("sc_req_item"));
    let started = Instant::now();
    let page = connector.poll(&Cursor::start()).await.expect("poll succeeds after the 429");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited for Retry-After");
    assert_eq!(page.tickets.len(), 7);
}

#[tokio::test]
async fn a_long_retry_after_is_returned_rather_than_slept() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let mut cfg = config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100);
    cfg.http.max_inline_retry_after_secs = 5;
    let connector = ServiceNow::new("snow", cfg).expect("connector");
    sim.inject(Fault::throttle(3600), 1, None);
    match connector.poll(&Cursor::start()).await {
        Err(ConnectorError::RateLimited { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(3600)),
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried_and_finally_transient() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let connector = ServiceNow::new("snow", config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100)).expect("connector");
    sim.inject(Fault::Status(500), 2, Some("sc_req_item"));
    assert_eq!(
        connector.poll(&Cursor::start()).await.expect("retried past two 500s").tickets.len(),
        7
    );

    sim.inject(Fault::Delay(Duration::from_secs(3)), 10, Some("sc_req_item"));
    let mut cfg = config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100);
    cfg.http.timeout_secs = 1;
    cfg.http.max_attempts = 2;
    let slow = ServiceNow::new("snow", cfg).expect("connector");
    let err = slow.poll(&Cursor::start()).await.expect_err("times out");
    assert!(matches!(err, ConnectorError::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn a_401_is_fatal_and_names_the_connector_without_the_password() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let connector = ServiceNow::new("snow-prod", config(&sim, basic(INTEGRATION_USER, "wrong-secret-123"), 100)).expect("connector");
    let err = connector.poll(&Cursor::start()).await.expect_err("refused");
    assert!(matches!(err, ConnectorError::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("snow-prod") && text.contains("401"), "{text}");
    assert!(!text.contains("wrong-secret-123"));
    assert_eq!(sim.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn a_403_on_write_is_fatal() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let connector = ServiceNow::new("snow", config(&sim, basic("readonly.user", "readonly"), 100)).expect("connector");
    let key = sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    let err = connector
        .post_comment(
            &key,
            &Comment {
                marker: "deskbridge-id:x".into(),
                body: "x deskbridge-id:x".into(),
            },
        )
        .await
        .expect_err("ACL");
    assert!(
        matches!(err, ConnectorError::Unauthorized { .. }) && err.to_string().contains("403"),
        "{err}"
    );
}

#[tokio::test]
async fn the_marker_prevents_a_second_post() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let connector = ServiceNow::new("snow", config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100)).expect("connector");
    let key = sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    let comment = Comment {
        marker: "deskbridge-id:0123abcd".into(),
        body: "Decision: approve\n[deskbridge-id:0123abcd]".into(),
    };
    assert_eq!(connector.find_comment(&key, &comment.marker).await.expect("find"), None);
    let id = connector.post_comment(&key, &comment).await.expect("post");
    assert_eq!(
        connector.find_comment(&key, &comment.marker).await.expect("find").map(|f| f.id),
        Some(id.clone())
    );
    let journal = sim.journal(&key);
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].element, "work_notes");
    assert_eq!(journal[0].sys_id, id.0);
    assert_eq!(
        sim.record("sc_req_item", &key).expect("record")["sys_mod_count"],
        "3",
        "a journal write updates the record"
    );

    // The same marker typed by someone else does not count as our post.
    let other = sim.sys_id_of("sc_req_item", "RITM0010002").expect("seeded");
    sim.add_journal("sc_req_item", &other, "work_notes", "[deskbridge-id:0123abcd]", "beth.anglin");
    assert_eq!(connector.find_comment(&other, &comment.marker).await.expect("find"), None);
}

/// Comments posted in a batch are read back together: one journal read per hundred tickets,
/// not one per comment, and each comment gets its own journal entry's id even beside an
/// earlier deskbridge comment and a requester's copy of its marker on the same ticket. A
/// read-back that fails leaves each comment the stable reference, as `post_comment` does.
#[tokio::test]
async fn a_batch_of_posts_reads_its_ids_back_together() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let connector = ServiceNow::new("snow", config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100)).expect("connector");
    let keys: Vec<String> = sim.numbers("sc_req_item").into_iter().map(|(_, key)| key).take(3).collect();
    assert_eq!(keys.len(), 3, "seeded");
    let earlier = Comment {
        marker: "deskbridge-id:earlier".into(),
        body: "Decision: deny\n[deskbridge-id:earlier]".into(),
    };
    let earlier_id = connector.post_comment(&keys[0], &earlier).await.expect("post");
    sim.add_journal("sc_req_item", &keys[1], "work_notes", "[deskbridge-id:batch1]", "beth.anglin");
    let before = sim.requests().len();
    let mut asked = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let marker = format!("deskbridge-id:batch{i}");
        let comment = Comment {
            body: format!("Decision: approve\n[{marker}]"),
            marker: marker.clone(),
        };
        assert_eq!(
            connector.post_comment_in_batch(key, &comment).await.expect("post"),
            None,
            "the id is read back later"
        );
        asked.push((key.clone(), marker));
    }
    let pairs: Vec<(&str, &str)> = asked.iter().map(|(k, m)| (k.as_str(), m.as_str())).collect();
    let ids = connector.posted_comment_ids(&pairs).await;
    let sent: Vec<(String, String)> = sim.requests()[before..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(sent.iter().filter(|(m, _)| m == "PATCH").count(), 3, "{sent:?}");
    assert_eq!(
        sent.iter().filter(|(m, p)| m == "GET" && p.ends_with("/sys_journal_field")).count(),
        1,
        "one read for the batch: {sent:?}"
    );
    for ((key, marker), id) in asked.iter().zip(&ids) {
        let found = connector.find_comment(key, marker).await.expect("find").expect("posted");
        assert_eq!(&found.id, id, "{key}");
        assert_ne!(id, &earlier_id);
    }

    sim.inject_on(Target::route("GET", "/api/now/table/sys_journal_field"), Fault::Status(500), 10);
    let ids = connector.posted_comment_ids(&pairs[..1]).await;
    assert_eq!(ids[0].0, format!("sc_req_item/{}#work_notes", keys[0]), "the stable reference");
}

#[tokio::test]
async fn oauth_password_grant_then_refresh_token_grant() {
    let sim = Simulator::start(SimConfig {
        token_ttl: Duration::from_secs(6),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let auth = AuthConfig::OauthPassword {
        token_url: format!("{}/oauth_token.do", sim.base_url()),
        client_id: OAUTH_CLIENT.0.into(),
        client_secret: OAUTH_CLIENT.1.to_string().into(),
        username: INTEGRATION_USER.into(),
        password: INTEGRATION_PASSWORD.to_string().into(),
    };
    let connector = ServiceNow::new("snow", config(&sim, auth, 100)).expect("connector");
    connector.poll(&Cursor::start()).await.expect("poll with a fresh token");
    // The token expires within the renewal margin: the next call refreshes it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    connector.poll(&Cursor::start()).await.expect("poll after refresh");
    let requests = sim.requests();
    let grants: Vec<String> = requests
        .iter()
        .filter(|r| r.path == "/oauth_token.do")
        .map(|r| {
            url::form_urlencoded::parse(r.body.as_bytes())
                .find(|(k, _)| k == "grant_type")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(grants, vec!["password", "refresh_token"]);
    assert!(requests
        .iter()
        .filter(|r| r.path.starts_with("/api/"))
        .all(|r| r.auth_scheme == "Bearer"));
}

#[tokio::test]
async fn tls_with_a_configured_ca_works() {
    let sim = Simulator::start(SimConfig {
        tls: true,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = std::env::temp_dir().join(format!("deskbridge-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sim.ca_pem().expect("pem")).expect("write");
    let mut cfg = config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100);
    let untrusted = ServiceNow::new("snow", cfg.clone()).expect("connector");
    assert!(untrusted.poll(&Cursor::start()).await.is_err(), "an unknown CA is refused");
    cfg.http.ca_cert_file = Some(ca);
    let trusted = ServiceNow::new("snow", cfg).expect("connector");
    assert_eq!(trusted.poll(&Cursor::start()).await.expect("poll over TLS").tickets.len(), 7);
}

#[tokio::test]
async fn the_start_up_check_names_every_missing_right() {
    let mut sim_config = SimConfig::default();
    sim_config.users.push(deskbridge_servicenow::simulator::SimUser {
        username: "narrow.user".into(),
        password: "narrow".into(),
        read_only: false,
        roles: vec!["sn_request_read".into()],
        unreadable: vec!["sysapproval_approver".into(), "sys_journal_field".into()],
    });
    let sim = Simulator::start(sim_config).await.expect("simulator");
    let good = ServiceNow::new("snow", config(&sim, basic(INTEGRATION_USER, INTEGRATION_PASSWORD), 100)).expect("connector");
    good.check().await.expect("the integration user has every right");
    let narrow = ServiceNow::new("snow", config(&sim, basic("narrow.user", "narrow"), 100)).expect("connector");
    let err = narrow.check().await.expect_err("rights are missing").to_string();
    for needle in [
        "read on sys_journal_field",
        "read on sysapproval_approver",
        "write on sc_req_item.work_notes (user narrow.user holds none of the roles itil, sn_request_write, admin)",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    let refused = ServiceNow::new("snow", config(&sim, basic(INTEGRATION_USER, "wrong"), 100)).expect("connector");
    let err = refused.check().await.expect_err("bad password").to_string();
    assert!(err.contains("credentials refused (401)") && !err.contains("wrong"), "{err}");
}
