//! The access lifecycle: approved → granted (evidence) → expired / revoked, with its comments.

use std::sync::Arc;

use serde_json::json;

use super::{expire_now, ProvApp};

const GRANTED: &str = "Access granted — matches decision";
const EXPIRED: &str = "Access expired — still present";

#[tokio::test]
async fn an_approved_grant_is_matched_commented_once_revoked_and_leaves_no_finding() {
    let p = ProvApp::start(json!({})).await;
    p.pass().await;
    let approved = p.lifecycle("RITM0010001").await;
    assert_eq!(
        (approved.state.as_str(), approved.group_name.as_str(), approved.beneficiary.as_str()),
        ("approved", "jira-developers", "abel.tuter")
    );
    assert_eq!(approved.max_days, Some(90));

    // The directory grants; its SET reaches deskbridge's endpoint and is matched.
    assert!(p.scim.add_to_group("abel.tuter", "jira-developers"));
    p.pass().await;
    assert_eq!(p.scim.deliveries().last().map(|d| d.status), Some(202));
    let granted = p.lifecycle("RITM0010001").await;
    assert_eq!(granted.state, "granted");
    let at = chrono::DateTime::parse_from_rfc3339(granted.granted_at.as_deref().expect("granted_at")).expect("time");
    let expires = chrono::DateTime::parse_from_rfc3339(granted.expires_at.as_deref().expect("expires_at")).expect("time");
    assert_eq!((expires - at).num_days(), 90, "the decision's maximum duration from the grant");
    let comments = p.comments_starting("RITM0010001", GRANTED);
    assert_eq!(comments.len(), 1, "{:?}", p.comments("RITM0010001"));
    assert!(comments[0].contains(&granted.decision_id), "{}", comments[0]);
    assert!(
        comments[0].contains("abel.tuter was added to jira-developers (jira-software/jira-developers)"),
        "{}",
        comments[0]
    );

    // More passes, and the same SET pushed again, change nothing.
    let replay = p.scim.deliveries().last().expect("delivery").set.clone();
    let (status, body) = p.post_set(&replay).await;
    assert_eq!((status, body["err"].as_str()), (400, Some("invalid_request")));
    p.pass().await;
    p.pass().await;
    assert_eq!(p.comments_starting("RITM0010001", GRANTED).len(), 1);

    // Revoked before expiry: the lifecycle closes with evidence and no finding.
    assert!(p.scim.remove_from_group("abel.tuter", "jira-developers"));
    p.pass().await;
    let revoked = p.lifecycle("RITM0010001").await;
    assert_eq!(revoked.state, "revoked");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(p.findings().await, vec![], "clean data gives no finding");

    // The evidence chain, through `deskbridge trace`.
    let trace = deskbridge::audit::trace(&p.app.store, "RITM0010001").await.expect("trace");
    for kind in ["decided", "comment_posted", "access_granted", "access_revoked"] {
        assert!(trace.contains(kind), "{kind} missing from\n{trace}");
    }
    assert!(trace.contains("(before expiry)"), "{trace}");
    let report = deskbridge::report::access::access(&p.app.store, false).await.expect("report");
    assert!(report.is_empty(), "revoked access is not held now: {report:?}");
    let all = deskbridge::report::access::access(&p.app.store, true).await.expect("report");
    assert!(all.iter().any(|r| r.number == "RITM0010001" && r.state == "revoked"));
    let verified = deskbridge::audit::verify_store(&p.app.store).await.expect("verify");
    assert!(verified.is_ok(), "{verified:?}");
}

