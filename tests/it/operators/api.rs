//! The admin API: every route refuses a missing, wrong or insufficient token; the preview
//! writes nothing; operator actions are audited with who asked.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::Console;

/// Every route of the OpenAPI document with concrete path parameters, and whether it needs
/// the operator role.
fn routes(doc: &Value, ticket: (&str, &str)) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_some() {
                let concrete = path.replace("{connector}", ticket.0).replace("{key}", ticket.1);
                let operator = matches!(path.as_str(), "/api/parked/retry" | "/api/tickets/{connector}/{key}/redecide");
                out.push((method.to_uppercase(), concrete, operator));
            }
        }
    }
    out
}

async fn call(console: &Console, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let client = console.client();
    let url = format!("{}{path}", console.url);
    let mut request = match method {
        "POST" => client.post(&url).json(&body_for(path, console)),
        "PUT" => client.put(&url).json(&json!({})),
        "DELETE" => client.delete(&url),
        _ => client.get(&url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("answer")
}

fn body_for(path: &str, _console: &Console) -> Value {
    if path == "/api/preview" {
        json!({"connector": crate::helpers::CONNECTOR, "ticket": serde_json::to_value(crate::helpers::fixture("RITM0010002.json")).expect("json")})
    } else {
        json!({})
    }
}

#[tokio::test]
async fn every_admin_route_refuses_a_missing_wrong_or_insufficient_token() {
    let console = Console::start().await;
    let t = &console.tokens;
    // The document itself needs a token.
    let doc = call(&console, "GET", "/api/openapi.json", None).await;
    assert_eq!(doc.status(), StatusCode::UNAUTHORIZED);
    let doc: Value = call(&console, "GET", "/api/openapi.json", Some(&t.viewer))
        .await
        .json()
        .await
        .expect("document");
    let key = console.app.sim.sys_id_of("sc_req_item", "RITM0010002").expect("seeded");
    let routes = routes(&doc, (crate::helpers::CONNECTOR, &key));
    assert!(routes.len() >= 11, "{routes:?}");
    let mut extra: Vec<(String, String, bool)> = ["/status", "/metrics", "/api/openapi.json", "/ui/app.js"]
        .iter()
        .map(|p| ("GET".to_owned(), (*p).to_owned(), false))
        .collect();
    extra.truncate(3); // the console's static files hold no data and answer anyone
    for (method, path, operator) in routes.iter().chain(&extra) {
        for token in [
            None,
            Some("dbt_not-a-token"),
            Some(t.viewer.get(..t.viewer.len() - 1).expect("prefix")),
        ] {
            let r = call(&console, method, path, token).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}");
            assert!(r.headers().contains_key("www-authenticate"), "{method} {path}");
        }
        let as_viewer = call(&console, method, path, Some(&t.viewer)).await.status();
        let as_operator = call(&console, method, path, Some(&t.operator)).await.status();
        if *operator {
            assert_eq!(as_viewer, StatusCode::FORBIDDEN, "{method} {path} as viewer");
        } else {
            assert!(as_viewer.is_success(), "{method} {path} as viewer: {as_viewer}");
        }
        assert!(as_operator.is_success(), "{method} {path} as operator: {as_operator}");
    }
    // Open without a token: liveness, readiness, and the console's page and script.
    for path in ["/healthz", "/readyz", "/ui", "/ui/app.js"] {
        let r = call(&console, "GET", path, None).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    // The page forbids inline scripts.
    let page = call(&console, "GET", "/ui", None).await;
    let csp = page.headers()["content-security-policy"].to_str().expect("csp").to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
}

/// Row counts of every table, and the audit log's length.
async fn snapshot(console: &Console) -> Vec<(String, i64)> {
    let pool = console.app.store.pool();
    let mut out = Vec::new();
    for table in ["inbox", "decisions", "outbox", "audit", "shadow_decisions", "cursors"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .expect("count");
        out.push((table.to_owned(), n));
    }
    out
}

#[tokio::test]
async fn the_mapping_preview_writes_nothing_and_points_at_the_line() {
    let console = Console::start().await;
    let before = snapshot(&console).await;
    console.app.sim.clear_requests();
    let mapping = std::fs::read_to_string(crate::helpers::root().join("mappings/servicenow/sc_req_item.toml")).expect("mapping");
    let key = console.app.sim.sys_id_of("sc_req_item", "RITM0010002").expect("seeded");
    let stored: Value = console
        .client()
        .get(format!("{}/api/tickets/{}/{key}", console.url, crate::helpers::CONNECTOR))
        .bearer_auth(&console.tokens.viewer)
        .send()
        .await
        .expect("ticket")
        .json()
        .await
        .expect("json");
    let ticket = stored["stored"].clone();
    assert_eq!(ticket["number"], "RITM0010002");
    assert!(stored["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .any(|e| e["kind"] == "decided"));
    let preview = |mapping: String| {
        let console = &console;
        let ticket = ticket.clone();
        async move {
            let r = console
                .client()
                .post(format!("{}/api/preview", console.url))
                .bearer_auth(&console.tokens.viewer)
                .json(&json!({"connector": crate::helpers::CONNECTOR, "mapping": mapping, "ticket": ticket}))
                .send()
                .await
                .expect("preview");
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.expect("json")
        }
    };
    // As configured: all the way to the comment.
    let whole = preview(mapping.clone()).await;
    assert_eq!(whole["reached"], "comment", "{whole}");
    assert!(whole["enriched"]["catalog"].is_object(), "{whole}");
    assert!(whole["comment"].as_str().expect("comment").contains("deskbridge-id:preview"));
    // A broken key: the error names its line and key, nothing further runs.
    let broken = mapping.replacen("path = \"variables.", "pathh = \"variables.", 1);
    let line = broken.lines().position(|l| l.contains("pathh =")).expect("edited line") + 1;
    let errors = preview(broken).await;
    assert_eq!(errors["reached"], "mapping");
    let problems = errors["mapping_errors"].as_array().expect("errors");
    assert!(
        problems
            .iter()
            .any(|p| p["line"] == json!(line) && p["message"].as_str().unwrap_or_default().contains("pathh")),
        "line {line}: {errors}"
    );
    // A field the ticket lacks: the mapping asks for it, and the comment says so.
    let missing = mapping.replacen(
        "\"entitlement.id\" = { path = \"variables.role\" }",
        "\"entitlement.id\" = { path = \"variables.no_such_role\" }",
        1,
    );
    assert_ne!(missing, mapping);
    let incomplete = preview(missing).await;
    assert_eq!(incomplete["normalized"]["status"], "incomplete", "{incomplete}");
    assert_eq!(incomplete["decision"]["outcome"], "needs_info");
    assert!(incomplete["comment"].as_str().expect("comment").contains("MORE INFORMATION"));
    // Nothing stored, nothing written to the ITSM.
    assert_eq!(snapshot(&console).await, before);
    let writes = super::writes(&console.app.sim.requests());
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test]
async fn operator_actions_are_audited_with_who_asked() {
    let console = Console::start().await;
    let key = console.app.sim.sys_id_of("sc_req_item", "RITM0010003").expect("seeded");
    let client = console.client();
    let retried: Value = client
        .post(format!("{}/api/parked/retry", console.url))
        .bearer_auth(&console.tokens.operator)
        .json(&json!({"connector": crate::helpers::CONNECTOR}))
        .send()
        .await
        .expect("retry")
        .json()
        .await
        .expect("json");
    assert_eq!(retried["comments"], 0);
    let redecided = client
        .post(format!("{}/api/tickets/{}/{key}/redecide", console.url, crate::helpers::CONNECTOR))
        .bearer_auth(&console.tokens.operator)
        .json(&json!({}))
        .send()
        .await
        .expect("redecide");
    assert_eq!(redecided.status(), StatusCode::OK);
    let body: Value = redecided.json().await.expect("json");
    // deskbridge's own work note bumped the record's version: at most that one is read.
    assert!(body["new_versions"].as_u64().is_some_and(|n| n <= 1), "{body}");
    let records = console.app.store.audit_records().await.expect("audit");
    let actors: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.kind == "retry_requested" || r.kind == "redecide_requested")
        .map(|r| {
            let payload: Value = serde_json::from_str(&r.payload).expect("payload");
            (r.kind.clone(), payload["actor"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        actors,
        vec![
            ("retry_requested".to_owned(), "api:otto".to_owned()),
            ("redecide_requested".to_owned(), "api:otto".to_owned())
        ]
    );
    deskbridge::audit::verify_store(&console.app.store)
        .await
        .expect("readable")
        .expect("the chain verifies");
    // A viewer is refused and nothing is recorded.
    let refused = client
        .post(format!("{}/api/parked/retry", console.url))
        .bearer_auth(&console.tokens.viewer)
        .json(&json!({}))
        .send()
        .await
        .expect("retry");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(console.app.store.audit_records().await.expect("audit").len(), records.len());
}

#[tokio::test]
async fn the_drift_report_charts_every_ticket_the_store_holds() {
    let console = Console::start().await;
    // More requests arrive while the policy answers nothing usable: those it is asked about
    // wait for a decision.
    console.app.sim.generate(6);
    let broken = "package deskbridge.access\ndecision := {\"outcome\": \"approve\"}\n";
    console
        .app
        .pipeline_with(std::sync::Arc::new(crate::helpers::policy_from_text(broken)))
        .run_once()
        .await
        .expect("pass");
    let report: Value = call(&console, "GET", "/api/reports/drift", Some(&console.tokens.viewer))
        .await
        .json()
        .await
        .expect("json");
    // The findings are the CLI report's.
    let findings = deskbridge::report::drift::drift(&console.app.store, &Default::default())
        .await
        .expect("findings");
    assert_eq!(report["findings"], serde_json::to_value(&findings).expect("json"));
    let by_kind: Vec<(String, u64)> = report["by_kind"]
        .as_array()
        .expect("by kind")
        .iter()
        .map(|b| (b["label"].as_str().expect("label").to_owned(), b["count"].as_u64().expect("count")))
        .collect();
    assert_eq!(by_kind.len(), deskbridge::report::drift::KINDS.len());
    for (kind, count) in &by_kind {
        assert_eq!(*count as usize, findings.iter().filter(|f| f.kind == kind).count(), "{kind}");
    }
    // The charts count every ticket's latest state, as read whole from the store.
    let states = console.app.store.ticket_states().await.expect("states");
    let waiting = states
        .iter()
        .filter(|t| matches!(t.status.as_str(), "pending" | "received"))
        .count();
    assert!(
        waiting >= 1,
        "{:?}",
        states.iter().map(|t| (&t.number, &t.status)).collect::<Vec<_>>()
    );
    let charted: u64 = report["pending_age"]
        .as_array()
        .expect("ages")
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(charted as usize, waiting, "{}", report["pending_age"]);
    let mut asks: std::collections::BTreeMap<(String, String, String), usize> = Default::default();
    for t in &states {
        let request = &t.parsed().0["request"];
        let field = |v: &Value| v.as_str().map(str::to_owned);
        if let (Some(s), Some(b), Some(e)) = (
            field(&request["target"]["system"]),
            field(&request["beneficiary"]["id"]),
            field(&request["entitlement"]["id"]),
        ) {
            *asks.entry((s, b, e)).or_default() += 1;
        }
    }
    let mut repeated: std::collections::BTreeMap<String, u64> = Default::default();
    for ((system, _, _), n) in asks.into_iter().filter(|(_, n)| *n >= 2) {
        *repeated.entry(system).or_default() += n as u64;
    }
    assert!(!repeated.is_empty(), "the seeded tickets repeat a request");
    let charted: std::collections::BTreeMap<String, u64> = report["repeated_by_system"]
        .as_array()
        .expect("repeats")
        .iter()
        .map(|b| (b["label"].as_str().expect("label").to_owned(), b["count"].as_u64().expect("count")))
        .collect();
    assert_eq!(charted, repeated);
}

#[tokio::test]
async fn readiness_names_a_decision_point_that_fails() {
    let app = crate::helpers::TestApp::spawn().await;
    // A policy whose decision is undefined: every request stays pending (fail closed).
    let broken = crate::helpers::policy_from_text("package deskbridge.access\n\ndecision := x if { x := input.nothing }\n");
    let pipeline = app.pipeline_with(std::sync::Arc::new(broken));
    let console = Console::with(app, pipeline).await;
    let r = console
        .client()
        .get(format!("{}/readyz", console.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("json");
    let check = body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "decision point")
        .expect("decision point check")
        .clone();
    assert_eq!(check["ok"], false, "{body}");
    assert!(
        check["detail"].as_str().expect("detail").contains("requests stay pending"),
        "{body}"
    );
}

#[tokio::test]
async fn tickets_are_paged_and_searched_in_the_store() {
    let console = Console::start().await;
    let list = |query: &'static str| {
        let console = &console;
        async move {
            console
                .client()
                .get(format!("{}/api/tickets{query}", console.url))
                .bearer_auth(&console.tokens.viewer)
                .send()
                .await
                .expect("tickets")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let numbers = |v: &Value| -> Vec<String> {
        v["tickets"]
            .as_array()
            .expect("tickets")
            .iter()
            .map(|t| t["number"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let all = list("").await;
    assert_eq!(numbers(&all).len(), 7);
    assert_eq!(all["more"], false);
    let first = list("?limit=2").await;
    assert_eq!(numbers(&first), numbers(&all)[..2]);
    assert_eq!(first["more"], true);
    let next = list("?limit=2&offset=2").await;
    assert_eq!(numbers(&next), numbers(&all)[2..4]);
    // Any case, any part of the number, key or request; wildcards are literal.
    assert_eq!(numbers(&list("?q=ritm0010002").await), vec!["RITM0010002"]);
    assert_eq!(numbers(&list("?q=FI_POSTING").await), vec!["RITM0010002"]);
    // As wildcards these would match RITM0010002.
    assert!(numbers(&list("?q=RITM001%25002").await).is_empty());
    assert!(numbers(&list("?q=RITM001_002").await).is_empty());
}

/// schemathesis generates requests from `/api/openapi.json` (valid and invalid ones) and checks
/// every answer against the document: status codes, bodies, content types, no server error.
/// `.ci/schemathesis` installs it; set `DESKBRIDGE_SCHEMATHESIS` to its path.
#[tokio::test]
async fn the_api_answers_as_its_openapi_document_says() {
    let exe = std::env::var("DESKBRIDGE_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let console = Console::start().await;
    let doc = console
        .client()
        .get(format!("{}/api/openapi.json", console.url))
        .bearer_auth(&console.tokens.operator)
        .send()
        .await
        .expect("document")
        .text()
        .await
        .expect("text");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, doc).expect("write");
    let (url, token) = (console.url.clone(), console.tokens.operator.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&exe)
            .arg("run")
            .arg(&path)
            .args(["--url", &url, "--max-examples", "40", "--no-color"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("schemathesis is not installed ({exe}: {e}); run .ci/schemathesis or set DESKBRIDGE_SCHEMATHESIS"))
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the API does not answer as its document says:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("generated") && !stdout.contains("failed"), "{stdout}");
}
