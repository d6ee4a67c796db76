//! Each fixture ticket through the shipped mapping, snapshotted: a mapping change shows its
//! effect in review.

use deskbridge::schema::Normalized;

use crate::helpers::{fixtures, read_ticket, shipped_mapping};

#[test]
fn every_fixture_normalizes_as_snapshotted() {
    let mapping = shipped_mapping();
    for path in fixtures() {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name").to_owned();
        let normalized = mapping.normalize(&read_ticket(&path));
        insta::assert_json_snapshot!(format!("normalized-{name}"), normalized);
    }
}

#[test]
fn the_incomplete_fixture_reports_every_missing_and_invalid_field() {
    let normalized = shipped_mapping().normalize(&crate::helpers::fixture("incomplete-RITM0019001.json"));
    let Normalized::Incomplete { problems, .. } = normalized else {
        panic!("{normalized:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["duration_days", "entitlement.id", "requester.id", "target.environment"]
    );
    assert!(
        problems[3].reason.contains("\"Moon base\" is not a mapped value"),
        "{:?}",
        problems[3]
    );
}

#[test]
fn the_support_ticket_is_not_an_access_request() {
    let normalized = shipped_mapping().normalize(&crate::helpers::fixture("RITM0010007.json"));
    assert!(matches!(normalized, Normalized::NotAnAccessRequest { .. }), "{normalized:?}");
}
