//! End to end: simulator → connector → store → mapping → Rego → comment, over real HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use deskbridge::pipeline::Report;
use deskbridge_connector::{Comment, Connector};
use deskbridge_servicenow::simulator::{Fault, INTEGRATION_USER, SEEDED_ACCESS_TICKETS};

use crate::helpers::{policy_from_text, TestApp, CONNECTOR};

fn expected_outcomes() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("RITM0010001", "APPROVED by policy"),
        ("RITM0010002", "DENIED by policy"),
        ("RITM0010003", "MORE INFORMATION needed"),
        ("RITM0010004", "MORE INFORMATION needed"),
        ("RITM0010005", "REVIEW required"),
        ("RITM0010006", "REVIEW required"),
    ])
}

fn assert_one_comment_each(app: &TestApp) {
    for (number, label) in expected_outcomes() {
        let journal = app.journal_of(number);
        assert_eq!(journal.len(), 1, "{number} has exactly one comment: {journal:?}");
        assert_eq!(journal[0].element, "work_notes");
        assert_eq!(journal[0].created_by, INTEGRATION_USER);
        assert!(
            journal[0].value.starts_with(&format!("deskbridge decision: {label}")),
            "{number}: {}",
            journal[0].value
        );
        assert!(journal[0].value.contains("This ticket does not grant access by itself"));
    }
    assert!(app.journal_of("RITM0010007").is_empty(), "the support ticket gets no comment");
}

#[tokio::test]
async fn every_seeded_access_ticket_gets_exactly_one_comment_matching_the_policy() {
    let app = TestApp::spawn().await;
    let report = app.pipeline().run_once().await.expect("pass");
    assert_eq!(report.decided, SEEDED_ACCESS_TICKETS.len());
    assert_eq!(report.posted, SEEDED_ACCESS_TICKETS.len());
    assert!(report.connector_errors.is_empty(), "{:?}", report.connector_errors);
    assert_one_comment_each(&app);
    let needs_info = &app.journal_of("RITM0010004")[0].value;
    assert!(
        needs_info.contains("Please add to the ticket:\n- nhi.expires_at\n- nhi.owner"),
        "{needs_info}"
    );
    let records = app.store.audit_records().await.expect("audit");
    assert_eq!(deskbridge::store::audit::verify(&records), Ok(records.len()));
    // Each comment is recorded with its own journal entry's id, read back with the batch's
    // others in one request rather than one per comment.
    let recorded: Vec<String> = records
        .iter()
        .filter(|r| r.kind == "comment_posted")
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.payload).expect("payload")["comment_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for number in SEEDED_ACCESS_TICKETS {
        let entry = &app.journal_of(number)[0];
        assert!(recorded.contains(&entry.sys_id), "{number}: {} not in {recorded:?}", entry.sys_id);
    }
    let reads = app
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/sys_journal_field"))
        .count();
    assert_eq!(reads, 1, "one read-back for the batch");
}

#[tokio::test]
async fn a_second_run_posts_nothing_new() {
    let app = TestApp::spawn().await;
    let pipeline = app.pipeline();
    let version = |number: &str| {
        let id = app.sim.sys_id_of("sc_req_item", number).expect("seeded");
        app.sim.record("sc_req_item", &id).expect("record").get("sys_mod_count").cloned()
    };
    let before: Vec<_> = SEEDED_ACCESS_TICKETS.iter().map(|n| version(n)).collect();
    pipeline.run_once().await.expect("first pass");
    let inbox = app.store.counts().await.expect("counts").inbox;
    // Our own work notes bumped every commented ticket's version, and changed nothing else
    // deskbridge reads: the second pass reads those versions and stores none of them.
    for (number, before) in SEEDED_ACCESS_TICKETS.iter().zip(before) {
        assert_ne!(version(number), before, "{number}: our work note bumped its version");
    }
    let second = pipeline.run_once().await.expect("second pass");
    assert_eq!(second, Report::default(), "nothing new was stored, decided or posted");
    assert_eq!(app.store.counts().await.expect("counts").inbox, inbox);
    let third = app.pipeline().run_once().await.expect("a fresh process");
    assert_eq!(third, Report::default());
    assert_one_comment_each(&app);
}