#[tokio::test]
async fn a_grant_is_matched_to_the_right_decision_when_the_beneficiary_has_several() {
    let p = ProvApp::start(json!({})).await;
    // A second request for abel.tuter: Salesforce reports, approved beside Jira developers.
    let numbers = p.app.sim.generate(1);
    let key = p.app.sim.sys_id_of("sc_req_item", &numbers[0]).expect("generated");
    p.app.sim.set_variable(&key, "application", "salesforce");
    p.app.sim.set_variable(&key, "role", "reports-viewer");
    p.pass().await;
    let jira = p.lifecycle("RITM0010001").await;
    let sfdc = p.lifecycle(&numbers[0]).await;
    assert_eq!((jira.state.as_str(), sfdc.state.as_str()), ("approved", "approved"));
    assert_eq!(sfdc.group_name, "sfdc-reports-viewers");

    p.scim.add_to_group("abel.tuter", "sfdc-reports-viewers");
    p.pass().await;
    assert_eq!(p.lifecycle(&numbers[0]).await.state, "granted");
    assert_eq!(p.lifecycle("RITM0010001").await.state, "approved", "the other decision still waits");
    assert_eq!(p.comments_starting(&numbers[0], GRANTED).len(), 1);
    assert!(p.comments_starting("RITM0010001", GRANTED).is_empty());

    // An IGA tool names the decision it fulfils.
    let (status, _) = p
        .iga(
            &json!({"id": "iga-1", "event": "grant", "identity": "abel.tuter", "entitlement": "jira-software/jira-developers",
                      "at": chrono::Utc::now().to_rfc3339(), "decision_id": jira.decision_id}),
        )
        .await;
    assert_eq!(status, 202);
    p.pass().await;
    assert_eq!(p.lifecycle("RITM0010001").await.state, "granted");
    assert_eq!(p.findings().await, vec![]);
}

#[tokio::test]
async fn reconciliation_after_a_missed_event_still_produces_the_grant_evidence() {
    let p = ProvApp::start(json!({"reconcile_every_secs": 1})).await;
    p.pass().await; // decisions, and the first read of every catalog group (the baseline)
    p.scim.drop_next_events(1);
    p.scim.add_to_group("abel.tuter", "jira-developers");
    p.scim.flush_events().await;
    assert!(p.scim.deliveries().is_empty(), "the event was lost");
    p.pass().await;
    assert_eq!(p.lifecycle("RITM0010001").await.state, "approved", "nothing seen yet");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    p.pass().await;
    let row = p.lifecycle("RITM0010001").await;
    assert_eq!(row.state, "granted", "reconciliation found the membership");
    let comment = p.comments_starting("RITM0010001", GRANTED).pop().expect("granted comment");
    assert!(comment.contains("observed by reconciliation between"), "{comment}");
    let trace = deskbridge::audit::trace(&p.app.store, "RITM0010001").await.expect("trace");
    assert!(trace.contains("via reconcile"), "{trace}");
    // The baseline read found the seeded leaver, disabled and still in jira-developers.
    let findings = p.findings().await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].0, "identity_disabled_with_access");
    assert!(findings[0].2.starts_with("olga.leaver was disabled"), "{findings:?}");
}

#[tokio::test]
async fn expiry_fires_once_comments_once_and_a_late_revocation_closes_the_finding() {
    let p = ProvApp::start(json!({})).await;
    p.pass().await;
    p.scim.add_to_group("abel.tuter", "jira-developers");
    p.pass().await;
    let row = p.lifecycle("RITM0010001").await;
    expire_now(&p.app.store, &row.decision_id).await;
    p.pass().await;
    p.pass().await;
    assert_eq!(p.lifecycle("RITM0010001").await.state, "expired");
    let expired = p.comments_starting("RITM0010001", EXPIRED);
    assert_eq!(expired.len(), 1, "{:?}", p.comments("RITM0010001"));
    assert!(expired[0].contains("Owner: Atlassian Admins"), "{}", expired[0]);
    let findings = p.findings().await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(
        (findings[0].0.as_str(), findings[0].1.as_str()),
        ("not_revoked_after_expiry", "RITM0010001")
    );

    // The provisioning job "revokes" but the directory forgets: still present, still a finding.
    p.scim.forget_next_revocations(1);
    p.scim.remove_from_group("abel.tuter", "jira-developers");
    p.pass().await;
    assert_eq!(p.findings().await.len(), 1);
    // The real revocation arrives: recorded as late, the finding closes.
    p.scim.remove_from_group("abel.tuter", "jira-developers");
    p.pass().await;
    assert_eq!(p.lifecycle("RITM0010001").await.state, "revoked");
    assert_eq!(p.findings().await, vec![]);
    let trace = deskbridge::audit::trace(&p.app.store, "RITM0010001").await.expect("trace");
    assert!(trace.contains("(after expiry)"), "{trace}");
    assert!(trace.contains("revocation required"), "{trace}");
    assert!(
        trace.contains("finding not_revoked_after_expiry closed by later evidence"),
        "{trace}"
    );
}

