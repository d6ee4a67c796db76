//! The directory behind the ITSM simulators' seeds: every demo requester, beneficiary and
//! approver exists (user names as ServiceNow has them, e-mails as Jira has them); one leaver;
//! one person already holding an entitlement that conflicts with what they ask for; and the
//! owner of a service account who has left.

use serde_json::{json, Value};

use super::{new_id, Db};

/// A person who left: inactive.
pub const LEAVER: &str = "olga.leaver";
/// A service-account owner who left: inactive.
pub const NHI_OWNER_WHO_LEFT: &str = "nick.owner";
/// Holds `sap-fi-payment-release`, which conflicts with the `FI_POSTING_ADMIN` she requests.
pub const SOD_HOLDER: &str = "beth.anglin";

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// `(user name, display name, department, manager, active, groups)`.
type Person = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    bool,
    &'static [&'static str],
);

const PEOPLE: &[Person] = &[
    ("david.loo", "David Loo", "Finance", None, true, &["finance-managers"]),
    ("abel.tuter", "Abel Tuter", "Engineering", Some("david.loo"), true, &["jira-users"]),
    (
        "beth.anglin",
        "Beth Anglin",
        "Finance",
        Some("david.loo"),
        true,
        &["sap-fi-payment-release", "sap-fi-display"],
    ),
    (
        "fred.luddy",
        "Fred Luddy",
        "Engineering",
        Some("david.loo"),
        true,
        &["github-org-admins", "github-org-members"],
    ),
    (
        "carol.ng",
        "Carol Ng",
        "People",
        Some("david.loo"),
        true,
        &["workday-payroll-preparers"],
    ),
    (
        "helen.park",
        "Helen Park",
        "Platform",
        Some("david.loo"),
        true,
        &["platform-engineering"],
    ),
    (
        "ivan.petrov",
        "Ivan Petrov",
        "Platform",
        Some("helen.park"),
        true,
        &["Cloud Platform Owners"],
    ),
    (LEAVER, "Olga Leaver", "Engineering", Some("david.loo"), false, &["jira-developers"]),
    (NHI_OWNER_WHO_LEFT, "Nick Owner", "Platform", Some("helen.park"), false, &[]),
];

pub(super) fn add_user(db: &mut Db, user_name: &str, email: &str, active: bool, manager: Option<&str>, user_type: &str) -> String {
    let id = new_id();
    let manager_id = manager
        .and_then(|m| db.users.iter().find(|u| u["userName"] == m))
        .and_then(|u| u["id"].as_str().map(String::from));
    let mut enterprise = json!({"department": null, "employeeNumber": format!("{}", 40_000 + db.users.len())});
    if let Some(m) = manager_id {
        enterprise["manager"] = json!({"value": m});
    }
    db.users.push(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "id": id,
        "userName": user_name,
        "active": active,
        "userType": user_type,
        "emails": [{"value": email, "type": "work", "primary": true}],
        ENTERPRISE: enterprise,
        "meta": {"resourceType": "User", "version": "W/\"1\""},
    }));
    id
}

/// Adds a member (creating the group when missing); returns the group when the member is new,
/// its version bumped.
pub(super) fn add_member(db: &mut Db, display_name: &str, user_id: &str) -> Option<Value> {
    if !db.groups.iter().any(|g| g["displayName"] == display_name) {
        db.groups.push(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": new_id(),
            "displayName": display_name,
            "members": [],
            "meta": {"resourceType": "Group", "version": "W/\"1\""},
        }));
    }
    let group = db.groups.iter_mut().find(|g| g["displayName"] == display_name)?;
    let members = group["members"].as_array_mut()?;
    if members.iter().any(|m| m["value"] == user_id) {
        return None;
    }
    members.push(json!({"value": user_id, "type": "User"}));
    super::touch(group);
    Some(group.clone())
}

pub(super) fn seed(db: &mut Db) {
    for (name, display, department, manager, active, groups) in PEOPLE {
        let id = add_user(db, name, &format!("{name}@example.com"), *active, *manager, "Employee");
        if let Some(user) = db.users.iter_mut().find(|u| u["id"] == Value::String(id.clone())) {
            user["name"] = json!({"formatted": display});
            user[ENTERPRISE]["department"] = json!(department);
        }
        for g in *groups {
            add_member(db, g, &id);
        }
    }
}
