//! Seed data: users, custom fields, JSM request types and a service-desk project `ACC` whose
//! requests cover the cases deskbridge must handle (the same range as the ServiceNow seed).

use serde_json::{json, Value};

use super::{now_ms, FieldDef, NewIssue, SimUser, Simulator, API_TOKEN, INTEGRATION_EMAIL, PAT, READ_ONLY_EMAIL, READ_ONLY_TOKEN};

/// The seeded JSM project.
pub const SEEDED_PROJECT: &str = "ACC";

/// Keys of the seeded issues that are access requests (`ACC-7`, a hardware problem, is not).
pub const SEEDED_ACCESS_ISSUES: &[&str] = &["ACC-1", "ACC-2", "ACC-3", "ACC-4", "ACC-5", "ACC-6"];

/// JSM request types `(id, name)`.
pub const REQUEST_TYPES: &[(&str, &str)] = &[
    ("10", "Request application access"),
    ("11", "Request a service account"),
    ("12", "Remove access"),
    ("13", "Report a hardware problem"),
];

const PEOPLE: &[(&str, &str)] = &[
    ("abel.tuter", "Abel Tuter"),
    ("beth.anglin", "Beth Anglin"),
    ("fred.luddy", "Fred Luddy"),
    ("david.loo", "David Loo"),
    ("carol.ng", "Carol Ng"),
    ("ivan.petrov", "Ivan Petrov"),
    ("helen.park", "Helen Park"),
];

fn account(name: &str) -> String {
    format!("557058:{name}")
}

pub(super) fn users() -> Vec<SimUser> {
    let all = [
        "BROWSE_PROJECTS",
        "ADD_COMMENTS",
        "EDIT_OWN_COMMENTS",
        "SERVICEDESK_AGENT",
        "CREATE_ISSUES",
        "EDIT_ISSUES",
    ];
    let mut users = vec![
        SimUser {
            account_id: account("deskbridge"),
            display_name: "deskbridge integration".into(),
            email: INTEGRATION_EMAIL.into(),
            api_token: Some(API_TOKEN.into()),
            pat: Some(PAT.into()),
            permissions: all.iter().map(|p| p.to_string()).collect(),
        },
        SimUser {
            account_id: account("auditor"),
            display_name: "Read-only auditor".into(),
            email: READ_ONLY_EMAIL.into(),
            api_token: Some(READ_ONLY_TOKEN.into()),
            pat: None,
            permissions: vec!["BROWSE_PROJECTS".into()],
        },
    ];
    for (name, display) in PEOPLE {
        users.push(SimUser {
            account_id: account(name),
            display_name: (*display).into(),
            email: format!("{name}@example.com"),
            api_token: None,
            pat: None,
            permissions: vec!["BROWSE_PROJECTS".into(), "ADD_COMMENTS".into(), "CREATE_ISSUES".into()],
        });
    }
    users
}

const SELECT: &str = "com.atlassian.jira.plugin.system.customfieldtypes:select";
const TEXT: &str = "com.atlassian.jira.plugin.system.customfieldtypes:textfield";
const AREA: &str = "com.atlassian.jira.plugin.system.customfieldtypes:textarea";
const USER: &str = "com.atlassian.jira.plugin.system.customfieldtypes:userpicker";
const DATE: &str = "com.atlassian.jira.plugin.system.customfieldtypes:datepicker";

pub(super) fn fields() -> Vec<FieldDef> {
    [
        ("Request Type", "sd-customerrequesttype", "com.atlassian.servicedesk:vp-origin"),
        ("Request participants", "array", "com.atlassian.servicedesk:sd-request-participants"),
        ("Access type", "option", SELECT),
        ("Application", "string", TEXT),
        ("Environment", "option", SELECT),
        ("Access role", "string", TEXT),
        ("Privileged access", "option", SELECT),
        ("Business justification", "string", AREA),
        ("Access duration", "string", TEXT),
        ("Approver", "user", USER),
        ("Identity type", "option", SELECT),
        ("Service account name", "string", TEXT),
        ("Service account owner", "user", USER),
        ("Service account purpose", "string", AREA),
        ("Service account expiry", "date", DATE),
        ("Requested for", "user", USER),
    ]
    .into_iter()
    .map(|(name, schema_type, schema_custom)| FieldDef {
        name: name.into(),
        schema_type,
        schema_custom,
    })
    .collect()
}

/// A select option value in API shape.
pub fn option(value: &str) -> Value {
    json!({"value": value, "id": format!("{}", 10_100 + value.len())})
}

/// A user-picker value in API shape.
pub fn user(name: &str) -> Value {
    let display = PEOPLE.iter().find(|(n, _)| *n == name).map_or(name, |(_, d)| d);
    json!({"accountId": account(name), "displayName": display, "emailAddress": format!("{name}@example.com"), "active": true})
}

struct Seed {
    reporter: &'static str,
    request_type: usize,
    status: &'static str,
    summary: &'static str,
    description: &'static str,
    minutes_ago: i64,
    fields: &'static [(&'static str, &'static str)],
}

