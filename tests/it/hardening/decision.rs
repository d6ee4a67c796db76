//! Decision points: AuthZEN discovery, obligations and request shape; the Rego time limit and
//! policy hash; the circuit breaker's logging.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deskbridge::decision::breaker::{Breaker, BreakerConfig};
use deskbridge::decision::rego::RegoDecisionPoint;
use deskbridge::decision::{DecisionError, DecisionPoint};
use deskbridge::schema::Outcome;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::pdp::{authzen, boolean_outcomes, seeded_requests};
use crate::pdp_servers::{self, Mode};

#[tokio::test]
async fn discovery_never_sends_the_token_to_another_origin() {
    let pdp = pdp_servers::authzen().await;
    let elsewhere = pdp_servers::authzen().await;
    pdp.set(|b| b.endpoints_base = Some(elsewhere.url.clone()));
    let request = &seeded_requests()["RITM0010001"];

    let refused = authzen(&pdp.url, json!({})).decide(request).await;
    let err = refused.expect_err("an endpoint on another origin fails closed");
    assert!(matches!(err, DecisionError::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("origin"), "{err}");
    assert!(
        elsewhere.calls().is_empty(),
        "nothing, and no token, reached the other origin: {:?}",
        elsewhere.calls()
    );

    // An origin the admin lists explicitly is used.
    let allowed = authzen(&pdp.url, json!({"allowed_origins": [elsewhere.url]})).decide(request).await;
    assert!(allowed.is_ok(), "{allowed:?}");
    assert!(!elsewhere.calls().is_empty());

    // The allow-list is origins, not prefixes: a longer host or another port is not the same.
    let tricky = pdp_servers::authzen().await;
    tricky.set(|b| b.endpoints_base = Some(format!("{}.evil.example", pdp.url)));
    let result = authzen(&tricky.url, json!({})).decide(request).await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn boolean_mode_keeps_the_obligations_of_both_answers() {
    let pdp = pdp_servers::authzen().await;
    pdp.set(|b| {
        b.mode = Mode::Boolean;
        b.request_obligations = Some(json!([{"id": "o1", "type": "notification", "properties": {"to": "ciso"}}]));
    });
    let requests = seeded_requests();
    // RITM0010001 is auto-approved by the boolean PDP; the first answer carries an obligation
    // deskbridge cannot fulfil, so a person must review.
    for batch in [true, false] {
        let mut extra = boolean_outcomes();
        extra["batch"] = json!(batch);
        let d = authzen(&pdp.url, extra)
            .decide(&requests["RITM0010001"])
            .await
            .expect("decides")
            .decision;
        assert_eq!(d.outcome, Outcome::Review, "batch {batch}: {:?}", d.reasons);
        assert!(d.reasons.iter().any(|r| r.contains("notification")), "{:?}", d.reasons);
    }

    // A known obligation on the first answer is kept too.
    pdp.set(|b| b.request_obligations = Some(json!([{"id": "o2", "type": "step-up", "properties": {}}])));
    let d = authzen(&pdp.url, boolean_outcomes())
        .decide(&requests["RITM0010001"])
        .await
        .expect("decides")
        .decision;
    assert_eq!(d.outcome, Outcome::Approve);
    assert!(d.obligations.step_up, "{:?}", d.obligations);
}

fn nulls(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Null => found.push(path.to_owned()),
        Value::Object(map) => map.iter().for_each(|(k, v)| nulls(v, &format!("{path}.{k}"), found)),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| nulls(v, &format!("{path}[{i}]"), found)),
        _ => {}
    }
}

#[tokio::test]
async fn authzen_requests_omit_absent_values() {
    let pdp = pdp_servers::authzen().await;
    let requests = seeded_requests();
    for (number, request) in &requests {
        authzen(&pdp.url, json!({})).decide(request).await.expect(number);
    }
    pdp.set(|b| b.mode = Mode::Boolean);
    for request in requests.values() {
        authzen(&pdp.url, boolean_outcomes()).decide(request).await.expect("decides");
    }
    let mut found = Vec::new();
    for (kind, body) in pdp.calls() {
        if kind.starts_with("evaluation") {
            nulls(&body, &kind, &mut found);
        }
    }
    assert!(found.is_empty(), "null values sent to the PDP: {found:?}");
}

const RUNAWAY: &str = r#"package deskbridge.access
decision := {"outcome": "approve", "reasons": [sprintf("counted %d", [count(numbers.range(1, 10000000))])]}
"#;

