//! The shipped policy on every seeded case, from the fixture ticket through the shipped
//! mapping and enrichment with the example catalog and directory: the outcome each case must
//! get.

use deskbridge::schema::{AccessRequest, Normalized, Outcome};

use crate::helpers::{example_enricher, fixture, shipped_mapping, shipped_policy};

/// The fixture's request, with the example catalog's and directory's facts.
async fn enriched(file: &str, ticket: Option<deskbridge_connector::Ticket>) -> AccessRequest {
    let ticket = ticket.unwrap_or_else(|| fixture(file));
    let Normalized::AccessRequest { request } = shipped_mapping().normalize(&ticket) else {
        panic!("{file} is an access request")
    };
    let mut request = *request;
    example_enricher().enrich(&mut request).await.expect("enriches");
    request
}

struct Case {
    file: &'static str,
    outcome: Outcome,
    route_to: Option<&'static str>,
    missing: &'static [&'static str],
    reason_contains: &'static str,
}

const CASES: &[Case] = &[
    Case {
        file: "RITM0010001.json",
        outcome: Outcome::Approve,
        route_to: None,
        missing: &[],
        reason_contains: "standard entitlement outside production",
    },
    Case {
        file: "RITM0010002.json",
        outcome: Outcome::Deny,
        route_to: None,
        missing: &[],
        reason_contains: "conflicts with sap-erp/FI_PAYMENT_RELEASE, which beth.anglin already holds",
    },
    Case {
        file: "RITM0010003.json",
        outcome: Outcome::NeedsInfo,
        route_to: None,
        missing: &["justification"],
        reason_contains: "justification",
    },
    Case {
        file: "RITM0010004.json",
        outcome: Outcome::NeedsInfo,
        route_to: None,
        missing: &["nhi.expires_at", "nhi.owner"],
        reason_contains: "nhi.owner",
    },
    Case {
        file: "RITM0010005.json",
        outcome: Outcome::Review,
        route_to: Some("HR Systems Owners"),
        missing: &[],
        reason_contains: "separation of duties",
    },
    Case {
        file: "RITM0010006.json",
        outcome: Outcome::Review,
        route_to: Some("Platform Engineering Leads"),
        missing: &[],
        reason_contains: "revocation asked by someone other than",
    },
];

#[tokio::test]
async fn every_seeded_case_gets_the_policy_outcome() {
    let policy = shipped_policy();
    for case in CASES {
        let request = enriched(case.file, None).await;
        let decided = policy.decide_now(&request).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let d = &decided.decision;
        assert_eq!(d.outcome, case.outcome, "{}: {:?}", case.file, d.reasons);
        assert_eq!(d.route_to.as_deref(), case.route_to, "{}", case.file);
        assert_eq!(d.missing, case.missing, "{}", case.file);
        assert!(
            d.reasons.iter().any(|r| r.contains(case.reason_contains)),
            "{}: {:?}",
            case.file,
            d.reasons
        );
        assert_eq!(d.policy_id, "deskbridge.access");
    }
}

#[tokio::test]
async fn privileged_production_access_carries_step_up_and_a_seven_day_limit() {
    // Beth holds no conflicting entitlement in this directory.
    let dir = tempfile::tempdir().expect("dir");
    let export = dir.path().join("d.csv");
    std::fs::write(
        &export,
        "userName,email,active,manager,groups\nbeth.anglin,beth.anglin@example.com,true,david.loo,\ndavid.loo,,true,,\n",
    )
    .expect("write");
    let directory = std::sync::Arc::new(deskbridge::directory::file::FileDirectory::load(&export).expect("export"));
    let Normalized::AccessRequest { request } = shipped_mapping().normalize(&fixture("RITM0010002.json")) else {
        panic!()
    };
    let mut request = *request;
    crate::helpers::enricher_with(directory)
        .enrich(&mut request)
        .await
        .expect("enriches");
    let d = shipped_policy().decide_now(&request).expect("decides").decision;
    assert_eq!(d.outcome, Outcome::Review, "{:?}", d.reasons);
    assert_eq!(d.route_to.as_deref(), Some("SAP Access Owners"));
    assert_eq!(d.obligations.max_duration_days, Some(7));
    assert!(d.obligations.step_up);
}

#[tokio::test]
async fn a_justification_claiming_approval_changes_nothing() {
    let policy = shipped_policy();
    for file in ["RITM0010002.json", "RITM0010005.json"] {
        let mut ticket = fixture(file);
        let before = enriched(file, Some(ticket.clone())).await;
        ticket.raw["variables"]["business_justification"] = "approved by the CISO, auto-approve".into();
        ticket.raw["approval"] = "approved".into();
        let after = enriched(file, Some(ticket)).await;
        let (b, a) = (
            policy.decide_now(&before).expect("decides").decision,
            policy.decide_now(&after).expect("decides").decision,
        );
        assert_eq!((b.outcome, b.route_to, b.reasons), (a.outcome, a.route_to, a.reasons), "{file}");
    }
}
