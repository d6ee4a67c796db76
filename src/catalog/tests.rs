use super::*;

fn example() -> Catalog {
    Catalog::load(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/catalog.toml")).expect("the example loads")
}

#[test]
fn requesters_words_resolve_to_catalog_entries() {
    let c = example();
    let r = c.resolve("SAP  erp", "fi posting ADMIN");
    assert_eq!(r.system.as_ref().map(|s| s.id.as_str()), Some("sap-erp"));
    let e = r.entitlement.expect("known");
    assert_eq!(
        (e.id.as_str(), e.tier, e.max_duration_days),
        ("FI_POSTING_ADMIN", Tier::Privileged, 7)
    );
    assert_eq!(r.owner, "SAP Access Owners");
    assert!(r.catalog.starts_with("2026.12.1 (sha256:"), "{}", r.catalog);
    let unknown = c.resolve("mainframe", "SYSADM");
    assert!(unknown.system.is_none() && unknown.entitlement.is_none());
    assert_eq!(unknown.owner, "IAM Governance");
    let no_such_role = c.resolve("github", "enterprise-owner");
    assert!(no_such_role.system.is_some() && no_such_role.entitlement.is_none());
    assert_eq!(no_such_role.owner, "Platform Engineering Leads");
}

#[test]
fn a_conflict_declared_on_one_side_binds_both() {
    let c = example();
    let release = c.resolve("sap-erp", "FI_PAYMENT_RELEASE").entitlement.expect("known");
    assert!(release
        .conflicts
        .iter()
        .any(|x| x.with == "sap-erp/FI_POSTING_ADMIN" && !x.mitigable));
    let preparer = c.resolve("workday", "payroll-preparer").entitlement.expect("known");
    assert!(preparer
        .conflicts
        .iter()
        .any(|x| x.with == "workday/payroll-approver" && x.mitigable));
    assert_eq!(c.entitlements_of_group("SAP-FI-POSTING-ADMINS"), vec!["sap-erp/FI_POSTING_ADMIN"]);
}

#[test]
fn every_problem_is_reported_with_file_line_and_key() {
    let text = r#"version = "1"
default_owner = "IAM"

[[systems]]
id = "sap"
aliases = ["SAP"]
environment = "production"
owner = ""

[[systems.entitlements]]
id = "A"
max_duration_days = 0
conflicts = ["sap/NOPE"]
group = "g"

[[systems.entitlements]]
id = "B"
aliases = ["a"]
group = "G"

[[systems]]
id = "other"
aliases = ["sap"]
environment = "dev"
owner = "Other Owners"
"#;
    let err = parse(text, "cat.toml").expect_err("invalid").to_string();
    for needle in [
        "cat.toml:7: systems[0] (sap).environment: \"production\" is not one of prod, staging, test, dev",
        "cat.toml:8: systems[0] (sap).owner: must name a control-owner group",
        "cat.toml:12: systems[0] (sap).entitlements[0] (A).max_duration_days: must be at least 1",
        "cat.toml:11: systems[0] (sap).entitlements[0] (A).conflicts: \"sap/NOPE\" is not",
        "cat.toml:18: systems[0] (sap).entitlements[1] (B): \"a\" already names entitlement \"A\"",
        "cat.toml:19: systems[0] (sap).entitlements[1] (B).group: \"G\" already represents sap/A",
        "cat.toml:23: systems[1] (other): \"sap\" already names system \"sap\"",
    ] {
        assert!(err.contains(needle), "{needle:?} in\n{err}");
    }
    assert!(err.contains("has 7 problem(s)"), "{err}");
    let syntax = parse("version = \"1\"\ndefault_owner = \"x\"\n[[systems]]\nid = 3\n", "s.toml")
        .expect_err("bad type")
        .to_string();
    assert!(syntax.contains("s.toml:4:"), "{syntax}");
}
