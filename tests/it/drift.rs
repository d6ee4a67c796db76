//! The drift report: each case seeded and found; clean data yields no finding.

use std::sync::Arc;
use std::time::Duration;

use deskbridge::report::drift::{drift, drift_of, render, Format, Options};

use crate::helpers::{policy_from_text, TestApp};

fn kinds_for(findings: &[deskbridge::report::drift::Finding], ticket: &str) -> Vec<&'static str> {
    findings
        .iter()
        .filter(|f| f.ticket.split(' ').any(|t| t == ticket))
        .map(|f| f.kind)
        .collect()
}

#[tokio::test]
async fn each_drift_case_is_found() {
    let app = TestApp::spawn().await;
    app.sim.generate(13);
    let pipeline = app.pipeline();
    pipeline.run_once().await.expect("pass");
    // The ITSM disagrees with the policy: an approved request rejected, a needs-info closed.
    let rejected = app.sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    app.sim.update("sc_req_item", &rejected, &[("approval", "rejected")]);
    let closed = app.sim.sys_id_of("sc_req_item", "RITM0010003").expect("seeded");
    app.sim.update("sc_req_item", &closed, &[("state", "3")]);
    pipeline.run_once().await.expect("pass");

    let findings = drift(&app.store, &Options::default()).await.expect("report");
    assert!(kinds_for(&findings, "RITM0010002").contains(&"itsm_approval_disagrees_with_decision"));
    assert!(kinds_for(&findings, "RITM0010003").contains(&"approved_in_itsm_without_policy_approve"));
    assert!(!kinds_for(&findings, "RITM0010006").contains(&"approved_in_itsm_without_policy_approve"));
    assert!(kinds_for(&findings, "RITM0010001").contains(&"itsm_approval_disagrees_with_decision"));
    assert!(kinds_for(&findings, "RITM0010005").contains(&"requester_is_approver"));
    assert!(kinds_for(&findings, "RITM0010004").contains(&"nhi_without_owner_or_expiry"));
    let repeated = findings
        .iter()
        .find(|f| f.kind == "repeated_request" && f.ticket.contains("RITM0010001"))
        .expect("repeated request");
    assert!(
        repeated
            .detail
            .contains("abel.tuter asked for jira-developers on jira-software 4 times"),
        "{}",
        repeated.detail
    );
    assert!(findings
        .iter()
        .all(|f| f.kind != "pending_beyond_sla" && f.kind != "approved_without_expiry"));
    // The report streams the tickets' states (serve counts its findings every few minutes,
    // and must not hold every ticket at once); it finds what the same states read whole give.
    let states = app.store.ticket_states().await.expect("states");
    assert!(states.len() > 13, "{}", states.len());
    assert_eq!(drift_of(&app.store, &states, &Options::default()).await.expect("report"), findings);
}

#[tokio::test]
async fn late_requests_and_approvals_without_expiry_are_found() {
    let app = TestApp::spawn().await;
    let broken = "package deskbridge.access\ndecision := {\"outcome\": \"approve\"}\n";
    app.pipeline_with(Arc::new(policy_from_text(broken)))
        .run_once()
        .await
        .expect("pass");
    let late = Options {
        sla: Duration::ZERO,
        ..Options::default()
    };
    let findings = drift(&app.store, &late).await.expect("report");
    let pending: Vec<&str> = findings
        .iter()
        .filter(|f| f.kind == "pending_beyond_sla")
        .map(|f| f.ticket.as_str())
        .collect();
    assert_eq!(pending.len(), 6, "{findings:?}");
    assert!(drift(&app.store, &Options::default())
        .await
        .expect("report")
        .iter()
        .all(|f| f.kind != "pending_beyond_sla"));

    let lax = "package deskbridge.access\ndecision := {\"outcome\": \"approve\", \"reasons\": [\"everything goes\"]}\n";
    app.pipeline_with(Arc::new(policy_from_text(lax))).run_once().await.expect("pass");
    let findings = drift(&app.store, &Options::default()).await.expect("report");
    let no_expiry: Vec<&str> = findings
        .iter()
        .filter(|f| f.kind == "approved_without_expiry")
        .map(|f| f.ticket.as_str())
        .collect();
    // RITM0010004 asks for no duration; the revoke (RITM0010006) needs none.
    assert_eq!(no_expiry, vec!["RITM0010004"], "{findings:?}");
}

#[tokio::test]
async fn clean_data_yields_no_finding() {
    let app = TestApp::spawn_empty().await;
    // The first generated kind: complete, approved by the policy and in the ITSM, with a
    // duration (the second is approved in the ITSM and denied by the policy: drift).
    app.sim.generate(1);
    let report = app.pipeline().run_once().await.expect("pass");
    assert_eq!(report.decided, 1);
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM decisions")
        .fetch_one(app.store.pool())
        .await
        .expect("decision");
    assert_eq!(outcome, "approve", "a decided request, not an incomplete one");
    let findings = drift(&app.store, &Options::default()).await.expect("report");
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(render(&findings, Format::Table).expect("table"), "no drift found\n");
    assert_eq!(render(&findings, Format::Json).expect("json").trim(), "[]");
    assert_eq!(render(&findings, Format::Csv).expect("csv"), "kind,connector,ticket,detail\n");
}
