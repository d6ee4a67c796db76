//! One decision, one comment — the way reality breaks it: writes the ITSM applies and then
//! loses the answer to (a proxy's 502, a gateway's 504, a dropped connection, a timeout), on
//! ServiceNow's PATCH, Jira's v3 comment POST, JSM's request-comment POST and the comment
//! property PUT; a marker planted in ticket text; poison rows; refused writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deskbridge::pipeline::{Instance, Pipeline, Report, Settings};
use deskbridge::render::CommentRenderer;
use deskbridge::store::Store;
use deskbridge_jira::simulator::{Fault as JiraFault, SimConfig as JiraSimConfig, Simulator as JiraSim, Target as JiraTarget};
use deskbridge_jira::{CommentApi, Deployment, Jira};
use deskbridge_servicenow::simulator::{Fault, Target, INTEGRATION_USER, SEEDED_ACCESS_TICKETS};
use deskbridge_servicenow::ServiceNow;

use crate::helpers::{shipped_mapping, shipped_policy, TestApp, CONNECTOR};
use crate::jira::{jira_config, jsm_mapping};

fn fast_settings() -> Settings {
    Settings {
        decision_retry_base: Duration::ZERO,
        decision_retry_max: Duration::ZERO,
        post_retry_base: Duration::ZERO,
        post_retry_max: Duration::ZERO,
        ..Settings::default()
    }
}

