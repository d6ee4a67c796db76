//! Remote decision points against the spec-following servers in `pdp_servers`: outcomes,
//! batch semantics, X-Request-ID, discovery, and failing closed on everything else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deskbridge::decision::authzen::{AuthzenConfig, AuthzenDecisionPoint};
use deskbridge::decision::breaker::{Breaker, BreakerConfig};
use deskbridge::decision::opa::{OpaConfig, OpaDecisionPoint};
use deskbridge::decision::webhook::{WebhookConfig, WebhookDecisionPoint};
use deskbridge::decision::{DecisionError, DecisionPoint};
use deskbridge::schema::{AccessRequest, Normalized, Outcome};
use deskbridge_servicenow::simulator::SEEDED_ACCESS_TICKETS;
use serde_json::{json, Value};

use crate::helpers::{fixture, shipped_mapping, shipped_policy, TestApp};
use crate::pdp_servers::{self, Mode, WebhookFault};

pub(crate) fn seeded_requests() -> BTreeMap<&'static str, AccessRequest> {
    let mapping = shipped_mapping();
    SEEDED_ACCESS_TICKETS
        .iter()
        .map(|n| match mapping.normalize(&fixture(&format!("{n}.json"))) {
            Normalized::AccessRequest { request } => (*n, *request),
            other => panic!("{other:?}"),
        })
        .collect()
}

pub(crate) fn authzen(url: &str, extra: Value) -> AuthzenDecisionPoint {
    let mut config = json!({"url": url, "transport": {"timeout_ms": 500, "auth": {"type": "bearer", "token": "pdp-token"}}});
    for (k, v) in extra.as_object().expect("object") {
        config[k] = v.clone();
    }
    AuthzenDecisionPoint::new(serde_json::from_value::<AuthzenConfig>(config).expect("config")).expect("client")
}

pub(crate) fn boolean_outcomes() -> Value {
    json!({"outcomes": {"request_action": "request", "auto_approve_action": "auto_approve"}})
}

#[tokio::test]
async fn a_rich_authzen_pdp_sets_outcome_reasons_route_and_obligations() {
    let pdp = pdp_servers::authzen().await;
    let client = authzen(&pdp.url, json!({}));
    let requests = seeded_requests();

    let d = client.decide(&requests["RITM0010002"]).await.expect("decides").decision;
    assert_eq!((d.outcome, d.route_to.as_deref()), (Outcome::Review, Some("SAP Access Owners")));
    assert_eq!((d.obligations.max_duration_days, d.obligations.step_up), (Some(7), true));
    assert_eq!(d.reasons, vec!["privileged SAP access needs the owner"]);

    let d = client.decide(&requests["RITM0010001"]).await.expect("decides").decision;
    assert_eq!(
        d.outcome,
        Outcome::Review,
        "an obligation deskbridge cannot fulfil turns approve into review"
    );
    assert_eq!(d.route_to.as_deref(), Some("IAM Governance"));
    assert!(d.reasons.iter().any(|r| r.contains("notification")), "{:?}", d.reasons);

    let d = client.decide(&requests["RITM0010003"]).await.expect("decides").decision;
    assert_eq!(
        (d.outcome, d.missing.clone()),
        (Outcome::NeedsInfo, vec!["justification".to_string()])
    );
    let d = client.decide(&requests["RITM0010005"]).await.expect("decides").decision;
    assert_eq!(
        (d.outcome, d.reasons.clone()),
        (Outcome::Deny, vec!["separation of duties".to_string()])
    );
    assert_eq!(
        client.decide(&requests["RITM0010006"]).await.expect("decides").decision.outcome,
        Outcome::Approve
    );

    let calls = pdp.calls();
    assert_eq!(
        calls.iter().filter(|(k, _)| k == "metadata").count(),
        1,
        "discovery once, then cached"
    );
    let (_, first) = calls.iter().find(|(k, _)| k == "evaluation").expect("an evaluation");
    assert_eq!(
        first["subject"]["id"],
        "beneficiary-of-RITM0010002".replace("beneficiary-of-RITM0010002", "beth.anglin")
    );
    assert_eq!(first["subject"]["type"], "user");
    assert_eq!(
        first["resource"],
        json!({"type": "entitlement", "id": "FI_POSTING_ADMIN",
        "properties": {"system": "sap-erp", "environment": "prod", "privileged": true, "name": "FI_POSTING_ADMIN"}})
    );
    assert_eq!(first["action"]["name"], "grant");
    assert_eq!(first["context"]["ticket"]["number"], "RITM0010002");
}