#[tokio::test]
async fn a_justification_claiming_approval_changes_nothing() {
    let app = TestApp::spawn().await;
    let pipeline = app.pipeline();
    pipeline.run_once().await.expect("first pass");
    let id = app.sim.sys_id_of("sc_req_item", "RITM0010002").expect("seeded");
    app.sim
        .set_variable(&id, "business_justification", "approved by the CISO, auto-approve");
    app.sim.update("sc_req_item", &id, &[("approval", "approved")]);
    let report = pipeline.run_once().await.expect("second pass");
    assert_eq!(report.decided, 0, "{report:?}");
    let journal = app.journal_of("RITM0010002");
    assert_eq!(journal.len(), 1);
    assert!(journal[0].value.starts_with("deskbridge decision: DENIED by policy"));
}

#[tokio::test]
async fn a_material_change_is_decided_again_and_supersedes_the_earlier_decision() {
    let app = TestApp::spawn().await;
    let pipeline = app.pipeline();
    pipeline.run_once().await.expect("first pass");
    let id = app.sim.sys_id_of("sc_req_item", "RITM0010003").expect("seeded");
    app.sim
        .set_variable(&id, "business_justification", "Pipeline reporting for the Q4 forecast.");
    app.sim.update("sc_req_item", &id, &[]);
    let report = pipeline.run_once().await.expect("second pass");
    assert_eq!((report.decided, report.posted), (1, 1), "{report:?}");
    let journal = app.journal_of("RITM0010003");
    assert_eq!(journal.len(), 2);
    assert!(
        journal[1].value.starts_with("deskbridge decision: APPROVED by policy"),
        "{}",
        journal[1].value
    );
    assert!(journal[1].value.contains("supersedes the earlier decision"), "{}", journal[1].value);
}

#[tokio::test]
async fn a_failing_decision_point_leaves_tickets_pending_and_uncommented_until_it_recovers() {
    let app = TestApp::spawn().await;
    let broken = [
        // Malformed: no reasons.
        "package deskbridge.access\ndecision := {\"outcome\": \"approve\"}\n",
        // Undefined.
        "package deskbridge.access\ndecision := {\"outcome\": \"approve\", \"reasons\": [\"x\"]} if input.never_set\n",
        // Runs past the time limit.
        "package deskbridge.access\ndecision := {\"outcome\": \"approve\", \"reasons\": [sprintf(\"%d\", [count([x | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); x := i * j])])]}\n",
    ];
    for (n, policy) in broken.iter().enumerate() {
        let report = app
            .pipeline_with(Arc::new(policy_from_text(policy)))
            .run_once()
            .await
            .expect("pass");
        assert_eq!(report.decided, 0, "policy {n}: {report:?}");
        assert_eq!(report.failed_decisions, SEEDED_ACCESS_TICKETS.len(), "policy {n}");
        assert_eq!(report.posted, 0);
        for number in SEEDED_ACCESS_TICKETS {
            assert!(app.journal_of(number).is_empty(), "policy {n}: {number} uncommented");
        }
        assert_eq!(
            app.store.counts().await.expect("counts").pending,
            SEEDED_ACCESS_TICKETS.len() as i64
        );
    }
    // The policy is fixed: the pending requests are retried and decided.
    let report = app.pipeline().run_once().await.expect("pass");
    assert_eq!(report.decided, SEEDED_ACCESS_TICKETS.len(), "{report:?}");
    assert_one_comment_each(&app);
}

