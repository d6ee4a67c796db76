//! Decisions from authoritative data: the SCIM directory client against the SCIM simulator, and
//! every bypass of "no ticket field chooses the outcome" end to end through the ServiceNow
//! simulator, the example catalog and the SCIM directory.

use std::sync::Arc;
use std::time::Duration;

use deskbridge::directory::scim::{ScimDirectory, ScimDirectoryConfig};
use deskbridge::directory::Directory;
use deskbridge::pipeline::Report;
use deskbridge_scim::simulator::{Fault, SimConfig, Simulator, Target, TOKEN};
use serde_json::json;

use crate::helpers::{enricher_with, shipped_policy, TestApp};

fn client(sim: &Simulator, ttl: u64) -> ScimDirectory {
    let mut config: ScimDirectoryConfig = serde_json::from_value(json!({
        "base_url": sim.base_url(),
        "token": TOKEN,
        "cache_ttl_secs": ttl,
        "page_size": 1,
        "http": {"timeout_secs": 2, "backoff_base_ms": 10, "backoff_max_ms": 50, "max_attempts": 3},
    }))
    .expect("config");
    config.lookup_attributes = vec!["userName".into(), "emails.value".into()];
    ScimDirectory::new(config).expect("client")
}

#[tokio::test]
async fn the_scim_client_reads_people_groups_and_managers() {
    for user_groups in [false, true] {
        let sim = Simulator::start(SimConfig {
            user_groups,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        sim.add_user("o\"neil\\x", true, &["weird"]);
        let dir = client(&sim, 300);
        let keys: Vec<String> = ["beth.anglin", "ABEL.TUTER@example.com", "olga.leaver", "nobody", "o\"neil\\x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let found = dir.lookup(&keys).await.expect("answers");
        let beth = found["beth.anglin"].clone().expect("beth");
        assert!(beth.active);
        assert_eq!(
            beth.manager.as_deref(),
            Some("david.loo"),
            "the manager's id is read back as a user name"
        );
        assert_eq!(beth.department.as_deref(), Some("Finance"));
        let mut groups = beth.groups.clone();
        groups.sort();
        assert_eq!(
            groups,
            vec!["sap-fi-display", "sap-fi-payment-release"],
            "user_groups={user_groups}"
        );
        assert_eq!(
            found["ABEL.TUTER@example.com"].as_ref().map(|a| a.user_name.as_str()),
            Some("abel.tuter")
        );
        assert!(!found["olga.leaver"].as_ref().expect("leaver").active);
        assert!(found["nobody"].is_none());
        assert_eq!(
            found["o\"neil\\x"].as_ref().map(|u| u.groups.clone()),
            Some(vec!["weird".to_string()]),
            "quotes and backslashes are escaped"
        );
    }
}

#[tokio::test]
async fn the_cache_revalidates_with_etags_and_a_throttle_is_waited_out() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = client(&sim, 0);
    let key = vec!["carol.ng".to_string()];
    dir.lookup(&key).await.expect("first");
    sim.inject_on(Target::path(Some("/Users/")), Fault::throttle(1), 1);
    let again = dir.lookup(&key).await.expect("after a 429");
    assert!(again["carol.ng"].is_some());
    let revalidations = sim
        .requests()
        .iter()
        .filter(|r| r.path.contains("/Users/") && r.method == "GET")
        .count();
    assert!(revalidations >= 2, "revalidated by id after the TTL: {revalidations}");
    // Deactivation changes the ETag, so the cache cannot hide it.
    sim.set_active("carol.ng", false);
    let changed = dir.lookup(&key).await.expect("third");
    assert!(!changed["carol.ng"].as_ref().expect("carol").active);
}

#[tokio::test]
async fn a_failing_directory_is_an_error_never_a_not_found() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = client(&sim, 300);
    for fault in [Fault::Status(500), Fault::Garbage, Fault::Status(401)] {
        sim.inject_on(Target::path(Some("/Users")), fault.clone(), 10);
        let err = dir.lookup(&["helen.park".to_string()]).await.expect_err("fails closed");
        assert!(!err.contains(TOKEN), "{err}");
        sim.clear_faults();
    }
}

#[tokio::test]
async fn the_simulator_takes_membership_and_deactivation_as_entra_and_okta_send_them() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let http = reqwest::Client::new();
    let group = sim.group("sap-fi-display").expect("group");
    let gid = group["id"].as_str().expect("id");
    let beth = sim.user("beth.anglin").expect("beth")["id"].as_str().expect("id").to_owned();
    let fred = sim.user("fred.luddy").expect("fred")["id"].as_str().expect("id").to_owned();
    let patch = |path: String, body: serde_json::Value| {
        http.patch(format!("{}{path}", sim.base_url()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    // Okta: add with a display; Entra's default job: capitalised Remove with a value list.
    let r = patch(format!("/Groups/{gid}"), json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": [{"value": fred, "display": "Fred"}]}]})).await.expect("patch");
    assert_eq!(r.status(), 200);
    let r = patch(
        format!("/Groups/{gid}"),
        json!({"Operations": [{"op": "Remove", "path": "members", "value": [{"value": beth}]}]}),
    )
    .await
    .expect("patch");
    assert_eq!(r.status(), 200);
    let members: Vec<String> = sim.group("sap-fi-display").expect("group")["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["value"].as_str().map(String::from))
        .collect();
    assert_eq!(
        members,
        vec![fred.clone()],
        "Entra's remove-with-value removes that member, not all"
    );
    // The RFC form.
    patch(
        format!("/Groups/{gid}"),
        json!({"Operations": [{"op": "remove", "path": format!("members[value eq \"{fred}\"]")}]}),
    )
    .await
    .expect("patch");
    assert_eq!(sim.group("sap-fi-display").expect("group")["members"], json!([]));
    // Entra: "False" as a string; Okta: path-less replace.
    patch(
        format!("/Users/{beth}"),
        json!({"Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
    )
    .await
    .expect("patch");
    assert_eq!(sim.user("beth.anglin").expect("beth")["active"], false);
    patch(
        format!("/Users/{beth}"),
        json!({"Operations": [{"op": "replace", "value": {"active": true}}]}),
    )
    .await
    .expect("patch");
    assert_eq!(sim.user("beth.anglin").expect("beth")["active"], true);
    let unauthenticated = http.get(format!("{}/Users", sim.base_url())).send().await.expect("get");
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(unauthenticated.headers()["www-authenticate"], "Bearer");
    let bad = http
        .get(format!("{}/Users", sim.base_url()))
        .query(&[("filter", "userName zz \"x\"")])
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<serde_json::Value>().await.expect("json")["scimType"], "invalidFilter");
}

/// The ServiceNow simulator, the example catalog and the SCIM directory.
async fn scim_app() -> (TestApp, Simulator, deskbridge::pipeline::Pipeline) {
    let app = TestApp::spawn().await;
    let scim = Simulator::start(SimConfig::default()).await.expect("SCIM simulator");
    let directory: Arc<dyn Directory> = Arc::new(client(&scim, 300));
    let pipeline = app
        .pipeline_with(Arc::new(shipped_policy()))
        .with_enricher(Some(enricher_with(directory)));
    (app, scim, pipeline)
}

fn first_line(app: &TestApp, number: &str) -> String {
    app.journal_of(number)
        .last()
        .map(|e| e.value.lines().next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn comment(app: &TestApp, number: &str) -> String {
    app.journal_of(number).last().map(|e| e.value.clone()).unwrap_or_default()
}

#[tokio::test]
async fn the_seeded_requests_are_decided_from_the_catalog_and_the_directory() {
    let (app, _scim, pipeline) = scim_app().await;
    pipeline.run_once().await.expect("pass");
    assert_eq!(first_line(&app, "RITM0010001"), "deskbridge decision: APPROVED by policy");
    assert_eq!(first_line(&app, "RITM0010002"), "deskbridge decision: DENIED by policy");
    let deny = comment(&app, "RITM0010002");
    assert!(
        deny.contains("sap-erp/FI_POSTING_ADMIN conflicts with sap-erp/FI_PAYMENT_RELEASE"),
        "{deny}"
    );
    assert_eq!(first_line(&app, "RITM0010003"), "deskbridge decision: MORE INFORMATION needed");
    assert_eq!(first_line(&app, "RITM0010005"), "deskbridge decision: REVIEW required");
    // A revocation of Fred's access asked by Helen, who is neither Fred nor his manager.
    assert_eq!(first_line(&app, "RITM0010006"), "deskbridge decision: REVIEW required");
    assert!(comment(&app, "RITM0010006").contains("Routed to: Platform Engineering Leads"));
}

#[tokio::test]
async fn a_privileged_entitlement_ordered_as_unprivileged_staging_goes_to_its_owner_with_a_finding() {
    let (app, _scim, pipeline) = scim_app().await;
    let key = app.sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    for (name, value) in [
        ("application", "GitHub"),
        ("role", "org owner"),
        ("environment", "Staging"),
        ("privileged", "false"),
    ] {
        app.sim.set_variable(&key, name, value);
    }
    pipeline.run_once().await.expect("pass");
    let text = comment(&app, "RITM0010001");
    assert!(text.starts_with("deskbridge decision: REVIEW required"), "{text}");
    assert!(text.contains("Routed to: Platform Engineering Leads"), "{text}");
    assert!(
        text.contains("org-admin on github (prod)"),
        "the catalog's facts, not the ticket's: {text}"
    );
    assert!(text.contains("Step-up authentication is required"), "{text}");
    let findings = deskbridge::report::drift::drift(&app.store, &Default::default())
        .await
        .expect("drift");
    let understated: Vec<_> = findings.iter().filter(|f| f.kind == "claim_understates_catalog").collect();
    assert_eq!(understated.len(), 1, "{findings:?}");
    assert!(
        understated[0].detail.contains("not privileged") && understated[0].detail.contains("prod"),
        "{understated:?}"
    );
}

#[tokio::test]
async fn an_entitlement_not_in_the_catalog_is_reviewed_never_approved() {
    let (app, _scim, pipeline) = scim_app().await;
    let key = app.sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    app.sim.set_variable(&key, "role", "jira-superuser");
    pipeline.run_once().await.expect("pass");
    let text = comment(&app, "RITM0010001");
    assert!(text.starts_with("deskbridge decision: REVIEW required"), "{text}");
    assert!(
        text.contains("not in the catalog") && text.contains("Routed to: Atlassian Admins"),
        "{text}"
    );
}

#[tokio::test]
async fn a_leaver_is_denied_and_a_service_account_whose_owner_left_is_denied() {
    let (app, scim, pipeline) = scim_app().await;
    scim.set_active("abel.tuter", false);
    let sa = app.sim.sys_id_of("sc_req_item", "RITM0010004").expect("seeded");
    app.sim.set_variable(&sa, "sa_owner", "nick.owner");
    app.sim.set_variable(&sa, "sa_expiry", "2027-06-30");
    pipeline.run_once().await.expect("pass");
    let leaver = comment(&app, "RITM0010001");
    assert!(
        leaver.starts_with("deskbridge decision: DENIED by policy") && leaver.contains("not active"),
        "{leaver}"
    );
    let nhi = comment(&app, "RITM0010004");
    assert!(
        nhi.starts_with("deskbridge decision: DENIED by policy") && nhi.contains("has left"),
        "{nhi}"
    );
}

#[tokio::test]
async fn a_directory_that_fails_leaves_requests_pending_and_uncommented_until_it_recovers() {
    let (app, scim, pipeline) = scim_app().await;
    scim.inject_random(Target::path(Some("/Users")), Fault::Status(500), 1.0);
    let report = pipeline.run_once().await.expect("pass");
    assert_eq!(report.decided, 0, "{report:?}");
    assert!(report.failed_decisions >= 5, "{report:?}");
    assert!(
        app.journal_of("RITM0010001").is_empty(),
        "nothing is posted while the directory fails"
    );
    scim.clear_faults();
    scim.inject_random(Target::path(Some("/Users")), Fault::Garbage, 1.0);
    assert_eq!(pipeline.run_once().await.expect("pass").decided, 0, "garbage is a failure too");
    scim.clear_faults();
    let mut total = Report::default();
    for _ in 0..3 {
        let r = pipeline.run_once().await.expect("pass");
        total.decided += r.decided;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total.decided, 6, "{total:?}");
    for number in deskbridge_servicenow::simulator::SEEDED_ACCESS_TICKETS {
        assert_eq!(app.journal_of(number).len(), 1, "{number} decided once it recovered, once");
    }
}

#[tokio::test]
async fn a_page_of_tickets_asks_the_directory_in_batches() {
    let (app, scim, pipeline) = scim_app().await;
    app.sim.generate(100);
    let report = pipeline.run_once().await.expect("pass");
    assert!(report.decided >= 100, "{report:?}");
    let user_queries = scim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/Users") && r.param("filter").is_some())
        .count();
    assert!(user_queries <= 3, "106 requests naming 7 people: {user_queries} user queries");
}

#[tokio::test]
async fn the_simulator_honours_attributes_and_excluded_attributes() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let group = sim.group("jira-users").expect("group");
    let id = group["id"].as_str().expect("id");
    let get = |path: String| {
        let token = TOKEN;
        async move {
            reqwest::Client::new()
                .get(path)
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let lean = get(format!("{}/Groups/{id}?excludedAttributes=members", sim.base_url())).await;
    assert!(lean.get("members").is_none(), "{lean}");
    assert_eq!(lean["displayName"], "jira-users");
    let named = get(format!(
        "{}/Users?filter=userName%20eq%20%22abel.tuter%22&attributes=userName",
        sim.base_url()
    ))
    .await;
    let user = &named["Resources"][0];
    assert_eq!(user["userName"], "abel.tuter");
    assert!(
        user.get("emails").is_none() && user.get("id").is_some() && user.get("meta").is_some(),
        "{user}"
    );
    let client = client(&sim, 0);
    assert_eq!(client.group_name_by_id(id).await.expect("name").as_deref(), Some("jira-users"));
}
