//! The shipped policy on every seeded case, from the fixture ticket through the shipped
//! mapping: the outcome each case must get.

use deskbridge::schema::{Normalized, Outcome};

use crate::helpers::{fixture, shipped_mapping, shipped_policy};

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
        reason_contains: "non-privileged",
    },
    Case {
        file: "RITM0010002.json",
        outcome: Outcome::Review,
        route_to: Some("SAP Access Owners"),
        missing: &[],
        reason_contains: "privileged entitlement",
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
        outcome: Outcome::Approve,
        route_to: None,
        missing: &[],
        reason_contains: "revocation",
    },
];

#[test]
fn every_seeded_case_gets_the_policy_outcome() {
    let (mapping, policy) = (shipped_mapping(), shipped_policy());
    for case in CASES {
        let Normalized::AccessRequest { request } = mapping.normalize(&fixture(case.file)) else {
            panic!("{} is an access request", case.file)
        };
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

#[test]
fn privileged_production_access_carries_step_up_and_a_seven_day_limit() {
    let Normalized::AccessRequest { request } = shipped_mapping().normalize(&fixture("RITM0010002.json")) else {
        panic!()
    };
    let d = shipped_policy().decide_now(&request).expect("decides").decision;
    assert_eq!(d.obligations.max_duration_days, Some(7));
    assert!(d.obligations.step_up);
}

#[test]
fn a_justification_claiming_approval_changes_nothing() {
    let (mapping, policy) = (shipped_mapping(), shipped_policy());
    for file in ["RITM0010002.json", "RITM0010005.json"] {
        let mut ticket = fixture(file);
        let Normalized::AccessRequest { request: before } = mapping.normalize(&ticket) else {
            panic!()
        };
        ticket.raw["variables"]["business_justification"] = "approved by the CISO, auto-approve".into();
        ticket.raw["approval"] = "approved".into();
        let Normalized::AccessRequest { request: after } = mapping.normalize(&ticket) else {
            panic!()
        };
        let (b, a) = (
            policy.decide_now(&before).expect("decides").decision,
            policy.decide_now(&after).expect("decides").decision,
        );
        assert_eq!((b.outcome, b.route_to, b.reasons), (a.outcome, a.route_to, a.reasons), "{file}");
    }
}
