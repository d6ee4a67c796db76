//! The Jira connector against its simulator, over real HTTP: the shared contract (Cloud, Data
//! Center, JSM comments), every request checked against Atlassian's OpenAPI descriptions,
//! same-minute changes, the 10,000-issue backfill, OAuth rotation across a restart, rate
//! limits, the start-up check and webhooks payloads.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deskbridge_connector::auth::AuthConfig;
use deskbridge_connector::http::HttpSettings;
use deskbridge_connector::testkit::{drain, run_contract, LostAnswer};
use deskbridge_connector::{Comment, Connector, ConnectorError, Cursor};
use deskbridge_jira::simulator::{
    Fault, NewIssue, SimConfig, Simulator, Target, API_TOKEN, INTEGRATION_EMAIL, OAUTH_CLIENT, PAT, READ_ONLY_EMAIL, READ_ONLY_TOKEN,
};
use deskbridge_jira::{CommentApi, Deployment, Jira, JiraConfig, Visibility};
use serde_json::json;

fn basic(email: &str, token: &str) -> AuthConfig {
    AuthConfig::Basic {
        username: email.into(),
        password: token.to_string().into(),
    }
}

fn config(sim: &Simulator, deployment: Deployment, auth: AuthConfig, page_size: u32) -> JiraConfig {
    let mut config: JiraConfig = serde_json::from_value(json!({
        "base_url": sim.base_url(),
        "projects": ["ACC"],
        "page_size": page_size,
        "auth": {"type": "bearer", "token": "replaced"},
    }))
    .expect("test config");
    config.deployment = deployment;
    config.auth = auth;
    config.http = HttpSettings {
        timeout_secs: 5,
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        ..HttpSettings::default()
    };
    config
}

