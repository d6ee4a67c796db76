//! The simulator answers in the Table API's shapes (envelopes, headers, reference rendering,
//! errors), checked with a plain HTTP client rather than the connector under test.

use deskbridge_servicenow::simulator::{SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};
use serde_json::Value;

async fn get(sim: &Simulator, path_and_query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path_and_query}", sim.base_url()))
        .basic_auth(INTEGRATION_USER, Some(INTEGRATION_PASSWORD))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn lists_carry_total_count_and_link_headers() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let response = get(
        &sim,
        "/api/now/table/sc_req_item?sysparm_limit=3&sysparm_offset=3&sysparm_fields=number&sysparm_query=ORDERBYnumber",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-total-count"], "7");
    let link = response.headers()["link"].to_str().expect("ascii").to_owned();
    for rel in ["rel=\"first\"", "rel=\"prev\"", "rel=\"next\"", "rel=\"last\""] {
        assert!(link.contains(rel), "{link}");
    }
    assert!(link.contains("sysparm_offset=6>;rel=\"next\""), "{link}");
    let body: Value = response.json().await.expect("json");
    let numbers: Vec<&str> = body["result"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["number"].as_str())
        .collect();
    assert_eq!(numbers, vec!["RITM0010004", "RITM0010005", "RITM0010006"]);
}

#[tokio::test]
async fn references_render_per_display_value_and_exclude_reference_link() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let id = sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    let one = |q: &'static str| {
        let path = format!("/api/now/table/sc_req_item/{id}?sysparm_fields=opened_by,opened_by.user_name{q}");
        let sim = &sim;
        async move { get(sim, &path).await.json::<Value>().await.expect("json")["result"].clone() }
    };
    let raw = one("").await;
    assert!(raw["opened_by"]["link"]
        .as_str()
        .expect("link")
        .contains("/api/now/table/sys_user/"));
    assert_eq!(raw["opened_by.user_name"], "abel.tuter");
    let shown = one("&sysparm_display_value=true&sysparm_exclude_reference_link=true").await;
    assert_eq!(shown["opened_by"], "Abel Tuter");
    let all = one("&sysparm_display_value=all&sysparm_exclude_reference_link=true").await;
    assert_eq!(all["opened_by"]["display_value"], "Abel Tuter");
    assert_eq!(all["opened_by"]["value"], raw["opened_by"]["value"]);
}

#[tokio::test]
async fn errors_have_servicenow_shape_and_unknown_fields_return_no_rows() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let missing = get(&sim, "/api/now/table/sc_req_item/0000").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["status"], "failure");
    assert_eq!(body["error"]["message"], "No Record found");
    let bad_table = get(&sim, "/api/now/table/sys_user_groups").await;
    assert_eq!(bad_table.status(), 400);
    assert_eq!(
        bad_table.json::<Value>().await.expect("json")["error"]["message"],
        "Invalid table sys_user_groups"
    );
    let typo = get(&sim, "/api/now/table/sc_req_item?sysparm_query=numbr=RITM0010001").await;
    assert_eq!(typo.json::<Value>().await.expect("json")["result"], serde_json::json!([]));
    let anonymous = reqwest::get(format!("{}/api/now/table/sc_req_item", sim.base_url()))
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.json::<Value>().await.expect("json")["error"]["message"],
        "User Not Authenticated"
    );
}

#[tokio::test]
async fn journal_fields_append_to_sys_journal_field_and_read_back_empty() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let id = sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    let client = reqwest::Client::new();
    let patched: Value = client
        .patch(format!("{}/api/now/table/sc_req_item/{id}", sim.base_url()))
        .basic_auth(INTEGRATION_USER, Some(INTEGRATION_PASSWORD))
        .json(&serde_json::json!({"comments": "hello"}))
        .send()
        .await
        .expect("patch")
        .json()
        .await
        .expect("json");
    assert_eq!(patched["result"]["comments"], "");
    let rows: Value = get(
        &sim,
        &format!("/api/now/table/sys_journal_field?sysparm_query=element_id={id}^element=comments"),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(rows["result"][0]["value"], "hello");
    assert_eq!(rows["result"][0]["sys_created_by"], INTEGRATION_USER);
    let form_only = client
        .post(format!("{}/oauth_token.do", sim.base_url()))
        .json(&serde_json::json!({"grant_type": "password"}))
        .send()
        .await
        .expect("post");
    assert_eq!(form_only.status(), 400, "the token endpoint reads form bodies only");
}

/// The `sys_id`s a list answers, and its `Link` header.
async fn ids(sim: &Simulator, query: &str, limit: usize, offset: usize, no_count: bool) -> (Vec<String>, String) {
    let encoded = url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>();
    let count = if no_count { "&sysparm_no_count=true" } else { "" };
    let response = get(
        sim,
        &format!("/api/now/table/sc_req_item?sysparm_fields=sys_id,sys_updated_on&sysparm_limit={limit}&sysparm_offset={offset}&sysparm_query={encoded}{count}"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let link = response
        .headers()
        .get("link")
        .map(|l| l.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let body: Value = response.json().await.expect("json");
    let ids = body["result"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["sys_id"].as_str().expect("id").to_owned())
        .collect();
    (ids, link)
}

/// A poll without a count reads through the `(sys_updated_on, sys_id)` index; it must answer
/// exactly what the whole-table scan answers, page for page, also after rows changed (the
/// index follows them) and when several rows share a second.
#[tokio::test]
async fn a_poll_without_a_count_answers_what_the_table_scan_answers() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let generated = sim.generate(120);
    let numbers = sim.numbers("sc_req_item");
    // Rows moved by a change (now), and five sharing one second in the past.
    for (_, id) in numbers.iter().take(10) {
        assert!(sim.update("sc_req_item", id, &[]));
    }
    for (_, id) in numbers.iter().skip(20).take(5) {
        assert!(sim.update("sc_req_item", id, &[("sys_updated_on", "2026-01-02 03:04:05")]));
    }
    assert_eq!(generated.len(), 120);
    let order = "^ORDERBYsys_updated_on^ORDERBYsys_id";
    let (all, _) = ids(&sim, &format!("sys_updated_on>1970-01-01 00:00:00{order}"), 1000, 0, false).await;
    assert!(all.len() > 120, "{}", all.len());
    let stamp = |i: usize| {
        let id = &all[i];
        sim.record("sc_req_item", id)
            .and_then(|r| r.get("sys_updated_on").cloned())
            .expect("stamp")
    };
    let queries = [
        format!("sys_updated_on>1970-01-01 00:00:00{order}"),
        format!("sys_updated_on>{}^sys_updated_on<={}{order}", stamp(5), stamp(100)),
        format!("active=true^sys_updated_on>={}{order}", stamp(30)),
        "sys_updated_on=2026-01-02 03:04:05^ORDERBYsys_id".to_owned(),
        format!(
            "sys_updated_on=2026-01-02 03:04:05^sys_id>{}^ORDERBYsys_id",
            all.iter().min().expect("id")
        ),
    ];
    for query in &queries {
        for offset in [0, 7, 14, 49] {
            let (scanned, _) = ids(&sim, query, 7, offset, false).await;
            let (indexed, link) = ids(&sim, query, 7, offset, true).await;
            assert_eq!(indexed, scanned, "{query} at {offset}");
            assert!(!link.contains("rel=\"last\""), "no count, no last page: {link}");
        }
    }
    let (page, link) = ids(&sim, &queries[0], 7, 0, true).await;
    assert_eq!(page.len(), 7);
    assert!(link.contains("sysparm_offset=7>;rel=\"next\""), "{link}");
}