#[tokio::test]
async fn a_boolean_pdp_gets_two_evaluations_in_one_batch() {
    let pdp = pdp_servers::authzen().await;
    pdp.set(|b| b.mode = Mode::Boolean);
    let client = authzen(&pdp.url, boolean_outcomes());
    let expected = [
        ("RITM0010001", Outcome::Approve),
        ("RITM0010002", Outcome::Review),
        ("RITM0010003", Outcome::Approve),
        ("RITM0010004", Outcome::Review),
        ("RITM0010005", Outcome::Deny),
        ("RITM0010006", Outcome::Review),
    ];
    let requests = seeded_requests();
    for (number, outcome) in expected {
        let d = client.decide(&requests[number]).await.expect("decides").decision;
        assert_eq!(d.outcome, outcome, "{number}: {:?}", d.reasons);
    }
    let calls = pdp.calls();
    let batches: Vec<&Value> = calls.iter().filter(|(k, _)| k == "evaluations").map(|(_, v)| v).collect();
    assert_eq!(batches.len(), 6, "one batch call per request");
    assert_eq!(batches[0]["options"]["evaluations_semantic"], "execute_all");
    assert_eq!(batches[0]["evaluations"].as_array().map(Vec::len), Some(2));
    assert!(calls.iter().all(|(k, _)| k != "evaluation"));

    // deny_on_first_deny: the PDP stops at the refused request and answers one item.
    let short = authzen(
        &pdp.url,
        json!({"outcomes": boolean_outcomes()["outcomes"], "evaluations_semantic": "deny_on_first_deny"}),
    );
    assert_eq!(
        short.decide(&requests["RITM0010005"]).await.expect("decides").decision.outcome,
        Outcome::Deny
    );
    assert_eq!(
        short.decide(&requests["RITM0010002"]).await.expect("decides").decision.outcome,
        Outcome::Review
    );
}

#[tokio::test]
async fn batch_off_or_unsupported_makes_single_evaluations() {
    for (batch, supported) in [(false, true), (true, false)] {
        let pdp = pdp_servers::authzen().await;
        pdp.set(|b| {
            b.mode = Mode::Boolean;
            b.batch_supported = supported;
        });
        let client = authzen(&pdp.url, json!({"batch": batch, "outcomes": boolean_outcomes()["outcomes"]}));
        let requests = seeded_requests();
        assert_eq!(
            client.decide(&requests["RITM0010002"]).await.expect("decides").decision.outcome,
            Outcome::Review
        );
        assert_eq!(
            client.decide(&requests["RITM0010005"]).await.expect("decides").decision.outcome,
            Outcome::Deny
        );
        let singles = pdp.calls().iter().filter(|(k, _)| k == "evaluation").count();
        assert_eq!(
            singles, 3,
            "two for the review, one for the refused request (batch {batch}, supported {supported})"
        );
    }
}