#[tokio::test]
async fn expiry_timers_survive_restarts_and_fire_once_across_two_postgres_replicas() {
    let url = deskbridge::store::testing::fresh_postgres_schema().await;
    let app = crate::helpers::TestApp::spawn().await;
    let scim = deskbridge_scim::simulator::Simulator::start(Default::default())
        .await
        .expect("scim");
    let first = deskbridge::store::Store::connect_postgres(&url)
        .await
        .expect("pg")
        .with_holder("replica-a");
    let pipeline = ProvApp::pipeline_on(&app, &scim, first.clone(), json!({}));
    pipeline.run_once().await.expect("decide");
    // A grant reported by an IGA tool, taken in through the store as the endpoint does.
    let (delivery, changes) = deskbridge::provisioning::intake::webhook_changes(
        json!({"id": "g1", "event": "grant", "identity": "abel.tuter", "group": "jira-developers", "at": chrono::Utc::now().to_rfc3339()})
            .to_string()
            .as_bytes(),
        None,
    )
    .expect("body");
    first
        .record_access_delivery("iga", &delivery, &changes, json!({}))
        .await
        .expect("stored");
    pipeline.run_once().await.expect("grant");
    let decision = first
        .lifecycles()
        .await
        .expect("rows")
        .into_iter()
        .find(|r| r.number == "RITM0010001" && r.state == "granted")
        .expect("granted")
        .decision_id;
    expire_now(&first, &decision).await;
    drop(pipeline);

    // "Restart": two new replicas on the same database, both firing due timers at once.
    let a = Arc::new(ProvApp::pipeline_on(&app, &scim, first, json!({})));
    let b_store = deskbridge::store::Store::connect_postgres(&url)
        .await
        .expect("pg")
        .with_holder("replica-b");
    let b = Arc::new(ProvApp::pipeline_on(&app, &scim, b_store.clone(), json!({})));
    let fire = |p: Arc<deskbridge::pipeline::Pipeline>| async move {
        let prov = p.provisioning().expect("provisioning").clone();
        deskbridge::provisioning::engine::fire_due_timers(p.as_ref(), &prov)
            .await
            .expect("timers")
    };
    let (fa, fb) = tokio::join!(fire(a.clone()), fire(b.clone()));
    assert_eq!(fa + fb, 1, "the timer fired once across both replicas");
    assert_eq!(fire(a.clone()).await + fire(b.clone()).await, 0, "and never again");
    let expired: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE kind = 'access_expired'")
        .fetch_one(b_store.pool())
        .await
        .expect("count");
    let comments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE request_hash LIKE '%:expired'")
        .fetch_one(b_store.pool())
        .await
        .expect("count");
    assert_eq!((expired, comments), (1, 1));
    b.run_once().await.expect("post");
    a.run_once().await.expect("post");
    assert_eq!(
        app.journal_of("RITM0010001")
            .iter()
            .filter(|e| e.value.starts_with(EXPIRED))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_lifecycle_comment_whose_answer_is_lost_is_found_by_its_marker_not_posted_twice() {
    use deskbridge_servicenow::simulator::{Fault, Target};
    let p = ProvApp::start(json!({})).await;
    p.pass().await;
    p.scim.add_to_group("abel.tuter", "jira-developers");
    // The "granted" work note lands, and its answer is lost.
    p.app.sim.inject_on(
        Target::route("PATCH", "/api/now/table/sc_req_item/"),
        Fault::AppliedThenStatus(502),
        1,
    );
    let first = p.pass().await;
    assert_eq!(first.failed_posts, 1, "{first:?}");
    for _ in 0..3 {
        p.pass().await;
    }
    assert_eq!(
        p.comments_starting("RITM0010001", GRANTED).len(),
        1,
        "{:?}",
        p.comments("RITM0010001")
    );
    let found: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE kind = 'comment_posted' AND payload LIKE '%\"found_existing\":true%'")
            .fetch_one(p.app.store.pool())
            .await
            .expect("count");
    assert_eq!(found, 1, "found by its marker");
}

#[tokio::test]
async fn report_access_lists_held_access_with_its_decision_and_expiry() {
    let p = ProvApp::start(json!({})).await;
    p.pass().await;
    p.scim.add_to_group("abel.tuter", "jira-developers");
    p.pass().await;
    let row = p.lifecycle("RITM0010001").await;
    let out = crate::helpers::deskbridge()
        .args(["report", "access", "--db"])
        .arg(p.app.db_path())
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text
        .lines()
        .find(|l| l.starts_with("RITM0010001"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("abel.tuter") && line.contains("jira-software/jira-developers (jira-developers)"),
        "{line}"
    );
    assert!(line.contains("granted") && line.contains(&row.decision_id), "{line}");
    assert!(line.contains(&row.expires_at.expect("expiry")[..19]), "{line}");
    let json_out = crate::helpers::deskbridge()
        .args(["report", "access", "--format", "json", "--db"])
        .arg(p.app.db_path())
        .output()
        .expect("run");
    let rows: serde_json::Value = serde_json::from_slice(&json_out.stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    // The admin API gives the same to a viewer, and nothing without a token.
    let url = format!("{}/api/reports/access", p.base);
    assert_eq!(p.http.get(&url).send().await.expect("get").status().as_u16(), 401);
    let api: serde_json::Value = p
        .http
        .get(format!("{url}?all=true"))
        .bearer_auth(&p.tokens.viewer)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let held = api
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["number"] == "RITM0010001")
        .expect("row");
    assert_eq!(
        (held["state"].as_str(), held["decision_id"].as_str()),
        (Some("granted"), Some(row.decision_id.as_str()))
    );
}

/// RITM0010001 approved and its grant seen: abel.tuter holds jira-developers under its decision.
async fn held_access() -> (ProvApp, deskbridge::store::lifecycle::LifecycleRow) {
    let p = ProvApp::start(json!({"fulfil_within_hours": 0})).await;
    p.pass().await;
    p.scim.add_to_group("abel.tuter", "jira-developers");
    p.pass().await;
    let first = p.lifecycle("RITM0010001").await;
    assert_eq!(first.state, "granted");
    (p, first)
}

#[tokio::test]
async fn a_later_approval_of_access_already_held_extends_it_without_a_false_finding() {
    let (p, first) = held_access().await;
    // The ticket asks for a shorter time now: decided again, approved, and the access continues
    // under the new decision from now.
    let key = p.app.sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    // The test connector reads with no lag window: the change must land in a later second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    p.app.sim.set_variable(&key, "access_duration", "30 days");
    p.app.sim.update("sc_req_item", &key, &[]);
    p.pass().await;
    p.pass().await;
    let rows: Vec<_> = p.lifecycles().await.into_iter().filter(|r| r.number == "RITM0010001").collect();
    let old = rows.iter().find(|r| r.decision_id == first.decision_id).expect("first");
    let new = rows.iter().find(|r| r.decision_id != first.decision_id).expect("second");
    assert_eq!((old.state.as_str(), new.state.as_str()), ("extended", "granted"));
    let granted = chrono::DateTime::parse_from_rfc3339(new.granted_at.as_deref().expect("granted")).expect("time");
    let expires = chrono::DateTime::parse_from_rfc3339(new.expires_at.as_deref().expect("expires")).expect("time");
    assert_eq!((expires - granted).num_days(), 30);
    let findings = p.findings().await;
    assert!(
        findings
            .iter()
            .all(|(kind, ticket, _)| !(kind == "approved_not_fulfilled" && ticket == "RITM0010001")),
        "{findings:?}"
    );
    let trace = deskbridge::audit::trace(&p.app.store, "RITM0010001").await.expect("trace");
    assert!(trace.contains("via extension"), "{trace}");
}

#[tokio::test]
async fn approvals_of_access_already_held_in_one_batch_extend_one_another_in_order() {
    let (p, first) = held_access().await;
    // Thirteen more requests, decided in one batch: every sixth asks what RITM0010001 asked, for
    // the same person, so the batch holds several approvals of access already held. Each must
    // see the one recorded before it (the batch reads these facts once and keeps them current).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // Generated items are stamped before the poll's cursor: touched, they are changed now.
    for number in p.app.sim.generate(13) {
        let key = p.app.sim.sys_id_of("sc_req_item", &number).expect("generated");
        p.app.sim.update("sc_req_item", &key, &[]);
    }
    p.pass().await;
    let same: Vec<_> = p
        .lifecycles()
        .await
        .into_iter()
        .filter(|r| r.beneficiary == first.beneficiary && r.group_name == first.group_name)
        .collect();
    assert!(same.len() >= 3, "the batch approved the held access at least twice: {same:?}");
    let granted: Vec<_> = same.iter().filter(|r| r.state == "granted").collect();
    let extended = same.iter().filter(|r| r.state == "extended").count();
    assert_eq!((granted.len(), extended), (1, same.len() - 1), "{same:?}");
    assert_ne!(granted[0].decision_id, first.decision_id);
    // Each grant extends exactly the one before it, in the order the batch recorded them.
    let grants: Vec<serde_json::Value> =
        sqlx::query_scalar::<_, String>("SELECT payload FROM audit WHERE kind = 'access_granted' ORDER BY seq")
            .fetch_all(p.app.store.pool())
            .await
            .expect("audit")
            .iter()
            .map(|t| serde_json::from_str(t).expect("json"))
            .filter(|g: &serde_json::Value| g["via"] == "extension" && g["group"] == first.group_name.as_str())
            .collect();
    assert_eq!(grants.len(), same.len() - 1, "{grants:?}");
    let mut holder = first.decision_id.clone();
    for grant in &grants {
        assert_eq!(grant["extends"], json!([holder]), "{grants:?}");
        holder = grant["decision_id"].as_str().expect("id").to_owned();
    }
    assert_eq!(holder, granted[0].decision_id);
}

#[tokio::test]
async fn an_iga_grant_naming_its_ticket_is_matched_to_that_ticket_not_the_latest_approval() {
    let p = ProvApp::start(json!({})).await;
    // A second Jira developers request for abel.tuter, approved after RITM0010001.
    let numbers = p.app.sim.generate(1);
    p.pass().await;
    let (older, newer) = (p.lifecycle("RITM0010001").await, p.lifecycle(&numbers[0]).await);
    assert_eq!((older.state.as_str(), newer.state.as_str()), ("approved", "approved"));
    assert!(newer.approved_at > older.approved_at);
    let (status, _) = p
        .iga(
            &json!({"id": "iga-t", "event": "grant", "identity": "abel.tuter", "group": "jira-developers",
                      "at": chrono::Utc::now().to_rfc3339(), "ticket": "RITM0010001"}),
        )
        .await;
    assert_eq!(status, 202);
    p.pass().await;
    assert_eq!(p.lifecycle("RITM0010001").await.state, "granted", "the ticket it names");
    assert_eq!(p.lifecycle(&numbers[0]).await.state, "approved");
}

#[tokio::test]
async fn a_directory_outage_holds_changes_in_order_shows_on_status_and_loses_nothing() {
    use deskbridge_scim::simulator::{Fault, Target};
    let p = ProvApp::start(json!({})).await;
    p.pass().await;
    p.scim.add_to_group("abel.tuter", "jira-developers");
    p.scim.flush_events().await;
    // The SET is stored; resolving its user id fails while the directory is down.
    p.scim.inject_on(Target::path(Some("/Users/")), Fault::Status(503), 50);
    p.pipeline.run_once().await.expect("pass");
    let status = |p: &ProvApp| {
        let request = p.http.get(format!("{}/status", p.base)).bearer_auth(&p.tokens.viewer).send();
        async move { request.await.expect("status").json::<serde_json::Value>().await.expect("json") }
    };
    let down = status(&p).await;
    assert_eq!(down["provisioning"]["waiting"], 1, "{down}");
    assert!(down["provisioning"]["blocked"].as_str().is_some_and(|b| !b.is_empty()), "{down}");
    assert_eq!(p.lifecycle("RITM0010001").await.state, "approved");
    p.scim.clear_faults();
    p.pass().await;
    let up = status(&p).await;
    assert_eq!(
        (up["provisioning"]["waiting"].as_i64(), up["provisioning"]["blocked"].is_null()),
        (Some(0), true),
        "{up}"
    );
    assert_eq!(up["provisioning"]["sources"], json!(["iga", "scim"]));
    assert_eq!(p.lifecycle("RITM0010001").await.state, "granted");
}
