//! `sync --backfill --since`: reads what changed since a date, page by page, and resumes after
//! an interruption where the last stored page ended.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use deskbridge::pipeline::{Instance, Pipeline, Settings};
use deskbridge::render::CommentRenderer;
use deskbridge_servicenow::simulator::INTEGRATION_USER;
use deskbridge_servicenow::ServiceNow;

use crate::helpers::{shipped_mapping, shipped_policy, TestApp, CONNECTOR};

const GENERATED: usize = 1_000;

fn pipeline(app: &TestApp) -> Arc<Pipeline> {
    let mut config = deskbridge::commands::demo::servicenow_config(app.sim.base_url()).expect("config");
    config.page_size = 100;
    Arc::new(Pipeline::new(
        app.store.clone(),
        vec![Instance {
            connector: Arc::new(ServiceNow::new(CONNECTOR, config).expect("connector")),
            mapping: Arc::new(shipped_mapping()),
        }],
        Arc::new(shipped_policy()),
        CommentRenderer::new(None).expect("template"),
        Settings::default(),
    ))
}

#[tokio::test]
async fn an_interrupted_backfill_resumes_after_its_last_page_and_reads_only_since_the_date() {
    let app = TestApp::spawn().await;
    // The seeded tickets were last updated 15 minutes ago or more; the generated ones in the
    // 100 seconds before the last minute.
    let since = Utc::now() - TimeDelta::minutes(5);
    let generated = app.sim.generate(GENERATED);

    let first = pipeline(&app);
    let stopper = first.clone();
    let mut pages = 0;
    let mut read_before_stop = 0;
    first
        .backfill(since, |progress, _| {
            pages += 1;
            read_before_stop = progress.read;
            assert!(!progress.resumed);
            if progress.read >= 300 {
                stopper.stop();
            }
        })
        .await
        .expect("first run");
    assert!((300..GENERATED).contains(&read_before_stop), "stopped part-way: {read_before_stop}");

    let since_key = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let stored = app
        .store
        .backfill_cursor(CONNECTOR, &since_key)
        .await
        .expect("cursor")
        .expect("stored");
    let keyset: serde_json::Value = serde_json::from_str(stored.0.as_deref().expect("position")).expect("keyset");
    let requests_before = app.sim.requests().len();

    let second = pipeline(&app);
    let mut resumed = false;
    let mut read_after = 0;
    let report = second
        .backfill(since, |progress, _| {
            resumed = progress.resumed;
            read_after = progress.read;
        })
        .await
        .expect("second run");
    assert!(resumed, "the second run resumes");
    // Its first read starts at the stored cursor, not at the date.
    let first_read = app.sim.requests()[requests_before..]
        .iter()
        .find(|r| r.method == "GET" && r.path == "/api/now/table/sc_req_item")
        .and_then(|r| r.query.iter().find(|(k, _)| k == "sysparm_query").map(|(_, v)| v.clone()))
        .expect("a list request");
    let position = format!(
        "sys_updated_on={}^sys_id>{}",
        keyset["t"].as_str().expect("t"),
        keyset["id"].as_str().expect("id")
    );
    assert!(first_read.contains(&position), "{first_read} should start at {position}");
    // It reads the rest, plus the versions the first run's own comments made.
    assert!(read_after >= GENERATED - read_before_stop, "{read_after}");
    assert!(report.posted > 0, "{report:?}");

    // Every generated ticket is decided and commented once; the old seeded ones are untouched
    // and the live poll cursor has not moved.
    for number in &generated {
        let id = app.sim.sys_id_of("sc_req_item", number).expect("generated");
        let ours = app.sim.journal(&id).iter().filter(|e| e.created_by == INTEGRATION_USER).count();
        assert_eq!(ours, 1, "{number}");
    }
    for seeded in ["RITM0010001", "RITM0010006"] {
        let ours = app.journal_of(seeded).iter().filter(|e| e.created_by == INTEGRATION_USER).count();
        assert_eq!(ours, 0, "{seeded} is older than --since");
    }
    assert_eq!(
        app.store.cursor(CONNECTOR).await.expect("cursor"),
        deskbridge_connector::Cursor::start()
    );
}

#[tokio::test]
async fn a_backfill_page_that_fails_to_store_is_read_again_with_the_page_fetched_ahead() {
    let app = TestApp::spawn().await;
    let since = Utc::now() - TimeDelta::minutes(5);
    let generated = app.sim.generate(GENERATED);
    // The disk refuses the second page's first ticket, while the third page is fetched ahead.
    crate::helpers::refuse_inbox_inserts_after(&app.store, 100).await;
    let mut read = 0;
    let failed = pipeline(&app).backfill(since, |progress, _| read = progress.read).await;
    assert!(failed.is_err(), "the store failure stops the backfill");
    assert_eq!(read, 100, "the first page was stored, decided and posted");

    // The disk recovers: the same backfill resumes at the second page, and every generated
    // ticket, those of the page that was fetched ahead included, is commented once.
    crate::helpers::accept_inbox_inserts(&app.store).await;
    let mut resumed = false;
    pipeline(&app)
        .backfill(since, |progress, _| resumed = progress.resumed)
        .await
        .expect("second run");
    assert!(resumed, "the second run resumes");
    for number in &generated {
        let id = app.sim.sys_id_of("sc_req_item", number).expect("generated");
        let ours = app.sim.journal(&id).iter().filter(|e| e.created_by == INTEGRATION_USER).count();
        assert_eq!(ours, 1, "{number}");
    }
}