#[tokio::test]
async fn every_pdp_failure_fails_closed() {
    let requests = seeded_requests();
    let request = &requests["RITM0010006"];
    type Setup = Box<dyn Fn(&mut pdp_servers::Behaviour)>;
    let cases: Vec<(&str, Setup, Value)> = vec![
        ("wrong token", Box::new(|b| b.token = Some("other".into())), json!({})),
        ("500", Box::new(|b| b.status = Some(500)), json!({})),
        ("403", Box::new(|b| b.status = Some(403)), json!({})),
        ("timeout", Box::new(|b| b.delay = Some(Duration::from_millis(1500))), json!({})),
        (
            "malformed JSON",
            Box::new(|b| b.body = Some("{\"decision\": tru".into())),
            json!({}),
        ),
        (
            "wrong type",
            Box::new(|b| b.body = Some("{\"decision\": \"yes\"}".into())),
            json!({}),
        ),
        (
            "missing decision",
            Box::new(|b| b.body = Some("{\"context\": {}}".into())),
            json!({}),
        ),
        (
            "unknown outcome",
            Box::new(|b| b.body = Some("{\"decision\": false, \"context\": {\"outcome\": \"maybe\"}}".into())),
            json!({}),
        ),
        (
            "contradiction",
            Box::new(|b| b.body = Some("{\"decision\": false, \"context\": {\"outcome\": \"approve\"}}".into())),
            json!({}),
        ),
        ("X-Request-ID mismatch", Box::new(|b| b.wrong_request_id = true), json!({})),
        (
            "PDP mix-up",
            Box::new(|b| b.advertised_pdp = Some("https://evil.example".into())),
            json!({}),
        ),
        (
            "per-item error",
            Box::new(|b| {
                b.mode = Mode::Boolean;
                b.item_error = true;
            }),
            boolean_outcomes(),
        ),
    ];
    for (name, setup, extra) in cases {
        let pdp = pdp_servers::authzen().await;
        pdp.set(|b| setup(b));
        let result = authzen(&pdp.url, extra).decide(request).await;
        assert!(result.is_err(), "{name}: {result:?}");
        if name == "PDP mix-up" {
            assert!(result.expect_err("error").to_string().contains("mix-up"));
        }
    }
    let closed = authzen("http://127.0.0.1:9", json!({"discovery": false})).decide(request).await;
    assert!(matches!(closed, Err(DecisionError::Unavailable(_))), "{closed:?}");
}

#[tokio::test]
async fn the_test_pdp_follows_the_spec_for_batches_and_errors() {
    let pdp = pdp_servers::authzen().await;
    pdp.set(|b| {
        b.mode = Mode::Boolean;
        b.token = None;
    });
    let http = reqwest::Client::new();
    let post = |path: &str, body: String, content_type: &'static str| {
        http.post(format!("{}{path}", pdp.url))
            .header("content-type", content_type)
            .header("x-request-id", "r-1")
            .body(body)
            .send()
    };
    let batch = |semantic: &str| {
        json!({"subject": {"type": "user", "id": "a"}, "resource": {"type": "entitlement", "id": "x", "properties": {"environment": "prod"}},
            "evaluations": [{"action": {"name": "auto_approve"}}, {"action": {"name": "request"}}, {"action": {"name": "auto_approve"}}],
            "options": {"evaluations_semantic": semantic}})
        .to_string()
    };
    for (semantic, expected) in [("execute_all", 3), ("deny_on_first_deny", 1), ("permit_on_first_permit", 2)] {
        let r = post("/access/v1/evaluations", batch(semantic), "application/json")
            .await
            .expect("post");
        assert_eq!(r.headers()["x-request-id"], "r-1");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["evaluations"].as_array().map(Vec::len), Some(expected), "{semantic}: {body}");
    }
    let unknown_fields = json!({"subject": {"type": "user", "id": "a", "x": 1}, "resource": {"type": "e", "id": "x"}, "action": {"name": "request"}, "extra": true});
    assert_eq!(
        post("/access/v1/evaluation", unknown_fields.to_string(), "application/json")
            .await
            .expect("post")
            .status(),
        200
    );
    assert_eq!(
        post("/access/v1/evaluation", "{".into(), "application/json")
            .await
            .expect("post")
            .status(),
        400
    );
    assert_eq!(
        post("/access/v1/evaluation", "{}".into(), "application/json")
            .await
            .expect("post")
            .status(),
        400
    );
    assert_eq!(
        post("/access/v1/evaluation", unknown_fields.to_string(), "text/plain")
            .await
            .expect("post")
            .status(),
        400
    );
}