const SEEDS: &[Seed] = &[
    Seed {
        reporter: "abel.tuter",
        request_type: 0,
        status: "Waiting for approval",
        summary: "Jira Software access for the payments squad",
        description: "Joining the payments squad.",
        minutes_ago: 120,
        fields: &[
            ("Access type", "New access"),
            ("Application", "jira-software"),
            ("Environment", "Staging"),
            ("Access role", "jira-developers"),
            ("Privileged access", "No"),
            ("Business justification", "Joining the payments squad; I need to track sprint work."),
            ("Access duration", "90 days"),
            ("Approver", "@david.loo"),
            ("Identity type", "Person"),
            ("Requested for", "@abel.tuter"),
        ],
    },
    Seed {
        reporter: "beth.anglin",
        request_type: 0,
        status: "Approved",
        summary: "SAP FI posting administrator in production",
        description: "Quarter-end close.",
        minutes_ago: 90,
        fields: &[
            ("Access type", "New access"),
            ("Application", "sap-erp"),
            ("Environment", "Production"),
            ("Access role", "FI_POSTING_ADMIN"),
            ("Privileged access", "Yes"),
            (
                "Business justification",
                "Quarter-end close requires posting corrections in the general ledger.",
            ),
            ("Access duration", "30 days"),
            ("Approver", "@david.loo"),
            ("Identity type", "Person"),
            ("Requested for", "@beth.anglin"),
        ],
    },
    Seed {
        reporter: "fred.luddy",
        request_type: 0,
        status: "Waiting for approval",
        summary: "Salesforce reports access",
        description: "",
        minutes_ago: 89,
        fields: &[
            ("Access type", "New access"),
            ("Application", "salesforce"),
            ("Environment", "Staging"),
            ("Access role", "reports-viewer"),
            ("Privileged access", "No"),
            ("Access duration", "60 days"),
            ("Approver", "@david.loo"),
            ("Identity type", "Person"),
            ("Requested for", "@fred.luddy"),
        ],
    },
    Seed {
        reporter: "ivan.petrov",
        request_type: 1,
        status: "Waiting for support",
        summary: "Service account for the nightly billing export",
        description: "Nightly export of invoices to the data warehouse.",
        minutes_ago: 88,
        fields: &[
            ("Access type", "New service account"),
            ("Identity type", "Service account"),
            ("Service account name", "svc-billing-export"),
            ("Application", "aws-billing"),
            ("Environment", "Production"),
            ("Access role", "s3-billing-exports-read"),
            ("Privileged access", "No"),
            ("Business justification", "Nightly export of invoices to the data warehouse."),
            ("Service account purpose", "Nightly billing export"),
        ],
    },
    Seed {
        reporter: "carol.ng",
        request_type: 0,
        status: "Waiting for approval",
        summary: "Workday payroll approver role",
        description: "",
        minutes_ago: 60,
        fields: &[
            ("Access type", "New access"),
            ("Application", "workday"),
            ("Environment", "Production"),
            ("Access role", "payroll-approver"),
            ("Privileged access", "No"),
            (
                "Business justification",
                "Covering payroll approvals while the team lead is on leave.",
            ),
            ("Access duration", "14 days"),
            ("Approver", "@carol.ng"),
            ("Identity type", "Person"),
            ("Requested for", "@carol.ng"),
        ],
    },
    Seed {
        reporter: "helen.park",
        request_type: 2,
        status: "Waiting for support",
        summary: "Remove GitHub org-admin from Fred",
        description: "Fred moved teams.",
        minutes_ago: 30,
        fields: &[
            ("Access type", "Remove access"),
            ("Application", "github"),
            ("Environment", "Production"),
            ("Access role", "org-admin"),
            ("Privileged access", "Yes"),
            (
                "Business justification",
                "Fred moved from the platform team to engineering; admin no longer needed.",
            ),
            ("Identity type", "Person"),
            ("Requested for", "@fred.luddy"),
        ],
    },
    Seed {
        reporter: "abel.tuter",
        request_type: 3,
        status: "Waiting for support",
        summary: "Printer on floor 3 jams on every job",
        description: "The printer near the kitchen jams on every print job. {color:red}*urgent*{color} [click|https://evil.example]",
        minutes_ago: 15,
        fields: &[],
    },
];

fn value_of(field: &str, raw: &str) -> Value {
    match field {
        "Access type" | "Environment" | "Privileged access" | "Identity type" => option(raw),
        _ => match raw.strip_prefix('@') {
            Some(name) => user(name),
            None => json!(raw),
        },
    }
}

pub(super) fn seed(sim: &Simulator) {
    for s in SEEDS {
        sim.create_issue(NewIssue {
            project: SEEDED_PROJECT.into(),
            issue_type: "Service Request".into(),
            summary: s.summary.into(),
            description: s.description.into(),
            reporter: format!("{}@example.com", s.reporter),
            request_type: Some(REQUEST_TYPES[s.request_type].1.into()),
            custom: s.fields.iter().map(|(f, v)| (f.to_string(), value_of(f, v))).collect(),
            status: Some(s.status.into()),
            updated_ms: Some(now_ms() - s.minutes_ago * 60_000),
        });
    }
}

/// Adds `count` generated access requests modelled on the six seeded access cases in turn (so
/// a load run meets every outcome: approve, deny, review and needs-info, as the ServiceNow
/// generator's do), `updated` one second apart ending a minute ago; returns their keys.
pub(super) fn generate(sim: &Simulator, count: usize) -> Vec<String> {
    let templates: Vec<&Seed> = SEEDS.iter().filter(|s| !s.fields.is_empty()).collect();
    let start = now_ms() - 60_000 - count as i64 * 1000;
    (0..count)
        .map(|n| {
            let s = templates[n % templates.len()];
            let (_, key) = sim.create_issue(NewIssue {
                project: SEEDED_PROJECT.into(),
                issue_type: "Service Request".into(),
                summary: format!("{} (generated {n})", s.summary),
                description: s.description.into(),
                reporter: format!("{}@example.com", s.reporter),
                request_type: Some(REQUEST_TYPES[s.request_type].1.into()),
                custom: s.fields.iter().map(|(f, v)| (f.to_string(), value_of(f, v))).collect(),
                status: Some(s.status.into()),
                updated_ms: Some(start + n as i64 * 1000),
            });
            key
        })
        .collect()
}