/// A simulator holding no issues.
async fn unseeded() -> Simulator {
    Simulator::start(SimConfig {
        seed: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

fn cloud(sim: &Simulator, page_size: u32) -> Jira {
    Jira::new(
        "jira",
        config(sim, Deployment::Cloud, basic(INTEGRATION_EMAIL, API_TOKEN), page_size),
    )
    .expect("connector")
}

fn data_center(sim: &Simulator, page_size: u32) -> Jira {
    let auth = AuthConfig::Bearer {
        token: PAT.to_string().into(),
    };
    Jira::new("jira-dc", config(sim, Deployment::DataCenter, auth, page_size)).expect("connector")
}

struct Harness {
    sim: Simulator,
    deployment: Deployment,
    comments: CommentApi,
}

#[async_trait::async_trait]
impl deskbridge_connector::testkit::Harness for Harness {
    async fn connector(&self, page_size: u32) -> Arc<dyn Connector> {
        let mut c = match self.deployment {
            Deployment::Cloud => config(&self.sim, Deployment::Cloud, basic(INTEGRATION_EMAIL, API_TOKEN), page_size),
            Deployment::DataCenter => config(
                &self.sim,
                Deployment::DataCenter,
                AuthConfig::Bearer {
                    token: PAT.to_string().into(),
                },
                page_size,
            ),
        };
        c.comments.api = self.comments;
        // Short, so the contract's lost-answer check times out quickly.
        c.http.timeout_secs = 2;
        Arc::new(Jira::new("jira", c).expect("connector"))
    }

    async fn lose_next_comment_answer(&self, how: LostAnswer) {
        let fault = match how {
            LostAnswer::Status(code) => Fault::AppliedThenStatus(code),
            LostAnswer::Dropped => Fault::AppliedThenDrop,
            LostAnswer::Timeout => Fault::AppliedThenStall(Duration::from_secs(3)),
        };
        // The create call of either comment API: platform and JSM paths both end in /comment.
        self.sim.inject_on(Target::route("POST", "/comment"), fault, 1);
    }

    async fn create(&self, title: &str, updated: chrono::DateTime<chrono::Utc>) -> String {
        self.sim
            .create_issue(NewIssue {
                project: "ACC".into(),
                issue_type: "Service Request".into(),
                summary: title.into(),
                reporter: "abel.tuter@example.com".into(),
                request_type: Some("Request application access".into()),
                updated_ms: Some(updated.timestamp_millis()),
                ..NewIssue::default()
            })
            .0
    }

    async fn touch(&self, key: &str) {
        assert!(self.sim.update_issue(key, &[("summary", json!("touched"))]));
    }

    async fn comments(&self, key: &str) -> Vec<String> {
        self.sim.comments(key).into_iter().map(|c| c.text).collect()
    }

    async fn comment_as_someone_else(&self, key: &str, text: &str) {
        self.sim.add_comment_as(key, "beth.anglin@example.com", text);
    }
}

async fn contract(deployment: Deployment, comments: CommentApi) -> Simulator {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let harness = Harness { sim, deployment, comments };
    // The start-up check's requests are held to the OpenAPI description too.
    deskbridge_connector::testkit::Harness::connector(&harness, 50)
        .await
        .check()
        .await
        .expect("start-up check");
    run_contract(&harness).await;
    harness.sim
}

fn assert_described(sim: &Simulator, specs: &support::openapi::Specs) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for r in sim.requests() {
        match specs.check(&r) {
            Ok(true) => checked += 1,
            Ok(false) => assert_eq!(r.path, "/oauth/token", "only the OAuth endpoint is outside the descriptions"),
            Err(p) => problems.extend(p),
        }
    }
    assert!(checked > 10, "requests were checked: {checked}");
    assert!(
        problems.is_empty(),
        "requests that do not match Jira's OpenAPI description:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn cloud_data_center_and_jsm_pass_the_contract_with_documented_requests() {
    let specs = support::openapi::Specs::load();
    for (deployment, comments) in [
        (Deployment::Cloud, CommentApi::Platform),
        (Deployment::DataCenter, CommentApi::Platform),
        (Deployment::Cloud, CommentApi::ServiceDesk),
    ] {
        let sim = contract(deployment, comments).await;
        assert_described(&sim, &specs);
        let requests = sim.requests();
        for path in ["/myself", "/mypermissions", "/field", "/comment"] {
            assert!(requests.iter().any(|r| r.path.contains(path)), "{path} was exercised");
        }
        let searches: Vec<_> = requests.iter().filter(|r| r.path.contains("/search")).collect();
        match deployment {
            Deployment::Cloud => assert!(searches.iter().all(|r| r.path == "/rest/api/3/search/jql")),
            Deployment::DataCenter => assert!(searches.iter().all(|r| r.path == "/rest/api/2/search")),
        }
        for s in &searches {
            let body = s.json();
            let jql = body["jql"].as_str().unwrap_or_default();
            assert!(jql.starts_with("project in (\"ACC\")"), "bounded JQL: {jql}");
            assert!(body["fields"].as_array().is_some_and(|f| f.len() > 5), "explicit field list");
        }
    }
}

#[tokio::test]
async fn the_openapi_check_catches_a_request_jira_would_not_accept() {
    let specs = support::openapi::Specs::load();
    let bad = deskbridge_jira::simulator::RecordedRequest {
        method: "POST".into(),
        path: "/rest/api/3/search/jql".into(),
        query: vec![],
        auth_scheme: "Basic".into(),
        content_type: "application/json".into(),
        body: json!({"jql": "project = ACC", "startAt": 5}).to_string(),
    };
    assert!(specs.check(&bad).is_err(), "startAt is not a field of the enhanced search");
    let unknown_query = deskbridge_jira::simulator::RecordedRequest {
        method: "GET".into(),
        path: "/rest/api/3/issue/10001/comment".into(),
        query: vec![("orderBy".into(), "-created".into()), ("sort".into(), "x".into())],
        auth_scheme: "Basic".into(),
        content_type: String::new(),
        body: String::new(),
    };
    assert!(specs.check(&unknown_query).is_err(), "an undescribed query parameter is caught");
}

#[tokio::test]
async fn changes_inside_the_same_minute_are_neither_missed_nor_repeated() {
    let sim = unseeded().await;
    let jira = cloud(&sim, 50);
    let (id, _) = sim.create_issue(NewIssue {
        project: "ACC".into(),
        issue_type: "Service Request".into(),
        summary: "first".into(),
        reporter: "abel.tuter@example.com".into(),
        ..NewIssue::default()
    });
    let (seen, cursor) = drain(&jira, Cursor::start()).await;
    assert_eq!(seen.len(), 1);
    // Two more changes within the same minute, each polled right after.
    assert!(sim.update_issue(&id, &[("summary", json!("second"))]));
    let (second, cursor) = drain(&jira, cursor).await;
    assert!(sim.update_issue(&id, &[("summary", json!("third"))]));
    let (third, cursor) = drain(&jira, cursor).await;
    assert_eq!(second.len(), 1, "second change read once: {second:?}");
    assert_eq!(third.len(), 1, "third change read once: {third:?}");
    assert!(seen[0].1 < second[0].1 && second[0].1 < third[0].1, "versions move forward");
    let (again, cursor) = drain(&jira, cursor).await;
    assert!(again.is_empty(), "nothing repeats: {again:?}");

    // Eventual consistency: an issue that becomes searchable late, stamped a minute before the
    // newest update already read, is still found thanks to the overlap window.
    let (late, _) = sim.create_issue(NewIssue {
        project: "ACC".into(),
        issue_type: "Service Request".into(),
        summary: "late".into(),
        reporter: "abel.tuter@example.com".into(),
        updated_ms: Some(chrono::Utc::now().timestamp_millis() - 60_000),
        ..NewIssue::default()
    });
    let (after, _) = drain(&jira, cursor).await;
    assert_eq!(after.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec![late.as_str()]);
}

#[tokio::test]
async fn a_ten_thousand_issue_backfill_pages_correctly_on_cloud_and_data_center() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let generated = sim.generate(10_000);
    let ids: BTreeMap<String, ()> = sim
        .issues("ACC")
        .into_iter()
        .filter(|i| generated.contains(&i.key()))
        .map(|i| (i.id.to_string(), ()))
        .collect();
    assert_eq!(ids.len(), 10_000);
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    for (name, jira, max_pages) in [("cloud", cloud(&sim, 100), 110usize), ("data center", data_center(&sim, 1000), 20)] {
        sim.clear_requests();
        let started = Instant::now();
        let cursor = jira.cursor_since(since).expect("cursor");
        let (seen, _) = drain(&jira, cursor).await;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, _) in &seen {
            *counts.entry(key.as_str()).or_default() += 1;
        }
        let missing = ids.keys().filter(|k| !counts.contains_key(k.as_str())).count();
        let repeated = counts.values().filter(|n| **n > 1).count();
        assert_eq!(missing, 0, "{name}: every generated issue read");
        assert_eq!(repeated, 0, "{name}: none read twice");
        let searches: Vec<_> = sim.requests().into_iter().filter(|r| r.path.contains("/search")).collect();
        assert!(searches.len() <= max_pages, "{name}: {} search calls", searches.len());
        for s in &searches {
            let start = s.json()["startAt"].as_u64().unwrap_or(0);
            assert!(start < 10_000, "{name}: startAt {start} stays inside the result window");
        }
        println!(
            "{name}: {} issues in {} searches, {:?}",
            seen.len(),
            searches.len(),
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn oauth_refresh_rotation_survives_a_restart() {
    let sim = Simulator::start(SimConfig {
        token_ttl: Duration::from_secs(6),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let state_file = dir.path().join("jira-oauth.json");
    let consent = sim.consent();
    let auth = AuthConfig::OauthRefresh {
        token_url: format!("{}/oauth/token", sim.base_url()),
        client_id: OAUTH_CLIENT.0.into(),
        client_secret: OAUTH_CLIENT.1.to_string().into(),
        refresh_token: consent.clone().into(),
        state_file: state_file.clone(),
    };
    let first = Jira::new("jira", config(&sim, Deployment::Cloud, auth.clone(), 50)).expect("connector");
    first.poll(&Cursor::start()).await.expect("poll with the consented token");
    let stored = std::fs::read_to_string(&state_file).expect("rotated token stored");
    assert!(!stored.contains(&consent), "the used refresh token is replaced on disk");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&state_file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is private");
    }
    // The access token nears expiry: the next call rotates again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.poll(&Cursor::start()).await.expect("poll after a rotation");
    drop(first);

    // A restart with the same configuration (still naming the consented, now dead, token).
    let second = Jira::new("jira", config(&sim, Deployment::Cloud, auth, 50)).expect("connector");
    second
        .poll(&Cursor::start())
        .await
        .expect("poll after restart uses the stored token");
    assert_eq!(sim.grants(), vec!["refresh_token:ok"; 3], "no refresh token was ever reused");
    assert!(sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/rest/"))
        .all(|r| r.auth_scheme == "Bearer"));

    // Losing the state file strands nothing silently: the dead token is refused, clearly.
    std::fs::remove_file(&state_file).expect("remove");
    let third = Jira::new(
        "jira",
        config(
            &sim,
            Deployment::Cloud,
            AuthConfig::OauthRefresh {
                token_url: format!("{}/oauth/token", sim.base_url()),
                client_id: OAUTH_CLIENT.0.into(),
                client_secret: OAUTH_CLIENT.1.to_string().into(),
                refresh_token: consent.clone().into(),
                state_file,
            },
            50,
        ),
    )
    .expect("connector");
    let err = third.poll(&Cursor::start()).await.expect_err("dead token");
    assert!(matches!(err, ConnectorError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("consent") && !err.to_string().contains(&consent), "{err}");
}

#[tokio::test]
async fn rate_limits_honour_every_atlassian_header() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let jira = cloud(&sim, 50);
    sim.inject(
        Fault::RateLimit {
            retry_after: None,
            reset_in: None,
            beta_retry_after: Some(1),
        },
        1,
        Some("/search"),
    );
    let started = Instant::now();
    jira.poll(&Cursor::start()).await.expect("retried after Beta-Retry-After");
    assert!(started.elapsed() >= Duration::from_secs(1));

    let mut cfg = config(&sim, Deployment::Cloud, basic(INTEGRATION_EMAIL, API_TOKEN), 50);
    cfg.http.max_inline_retry_after_secs = 5;
    let impatient = Jira::new("jira", cfg).expect("connector");
    sim.inject(
        Fault::RateLimit {
            retry_after: Some(1),
            reset_in: Some(600),
            beta_retry_after: None,
        },
        1,
        Some("/search"),
    );
    match impatient.poll(&Cursor::start()).await {
        Err(ConnectorError::RateLimited { retry_after, .. }) => assert!(retry_after > Duration::from_secs(300), "{retry_after:?}"),
        other => panic!("expected RateLimited from X-RateLimit-Reset, got {other:?}"),
    }
    sim.inject(Fault::Status(503), 2, Some("/search"));
    jira.poll(&Cursor::start()).await.expect("503s without a header back off and retry");
}

#[tokio::test]
async fn the_start_up_check_lists_everything_missing() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    cloud(&sim, 50).check().await.expect("the integration user has what it needs");

    let readonly = Jira::new("jira", config(&sim, Deployment::Cloud, basic(READ_ONLY_EMAIL, READ_ONLY_TOKEN), 50)).expect("connector");
    let err = readonly.check().await.expect_err("no comment permission");
    assert!(matches!(err, ConnectorError::Unauthorized { .. }));
    assert!(err.to_string().contains("ADD_COMMENTS on project ACC"), "{err}");

    let mut cfg = config(&sim, Deployment::Cloud, basic(INTEGRATION_EMAIL, API_TOKEN), 50);
    cfg.custom_fields.push("Cost centre".into());
    cfg.custom_fields.push("Risk score".into());
    let err = Jira::new("jira", cfg)
        .expect("connector")
        .check()
        .await
        .expect_err("unknown fields");
    assert!(matches!(err, ConnectorError::Config { .. }));
    assert!(
        err.to_string().contains("\"Cost centre\"") && err.to_string().contains("\"Risk score\""),
        "{err}"
    );

    let err = Jira::new(
        "jira",
        config(&sim, Deployment::Cloud, basic(INTEGRATION_EMAIL, "wrong-token-42"), 50),
    )
    .expect("connector")
    .check()
    .await
    .expect_err("refused");
    assert!(
        err.to_string().contains("401") && !err.to_string().contains("wrong-token-42"),
        "{err}"
    );
}

#[tokio::test]
async fn custom_fields_are_read_by_name_whatever_their_ids() {
    for base in [10_000, 17_321] {
        let sim = Simulator::start(SimConfig {
            field_id_base: base,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        let jira = cloud(&sim, 50);
        let page = jira.poll(&Cursor::start()).await.expect("poll");
        let acc2 = page.tickets.iter().find(|t| t.number == "ACC-2").expect("seeded");
        assert_eq!(acc2.raw["custom"]["Application"], "sap-erp");
        assert_eq!(acc2.raw["custom"]["Environment"]["value"], "Production");
        assert_eq!(acc2.raw["request_type"], "Request application access");
        assert_eq!(acc2.raw["fields"]["status"]["name"], "Approved");
        assert!(acc2.url.ends_with("/browse/ACC-2"), "{}", acc2.url);
        let search = sim
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/search/jql"))
            .expect("search");
        let fields = search.json()["fields"].clone();
        assert!(fields
            .as_array()
            .expect("list")
            .contains(&json!(sim.field_id("Application").expect("id"))));
    }
}

#[tokio::test]
async fn jsm_comments_are_internal_or_public_as_configured() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    for visibility in [Visibility::Internal, Visibility::Public] {
        let mut cfg = config(&sim, Deployment::Cloud, basic(INTEGRATION_EMAIL, API_TOKEN), 50);
        cfg.comments.api = CommentApi::ServiceDesk;
        cfg.comments.visibility = visibility;
        let jira = Jira::new("jira", cfg).expect("connector");
        let key = sim.issue("ACC-1").expect("seeded").id.to_string();
        let marker = format!("deskbridge-id:{visibility:?}");
        let id = jira
            .post_comment(
                &key,
                &Comment {
                    marker: marker.clone(),
                    body: format!("decision\n[{marker}]"),
                },
            )
            .await
            .expect("post");
        let posted = sim.comments(&key).into_iter().find(|c| c.id.to_string() == id.0).expect("posted");
        assert_eq!(posted.public, visibility == Visibility::Public);
        assert_eq!(posted.properties["deskbridge.marker"]["marker"], marker);
        assert_eq!(jira.find_comment(&key, &marker).await.expect("find").map(|f| f.id), Some(id));
    }
}

#[tokio::test]
async fn the_simulator_rejects_invalid_adf_as_jira_does() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let key = sim.issue("ACC-1").expect("seeded").id.to_string();
    let bad = reqwest::Client::new()
        .post(format!("{}/rest/api/3/issue/{key}/comment", sim.base_url()))
        .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
        .json(
            &json!({"body": {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}]}}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 400, "the simulator rejects invalid ADF as Jira does");
}

#[tokio::test]
async fn webhook_payloads_only_name_the_issue() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let mut cfg = config(&sim, Deployment::Cloud, basic(INTEGRATION_EMAIL, API_TOKEN), 50);
    cfg.webhook = Some(serde_json::from_value(json!({"secret": "jira-hook-secret-0123"})).expect("webhook"));
    let jira = Jira::new("jira", cfg).expect("connector");
    let verifier = jira.webhook().expect("configured");
    assert_eq!(verifier.signature_header, "X-Hub-Signature");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-atlassian-webhook-identifier", "abc-123".parse().expect("header"));
    let body = br#"{"webhookEvent":"jira:issue_updated","issue":{"id":"10002","key":"ACC-2","fields":{"summary":"forged"}}}"#;
    let event = jira.webhook_event(&headers, body).expect("event");
    assert_eq!(event.keys, vec!["10002"]);
    assert_eq!(event.delivery_id.as_deref(), Some("abc-123"));
    assert!(jira.webhook_event(&headers, br#"{"issue":{"id":"1 OR 1=1"}}"#).is_err());
    let fetched = jira.fetch("10002").await.expect("fetch").expect("found");
    assert_eq!(
        fetched.raw["fields"]["summary"], "SAP FI posting administrator in production",
        "the payload's text is not used"
    );
    assert_eq!(jira.fetch("999999").await.expect("fetch"), None);
}

#[tokio::test]
async fn an_expired_page_token_restarts_the_search_where_it_stood() {
    let sim = Simulator::start(SimConfig {
        page_token_ttl: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let generated = sim.generate(45);
    let jira = cloud(&sim, 10);
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let first = jira.poll(&jira.cursor_since(since).expect("cursor")).await.expect("first page");
    assert!(first.more, "the search has more pages");
    let mut seen: Vec<String> = first.tickets.iter().map(|t| t.number.clone()).collect();
    // An outage longer than the token's life: the next page's token has expired.
    tokio::time::sleep(Duration::from_millis(400)).await;
    sim.clear_requests();
    let mut cursor = first.next;
    for _ in 0..20 {
        let page = jira.poll(&cursor).await.expect("the poll resumes instead of failing");
        seen.extend(page.tickets.iter().map(|t| t.number.clone()));
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    let refused = sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/search/jql") && r.json().get("nextPageToken").is_some())
        .count();
    assert!(refused >= 1, "the expired token was sent once");
    for key in &generated {
        let n = seen.iter().filter(|k| *k == key).count();
        assert_eq!(n, 1, "{key} read {n} times");
    }
}

/// The enhanced search walks an index ordered by `updated`; the Data Center search scans every
/// issue. Paged through in small pages, with runs of equal `updated`, an issue moved into a
/// tie, one moved below the query's floor and two changed between pages, the walk returns what
/// search-after over the full scan's order returns.
#[tokio::test]
async fn the_indexed_search_pages_in_the_full_scans_order_while_issues_change() {
    let sim = unseeded().await;
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let keys: Vec<String> = (0..60)
        .map(|n| {
            sim.create_issue(NewIssue {
                project: "ACC".into(),
                issue_type: "Service Request".into(),
                summary: format!("issue {n}"),
                reporter: "abel.tuter@example.com".into(),
                // Runs of three issues share one `updated`, newest created first in each run.
                updated_ms: Some(base + (19 - n / 3) as i64 * 1000),
                ..NewIssue::default()
            })
            .1
        })
        .collect();
    let jql = format!("project = ACC AND updated >= {} ORDER BY updated ASC, key ASC", base - 1000);
    let http = reqwest::Client::new();
    let search = |path: &'static str, body: serde_json::Value| {
        let request = http
            .post(format!("{}{path}", sim.base_url()))
            .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
            .json(&body);
        async move {
            let answer: serde_json::Value = request.send().await.expect("search").json().await.expect("JSON");
            assert!(answer["issues"].is_array(), "{answer}");
            answer
        }
    };
    let keys_of = |answer: &serde_json::Value| -> Vec<String> {
        answer["issues"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["key"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let full_scan = || search("/rest/api/2/search", json!({"jql": jql, "maxResults": 1000, "fields": ["updated"]}));
    let page = |token: Option<String>| {
        let mut body = json!({"jql": jql, "maxResults": 7, "fields": ["updated"]});
        if let Some(token) = token {
            body["nextPageToken"] = json!(token);
        }
        search("/rest/api/3/search/jql", body)
    };

    // Unchanged, the walk and the scan agree.
    let mut walked = Vec::new();
    let mut token = None;
    loop {
        let answer = page(token).await;
        walked.extend(keys_of(&answer));
        token = answer["nextPageToken"].as_str().map(str::to_owned);
        if answer["isLast"] == json!(true) {
            break;
        }
    }
    let scanned = keys_of(&full_scan().await);
    assert_eq!(scanned.len(), 60);
    assert_eq!(walked, scanned);

    // Changes between the first page and the rest.
    let first = page(None).await;
    let mut walked = keys_of(&first);
    let last_read = walked.last().cloned().expect("a first page");
    let unread: Vec<&String> = scanned.iter().filter(|k| !walked.contains(k)).collect();
    assert!(sim.update_issue(&walked[0], &[("summary", json!("read, then changed"))]));
    assert!(sim.update_issue(unread[3], &[("summary", json!("changed before it was read"))]));
    sim.set_updated(unread[10], base - 5_000); // below the query's floor: no longer matches
    sim.set_updated(unread[20], base + 12_000); // into the run of 12 s, in key order
    let mut token = first["nextPageToken"].as_str().map(str::to_owned);
    while let Some(t) = token {
        let answer = page(Some(t)).await;
        walked.extend(keys_of(&answer));
        token = answer["nextPageToken"].as_str().map(str::to_owned);
    }
    // Search-after: what the scan now orders after the last issue read, once each.
    let rescanned = keys_of(&full_scan().await);
    let after = rescanned.iter().position(|k| *k == last_read).expect("the last issue read") + 1;
    let mut expected = keys_of(&first);
    expected.extend(rescanned[after..].iter().cloned());
    assert_eq!(walked, expected);
    assert!(!walked.contains(unread[10]), "below the floor");
    assert_eq!(walked.iter().filter(|k| *k == &walked[0]).count(), 2, "read again after its change");
    assert_eq!(keys.len(), 60);
}