#[tokio::test]
async fn a_runaway_policy_is_stopped_at_the_wall_clock_limit_without_blocking_the_runtime() {
    let policy = RegoDecisionPoint::from_sources(
        vec![("runaway.rego".into(), RUNAWAY.into())],
        "data.deskbridge.access.decision",
        Duration::from_millis(100),
    )
    .expect("loads");
    let request = &seeded_requests()["RITM0010001"];

    // A ticker on this (single-threaded) runtime keeps turning while the policy runs.
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let result = policy.decide(request).await;
    let took = started.elapsed();
    ticker.abort();
    assert!(
        matches!(result, Err(DecisionError::Timeout(_))),
        "an approve computed past the limit is not accepted: {result:?}"
    );
    assert!(
        took < Duration::from_millis(900),
        "answered at the limit, not when the policy finished: {took:?}"
    );
    assert!(
        ticks.load(Ordering::Relaxed) >= 4,
        "the runtime kept turning: {} ticks",
        ticks.load(Ordering::Relaxed)
    );

    // The synchronous path (benches, the CLI) refuses an over-time answer as well.
    let sync = policy.decide_now(request);
    assert!(matches!(sync, Err(DecisionError::Timeout(_))), "{sync:?}");
}

#[tokio::test]
async fn overrunning_evaluations_are_bounded_and_the_policy_recovers() {
    let policy = Arc::new(
        RegoDecisionPoint::from_sources(
            vec![(
                "p.rego".into(),
                r#"package deskbridge.access
decision := {"outcome": "deny", "reasons": ["fast"]} if not slow
decision := {"outcome": "approve", "reasons": [sprintf("counted %d", [count(numbers.range(1, 5000000))])]} if slow
slow if input.justification == "slow"
"#
                .into(),
            )],
            "data.deskbridge.access.decision",
            Duration::from_millis(50),
        )
        .expect("loads"),
    );
    let requests = seeded_requests();
    let mut slow = requests["RITM0010001"].clone();
    slow.justification = Some("slow".into());
    let fast = &requests["RITM0010002"];
    // Many runaways at once: every one fails closed and none waits for the others.
    let started = Instant::now();
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let (policy, slow) = (policy.clone(), slow.clone());
            tokio::spawn(async move { policy.decide(&slow).await })
        })
        .collect();
    for run in runs {
        let result = run.await.expect("joins");
        assert!(
            matches!(result, Err(DecisionError::Timeout(_) | DecisionError::Unavailable(_))),
            "{result:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // Once the overruns finish, ordinary decisions flow again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match policy.decide(fast).await {
            Ok(d) => {
                assert_eq!(d.decision.outcome, Outcome::Deny);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, DecisionError::Unavailable(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the policy never recovered: {e}"),
        }
    }
}

#[test]
fn the_policy_hash_is_of_the_text_not_the_path() {
    let text = std::fs::read_to_string(crate::helpers::root().join("examples/policies/access.rego")).expect("policy");
    let load = |name: &str| {
        RegoDecisionPoint::from_sources(
            vec![(name.into(), text.clone())],
            "data.deskbridge.access.decision",
            Duration::from_millis(100),
        )
        .expect("loads")
        .policy_version()
        .to_owned()
    };
    assert_eq!(load("examples/policies/access.rego"), load("/etc/deskbridge/access.rego"));
    assert_ne!(
        load("access.rego"),
        RegoDecisionPoint::from_sources(
            vec![("access.rego".into(), format!("{text}\n# changed\n"))],
            "data.deskbridge.access.decision",
            Duration::from_millis(100)
        )
        .expect("loads")
        .policy_version()
    );
}

/// Captures formatted log lines on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_open_circuit_logs_its_state_changes_not_every_pending_row() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::spawn().await;
    let pdp = pdp_servers::authzen().await;
    pdp.set(|b| b.status = Some(503));
    let breaker: Arc<dyn DecisionPoint> = Arc::new(Breaker::new(
        authzen(&pdp.url, json!({"discovery": false})),
        &BreakerConfig {
            failures: 2,
            cooldown_secs: 600,
        },
    ));
    let pipeline = app.pipeline_with(breaker);
    let mut refused = 0;
    for _ in 0..4 {
        let report = pipeline.run_once().await.expect("pass");
        refused += report.failed_decisions;
    }
    assert!(refused >= 20, "every pending row was tried each pass: {refused}");
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let warns: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(warns.len() <= 3, "{} WARN lines:\n{}", warns.len(), warns.join("\n"));
    assert!(warns.iter().any(|l| l.contains("circuit open")), "{text}");
}
