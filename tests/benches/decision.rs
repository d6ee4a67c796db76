//! Decision-point benchmarks (criterion; figures, not pass/fail):
//!
//!     cargo bench --bench decision
//!
//! - embedded Rego: one decision on a normalized request (target ≤ 30 µs median);
//! - one ticket through the deciding stage, as the pipeline does it: normalize (the shipped
//!   mapping), enrich (the example catalog and directory export), decide (the shipped policy on
//!   its evaluation threads), with the policy's evaluation on the calling thread beside it so the
//!   cost of the hand-off to those threads shows (target ≤ 50 µs median);
//! - the decision's ticket comment, rendered from the shipped template for ServiceNow, as the
//!   deciding stage renders every decided ticket's (every value made inert, the template run);
//! - AuthZEN over loopback HTTP against a PDP that answers at once, so the time is deskbridge's
//!   own overhead: serialization, the HTTP round trip, validation (target ≤ 200 µs median).

use std::sync::Arc;

/// The allocator the `deskbridge` binary ships with (src/main.rs), so each step allocates here as
/// it does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::routing::post;
use axum::{Json, Router};
use criterion::{criterion_group, criterion_main, Criterion};
use deskbridge::decision::authzen::{AuthzenConfig, AuthzenDecisionPoint};
use deskbridge::decision::DecisionPoint;
use deskbridge::directory::file::FileDirectory;
use deskbridge::pipeline::enrich::Enricher;
use deskbridge::schema::{AccessRequest, Normalized};
use deskbridge_connector::Ticket;

fn ticket() -> Ticket {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/servicenow/RITM0010002.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("ticket")
}

fn request() -> AccessRequest {
    let (mapping, _) = deskbridge::commands::demo::shipped().expect("shipped");
    match mapping.normalize(&ticket()) {
        Normalized::AccessRequest { request } => *request,
        other => panic!("{other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let request = request();
    let (mapping, policy) = deskbridge::commands::demo::shipped().expect("policy");
    c.bench_function("embedded_rego_decision", |b| {
        b.iter(|| policy.decide_now(&request).expect("decides"))
    });

    let enricher = Enricher {
        catalog: deskbridge::commands::demo::example_catalog().expect("catalog"),
        directory: Some(Arc::new(
            FileDirectory::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/directory.json")).expect("directory"),
        )),
    };
    let ticket = ticket();
    let local = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    c.bench_function("normalize_enrich_decide", |b| {
        b.iter(|| {
            let Normalized::AccessRequest { request } = mapping.normalize(&ticket) else {
                panic!("not an access request")
            };
            let mut request = *request;
            local.block_on(enricher.enrich(&mut request)).expect("enriched");
            local.block_on(policy.decide(&request)).expect("decides")
        })
    });
    let mut enriched = request.clone();
    local.block_on(enricher.enrich(&mut enriched)).expect("enriched");
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("access.rego".into(), deskbridge::commands::demo::ACCESS_POLICY.into())
        .expect("policy");
    c.bench_function("rego_evaluation_on_the_calling_thread", |b| {
        b.iter(|| {
            engine.set_input(regorus::Value::from(serde_json::to_value(&enriched).expect("input")));
            engine.eval_rule("data.deskbridge.access.decision".into()).expect("evaluates")
        })
    });

    let decided = policy.decide_now(&enriched).expect("decides");
    let renderer = deskbridge::render::CommentRenderer::new(None).expect("shipped template");
    c.bench_function("render_comment", |b| {
        b.iter(|| {
            let input = deskbridge::render::CommentInput {
                number: "RITM0010002",
                request: Some(&enriched),
                decision: &decided.decision,
                supersedes: None,
            };
            renderer
                .render(&input, "deskbridge-id:bench", &deskbridge_servicenow::JournalMarkup)
                .expect("renders")
        })
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url = runtime.block_on(async {
        let app = Router::new().route(
            "/access/v1/evaluation",
            post(|| async { Json(serde_json::json!({"decision": true, "context": {"reasons": ["ok"]}})) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    });
    let config: AuthzenConfig = serde_json::from_value(serde_json::json!({"url": url, "discovery": false})).expect("config");
    let pdp = Arc::new(AuthzenDecisionPoint::new(config).expect("client"));
    c.bench_function("authzen_round_trip_loopback", |b| {
        b.iter(|| runtime.block_on(pdp.decide(&request)).expect("decides"))
    });
}

criterion_group!(decision, benches);
criterion_main!(decision);