#[tokio::test]
async fn opa_decides_like_the_embedded_policy_and_fails_closed_on_undefined() {
    let fail = Arc::new(Mutex::new(None));
    let url = pdp_servers::opa(fail.clone()).await;
    let opa = |path: &str| {
        OpaDecisionPoint::new(&serde_json::from_value::<OpaConfig>(json!({"url": url, "path": path})).expect("config")).expect("client")
    };
    let (remote, embedded) = (opa("deskbridge/access/decision"), shipped_policy());
    for (number, request) in seeded_requests() {
        let r = remote.decide(&request).await.expect("decides");
        let e = embedded.decide_now(&request).expect("decides").decision;
        assert_eq!(
            (r.decision.outcome, &r.decision.reasons, &r.decision.route_to),
            (e.outcome, &e.reasons, &e.route_to),
            "{number}"
        );
        assert_eq!(
            Some(r.decision.decision_id.as_str()),
            r.raw["decision_id"].as_str(),
            "OPA's decision_id is recorded"
        );
    }
    let request = &seeded_requests()["RITM0010001"];
    assert!(matches!(
        opa("deskbridge/access/no_such_rule").decide(request).await,
        Err(DecisionError::Undefined(_))
    ));
    assert!(matches!(
        opa("deskbridge/access/policy_version").decide(request).await,
        Err(DecisionError::Malformed(_))
    ));
    *fail.lock().expect("lock") = Some(500);
    assert!(matches!(remote.decide(request).await, Err(DecisionError::Unavailable(_))));
}

#[tokio::test]
async fn a_webhook_pdp_signs_both_ways() {
    let request = &seeded_requests()["RITM0010002"];
    let client = |url: &str, secret: &str| {
        WebhookDecisionPoint::new(
            serde_json::from_value::<WebhookConfig>(json!({"url": format!("{url}/decide"), "secret": secret})).expect("config"),
        )
        .expect("client")
    };
    let url = pdp_servers::webhook_adapter("pdp-webhook-s3cret-0123", WebhookFault::None).await;
    let d = client(&url, "pdp-webhook-s3cret-0123")
        .decide(request)
        .await
        .expect("decides")
        .decision;
    assert_eq!(
        (d.outcome, d.policy_id.as_str(), d.decision_id.as_str()),
        (Outcome::Review, "iga-adapter", "iga-42")
    );
    let refused = client(&url, "wrong-secret-0123456").decide(request).await;
    assert!(
        matches!(refused, Err(DecisionError::Rejected(_))),
        "the adapter refuses an unsigned request: {refused:?}"
    );
    let forged = client(
        &pdp_servers::webhook_adapter("pdp-webhook-s3cret-0123", WebhookFault::BadSignature).await,
        "pdp-webhook-s3cret-0123",
    )
    .decide(request)
    .await;
    assert!(matches!(forged, Err(DecisionError::Malformed(_))), "{forged:?}");
    let replayed = client(
        &pdp_servers::webhook_adapter("pdp-webhook-s3cret-0123", WebhookFault::WrongRequestId).await,
        "pdp-webhook-s3cret-0123",
    )
    .decide(request)
    .await;
    assert!(matches!(replayed, Err(DecisionError::Malformed(_))), "{replayed:?}");
}

#[tokio::test]
async fn the_circuit_breaker_stops_calling_a_pdp_that_is_down() {
    let pdp = pdp_servers::authzen().await;
    pdp.set(|b| b.status = Some(503));
    let breaker = Breaker::new(
        authzen(&pdp.url, json!({"discovery": false})),
        &BreakerConfig {
            failures: 2,
            cooldown_secs: 60,
        },
    );
    let request = &seeded_requests()["RITM0010001"];
    for _ in 0..5 {
        assert!(breaker.decide(request).await.is_err());
    }
    assert_eq!(pdp.calls().len(), 2, "the circuit opened after two failures");
}

