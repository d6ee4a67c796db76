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

/// Fixtures downloaded from the console's mapping playground (`Download fixture`): a ticket, the
/// name of the mapping it was tried with, and what that mapping made of it. Each must still
/// normalize the same way through the shipped mapping of that name. (The outcome and comment
/// they record depend on the deployment's catalog, directory and clock; they are kept for the
/// reader.)
#[test]
fn every_playground_fixture_still_normalizes_as_expected() {
    let dir = crate::helpers::root().join("tests/fixtures/expected");
    let mut shipped = Vec::new();
    for folder in ["mappings/servicenow", "mappings/jira"] {
        for entry in std::fs::read_dir(crate::helpers::root().join(folder)).expect("mappings") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                shipped.push(deskbridge::mapping::Mapping::load(&path).expect("shipped mapping"));
            }
        }
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures/expected") {
        let path = entry.expect("entry").path();
        let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        let name = fixture["mapping"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no mapping name", path.display()));
        let mapping = shipped
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{}: no shipped mapping named {name:?}", path.display()));
        let ticket = deskbridge::mapping::ticket_from_value(fixture["ticket"].clone(), "fixture").expect("ticket");
        let normalized = serde_json::to_value(mapping.normalize(&ticket)).expect("json");
        assert_eq!(normalized, fixture["expected"]["normalized"], "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 1, "no fixture in {}", dir.display());
}
