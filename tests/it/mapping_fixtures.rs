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

#[test]
fn every_jsm_fixture_normalizes_as_snapshotted() {
    let mapping = deskbridge::mapping::Mapping::load(&crate::helpers::root().join("mappings/jira/service-management-access.toml"))
        .expect("JSM mapping");
    let dir = crate::helpers::root().join("tests/fixtures/jira");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 7);
    for path in files {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name").to_owned();
        let normalized = mapping.normalize(&read_ticket(&path));
        insta::assert_json_snapshot!(format!("normalized-jira-{name}"), normalized);
    }
}

#[test]
fn the_software_mapping_reads_an_access_request_issue_and_ignores_other_types() {
    let mapping =
        deskbridge::mapping::Mapping::load(&crate::helpers::root().join("mappings/jira/software-access.toml")).expect("software mapping");
    let mut ticket = read_ticket(&crate::helpers::root().join("tests/fixtures/jira/ACC-1.json"));
    ticket.raw["fields"]["issuetype"]["name"] = "Access request".into();
    ticket.raw["fields"]["status"]["name"] = "To Do".into();
    let Normalized::AccessRequest { request, .. } = mapping.normalize(&ticket) else {
        panic!("an access request")
    };
    assert_eq!(request.entitlement.id, "jira-developers");
    assert_eq!(serde_json::to_value(request.target.environment).expect("json"), "staging");
    assert_eq!(request.duration_days, Some(90));
    ticket.raw["fields"]["issuetype"]["name"] = "Bug".into();
    assert!(matches!(mapping.normalize(&ticket), Normalized::NotAnAccessRequest { .. }));
}