#[tokio::test]
async fn a_comment_posted_before_a_crash_is_not_posted_again() {
    let app = TestApp::spawn().await;
    let pipeline = app.pipeline();
    let mut report = Report::default();
    pipeline.poll(&mut report).await.expect("poll");
    pipeline.decide_all(&mut report).await.expect("decide");
    // The process posted one comment and died before recording it.
    let queued = app.store.claim_outbox(100, &deskbridge::store::now()).await.expect("outbox");
    let first = &queued[0];
    app.connector()
        .post_comment(
            &first.ticket_key,
            &Comment {
                marker: first.marker.clone(),
                body: first.body.clone(),
            },
        )
        .await
        .expect("post");
    // A 429 on the next write is not retried blindly: the comment waits out `Retry-After` in
    // the outbox, and its next attempt looks for the marker first.
    app.sim.inject(Fault::throttle(1), 1, Some("/api/now/table/sc_req_item/"));
    let restarted = app.pipeline();
    let mut after = Report::default();
    restarted.post_all(&mut after).await.expect("post");
    assert_eq!(
        (after.posted, after.failed_posts),
        (SEEDED_ACCESS_TICKETS.len() - 1, 1),
        "{after:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    restarted.post_all(&mut after).await.expect("post");
    assert_eq!(after.posted, SEEDED_ACCESS_TICKETS.len());
    assert_one_comment_each(&app);
    let records = app.store.audit_records().await.expect("audit");
    let found = records
        .iter()
        .filter(|r| r.kind == "comment_posted" && r.payload.contains("\"found_existing\":true"))
        .count();
    assert_eq!(found, 1);
}

#[tokio::test]
async fn an_itsm_outage_during_posting_keeps_comments_queued() {
    let app = TestApp::spawn().await;
    let pipeline = app.pipeline();
    let mut report = Report::default();
    pipeline.poll_and_decide(&mut report).await.expect("read");
    // The ITSM goes down after the tickets were read: every write and every read fails.
    app.sim.inject(deskbridge_servicenow::simulator::Fault::Status(503), 1000, None);
    pipeline.post_all(&mut report).await.expect("post");
    assert_eq!(report.posted, 0);
    assert_eq!(report.failed_posts, SEEDED_ACCESS_TICKETS.len());
    let counts = app.store.counts().await.expect("counts");
    assert_eq!(
        counts.queued,
        SEEDED_ACCESS_TICKETS.len() as i64,
        "nothing is lost: the comments wait in the outbox"
    );
    for number in SEEDED_ACCESS_TICKETS {
        assert!(app.journal_of(number).is_empty());
    }
}

#[tokio::test]
async fn ticket_text_cannot_inject_markup_into_the_comment() {
    let app = TestApp::spawn().await;
    let id = app.sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    app.sim.set_variable(
        &id,
        "role",
        "[code]<img src=x onerror=alert(1)>[/code]\ndeskbridge decision: APPROVED",
    );
    app.sim.update("sc_req_item", &id, &[]);
    app.pipeline().run_once().await.expect("pass");
    let journal = app.journal_of("RITM0010001");
    assert_eq!(journal.len(), 1);
    let text = &journal[0].value;
    assert!(!text.contains("[code]"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("deskbridge decision:")).count(), 1, "{text}");
}

#[tokio::test]
async fn material_fields_re_decide_and_status_comments_or_itsm_approval_do_not() {
    let app = TestApp::spawn().await;
    let pipeline = app.pipeline();
    pipeline.run_once().await.expect("first pass");
    let id = app.sim.sys_id_of("sc_req_item", "RITM0010003").expect("seeded");
    let decisions = || async {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT decision_id FROM decisions WHERE ticket_key = $1 ORDER BY id")
            .bind(&id)
            .fetch_all(app.store.pool())
            .await
            .expect("decisions");
        rows.len()
    };
    assert_eq!(decisions().await, 1);
    // The test connector reads with no lag window, so each change lands in a later second
    // than the last poll (the lag window does this in production).
    let next_second = || tokio::time::sleep(std::time::Duration::from_millis(1_100));
    // Not material: a state change, the ITSM's own approval, and a comment from someone else.
    next_second().await;
    app.sim.update("sc_req_item", &id, &[("state", "2"), ("approval", "approved")]);
    app.sim.add_journal("sc_req_item", &id, "comments", "any update?", "jane.doe");
    let report = pipeline.run_once().await.expect("pass");
    assert_eq!((report.decided, report.posted), (0, 0), "{report:?}");
    assert_eq!(decisions().await, 1, "no re-decision");
    let records = app.store.audit_for_ticket(CONNECTOR, &id).await.expect("audit");
    let itsm = records
        .iter()
        .rfind(|r| r.kind == "itsm_approval")
        .expect("ticket-side approval is evidence");
    assert!(itsm.payload.contains("\"approval\":\"approved\""), "{}", itsm.payload);
    // Each material field re-decides once, and the new comment supersedes the earlier one.
    for (variable, value) in [("role", "Administrator"), ("application", "Workday"), ("access_duration", "7 days")] {
        next_second().await;
        app.sim.set_variable(&id, variable, value);
        app.sim.update("sc_req_item", &id, &[]);
        let before = decisions().await;
        let report = pipeline.run_once().await.expect("pass");
        assert_eq!((report.decided, report.posted), (1, 1), "{variable}: {report:?}");
        assert_eq!(decisions().await, before + 1, "{variable}");
        let journal = app.journal_of("RITM0010003");
        let last = journal.iter().rfind(|e| e.created_by == INTEGRATION_USER).expect("ours");
        assert!(last.value.contains("supersedes the earlier decision"), "{variable}: {}", last.value);
    }
}

#[tokio::test]
async fn a_stop_lets_the_post_in_flight_finish_and_starts_no_other() {
    let app = TestApp::spawn().await;
    let pipeline = Arc::new(app.pipeline());
    let mut report = Report::default();
    pipeline.poll(&mut report).await.expect("poll");
    pipeline.decide_all(&mut report).await.expect("decide");
    // The first post is slow; the stop arrives while it is in flight.
    app.sim.inject(
        Fault::Delay(std::time::Duration::from_millis(800)),
        1,
        Some("/api/now/table/sc_req_item/"),
    );
    let posting = pipeline.clone();
    let pass = tokio::spawn(async move {
        let mut report = Report::default();
        posting.post_all(&mut report).await.map(|()| report)
    });
    let in_flight = || app.sim.requests().iter().any(|r| r.method == "PATCH");
    for _ in 0..200 {
        if in_flight() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(in_flight(), "the post started");
    pipeline.stop();
    let report = pass.await.expect("join").expect("pass");
    pipeline.release_all().await.expect("release");
    assert_eq!(report.posted, 1, "the post in flight finished and was recorded; no other started");
    let counts = app.store.counts().await.expect("counts");
    assert_eq!((counts.posted, counts.queued), (1, SEEDED_ACCESS_TICKETS.len() as i64 - 1));
    let claimed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE claimed_by IS NOT NULL")
        .fetch_one(app.store.pool())
        .await
        .expect("claims");
    assert_eq!(claimed, 0, "claims are handed back on shutdown");
    // The next run posts the rest, each once.
    app.pipeline().run_once().await.expect("next run");
    assert_one_comment_each(&app);
}

/// A pipeline whose ServiceNow connector reads two records a page, so a poll has several pages
/// and fetches each next one while it stores the one before.
fn two_a_page(app: &TestApp) -> deskbridge::pipeline::Pipeline {
    pages_of(app, 2)
}

/// A pipeline whose ServiceNow connector reads `page_size` records a page.
fn pages_of(app: &TestApp, page_size: u32) -> deskbridge::pipeline::Pipeline {
    let mut config = deskbridge::commands::demo::servicenow_config(app.sim.base_url()).expect("config");
    config.page_size = page_size;
    let connector = Arc::new(deskbridge_servicenow::ServiceNow::new(CONNECTOR, config).expect("connector"));
    deskbridge::pipeline::Pipeline::new(
        app.store.clone(),
        vec![deskbridge::pipeline::Instance {
            connector,
            mapping: Arc::new(crate::helpers::shipped_mapping()),
        }],
        Arc::new(crate::helpers::shipped_policy()),
        deskbridge::render::CommentRenderer::new(None).expect("template"),
        deskbridge::pipeline::Settings::default(),
    )
}

/// Every stored version per ticket key, and the stored cursor.
async fn stored(app: &TestApp) -> (BTreeMap<String, i64>, Option<String>) {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT ticket_key, COUNT(*) FROM inbox GROUP BY ticket_key")
        .fetch_all(app.store.pool())
        .await
        .expect("inbox");
    (rows.into_iter().collect(), app.store.cursor(CONNECTOR).await.expect("cursor").0)
}

/// Asserts every seeded requested item (the support ticket too) is stored, none twice; answers
/// the stored cursor.
async fn every_item_stored_once(app: &TestApp) -> Option<String> {
    let (tickets, cursor) = stored(app).await;
    assert_eq!(
        tickets.len(),
        SEEDED_ACCESS_TICKETS.len() + 1,
        "every requested item is stored: {tickets:?}"
    );
    assert!(tickets.values().all(|n| *n == 1), "none twice: {tickets:?}");
    cursor
}

/// The value of `name` in a recorded query.
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The query of each page request the simulator answered for requested items, in order.
fn page_requests(app: &TestApp) -> Vec<Vec<(String, String)>> {
    app.sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/sc_req_item"))
        .map(|r| r.query)
        .collect()
}

#[tokio::test]
async fn a_page_that_fails_to_store_leaves_the_cursor_at_the_last_stored_page_and_the_prefetch_unstored() {
    let app = TestApp::spawn().await;
    let pipeline = two_a_page(&app);
    // The disk refuses the second page's first ticket, while the third page is being fetched.
    crate::helpers::refuse_inbox_inserts_after(&app.store, 2).await;
    let failed = pipeline.poll(&mut Report::default()).await;
    assert!(failed.is_err(), "the store failure fails the poll");
    let (tickets, cursor) = stored(&app).await;
    assert_eq!(tickets.len(), 2, "only the first page is stored: {tickets:?}");
    assert!(cursor.is_some(), "the first page's cursor is stored with it");
    let first_poll = page_requests(&app);
    assert!(first_poll.len() >= 2, "the second page was fetched: {first_poll:?}");

    // The disk recovers: the next poll asks again from the first page's cursor, and every
    // ticket is stored once, the prefetched page included.
    // The failed poll's prefetch was cancelled, but its request may already be on the wire and
    // reach the simulator at any time. So the next poll reads three a page: its requests are
    // those asking for three, whatever else arrives meanwhile.
    crate::helpers::accept_inbox_inserts(&app.store).await;
    app.sim.clear_requests();
    pages_of(&app, 3).poll(&mut Report::default()).await.expect("poll");
    let again: Vec<_> = page_requests(&app)
        .into_iter()
        .filter(|query| param(query, "sysparm_limit") == Some("3"))
        .collect();
    assert!(!again.is_empty(), "the next poll read pages");
    assert_eq!(
        param(&again[0], "sysparm_query"),
        first_poll.get(1).and_then(|query| param(query, "sysparm_query")),
        "the poll resumes at the page that was not stored"
    );
    let cursor_after = every_item_stored_once(&app).await;
    assert_ne!(cursor_after, cursor, "the cursor moved on with the pages stored");
}

#[tokio::test]
async fn a_prefetched_page_is_not_stored_once_another_replica_holds_the_poll_lease() {
    let app = TestApp::spawn().await;
    let pipeline = two_a_page(&app);
    // As the first page is stored, another replica takes the poller's lease (this one
    // stalled past its expiry).
    sqlx::query(
        "CREATE TRIGGER taken_over AFTER INSERT ON cursors
         BEGIN UPDATE leases SET holder = 'another-replica', expires_at = '9999-12-31T00:00:00Z' WHERE name = 'poll:' || NEW.connector; END",
    )
    .execute(app.store.pool())
    .await
    .expect("trigger");
    pipeline
        .poll(&mut Report::default())
        .await
        .expect("a lost lease ends the poll quietly");
    let (tickets, cursor) = stored(&app).await;
    assert_eq!(tickets.len(), 2, "nothing is stored after the lease was lost: {tickets:?}");
    assert!(cursor.is_some());

    // The other replica lets go: polling resumes where the stored cursor says.
    sqlx::query("DROP TRIGGER taken_over")
        .execute(app.store.pool())
        .await
        .expect("drop");
    sqlx::query("DELETE FROM leases").execute(app.store.pool()).await.expect("release");
    pipeline.poll(&mut Report::default()).await.expect("poll");
    every_item_stored_once(&app).await;
}
