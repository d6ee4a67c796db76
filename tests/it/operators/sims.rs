//! The simulators answer what admins poke an instance with: the Jira routes the Python `jira`
//! client and a sandbox need (server info, search/jql by GET and on v2, create and edit an
//! issue, JSM's create request), ServiceNow's `active` and choice labels; and the real Python
//! clients (`jira`, ServiceNow's `pysnc`) against them. `.ci/py-clients` installs those; set
//! `DESKBRIDGE_PY_CLIENTS` to its Python.

use deskbridge_jira::simulator::{self as jira, API_TOKEN, INTEGRATION_EMAIL, READ_ONLY_EMAIL, READ_ONLY_TOKEN};
use deskbridge_servicenow::simulator::{self as snow, INTEGRATION_PASSWORD, INTEGRATION_USER};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn jira_sim() -> jira::Simulator {
    jira::Simulator::start(jira::SimConfig::default()).await.expect("jira simulator")
}

#[tokio::test]
async fn jira_answers_server_info_search_and_issue_writes() {
    let sim = jira_sim().await;
    let base = sim.base_url().to_owned();
    let client = reqwest::Client::new();
    let info: Value = client
        .get(format!("{base}/rest/api/2/serverInfo"))
        .send()
        .await
        .expect("serverInfo")
        .json()
        .await
        .expect("json");
    assert_eq!(info["deploymentType"], "Cloud");
    // search/jql: GET on v3, GET and POST on v2, the same issues.
    let get3: Value = client
        .get(format!("{base}/rest/api/3/search/jql"))
        .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
        .query(&[
            ("jql", "project = ACC ORDER BY key ASC"),
            ("fields", "summary,status"),
            ("maxResults", "3"),
        ])
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let keys = |v: &Value| -> Vec<String> {
        v["issues"]
            .as_array()
            .expect("issues")
            .iter()
            .map(|i| i["key"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(keys(&get3), vec!["ACC-1", "ACC-2", "ACC-3"], "{get3}");
    assert!(get3["nextPageToken"].is_string());
    let post2: Value = client
        .post(format!("{base}/rest/api/2/search/jql"))
        .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
        .json(&json!({"jql": "project = ACC ORDER BY key ASC", "fields": ["summary"], "maxResults": 3}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(keys(&post2), keys(&get3));
    // Create and edit an issue by id-less custom field names resolved through /field.
    let application = sim.field_id("Application").expect("field");
    let created = client
        .post(format!("{base}/rest/api/3/issue"))
        .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
        .json(&json!({"fields": {
            "project": {"key": "ACC"}, "issuetype": {"name": "Service Request"}, "summary": "Access to payroll",
            "description": {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": "read only"}]}]},
            application.clone(): "payroll"
        }}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    let key = created["key"].as_str().expect("key").to_owned();
    let issue = sim.issue(&key).expect("created issue");
    assert_eq!(
        (issue.summary.as_str(), issue.description.as_str()),
        ("Access to payroll", "read only")
    );
    assert_eq!(issue.custom.get("Application"), Some(&json!("payroll")));
    let before = issue.updated_ms;
    let edited = client
        .put(format!("{base}/rest/api/3/issue/{key}"))
        .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
        .json(&json!({"fields": {application.clone(): "payroll-eu", "summary": "Access to EU payroll"}}))
        .send()
        .await
        .expect("edit");
    assert_eq!(edited.status(), StatusCode::NO_CONTENT);
    let issue = sim.issue(&key).expect("issue");
    assert_eq!(issue.custom.get("Application"), Some(&json!("payroll-eu")));
    assert!(issue.updated_ms > before);
    // Refused as Jira refuses: an unknown field, a read-only user, a missing issue.
    let unknown = client
        .put(format!("{base}/rest/api/3/issue/{key}"))
        .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
        .json(&json!({"fields": {"customfield_1": "x"}}))
        .send()
        .await
        .expect("edit");
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let read_only = client
        .post(format!("{base}/rest/api/3/issue"))
        .basic_auth(READ_ONLY_EMAIL, Some(READ_ONLY_TOKEN))
        .json(&json!({"fields": {"project": {"key": "ACC"}, "issuetype": {"name": "Task"}, "summary": "x"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(read_only.status(), StatusCode::FORBIDDEN);
    let missing = client
        .put(format!("{base}/rest/api/3/issue/ACC-999"))
        .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
        .json(&json!({"fields": {"summary": "x"}}))
        .send()
        .await
        .expect("edit");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // JSM: raise a request of a seeded request type.
    let (type_id, type_name) = jira::REQUEST_TYPES[0];
    let raised = client
        .post(format!("{base}/rest/servicedeskapi/request"))
        .basic_auth(INTEGRATION_EMAIL, Some(API_TOKEN))
        .json(&json!({"serviceDeskId": "1", "requestTypeId": type_id, "requestFieldValues": {"summary": "Need VPN", "description": "remote work"}}))
        .send()
        .await
        .expect("raise");
    assert_eq!(raised.status(), StatusCode::CREATED);
    let raised: Value = raised.json().await.expect("json");
    let issue = sim.issue(raised["issueKey"].as_str().expect("key")).expect("request");
    assert_eq!(issue.request_type.map(|(_, name)| name), Some(type_name.to_owned()));
}

#[tokio::test]
async fn servicenow_task_tables_carry_active_and_choice_labels() {
    let sim = snow::Simulator::start(snow::SimConfig::default()).await.expect("simulator");
    let client = reqwest::Client::new();
    let list = |query: &'static str, display: &'static str| {
        let client = client.clone();
        let url = format!("{}/api/now/table/sc_req_item", sim.base_url());
        async move {
            let v: Value = client
                .get(url)
                .basic_auth(INTEGRATION_USER, Some(INTEGRATION_PASSWORD))
                .query(&[
                    ("sysparm_query", query),
                    ("sysparm_display_value", display),
                    ("sysparm_fields", "number,active,state"),
                ])
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            v["result"].as_array().expect("result").clone()
        }
    };
    let all = list("", "false").await;
    let active = list("active=true", "false").await;
    assert!(!all.is_empty());
    assert_eq!(active.len(), all.len(), "every seeded item is open, so active");
    let id = sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    sim.update("sc_req_item", &id, &[("state", "3")]);
    assert_eq!(list("active=true", "false").await.len(), all.len() - 1);
    assert_eq!(list("active=false", "false").await.len(), 1);
    let shown = list("number=RITM0010001", "true").await;
    assert_eq!(shown[0]["state"], "Closed Complete");
    assert_eq!(shown[0]["active"], "false");
    let both = list("number=RITM0010002", "all").await;
    assert_eq!(both[0]["state"], json!({"display_value": "Open", "value": "1"}));
}

#[tokio::test]
async fn the_python_clients_admins_use_work_against_the_simulators() {
    let python = std::env::var("DESKBRIDGE_PY_CLIENTS").unwrap_or_else(|_| "python3".into());
    let jira_sim = jira_sim().await;
    let snow_sim = snow::Simulator::start(snow::SimConfig {
        tls: true,
        ..snow::SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, snow_sim.ca_pem().expect("tls")).expect("ca");
    let script = format!(
        r#"
from jira import JIRA
import pysnc
j = JIRA(server="{jira}", basic_auth=("{email}", "{token}"))
assert j.server_info()["deploymentType"] == "Cloud"
keys = [i.key for i in j.search_issues("project = ACC ORDER BY key ASC", maxResults=3)]
new = j.create_issue(project="ACC", summary="Need payroll", description="read only", issuetype={{"name": "Service Request"}})
new.update(summary="Need EU payroll")
print("jira", keys, new.key, j.issue(new.key).fields.summary)
c = pysnc.ServiceNowClient("{snow}", ("{user}", "{password}"), verify="{ca}")
gr = c.GlideRecord("sc_req_item")
gr.add_query("active", "true")
gr.query()
rows = [(r.get_value("number"), r.get_display_value("state")) for r in gr]
print("servicenow", len(rows), rows[0][1])
"#,
        jira = jira_sim.base_url(),
        email = INTEGRATION_EMAIL,
        token = API_TOKEN,
        snow = snow_sim.base_url(),
        user = INTEGRATION_USER,
        password = INTEGRATION_PASSWORD,
        ca = ca.display(),
    );
    let ca_path = ca.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args(["-c", &script])
            // requests (under pysnc) reads its CA bundle from here.
            .env("REQUESTS_CA_BUNDLE", &ca_path)
            .output()
            .unwrap_or_else(|e| panic!("{python} does not run ({e}); run .ci/py-clients or set DESKBRIDGE_PY_CLIENTS"))
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python clients failed against the simulators (need `jira` and `pysnc`: .ci/py-clients):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("jira ['ACC-1', 'ACC-2', 'ACC-3'] ACC-") && stdout.contains("Need EU payroll"),
        "{stdout}"
    );
    assert!(stdout.contains("servicenow 7 Open"), "{stdout}");
}
