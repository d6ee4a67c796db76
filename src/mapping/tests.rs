use super::*;
use chrono::Utc;
use serde_json::json;

const MINIMAL: &str = r#"
[mapping]
name = "t"
version = "1"

[fields]
kind = { path = "type", map = { "New" = "grant" } }
"requester.id" = { path = "who" }
"beneficiary.id" = { paths = ["for", "who"] }
"target.system" = { path = "app" }
"target.environment" = { path = "env", default = "prod" }
"entitlement.id" = { path = "role" }
duration_days = { path = "duration", regex = "^(\\d+) days$" }
"entitlement.privileged" = { path = "admin", default = false }
"#;

fn ticket(raw: serde_json::Value) -> Ticket {
    Ticket {
        source: "c".into(),
        key: "k".into(),
        number: "N1".into(),
        url: "https://x/k".into(),
        updated: Utc::now(),
        version: "1".into(),
        raw,
    }
}

#[test]
fn a_complete_ticket_becomes_an_access_request_with_defaults_and_fallbacks() {
    let m = Mapping::parse(MINIMAL, "t.toml").expect("valid");
    let n = m.normalize(&ticket(
        json!({"type": "new", "who": "ann", "app": "sap", "role": "r", "duration": "30 days"}),
    ));
    let Normalized::AccessRequest { request } = n else {
        panic!("{n:?}")
    };
    assert_eq!(request.beneficiary.id, "ann", "falls back to the second path");
    assert_eq!(request.duration_days, Some(30));
    assert_eq!(request.target.environment, crate::schema::Environment::Prod);
    assert!(!request.entitlement.privileged);
}

#[test]
fn every_missing_or_invalid_field_is_reported_at_once() {
    let m = Mapping::parse(MINIMAL, "t.toml").expect("valid");
    let n = m.normalize(&ticket(
        json!({"type": "Borrow", "app": "", "role": "r", "duration": "a while", "admin": "maybe"}),
    ));
    let Normalized::Incomplete { problems, .. } = n else {
        panic!("{n:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "beneficiary.id",
            "duration_days",
            "entitlement.privileged",
            "kind",
            "requester.id",
            "target.system"
        ]
    );
    let kind = problems.iter().find(|p| p.field == "kind").expect("kind");
    assert!(kind.reason.contains("\"Borrow\" is not a mapped value"), "{}", kind.reason);
}

#[test]
fn a_bad_mapping_fails_at_load_naming_file_line_and_key() {
    let bad = MINIMAL
        .replace(
            r#"duration_days = { path = "duration", regex = "^(\\d+) days$" }"#,
            r#"duration_days = { path = "duration", regex = "(" }"#,
        )
        .replace(
            r#""entitlement.id" = { path = "role" }"#,
            r#""entitlement.idd" = { path = "role" }"#,
        );
    let err = Mapping::parse(&bad, "bad.toml").expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("bad.toml:12: fields.\"entitlement.idd\": unknown field"), "{text}");
    assert!(text.contains("bad.toml:13: fields.\"duration_days\": invalid regex"), "{text}");
    assert!(text.contains("no mapping for required field \"entitlement.id\""), "{text}");
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let err = Mapping::parse("[mapping]\nname = \n", "broken.toml").expect_err("invalid");
    assert!(
        err.to_string().contains("broken.toml") && err.to_string().contains("line 2"),
        "{err}"
    );
}

#[test]
fn a_map_value_that_is_not_a_schema_value_fails_at_load() {
    let bad = MINIMAL.replace(r#"map = { "New" = "grant" }"#, r#"map = { "New" = "gift" }"#);
    let err = Mapping::parse(&bad, "t.toml").expect_err("invalid");
    assert!(err.to_string().contains("\"gift\" is not one of grant"), "{err}");
}

#[test]
fn the_shipped_servicenow_mapping_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/servicenow/sc_req_item.toml");
    let m = Mapping::load(&path).expect("shipped mapping is valid");
    assert_eq!(m.name, "servicenow-sc_req_item");
}
