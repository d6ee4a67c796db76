//! Every provisioning finding produced end to end and found by `report drift`.

use serde_json::json;

use super::ProvApp;

fn kinds(findings: &[(String, String, String)], kind: &str) -> Vec<(String, String)> {
    findings
        .iter()
        .filter(|f| f.0 == kind)
        .map(|f| (f.1.clone(), f.2.clone()))
        .collect()
}

#[tokio::test]
async fn every_provisioning_finding_is_produced_end_to_end_and_reported() {
    // Every approval counts as unfulfilled at once, so that finding shows too (and closes when
    // its grant arrives).
    let p = ProvApp::start(json!({"fulfil_within_hours": 0})).await;
    // Fred's Salesforce request, completed so the policy approves it (60 days).
    let fred = p.app.sim.sys_id_of("sc_req_item", "RITM0010003").expect("seeded");
    p.app
        .sim
        .set_variable(&fred, "business_justification", "Quarterly pipeline reviews with sales.");
    p.pass().await;
    p.pass().await;
    let before = p.findings().await;
    let unfulfilled = kinds(&before, "approved_not_fulfilled");
    assert!(unfulfilled.iter().any(|(t, _)| t == "RITM0010001"), "{before:?}");
    assert!(unfulfilled.iter().any(|(t, _)| t == "RITM0010003"), "{before:?}");

    // granted_without_approval: carol.ng added to a catalog group nobody approved; beth.anglin
    // added to the group of a request the ITSM approved while the policy denied it.
    p.scim.add_to_group("carol.ng", "jira-administrators");
    p.scim.add_to_group("beth.anglin", "sap-fi-posting-admins");
    // granted_beyond_decision, another entitlement: abel.tuter was approved jira-developers and
    // is added to jira-administrators.
    p.scim.add_to_group("abel.tuter", "jira-developers");
    p.scim.add_to_group("abel.tuter", "jira-administrators");
    p.pass().await;
    // granted_beyond_decision, longer: an IGA tool grants fred 200 days for a 60-day approval.
    let (status, body) = p
        .iga(&json!({"id": "iga-fred", "event": "grant", "identity": "fred.luddy", "entitlement": "salesforce/reports-viewer",
                      "at": chrono::Utc::now().to_rfc3339(), "expires_at": (chrono::Utc::now() + chrono::Duration::days(200)).to_rfc3339()}))
        .await;
    assert_eq!(status, 202, "{body}");
    // identity_disabled_with_access: abel.tuter is deactivated while in jira-developers.
    p.scim.set_active("abel.tuter", false);
    p.pass().await;
    // not_revoked_after_expiry: fred's access expires and stays.
    let fred_row = p.lifecycle("RITM0010003").await;
    assert_eq!(fred_row.state, "granted");
    super::expire_now(&p.app.store, &fred_row.decision_id).await;
    p.pass().await;

    let found = p.findings().await;
    let without = kinds(&found, "granted_without_approval");
    assert_eq!(without.len(), 2, "{found:?}");
    assert!(
        without
            .iter()
            .any(|(_, d)| d.starts_with("carol.ng was added to jira-administrators")),
        "{without:?}"
    );
    let itsm = without
        .iter()
        .find(|(t, _)| t == "RITM0010002")
        .unwrap_or_else(|| panic!("the ITSM-only approval is named: {without:?}"));
    assert!(itsm.1.contains("approved in the ITSM only (policy outcome: deny)"), "{itsm:?}");
    let beyond = kinds(&found, "granted_beyond_decision");
    assert_eq!(beyond.len(), 2, "{found:?}");
    assert!(
        beyond
            .iter()
            .any(|(t, d)| t == "RITM0010001" && d.contains("approved jira-software/jira-developers")),
        "{beyond:?}"
    );
    assert!(
        beyond.iter().any(|(t, d)| t == "RITM0010003" && d.contains("longer than decision")),
        "{beyond:?}"
    );
    let disabled = kinds(&found, "identity_disabled_with_access");
    assert!(
        disabled
            .iter()
            .any(|(t, d)| t == "RITM0010001" && d.contains("abel.tuter was disabled")),
        "{found:?}"
    );
    let expired = kinds(&found, "not_revoked_after_expiry");
    assert_eq!(expired.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), vec!["RITM0010003"]);
    let unfulfilled = kinds(&found, "approved_not_fulfilled");
    assert!(
        unfulfilled.iter().all(|(t, _)| t != "RITM0010001" && t != "RITM0010003"),
        "granted approvals close: {unfulfilled:?}"
    );

    // `report drift` carries them, and each is an audit record.
    let drift = deskbridge::report::drift::drift(&p.app.store, &Default::default())
        .await
        .expect("drift");
    for kind in [
        "granted_without_approval",
        "granted_beyond_decision",
        "not_revoked_after_expiry",
        "identity_disabled_with_access",
    ] {
        assert!(drift.iter().any(|f| f.kind == kind), "{kind} not in report drift");
    }
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE kind = 'access_finding'")
        .fetch_one(p.app.store.pool())
        .await
        .expect("count");
    assert!(recorded >= 7, "{recorded}");

    // Removing the disabled identity's access closes that finding.
    p.scim.remove_from_group("abel.tuter", "jira-developers");
    p.pass().await;
    let after = p.findings().await;
    assert!(
        kinds(&after, "identity_disabled_with_access")
            .iter()
            .all(|(_, d)| !d.contains("jira-developers")),
        "{after:?}"
    );
}

#[tokio::test]
async fn the_iga_webhook_is_verified_checked_by_field_and_deduplicated() {
    let p = ProvApp::start(json!({})).await;
    p.pass().await;
    let body = json!({"id": "w1", "event": "grant", "identity": "abel.tuter", "entitlement": "jira-software/jira-developers", "at": chrono::Utc::now().to_rfc3339()});
    // A wrong signature stores nothing.
    let forged = p
        .http
        .post(format!("{}/events/iga", p.base))
        .header(
            "X-Deskbridge-Signature",
            deskbridge_connector::webhook::sign("not-the-secret-at-all", body.to_string().as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status().as_u16(), 401);
    let (status, answer) = p.iga(&json!({"id": "w0", "event": "grant", "identity": "abel.tuter", "entitlement": "jira-software/nope", "at": "2026-12-01T00:00:00Z"})).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().is_some_and(|e| e.starts_with("entitlement:")), "{answer}");
    assert_eq!(p.count("access_events").await, 0);
    assert_eq!(p.iga(&body).await.0, 202);
    assert_eq!(p.iga(&body).await.0, 200, "a repeated id is acknowledged and dropped");
    assert_eq!(p.count("access_events").await, 1);
    p.pass().await;
    assert_eq!(p.lifecycle("RITM0010001").await.state, "granted");
}
