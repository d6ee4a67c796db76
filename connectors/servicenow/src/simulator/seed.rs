//! Seed data: users, groups, catalog items, variables and requested items covering the cases
//! deskbridge must handle. Timestamps are relative to start-up so the poller's lag window
//! always includes them.

use chrono::{Duration, Utc};

use super::db::{Db, Record};
use super::State;

/// Numbers of the seeded requested items that are access requests (the support ticket
/// `RITM0010007` is not).
pub const SEEDED_ACCESS_TICKETS: &[&str] = &[
    "RITM0010001",
    "RITM0010002",
    "RITM0010003",
    "RITM0010004",
    "RITM0010005",
    "RITM0010006",
];

fn sid(table: u32, n: u32) -> String {
    format!("{table:04x}{n:028x}")
}

fn rec(pairs: &[(&str, &str)]) -> Record {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

const USERS: &[(&str, &str, &str)] = &[
    ("abel.tuter", "Abel Tuter", "Engineering"),
    ("beth.anglin", "Beth Anglin", "Finance"),
    ("fred.luddy", "Fred Luddy", "Engineering"),
    ("david.loo", "David Loo", "Finance"),
    ("carol.ng", "Carol Ng", "People"),
    ("ivan.petrov", "Ivan Petrov", "Platform"),
    ("helen.park", "Helen Park", "Platform"),
    ("deskbridge.integration", "deskbridge integration", "IT"),
];

const VARIABLES: &[(&str, &str)] = &[
    ("request_type", "What do you need?"),
    ("application", "Application"),
    ("environment", "Environment"),
    ("role", "Role or entitlement"),
    ("privileged", "Is this administrative / privileged access?"),
    ("business_justification", "Business justification"),
    ("access_duration", "For how long?"),
    ("approver", "Approver (user ID)"),
    ("identity_type", "Who is the access for?"),
    ("service_account_name", "Service account name"),
    ("sa_owner", "Accountable owner (user ID)"),
    ("sa_purpose", "Purpose of the service account"),
    ("sa_expiry", "Review or expiry date"),
    ("issue_description", "Describe the issue"),
];

fn user_id(name: &str) -> String {
    let n = USERS.iter().position(|(u, _, _)| *u == name).unwrap_or(0);
    sid(0x5e, n as u32 + 1)
}

/// Users, groups, catalog items and variable definitions, without requested items.
pub fn seed_reference_data(db: &mut Db) {
    let stamp = (Utc::now() - Duration::days(30)).format("%Y-%m-%d %H:%M:%S").to_string();
    for (name, full, department) in USERS {
        let email = format!("{name}@example.com");
        let id = user_id(name);
        db.tables.entry("sys_user".into()).or_default().insert(rec(&[
            ("sys_id", &id),
            ("user_name", name),
            ("name", full),
            ("email", &email),
            ("department", department),
            ("active", "true"),
            ("sys_updated_on", &stamp),
        ]));
    }
    for (n, name) in ["IAM Operations", "SAP Access Owners", "Service Desk"].iter().enumerate() {
        let id = sid(0x6e, n as u32 + 1);
        db.tables.entry("sys_user_group".into()).or_default().insert(rec(&[
            ("sys_id", &id),
            ("name", name),
            ("manager", &user_id("david.loo")),
            ("sys_updated_on", &stamp),
        ]));
    }
    for (n, name) in ["Application access request", "Service account request", "Laptop or printer issue"]
        .iter()
        .enumerate()
    {
        let id = sid(0xca, n as u32 + 1);
        db.tables.entry("sc_cat_item".into()).or_default().insert(rec(&[
            ("sys_id", &id),
            ("name", name),
            ("active", "true"),
            ("sys_updated_on", &stamp),
        ]));
    }
    for (n, (name, question)) in VARIABLES.iter().enumerate() {
        let id = sid(0x10, n as u32 + 1);
        db.tables.entry("item_option_new".into()).or_default().insert(rec(&[
            ("sys_id", &id),
            ("name", name),
            ("question_text", question),
            ("sys_updated_on", &stamp),
        ]));
    }
    // Empty tables the API serves; one column-defining row keeps field validation working.
    for (table, columns) in [
        (
            "sc_request",
            &["number", "requested_for", "opened_by", "approval", "state", "active"][..],
        ),
        (
            "sc_req_item",
            &[
                "number",
                "request",
                "cat_item",
                "opened_by",
                "requested_for",
                "assignment_group",
                "short_description",
                "description",
                "state",
                "active",
                "stage",
                "approval",
                "urgency",
                "priority",
                "sys_created_by",
                "sys_updated_by",
            ][..],
        ),
        ("sc_item_option", &["item_option_new", "value"][..]),
        ("sc_item_option_mtom", &["request_item", "sc_item_option"][..]),
        ("sysapproval_approver", &["approver", "sysapproval", "state", "comments"][..]),
        (
            "sys_journal_field",
            &["element_id", "name", "element", "value", "sys_created_by"][..],
        ),
    ] {
        let table = db.tables.entry(table.into()).or_default();
        table.columns.extend(columns.iter().map(|c| c.to_string()));
        table.columns.extend(
            ["sys_id", "sys_created_on", "sys_updated_on", "sys_mod_count"]
                .iter()
                .map(|c| c.to_string()),
        );
    }
}

struct Item {
    n: u32,
    cat: u32,
    opened_by: &'static str,
    requested_for: &'static str,
    group: u32,
    approval: &'static str,
    short: &'static str,
    urgency: &'static str,
    minutes_ago: i64,
    vars: &'static [(&'static str, &'static str)],
    approvals: &'static [(&'static str, &'static str)],
}

const ITEMS: &[Item] = &[
    Item {
        n: 1,
        cat: 1,
        opened_by: "abel.tuter",
        requested_for: "abel.tuter",
        group: 1,
        approval: "requested",
        short: "Jira Software access for the payments squad",
        urgency: "3",
        minutes_ago: 120,
        vars: &[
            ("request_type", "New access"),
            ("application", "jira-software"),
            ("environment", "Staging"),
            ("role", "jira-developers"),
            ("privileged", "false"),
            ("business_justification", "Joining the payments squad; I need to track sprint work."),
            ("access_duration", "90 days"),
            ("approver", "david.loo"),
            ("identity_type", "Person"),
        ],
        approvals: &[("david.loo", "requested")],
    },
    Item {
        n: 2,
        cat: 1,
        opened_by: "beth.anglin",
        requested_for: "beth.anglin",
        group: 2,
        approval: "approved",
        short: "SAP FI posting administrator in production",
        urgency: "1",
        minutes_ago: 90,
        vars: &[
            ("request_type", "New access"),
            ("application", "sap-erp"),
            ("environment", "Production"),
            ("role", "FI_POSTING_ADMIN"),
            ("privileged", "true"),
            (
                "business_justification",
                "Quarter-end close requires posting corrections in the general ledger.",
            ),
            ("access_duration", "30 days"),
            ("approver", "david.loo"),
            ("identity_type", "Person"),
        ],
        approvals: &[("david.loo", "approved")],
    },
    Item {
        n: 3,
        cat: 1,
        opened_by: "fred.luddy",
        requested_for: "fred.luddy",
        group: 1,
        approval: "requested",
        short: "Salesforce reports access",
        urgency: "3",
        minutes_ago: 90,
        vars: &[
            ("request_type", "New access"),
            ("application", "salesforce"),
            ("environment", "Staging"),
            ("role", "reports-viewer"),
            ("privileged", "false"),
            ("business_justification", ""),
            ("access_duration", "60 days"),
            ("approver", "david.loo"),
            ("identity_type", "Person"),
        ],
        approvals: &[],
    },
    Item {
        n: 4,
        cat: 2,
        opened_by: "ivan.petrov",
        requested_for: "ivan.petrov",
        group: 1,
        approval: "not requested",
        short: "Service account for the nightly billing export",
        urgency: "2",
        minutes_ago: 90,
        vars: &[
            ("request_type", "New service account"),
            ("identity_type", "Service account"),
            ("service_account_name", "svc-billing-export"),
            ("application", "aws-billing"),
            ("environment", "Production"),
            ("role", "s3-billing-exports-read"),
            ("privileged", "false"),
            ("business_justification", "Nightly export of invoices to the data warehouse."),
            ("sa_owner", ""),
            ("sa_purpose", "Nightly billing export"),
            ("sa_expiry", ""),
        ],
        approvals: &[],
    },
    Item {
        n: 5,
        cat: 1,
        opened_by: "carol.ng",
        requested_for: "carol.ng",
        group: 1,
        approval: "requested",
        short: "Workday payroll approver role",
        urgency: "2",
        minutes_ago: 60,
        vars: &[
            ("request_type", "New access"),
            ("application", "workday"),
            ("environment", "Production"),
            ("role", "payroll-approver"),
            ("privileged", "false"),
            (
                "business_justification",
                "Covering payroll approvals while the team lead is on leave.",
            ),
            ("access_duration", "14 days"),
            ("approver", "carol.ng"),
            ("identity_type", "Person"),
        ],
        approvals: &[("carol.ng", "requested")],
    },
    Item {
        n: 6,
        cat: 1,
        opened_by: "helen.park",
        requested_for: "fred.luddy",
        group: 1,
        approval: "not requested",
        short: "Remove GitHub org-admin from Fred",
        urgency: "2",
        minutes_ago: 30,
        vars: &[
            ("request_type", "Remove access"),
            ("application", "github"),
            ("environment", "Production"),
            ("role", "org-admin"),
            ("privileged", "true"),
            (
                "business_justification",
                "Fred moved from the platform team to engineering; admin no longer needed.",
            ),
            ("identity_type", "Person"),
        ],
        approvals: &[],
    },
    Item {
        n: 7,
        cat: 3,
        opened_by: "abel.tuter",
        requested_for: "abel.tuter",
        group: 3,
        approval: "not requested",
        short: "Printer on floor 3 jams on every job",
        urgency: "3",
        minutes_ago: 15,
        vars: &[(
            "issue_description",
            "The printer near the kitchen jams on every print job. [code]<b>urgent</b>[/code]",
        )],
        approvals: &[],
    },
];

/// The request (`sc_request`) a requested item of `item`'s kind is ordered under.
fn request(item: &Item, sys_id: &str, number: &str, stamp: &str, mod_count: &str) -> Record {
    rec(&[
        ("sys_id", sys_id),
        ("number", number),
        ("requested_for", &user_id(item.requested_for)),
        ("opened_by", &user_id(item.opened_by)),
        ("approval", item.approval),
        ("sys_created_on", stamp),
        ("sys_updated_on", stamp),
        ("sys_mod_count", mod_count),
    ])
}

/// One `sc_req_item` row modelled on `item`.
fn requested_item(item: &Item, sys_id: &str, number: &str, request: &str, stamp: &str, mod_count: &str) -> Record {
    rec(&[
        ("sys_id", sys_id),
        ("number", number),
        ("request", request),
        ("cat_item", &sid(0xca, item.cat)),
        ("opened_by", &user_id(item.opened_by)),
        ("requested_for", &user_id(item.requested_for)),
        ("assignment_group", &sid(0x6e, item.group)),
        ("short_description", item.short),
        ("description", item.short),
        ("state", "1"),
        ("stage", "request_approved"),
        ("approval", item.approval),
        ("urgency", item.urgency),
        ("priority", "4"),
        ("sys_created_by", item.opened_by),
        ("sys_updated_by", item.opened_by),
        ("sys_created_on", stamp),
        ("sys_updated_on", stamp),
        ("sys_mod_count", mod_count),
    ])
}

/// Everything: reference data plus the seeded requested items.
pub fn seed(db: &mut Db) {
    seed_reference_data(db);
    let now = Utc::now();
    let mut option_n = 0;
    for item in ITEMS {
        let stamp = (now - Duration::minutes(item.minutes_ago)).format("%Y-%m-%d %H:%M:%S").to_string();
        let ritm = sid(0x21, item.n);
        let req = sid(0x20, item.n);
        let number = format!("RITM00100{:02}", item.n);
        db.tables
            .entry("sc_request".into())
            .or_default()
            .insert(request(item, &req, &format!("REQ00100{:02}", item.n), &stamp, "1"));
        db.tables
            .entry("sc_req_item".into())
            .or_default()
            .insert(requested_item(item, &ritm, &number, &req, &stamp, "2"));
        for (name, value) in item.vars {
            option_n += 1;
            insert_variable(db, &ritm, name, value, sid(0x0b, option_n), sid(0x0c, option_n));
        }
        for (k, (approver, state)) in item.approvals.iter().enumerate() {
            db.tables.entry("sysapproval_approver".into()).or_default().insert(rec(&[
                ("sys_id", &sid(0xaa, item.n * 10 + k as u32)),
                ("approver", &user_id(approver)),
                ("sysapproval", &ritm),
                ("state", state),
                ("sys_updated_on", &stamp),
            ]));
        }
    }
}

fn variable_definition(db: &mut Db, name: &str, new_id: impl FnOnce() -> String) -> String {
    let table = db.tables.entry("item_option_new".into()).or_default();
    if let Some(r) = table.rows.iter().find(|r| r.get("name").map(String::as_str) == Some(name)) {
        return r.get("sys_id").cloned().unwrap_or_default();
    }
    let id = new_id();
    table.insert(rec(&[("sys_id", &id), ("name", name), ("question_text", name)]));
    id
}

fn insert_variable(db: &mut Db, ritm: &str, name: &str, value: &str, option_id: String, mtom_id: String) {
    let definition = variable_definition(db, name, || format!("{:032x}", rand::random::<u128>()));
    db.tables.entry("sc_item_option".into()).or_default().insert(rec(&[
        ("sys_id", &option_id),
        ("item_option_new", &definition),
        ("value", value),
    ]));
    db.tables.entry("sc_item_option_mtom".into()).or_default().insert(rec(&[
        ("sys_id", &mtom_id),
        ("request_item", ritm),
        ("sc_item_option", &option_id),
    ]));
}

/// Sets (or adds) one catalog variable of a requested item.
pub fn set_variable(db: &mut Db, state: &State, ritm: &str, name: &str, value: &str) {
    let existing = db.tables.get("sc_item_option_mtom").and_then(|mtom| {
        mtom.rows
            .iter()
            .filter(|r| r.get("request_item").map(String::as_str) == Some(ritm))
            .find_map(|r| {
                let option = r.get("sc_item_option")?;
                let def = db.tables.get("sc_item_option")?.get(option)?.get("item_option_new")?;
                let def_name = db.tables.get("item_option_new")?.get(def)?.get("name")?;
                (def_name == name).then(|| option.clone())
            })
    });
    match existing {
        Some(option) => {
            if let Some(r) = db.tables.get_mut("sc_item_option").and_then(|t| t.get_mut(&option)) {
                r.insert("value".into(), value.into());
            }
        }
        None => insert_variable(db, ritm, name, value, state.new_id(), state.new_id()),
    }
}

/// Adds `count` synthetic requested items modelled on the six seeded access cases, ten to a
/// second of `sys_updated_on`, ending a minute before now, each under its own request
/// (`sc_request`, which names who the access is for), as ServiceNow orders them. Returns their
/// numbers.
pub fn generate(db: &mut Db, state: &State, count: usize) -> Vec<String> {
    let templates: Vec<&Item> = ITEMS.iter().filter(|i| i.cat != 3).collect();
    let end = Utc::now() - Duration::minutes(1);
    let mut numbers = Vec::with_capacity(count);
    for i in 0..count {
        let item = templates[i % templates.len()];
        let seconds_before = i64::try_from((count - i) / 10).unwrap_or(i64::MAX / 4);
        let stamp = (end - Duration::seconds(seconds_before)).format("%Y-%m-%d %H:%M:%S").to_string();
        let ritm = state.new_id();
        let number = format!("RITM{:07}", 2_000_000 + i);
        // Without its request, `request.requested_for` reads empty and every generated item
        // would be incomplete: a load run would measure only the needs-info path.
        let req = state.new_id();
        db.tables
            .entry("sc_request".into())
            .or_default()
            .insert(request(item, &req, &format!("REQ{:07}", 2_000_000 + i), &stamp, "0"));
        db.tables
            .entry("sc_req_item".into())
            .or_default()
            .insert(requested_item(item, &ritm, &number, &req, &stamp, "0"));
        for (name, value) in item.vars {
            insert_variable(db, &ritm, name, value, state.new_id(), state.new_id());
        }
        numbers.push(number);
    }
    numbers
}

/// The simulator's sign-in users as `sys_user` records, with their roles in
/// `sys_user_has_role`, so a start-up check can read what the integration user may do.
pub fn seed_accounts(db: &mut Db, users: &[super::SimUser]) {
    let stamp = (Utc::now() - Duration::days(30)).format("%Y-%m-%d %H:%M:%S").to_string();
    let mut roles: Vec<&str> = users.iter().flat_map(|u| u.roles.iter().map(String::as_str)).collect();
    roles.extend(["itil", "admin", "sn_request_read", "sn_request_write"]);
    roles.sort_unstable();
    roles.dedup();
    for (n, role) in roles.iter().enumerate() {
        db.tables.entry("sys_user_role".into()).or_default().insert(rec(&[
            ("sys_id", &sid(0x70, n as u32 + 1)),
            ("name", role),
            ("sys_updated_on", &stamp),
        ]));
    }
    for (n, user) in users.iter().enumerate() {
        let user_id = sid(0x71, n as u32 + 1);
        db.tables.entry("sys_user".into()).or_default().insert(rec(&[
            ("sys_id", &user_id),
            ("user_name", &user.username),
            ("name", &user.username),
            ("active", "true"),
            ("sys_updated_on", &stamp),
        ]));
        for (m, role) in user.roles.iter().enumerate() {
            let role_id = roles
                .iter()
                .position(|r| r == role)
                .map(|p| sid(0x70, p as u32 + 1))
                .unwrap_or_default();
            db.tables.entry("sys_user_has_role".into()).or_default().insert(rec(&[
                ("sys_id", &sid(0x72, (n * 100 + m) as u32 + 1)),
                ("user", &user_id),
                ("role", &role_id),
                ("state", "active"),
                ("sys_updated_on", &stamp),
            ]));
        }
    }
}