/// Runs passes until nothing is queued (or 30 s pass); returns the summed report.
async fn settle(pipeline: &Pipeline, store: &Store) -> Report {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut total = Report::default();
    loop {
        let r = pipeline.run_once().await.expect("pass");
        total.posted += r.posted;
        total.failed_posts += r.failed_posts;
        total.decided += r.decided;
        total.parked += r.parked;
        total.connector_errors.extend(r.connector_errors);
        let c = store.counts().await.expect("counts");
        if c.queued == 0 && c.pending == 0 {
            return total;
        }
        assert!(Instant::now() < deadline, "not settled: {c:?} {total:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A ServiceNow pipeline whose client times out after one second.
fn servicenow_pipeline(app: &TestApp) -> Pipeline {
    let mut config = deskbridge::commands::demo::servicenow_config(app.sim.base_url()).expect("config");
    config.http.timeout_secs = 1;
    config.http.backoff_base_ms = 10;
    config.http.backoff_max_ms = 50;
    Pipeline::new(
        app.store.clone(),
        vec![Instance {
            connector: Arc::new(ServiceNow::new(CONNECTOR, config).expect("connector")),
            mapping: Arc::new(shipped_mapping()),
        }],
        Arc::new(shipped_policy()),
        CommentRenderer::new(None).expect("template"),
        fast_settings(),
    )
    .with_enricher(Some(crate::helpers::example_enricher()))
}

async fn found_existing(store: &Store) -> usize {
    let records = store.audit_records().await.expect("audit");
    assert_eq!(deskbridge::store::audit::verify(&records), Ok(records.len()));
    records
        .iter()
        .filter(|r| r.kind == "comment_posted" && r.payload.contains("\"found_existing\":true"))
        .count()
}

#[tokio::test]
async fn servicenow_writes_whose_answer_is_lost_leave_one_comment_each() {
    for fault in [
        Fault::AppliedThenStatus(502),
        Fault::AppliedThenStatus(504),
        Fault::AppliedThenStatus(500),
        Fault::AppliedThenDrop,
        Fault::AppliedThenStall(Duration::from_secs(2)),
    ] {
        let app = TestApp::spawn().await;
        let n = SEEDED_ACCESS_TICKETS.len();
        // Every ticket's first journal append lands, and its answer is lost.
        app.sim
            .inject_on(Target::route("PATCH", "/api/now/table/sc_req_item/"), fault.clone(), n);
        let pipeline = servicenow_pipeline(&app);
        let report = settle(&pipeline, &app.store).await;
        assert_eq!(report.failed_posts, n, "{fault:?}: each first attempt reported failed: {report:?}");
        assert_eq!(report.posted, n, "{fault:?}: then recorded");
        for number in SEEDED_ACCESS_TICKETS {
            let ours: Vec<_> = app
                .journal_of(number)
                .into_iter()
                .filter(|e| e.created_by == INTEGRATION_USER)
                .collect();
            assert_eq!(ours.len(), 1, "{fault:?}: {number} has exactly one comment: {ours:?}");
        }
        assert_eq!(
            found_existing(&app.store).await,
            n,
            "{fault:?}: each found by its marker, not posted again"
        );
        let fired = app.sim.faults_fired();
        assert_eq!(fired.values().sum::<usize>(), n, "{fault:?}: the faults fired: {fired:?}");
    }
}

struct JiraEnv {
    sim: JiraSim,
    store: Store,
    pipeline: Pipeline,
    _dir: tempfile::TempDir,
}

async fn jira_env(api: CommentApi) -> JiraEnv {
    let sim = JiraSim::start(JiraSimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("deskbridge.db")).await.expect("store");
    let mut config = jira_config(&sim, Deployment::Cloud, false);
    config.comments.api = api;
    config.http.timeout_secs = 1;
    let pipeline = Pipeline::new(
        store.clone(),
        vec![Instance {
            connector: Arc::new(Jira::new("jsm", config).expect("connector")),
            mapping: Arc::new(jsm_mapping()),
        }],
        Arc::new(shipped_policy()),
        CommentRenderer::new(None).expect("renderer"),
        fast_settings(),
    )
    .with_enricher(Some(crate::helpers::example_enricher()));
    JiraEnv {
        sim,
        store,
        pipeline,
        _dir: dir,
    }
}

fn assert_one_jira_comment_each(env: &JiraEnv, what: &str) {
    let me = env
        .sim
        .account_id(deskbridge_jira::simulator::INTEGRATION_EMAIL)
        .expect("integration user");
    for issue in env.sim.issues("ACC") {
        let ours = issue.comments.iter().filter(|c| c.author == me).count();
        let expected = usize::from(deskbridge_jira::simulator::SEEDED_ACCESS_ISSUES.contains(&issue.key().as_str()));
        assert_eq!(ours, expected, "{what}: {} has {ours} deskbridge comments", issue.key());
    }
}

#[tokio::test]
async fn jira_and_jsm_writes_whose_answer_is_lost_leave_one_comment_each() {
    let n = deskbridge_jira::simulator::SEEDED_ACCESS_ISSUES.len();
    let cases = [
        (
            CommentApi::Platform,
            "/rest/api/3/issue/",
            "POST",
            JiraFault::AppliedThenStatus(502),
        ),
        (CommentApi::Platform, "/rest/api/3/issue/", "POST", JiraFault::AppliedThenDrop),
        (
            CommentApi::Platform,
            "/rest/api/3/issue/",
            "POST",
            JiraFault::AppliedThenStall(Duration::from_secs(2)),
        ),
        (
            CommentApi::ServiceDesk,
            "/rest/servicedeskapi/request/",
            "POST",
            JiraFault::AppliedThenStatus(504),
        ),
        (
            CommentApi::ServiceDesk,
            "/rest/servicedeskapi/request/",
            "POST",
            JiraFault::AppliedThenDrop,
        ),
        (CommentApi::ServiceDesk, "/properties/", "PUT", JiraFault::AppliedThenStatus(502)),
    ];
    for (api, path, method, fault) in cases {
        let what = format!("{api:?} {method} {path} {fault:?}");
        let env = jira_env(api).await;
        env.sim.inject_on(JiraTarget::route(method, path), fault, n);
        let report = settle(&env.pipeline, &env.store).await;
        assert_eq!(report.posted, n, "{what}: {report:?}");
        assert_one_jira_comment_each(&env, &what);
        let fired: usize = env.sim.faults_fired().values().sum();
        assert!(fired >= n.min(1), "{what}: the faults fired ({fired})");
    }
}

#[tokio::test]
async fn a_marker_planted_on_the_ticket_does_not_suppress_the_real_decision() {
    let app = TestApp::spawn().await;
    let pipeline = app.pipeline();
    let mut report = Report::default();
    pipeline.poll(&mut report).await.expect("poll");
    let ticket = "RITM0010002";
    let key = app.sim.sys_id_of("sc_req_item", ticket).expect("seeded");
    // Suppose the requester learned the marker this version will get (they cannot compute it:
    // it is keyed per installation). It appears on the ticket quoted inside a line of the
    // integration user's own journal, and as a line of a note claiming another outcome.
    let row = app.store.claim_inbox(100, &deskbridge::store::now()).await.expect("claim");
    let raw = row.iter().find(|r| r.ticket_key == key).expect("row").ticket().expect("ticket");
    let deskbridge_schema_request = match shipped_mapping().normalize(&raw) {
        deskbridge::schema::Normalized::AccessRequest { request } => request,
        other => panic!("{other:?}"),
    };
    let marker = app
        .store
        .marker(CONNECTOR, &key, &deskbridge::pipeline::request_hash(&deskbridge_schema_request));
    app.store.release_claims().await.expect("release");
    app.sim.add_journal(
        "sc_req_item",
        &key,
        "work_notes",
        &format!("Requester wrote: please approve [{marker}]"),
        INTEGRATION_USER,
    );
    app.sim.add_journal(
        "sc_req_item",
        &key,
        "work_notes",
        &format!("deskbridge decision: APPROVED by policy\n[{marker}]"),
        INTEGRATION_USER,
    );
    let mut report = Report::default();
    pipeline.decide_all(&mut report).await.expect("decide");
    pipeline.post_all(&mut report).await.expect("post");
    let journal = app.journal_of(ticket);
    let real: Vec<_> = journal
        .iter()
        .filter(|e| e.value.starts_with("deskbridge decision: DENIED by policy"))
        .collect();
    assert_eq!(real.len(), 1, "the policy's deny is posted: {journal:?}");
    assert_eq!(found_existing(&app.store).await, 0, "nothing was taken for already posted");
}

#[tokio::test]
async fn ticket_text_quoting_a_marker_is_neutralised_in_the_comment() {
    let app = TestApp::spawn().await;
    let key = app.sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    app.sim.set_variable(
        &key,
        "business_justification",
        "need it\n[deskbridge-id:0123456789abcdef0123456789abcdef]",
    );
    let report = app.pipeline().run_once().await.expect("pass");
    assert!(report.posted >= 1);
    for e in app.journal_of("RITM0010001") {
        let lines: Vec<&str> = e.value.lines().filter(|l| l.contains("deskbridge-id:")).collect();
        assert_eq!(lines.len(), 1, "only the marker line reads as a marker: {}", e.value);
    }
}

#[tokio::test]
async fn a_poison_row_is_parked_while_the_rest_flows_and_retried_on_request() {
    let app = TestApp::spawn().await;
    // Tickets of a connector that was removed from the configuration.
    let gone = deskbridge_connector::Ticket {
        source: "removed".into(),
        key: "0123456789abcdef0123456789abcdef".into(),
        number: "RITM9".into(),
        url: "https://removed.example/RITM9".into(),
        updated: chrono::Utc::now(),
        version: "1".into(),
        raw: serde_json::json!({}),
    };
    app.store
        .ingest_page("removed", &[gone], &[], &deskbridge_connector::Cursor::start())
        .await
        .expect("ingest");
    let report = app.pipeline().run_once().await.expect("pass");
    assert_eq!(report.parked, 1, "{report:?}");
    assert_eq!(report.posted, SEEDED_ACCESS_TICKETS.len(), "the rest flows: {report:?}");
    let parked = app.store.parked().await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert!(parked[0].error.contains("\"removed\" is not in the configuration"), "{parked:?}");
    // Later passes skip it.
    let again = app.pipeline().run_once().await.expect("pass");
    assert_eq!((again.parked, again.decided), (0, 0), "{again:?}");
    let retried = app.store.retry_parked(Some("removed"), None, "test").await.expect("retry");
    assert_eq!(retried.tickets, 1);
    let records = app.store.audit_records().await.expect("audit");
    assert!(records.iter().any(|r| r.kind == "parked") && records.iter().any(|r| r.kind == "retry_requested"));
}

#[tokio::test]
async fn a_refused_write_halts_the_connector_instead_of_retrying_forever() {
    let app = TestApp::spawn().await;
    // The integration user lost its write role: every journal append is a 403.
    app.sim
        .inject_on(Target::route("PATCH", "/api/now/table/sc_req_item/"), Fault::Status(403), 1000);
    let pipeline = app.pipeline();
    let report = pipeline.run_once().await.expect("pass");
    assert_eq!(report.posted, 0);
    assert_eq!(report.parked, 1, "one write refused, then the connector stops posting: {report:?}");
    assert!(report.connector_errors.iter().any(|e| e.contains("403")), "{report:?}");
    let halts = app.store.halts().await.expect("halts");
    assert_eq!(halts.len(), 1);
    assert!(halts[0].reason.contains("403"), "{halts:?}");
    let patches = || app.sim.requests().iter().filter(|r| r.method == "PATCH").count();
    let before = patches();
    pipeline.run_once().await.expect("pass");
    assert_eq!(patches(), before, "a halted connector writes nothing");
    // The admin fixes the role and asks for a retry: everything is posted, once.
    app.sim.clear_faults();
    app.store.retry_parked(Some(CONNECTOR), None, "test").await.expect("retry");
    let report = settle(&pipeline, &app.store).await;
    assert_eq!(report.posted, SEEDED_ACCESS_TICKETS.len());
    for number in SEEDED_ACCESS_TICKETS {
        assert_eq!(app.journal_of(number).len(), 1, "{number}");
    }
}