#[tokio::test]
async fn shadow_mode_records_disagreements_and_never_changes_an_outcome() {
    let app = TestApp::spawn().await;
    let pdp = pdp_servers::authzen().await;
    pdp.set(|b| b.mode = Mode::Boolean);
    let shadow: Arc<dyn DecisionPoint> = Arc::new(authzen(&pdp.url, boolean_outcomes()));
    let report = app.pipeline().with_shadow(Some(shadow)).run_once().await.expect("pass");
    assert_eq!(report.decided, SEEDED_ACCESS_TICKETS.len());
    // The comments carry the primary (embedded) policy's outcomes.
    assert!(app.journal_of("RITM0010003")[0]
        .value
        .starts_with("deskbridge decision: MORE INFORMATION needed"));
    assert!(app.journal_of("RITM0010005")[0]
        .value
        .starts_with("deskbridge decision: REVIEW required"));
    let rows = app.store.shadow_results().await.expect("shadow");
    assert_eq!(rows.len(), SEEDED_ACCESS_TICKETS.len());
    let mut disagreements: Vec<(String, String, Option<String>)> = rows
        .iter()
        .filter(|r| !r.agree)
        .map(|r| (r.number.clone(), r.primary_outcome.clone(), r.shadow_outcome.clone()))
        .collect();
    disagreements.sort();
    assert_eq!(
        disagreements,
        vec![
            ("RITM0010002".into(), "deny".into(), Some("review".into())),
            ("RITM0010003".into(), "needs_info".into(), Some("approve".into())),
            ("RITM0010004".into(), "needs_info".into(), Some("review".into())),
            ("RITM0010005".into(), "review".into(), Some("deny".into())),
        ]
    );
    let text = deskbridge::commands::shadow_report(&app.store).await.expect("report");
    assert!(text.starts_with("2 of 6 shadow decisions agree"), "{text}");
}

#[tokio::test]
async fn a_long_outage_gets_one_delayed_comment_then_the_decision() {
    let app = TestApp::spawn().await;
    let pdp = pdp_servers::authzen().await;
    pdp.set(|b| b.status = Some(503));
    let down: Arc<dyn DecisionPoint> = Arc::new(authzen(&pdp.url, json!({"discovery": false})));
    let mut settings = deskbridge::pipeline::Settings {
        decision_retry_base: Duration::ZERO,
        decision_retry_max: Duration::ZERO,
        ..Default::default()
    };
    settings.delayed_comment_after = Some(Duration::ZERO);
    let pipeline = app.pipeline_with_settings(down, settings);
    for _ in 0..3 {
        let report = pipeline.run_once().await.expect("pass");
        assert_eq!(report.decided, 0);
    }
    for number in SEEDED_ACCESS_TICKETS {
        let journal = app.journal_of(number);
        assert_eq!(journal.len(), 1, "{number}: one delayed comment, not one per retry");
        assert!(
            journal[0].value.starts_with("deskbridge: the decision on this request is delayed"),
            "{}",
            journal[0].value
        );
    }
    pdp.set(|b| b.status = None);
    let report = pipeline.run_once().await.expect("pass");
    assert_eq!(report.decided, SEEDED_ACCESS_TICKETS.len(), "{report:?}");
    for number in SEEDED_ACCESS_TICKETS {
        let journal = app.journal_of(number);
        assert_eq!(journal.len(), 2, "{number}");
        assert!(journal[1].value.starts_with("deskbridge decision:"), "{}", journal[1].value);
    }
}

#[tokio::test]
async fn oauth_client_credentials_authenticate_to_the_pdp() {
    let pdp = pdp_servers::authzen().await;
    let config = json!({"url": pdp.url, "transport": {"timeout_ms": 1000, "auth": {"type": "client_credentials",
        "token_url": format!("{}/token", pdp.url), "client_id": "deskbridge", "client_secret": "client-secret", "scope": "pdp.evaluate"}}});
    let client = AuthzenDecisionPoint::new(serde_json::from_value::<AuthzenConfig>(config.clone()).expect("config")).expect("client");
    let requests = seeded_requests();
    for number in ["RITM0010002", "RITM0010006"] {
        client
            .decide(&requests[number])
            .await
            .expect("decides with a client-credentials token");
    }
    let tokens: Vec<Value> = pdp.calls().into_iter().filter(|(k, _)| k == "token").map(|(_, v)| v).collect();
    assert_eq!(tokens.len(), 1, "the token is cached");
    assert!(tokens[0].to_string().contains("pdp.evaluate"), "{}", tokens[0]);

    let mut wrong = config;
    wrong["transport"]["auth"]["client_secret"] = json!("nope");
    let refused = AuthzenDecisionPoint::new(serde_json::from_value::<AuthzenConfig>(wrong).expect("config"))
        .expect("client")
        .decide(&requests["RITM0010002"])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(!format!("{refused:?}").contains("nope"));
}
