//! Every store test runs on SQLite and on PostgreSQL (a fresh schema each).

use std::time::Duration;

use super::*;
use deskbridge_connector::Cursor;
use serde_json::json;

fn ticket(key: &str, version: &str) -> Ticket {
    Ticket {
        source: "snow".into(),
        key: key.into(),
        number: format!("N-{key}"),
        url: "https://x".into(),
        updated: Utc::now(),
        version: version.into(),
        raw: json!({"k": key, "v": version}),
    }
}

/// A deny decision with this id.
fn decision(id: &str) -> crate::schema::Decision {
    crate::schema::Decision {
        outcome: crate::schema::Outcome::Deny,
        reasons: vec!["r".into()],
        route_to: None,
        missing: vec![],
        obligations: Default::default(),
        policy_id: "p".into(),
        policy_version: "1".into(),
        decision_id: id.into(),
        decided_at: Utc::now(),
    }
}

/// Two handles on one database, as two replicas see it (distinct holders), plus what keeps a
/// SQLite file alive.
async fn replicas(backend: Backend) -> (Store, Store, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("t.db");
            let a = Store::open(&path).await.expect("open");
            let b = Store::open(&path).await.expect("open");
            (a.with_holder("a"), b.with_holder("b"), Some(dir))
        }
        Backend::Postgres => {
            let url = testing::fresh_postgres_schema().await;
            let a = Store::connect_postgres(&url).await.expect("connect");
            let b = Store::connect_postgres(&url).await.expect("connect");
            (a.with_holder("a"), b.with_holder("b"), None)
        }
    }
}

async fn store(backend: Backend) -> (Store, Option<tempfile::TempDir>) {
    let (a, _b, dir) = replicas(backend).await;
    (a, dir)
}

/// Runs a test body on both backends.
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                $body(Backend::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                $body(Backend::Postgres).await;
            }
        }
    };
}

on_both!(a_page_and_its_cursor_are_stored_together_and_versions_deduplicate, page_and_cursor);
async fn page_and_cursor(backend: Backend) {
    let (store, _dir) = store(backend).await;
    assert_eq!(store.cursor("snow").await.expect("cursor"), Cursor::start());
    let next = Cursor(Some("c1".into()));
    let n = store
        .ingest_page("snow", &[ticket("a", "1"), ticket("b", "1")], &[], &next)
        .await
        .expect("ingest");
    assert_eq!(n, 2);
    assert_eq!(store.cursor("snow").await.expect("cursor"), next);
    let again = store
        .ingest_page("snow", &[ticket("a", "1"), ticket("a", "2")], &[], &Cursor(Some("c2".into())))
        .await
        .expect("ingest");
    assert_eq!(again, 1, "only the new version counts");
    assert_eq!(store.counts().await.expect("counts").inbox, 3);
    let rows = store.claim_inbox(10, &now()).await.expect("claim");
    // Versions of one ticket go to one claimer, oldest first.
    assert_eq!(
        rows.iter().map(|r| (r.ticket_key.as_str(), r.version.as_str())).collect::<Vec<_>>(),
        [("a", "1"), ("b", "1"), ("a", "2")]
    );
    assert_eq!(rows[0].ticket().expect("ticket").raw, json!({"k": "a", "v": "1"}));
}

on_both!(a_version_that_only_bumps_volatile_fields_is_not_stored_again, volatile_versions);
async fn volatile_versions(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let volatile = ["/v", "/meta/updated"];
    let with = |version: &str, state: &str, updated: &str| {
        let mut t = ticket("a", version);
        t.raw = json!({"k": "a", "v": version, "state": state, "meta": {"updated": updated, "by": "x"}});
        t
    };
    let n = store
        .ingest_page("snow", &[with("1", "open", "t1")], &volatile, &Cursor::start())
        .await
        .expect("ingest");
    assert_eq!(n, 1);
    // Only the version counter and the update time changed (our own comment): not stored.
    let n = store
        .ingest_page("snow", &[with("2", "open", "t2")], &volatile, &Cursor::start())
        .await
        .expect("ingest");
    assert_eq!(n, 0, "a version differing only in volatile fields is not stored");
    // A real change is stored, and compared against from then on.
    let n = store
        .ingest_page("snow", &[with("3", "closed", "t3")], &volatile, &Cursor::start())
        .await
        .expect("ingest");
    assert_eq!(n, 1);
    let n = store
        .ingest_page(
            "snow",
            &[with("4", "closed", "t4"), with("4", "closed", "t4")],
            &volatile,
            &Cursor::start(),
        )
        .await
        .expect("ingest");
    assert_eq!(n, 0);
    // A field beside the volatile one is content.
    let mut other = with("5", "closed", "t5");
    other.raw["meta"]["by"] = json!("y");
    assert_eq!(
        store
            .ingest_page("snow", &[other], &volatile, &Cursor::start())
            .await
            .expect("ingest"),
        1
    );
    assert_eq!(store.counts().await.expect("counts").inbox, 3);
    let records = store.audit_records().await.expect("audit");
    assert_eq!(
        records.iter().filter(|r| r.kind == "ticket_seen").count(),
        3,
        "one ticket_seen per stored version"
    );
    assert_eq!(audit::verify(&records), Ok(3));
}

on_both!(the_audit_log_chains_and_refuses_edits, audit_chain);
async fn audit_chain(backend: Backend) {
    let (store, _dir) = store(backend).await;
    store
        .ingest_page("snow", &[ticket("a", "1"), ticket("b", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let records = store.audit_records().await.expect("records");
    assert_eq!(records.len(), 2);
    assert_eq!(audit::verify(&records), Ok(2));
    let mut tampered = records.clone();
    tampered[0].payload = tampered[0].payload.replace("N-a", "N-z");
    assert!(audit::verify(&tampered).expect_err("tampered").contains("record seq 1"));
    let update = sqlx::query("UPDATE audit SET kind = 'x'").execute(store.pool()).await;
    assert!(update.expect_err("append-only").to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit").execute(store.pool()).await;
    assert!(delete.expect_err("append-only").to_string().contains("append-only"));
}

on_both!(
    a_multi_row_write_that_fails_part_way_leaves_nothing_of_its_transaction,
    failed_write
);
/// Multi-row writes run `OR FAIL` on SQLite ([`Backend::or_fail`]): a failing row keeps the
/// statement's earlier rows until the transaction ends, so the transaction must be given up
/// whole. Here a statement writes one record and then fails on a duplicate; nothing of it, nor
/// of the statement before it in the same transaction, is kept.
async fn failed_write(backend: Backend) {
    let (store, _dir) = store(backend).await;
    store
        .ingest_page("snow", &[ticket("a", "1"), ticket("b", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let record = |seq: i64| audit::AuditRecord {
        seq,
        at: now(),
        connector: Some("snow".into()),
        ticket_key: Some("a".into()),
        kind: "test".into(),
        payload: "{}".into(),
        prev_hash: "p".into(),
        hash: format!("h{seq}"),
        scheme: audit::JCS_SCHEME,
    };
    {
        let mut tx = store.begin_write().await.expect("begin");
        audit::write_records(&mut tx, &[record(50)], backend)
            .await
            .expect("an earlier statement");
        let failed = audit::write_records(&mut tx, &[record(60), record(61), record(60)], backend).await;
        assert!(failed.is_err(), "the duplicate fails the statement");
        // Dropped without a commit, as every caller's `?` drops it.
    }
    let records = store.audit_records().await.expect("records");
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(audit::verify(&records), Ok(2));
}

/// With writes back to back, as in a backlog, every passive checkpoint ran while frames were
/// added, so the WAL never started again from its beginning and grew past 4 GB. Once the log
/// is past the limit, a checkpoint holds the writers back and the log starts again.
#[tokio::test]
async fn the_wal_starts_again_under_writes_back_to_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("t.db")).await.expect("open");
    store.checkpoints = std::sync::Arc::new(Checkpoints::restarting_past(64));
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (store, writing) = (store.clone(), writing.clone());
        tokio::spawn(async move {
            let text = "x".repeat(500);
            let mut written = 0;
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                let tickets: Vec<Ticket> = (0..10)
                    .map(|i| Ticket {
                        raw: json!({"k": i, "text": text}),
                        ..ticket(&format!("t{written}-{i}"), "1")
                    })
                    .collect();
                store.ingest_page("snow", &tickets, &[], &Cursor::start()).await.expect("ingest");
                written += tickets.len() as i64;
            }
            written
        })
    };
    // Checkpoints start one a second, the first with the first write. By the second the log
    // is past the limit; from then on it starts again once a second, and its file (written
    // over, never shrunk) stops growing. A log that never starts again grows all along.
    let every = Checkpoints::EVERY.to_std().expect("positive");
    let log = || std::fs::metadata(dir.path().join("t.db-wal")).expect("the log").len();
    tokio::time::sleep(every * 3 / 2).await;
    let early = log();
    tokio::time::sleep(every * 2).await;
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    let written = writer.await.expect("writer");
    let late = log();
    assert!(
        late < early * 2,
        "the log's file stopped growing: {early} bytes after 1.5 s, {late} after 3.5 s"
    );
    assert_eq!(store.counts().await.expect("counts").inbox, written, "nothing written was lost");
}

on_both!(replicas_writing_at_once_never_fork_the_audit_chain, concurrent_chain);
async fn concurrent_chain(backend: Backend) {
    let (a, b, _dir) = replicas(backend).await;
    let write = |store: Store, prefix: &'static str| {
        tokio::spawn(async move {
            for i in 0..20 {
                let tickets = [ticket(&format!("{prefix}{i}"), "1"), ticket(&format!("{prefix}{i}x"), "1")];
                store.ingest_page(prefix, &tickets, &[], &Cursor::start()).await.expect("ingest");
            }
        })
    };
    let (ra, rb) = tokio::join!(write(a.clone(), "a"), write(b, "b"));
    ra.expect("a");
    rb.expect("b");
    let records = a.audit_records().await.expect("records");
    assert_eq!(audit::verify(&records), Ok(80));
}

on_both!(claimed_work_goes_to_one_replica_and_is_taken_over_when_its_lease_ends, claims);
async fn claims(backend: Backend) {
    let (a, b, _dir) = replicas(backend).await;
    let a = a.with_lease(Duration::from_millis(300));
    let b = b.with_lease(Duration::from_secs(60));
    a.ingest_page("snow", &[ticket("t1", "1"), ticket("t2", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let mine = a.claim_inbox(1, &now()).await.expect("claim");
    assert_eq!(mine.len(), 1);
    let theirs = b.claim_inbox(10, &now()).await.expect("claim");
    assert_eq!(theirs.len(), 1, "b gets only what a did not claim");
    assert_ne!(mine[0].id, theirs[0].id);
    // a stalls past its lease: b takes the row over, and a's late write is refused.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = b.claim_inbox(10, &now()).await.expect("claim");
    assert!(taken.iter().any(|r| r.id == mine[0].id), "b took t1 over");
    let taken: Vec<_> = taken.into_iter().filter(|r| r.id == mine[0].id).collect();
    let late = a.settle(&mine[0], "not_access", &json!({}), None, &[]).await;
    assert!(late.expect_err("fenced").downcast_ref::<LostClaim>().is_some());
    b.settle(&taken[0], "not_access", &json!({}), None, &[]).await.expect("settle");
    // t1 is settled; b's own live claim on t2 comes back to b (a restarted replica with the
    // same id resumes its work at once).
    let again = b.claim_inbox(10, &now()).await.expect("claim");
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), [theirs[0].id]);
    assert!(a.claim_inbox(10, &now()).await.expect("claim").is_empty(), "nothing is free for a");
}

on_both!(a_claim_beside_a_batch_in_flight_takes_none_of_its_tickets, beside_own);
async fn beside_own(backend: Backend) {
    let (store, _dir) = store(backend).await;
    store
        .ingest_page("snow", &[ticket("t1", "1"), ticket("t2", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let in_flight = store.claim_inbox(1, &now()).await.expect("claim");
    assert_eq!(in_flight.iter().map(|r| r.ticket_key.as_str()).collect::<Vec<_>>(), ["t1"]);
    // A newer version of t1 arrives while the batch holding t1's first is still being written.
    store
        .ingest_page("snow", &[ticket("t1", "2")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let next = store.claim_inbox_beside_own(10, &now()).await.expect("claim");
    assert_eq!(
        next.iter().map(|r| (r.ticket_key.as_str(), r.version.as_str())).collect::<Vec<_>>(),
        [("t2", "1")],
        "neither the row in flight nor another version of its ticket"
    );
    store
        .settle(&in_flight[0], "not_access", &json!({}), None, &[])
        .await
        .expect("settle");
    let after = store.claim_inbox_beside_own(10, &now()).await.expect("claim");
    assert_eq!(
        after
            .iter()
            .map(|r| (r.ticket_key.as_str(), r.version.as_str()))
            .collect::<Vec<_>>(),
        [("t1", "2")],
        "once the batch is written, t1's newer version is claimed"
    );
    // A plain claim takes back what this process still holds (after a failed pass, say).
    let plain = store.claim_inbox(10, &now()).await.expect("claim");
    let mut plain: Vec<_> = plain.iter().map(|r| (r.ticket_key.as_str(), r.version.as_str())).collect();
    plain.sort_unstable();
    assert_eq!(plain, [("t1", "2"), ("t2", "1")]);
}

on_both!(one_poller_per_connector_holds_the_lease_until_it_stops_renewing, poller_lease);
async fn poller_lease(backend: Backend) {
    let (a, b, _dir) = replicas(backend).await;
    let a = a.with_lease(Duration::from_millis(300));
    assert!(a.try_lease("poll:snow").await.expect("lease"));
    assert!(!b.try_lease("poll:snow").await.expect("lease"), "a holds it");
    assert!(a.try_lease("poll:snow").await.expect("renew"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.try_lease("poll:snow").await.expect("failover"), "a stopped renewing");
    assert!(!a.try_lease("poll:snow").await.expect("lease"), "b holds it now");
    b.release_lease("poll:snow").await.expect("release");
    assert!(
        a.try_lease("poll:snow").await.expect("handover"),
        "released on shutdown: taken at once"
    );
}

on_both!(a_backfill_keeps_its_own_cursor_and_resumes_from_it, backfill_cursor);
async fn backfill_cursor(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let since = "2026-01-01T00:00:00Z";
    assert_eq!(store.backfill_cursor("snow", since).await.expect("cursor"), None);
    let next = Cursor(Some("page-1".into()));
    store
        .ingest_backfill_page("snow", since, &[ticket("a", "1")], &[], &next)
        .await
        .expect("ingest");
    assert_eq!(store.backfill_cursor("snow", since).await.expect("cursor"), Some(next));
    assert_eq!(
        store.cursor("snow").await.expect("live"),
        Cursor::start(),
        "the live cursor is untouched"
    );
    assert_eq!(store.backfill_cursor("snow", "2025-01-01T00:00:00Z").await.expect("cursor"), None);
}

on_both!(
    a_decision_is_refused_when_another_replica_decided_the_ticket_meanwhile,
    decided_meanwhile
);
async fn decided_meanwhile(backend: Backend) {
    let (a, b, _dir) = replicas(backend).await;
    a.ingest_page("snow", &[ticket("t", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let row = a.claim_inbox(10, &now()).await.expect("claim").remove(0);
    // a read "no decision yet"; meanwhile b decides a newer version of the same ticket.
    b.ingest_page("snow", &[ticket("t", "2")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let newer = {
        sqlx::query("UPDATE inbox SET claimed_by = 'b', claimed_until = $1 WHERE version = '2'")
            .bind(later(Duration::from_secs(60)))
            .execute(b.pool())
            .await
            .expect("claim");
        let rows: Vec<InboxRow> = sqlx::query_as(
            "SELECT id, connector, ticket_key, version, number, url, updated, raw, attempts, received_at FROM inbox WHERE version = '2'",
        )
        .fetch_all(b.pool())
        .await
        .expect("row");
        rows.into_iter().next().expect("v2")
    };
    b.record_decision(&newer, &json!({}), "h2", &decision("d2"), &json!({}), "m2", "body", &[], None)
        .await
        .expect("b decides v2");
    let late = a
        .record_decision(&row, &json!({}), "h1", &decision("d1"), &json!({}), "m1", "body", &[], None)
        .await;
    assert!(late.expect_err("refused").downcast_ref::<ChangedMeanwhile>().is_some());
    assert_eq!(a.counts().await.expect("counts").decisions, 1);
    assert_eq!(
        audit::verify(&a.audit_records().await.expect("records")),
        Ok(a.audit_records().await.expect("records").len())
    );
}

on_both!(only_a_comments_first_claim_may_skip_the_marker_lookup, first_claims);
async fn first_claims(backend: Backend) {
    let (store, _dir) = store(backend).await;
    store
        .ingest_page("snow", &[ticket("t", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let row = store.claim_inbox(10, &now()).await.expect("claim").remove(0);
    store
        .record_decision(&row, &json!({}), "h1", &decision("d1"), &json!({}), "m1", "body", &[], None)
        .await
        .expect("decide");
    let first = store.claim_outbox(10, &now()).await.expect("claim").remove(0);
    assert!(first.first_claim(), "claims {}", first.claims);
    // Handed back without a post (a stop, a halted connector): the next claim looks first.
    store.release_comment(&first).await.expect("release");
    let second = store.claim_outbox(10, &now()).await.expect("claim").remove(0);
    assert!(!second.first_claim(), "claims {}", second.claims);
    // A failed attempt, retried: still looks first.
    store.comment_failed(&second, "502", Duration::ZERO).await.expect("failed");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = store.claim_outbox(10, &now()).await.expect("claim").remove(0);
    assert_eq!(third.claims, 3);
    assert!(!third.first_claim());
}

#[tokio::test]
async fn a_path_with_url_characters_opens_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("odd name?#1.db");
    Store::open(&path).await.expect("open");
    assert!(path.exists());
}

#[test]
fn a_store_url_password_never_reaches_an_error() {
    let url = "postgres://deskbridge:s3cr3t-pw@db.example:5432/deskbridge";
    let message = format!("error connecting to {url}: password authentication failed; tried s3cr3t-pw");
    let clean = redact(&message, url);
    assert!(!clean.contains("s3cr3t-pw"), "{clean}");
    assert!(clean.contains("<store url>"));
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_normal_sync() {
    let (store, _dir) = store(Backend::Sqlite).await;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!((sync, mode.as_str(), busy), (1, "wal", 10_000));
}

on_both!(tickets_page_and_search_in_sql_with_literal_wildcards, ticket_page);
async fn ticket_page(backend: Backend) {
    let (store, _dir) = store(backend).await;
    store
        .ingest_page("snow", &[ticket("a", "1"), ticket("b", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    for (key, normalized) in [("a", r#"{"system": "Payroll_EU"}"#), ("b", r#"{"system": "payrollXeu 100%"}"#)] {
        sqlx::query("UPDATE inbox SET normalized = $1, status = 'decided' WHERE ticket_key = $2")
            .bind(normalized)
            .bind(key)
            .execute(store.pool())
            .await
            .expect("normalize");
    }
    let keys = |page: Vec<crate::store::TicketState>| page.into_iter().map(|t| t.ticket_key).collect::<Vec<_>>();
    assert_eq!(keys(store.ticket_page("", 10, 0).await.expect("page")), ["a", "b"]);
    assert_eq!(keys(store.ticket_page("", 1, 1).await.expect("page")), ["b"]);
    assert_eq!(keys(store.ticket_page("payroll_eu", 10, 0).await.expect("page")), ["a"]);
    assert_eq!(keys(store.ticket_page("100%", 10, 0).await.expect("page")), ["b"]);
    assert_eq!(keys(store.ticket_page("N-B", 10, 0).await.expect("page")), ["b"]);
    assert_eq!(store.backlog().await.expect("backlog"), crate::store::Backlog::default());
}

/// PostgreSQL: one replica's write transaction does not wait for another's (no lock serializes
/// writers), and the chain still verifies with records sealed in commit order.
#[tokio::test]
async fn postgres_write_transactions_of_replicas_do_not_wait_for_each_other() {
    let (a, b, _dir) = replicas(Backend::Postgres).await;
    let mut open = a.begin_write().await.expect("begin");
    audit::append(&mut open, "snow", "held", Event::TicketSeen, json!({"n": 1}))
        .await
        .expect("append");
    tokio::time::timeout(
        Duration::from_secs(5),
        b.ingest_page("snow", &[ticket("b1", "1")], &[], &Cursor::start()),
    )
    .await
    .expect("b's write waited for a's open transaction")
    .expect("ingest");
    open.commit().await.expect("commit");
    let records = a.audit_records().await.expect("records");
    assert_eq!(audit::verify(&records), Ok(2));
    let keys: Vec<_> = records.iter().map(|r| r.ticket_key.as_deref().unwrap_or_default()).collect();
    assert_eq!(keys, ["b1", "held"], "sealed in the order they committed");
}

/// PostgreSQL: records committed by a replica that died before sealing them are sealed by
/// the next start, and by any replica's next write.
#[tokio::test]
async fn postgres_records_left_unsealed_are_sealed_by_the_next_start_or_write() {
    let url = testing::fresh_postgres_schema().await;
    let a = Store::connect_postgres(&url).await.expect("connect");
    a.ingest_page("snow", &[ticket("t1", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let died = |key: &'static str| {
        sqlx::query(
            "INSERT INTO audit_unsealed (at, connector, ticket_key, kind, payload) VALUES ($1, 'snow', $2, 'ticket_seen', '{\"n\":1}')",
        )
        .bind(now())
        .bind(key)
    };
    died("x1").execute(a.pool()).await.expect("insert");
    assert_eq!(a.audit_records().await.expect("records").len(), 1, "not in the chain yet");
    let b = Store::connect_postgres(&url).await.expect("restart");
    let records = b.audit_records().await.expect("records");
    assert_eq!(audit::verify(&records), Ok(2));
    assert_eq!(records[1].ticket_key.as_deref(), Some("x1"));
    died("x2").execute(a.pool()).await.expect("insert");
    b.ingest_page("snow", &[ticket("t2", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let records = a.audit_records().await.expect("records");
    assert_eq!(audit::verify(&records), Ok(4));
    let keys: Vec<_> = records.iter().map(|r| r.ticket_key.as_deref().unwrap_or_default()).collect();
    assert_eq!(keys, ["t1", "x1", "x2", "t2"]);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_unsealed")
        .fetch_one(a.pool())
        .await
        .expect("count");
    assert_eq!(left, 0);
}

/// PostgreSQL: two replicas recording decisions on one ticket at the same moment, each having
/// read "no decision yet", write one decision: the other is refused as changed meanwhile.
#[tokio::test]
async fn postgres_two_replicas_deciding_one_ticket_at_once_write_one_decision() {
    let (a, b, _dir) = replicas(Backend::Postgres).await;
    for i in 0..25 {
        let key = format!("t{i}");
        a.ingest_page("snow", &[ticket(&key, "1"), ticket(&key, "2")], &[], &Cursor::start())
            .await
            .expect("ingest");
        let claimed = |holder: &'static str, version: &'static str| {
            let key = key.clone();
            let pool = a.pool().clone();
            async move {
                sqlx::query("UPDATE inbox SET claimed_by = $1, claimed_until = $2 WHERE ticket_key = $3 AND version = $4")
                    .bind(holder)
                    .bind(later(Duration::from_secs(60)))
                    .bind(&key)
                    .bind(version)
                    .execute(&pool)
                    .await
                    .expect("claim");
                let row: InboxRow = sqlx::query_as(
                    "SELECT id, connector, ticket_key, version, number, url, updated, raw, attempts, received_at FROM inbox WHERE ticket_key = $1 AND version = $2",
                )
                .bind(&key)
                .bind(version)
                .fetch_one(&pool)
                .await
                .expect("row");
                row
            }
        };
        let (v1, v2) = (claimed("a", "1").await, claimed("b", "2").await);
        let (d1, d2) = (decision(&format!("{key}-a")), decision(&format!("{key}-b")));
        let empty = json!({});
        let (ra, rb) = tokio::join!(
            a.record_decision(&v1, &empty, "h1", &d1, &empty, "m1", "body", &[], None),
            b.record_decision(&v2, &empty, "h2", &d2, &empty, "m2", "body", &[], None),
        );
        let refused = [&ra, &rb]
            .iter()
            .filter(|r| r.as_ref().is_err_and(|e| e.downcast_ref::<ChangedMeanwhile>().is_some()))
            .count();
        assert_eq!((ra.is_ok() as usize + rb.is_ok() as usize, refused), (1, 1), "{key}: {ra:?} {rb:?}");
    }
    assert_eq!(a.counts().await.expect("counts").decisions, 25);
    let records = a.audit_records().await.expect("records");
    assert_eq!(audit::verify(&records), Ok(records.len()));
}

/// No commit checkpoints SQLite's WAL while it holds the write lock: a checkpoint runs beside
/// the writers after a commit, and the data reaches the database file without the store being
/// closed.
#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writers_not_by_the_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let store = Store::open(&path).await.expect("open");
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(autocheckpoint, 0, "commits do not checkpoint themselves");
    let before = std::fs::metadata(&path).expect("db file").len();
    let filler = "x".repeat(2_000);
    let tickets: Vec<Ticket> = (0..200)
        .map(|n| Ticket {
            raw: json!({"k": n, "text": filler}),
            ..ticket(&format!("t{n}"), "1")
        })
        .collect();
    store
        .ingest_page("snow", &tickets, &[], &Cursor(Some("c1".into())))
        .await
        .expect("ingest");
    let mut grown = 0;
    for _ in 0..100 {
        grown = std::fs::metadata(&path).expect("db file").len().saturating_sub(before);
        if grown > 400_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        grown > 400_000,
        "the commit's 200 tickets reached the database file ({grown} bytes grown)"
    );
}

/// Every write of a SQLite store runs in its turn on the one writer connection; reads use the
/// others. A write transaction held open (a batch being written) holds later writes back until
/// it ends, and then every one of them commits (none fails on SQLite's lock), but never a read
/// (the console, a report).
#[tokio::test]
async fn an_open_write_holds_back_later_writes_but_not_reads() {
    let (store, _dir) = store(Backend::Sqlite).await;
    store
        .ingest_page("snow", &[ticket("a", "1")], &[], &Cursor::start())
        .await
        .expect("ingest");
    let open = store.begin_write().await.expect("begin");
    let counts = tokio::time::timeout(Duration::from_secs(5), store.counts())
        .await
        .expect("a read answers while a write is open")
        .expect("counts");
    assert_eq!(counts.inbox, 1);
    let writes: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .ingest_page("snow", &[ticket(&format!("w{i}"), "1")], &[], &Cursor::start())
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(writes.iter().all(|w| !w.is_finished()), "no write ran beside the open one");
    drop(open);
    for write in writes {
        write.await.expect("the task").expect("each write commits once the turn is free");
    }
    assert_eq!(store.counts().await.expect("counts").inbox, 9);
}

/// The writer connection is held for good (SQLite), so a write transaction dropped before its
/// commit is rolled back on it by the store itself: at once, not when this process next writes.
/// Another process can take SQLite's write lock though this one writes nothing more, nothing
/// of the dropped write is kept, and this process's next write starts clean.
#[tokio::test]
async fn a_write_dropped_before_its_commit_gives_the_lock_back_at_once() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let store = Store::open(&path).await.expect("open");
    {
        let mut tx = store.begin_write().await.expect("begin");
        sqlx::query("INSERT INTO leases (name, holder, expires_at) VALUES ('dropped', 'me', 'never')")
            .execute(&mut *tx)
            .await
            .expect("insert");
        // Dropped without a commit, as every caller's `?` drops it.
    }
    let other = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(Duration::from_secs(3));
    let mut other = sqlx::SqliteConnection::connect_with(&other).await.expect("another connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("another process takes the write lock while this one writes nothing");
    sqlx::query("INSERT INTO leases (name, holder, expires_at) VALUES ('other', 'them', 'never')")
        .execute(&mut other)
        .await
        .expect("insert");
    sqlx::query("COMMIT").execute(&mut other).await.expect("commit");
    assert!(store.try_lease("mine").await.expect("this process writes again"));
    let mut names: Vec<String> = sqlx::query_scalar("SELECT name FROM leases")
        .fetch_all(store.pool())
        .await
        .expect("leases");
    names.sort();
    assert_eq!(names, ["mine", "other"], "nothing of the dropped write is kept");
}

/// Each process chains its records after the head it last committed, without reading it
/// (SQLite). Two processes on one file take turns appending: once a process has a head, each of
/// its writes after the other's collides on the sequence number and is chained again after the
/// head it then reads, so the log stays one unbroken chain and nothing is lost.
async fn two_writers_take_turns_on_one_audit_chain(backend: Backend) {
    let (a, b, _dir) = replicas(backend).await;
    for round in 0..3 {
        for (store, name) in [(&a, "a"), (&b, "b"), (&a, "a")] {
            let mut tx = store.begin_write().await.expect("begin");
            for n in 0..2 {
                audit::append(&mut tx, "snow", name, Event::TicketSeen, json!({"round": round, "n": n}))
                    .await
                    .expect("append");
            }
            tx.commit().await.expect("commit");
        }
    }
    a.seal_audit().await.expect("seal");
    let records = a.audit_records().await.expect("records");
    assert_eq!(records.len(), 18, "every record of every turn is in the log");
    assert_eq!(audit::verify(&records), Ok(18));
    let order: Vec<&str> = records.iter().map(|r| r.ticket_key.as_deref().unwrap_or_default()).collect();
    assert_eq!(order[..6], ["a", "a", "b", "b", "a", "a"], "in the order the turns committed");
}
on_both!(two_writers_take_turns_on_one_audit_chain, two_writers_take_turns_on_one_audit_chain);

/// One claim takes due retries before new versions, even older ones, each part oldest first,
/// up to the limit in all; a retry not yet due stays where it is.
async fn due_retries_first(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let ingest = |keys: &'static [&'static str]| {
        let store = store.clone();
        async move {
            let tickets: Vec<Ticket> = keys.iter().map(|k| ticket(k, "1")).collect();
            store.ingest_page("snow", &tickets, &[], &Cursor::start()).await.expect("ingest");
        }
    };
    ingest(&["a", "b", "w"]).await;
    let first = store.claim_inbox(10, &now()).await.expect("claim");
    assert_eq!(first.len(), 3);
    // `a` goes back unclaimed (a new version again), `b` fails and is due again at once, `w`
    // fails and waits an hour.
    store.release(&first[0]).await.expect("release");
    store
        .decision_failed(&first[1], &json!({}), "pdp down", Duration::ZERO)
        .await
        .expect("failed");
    store
        .decision_failed(&first[2], &json!({}), "pdp down", Duration::from_secs(3600))
        .await
        .expect("failed");
    ingest(&["c"]).await;
    let due_before = later(Duration::from_secs(60));
    let keys = |rows: Vec<InboxRow>| rows.into_iter().map(|r| r.ticket_key).collect::<Vec<_>>();
    assert_eq!(keys(store.claim_inbox(1, &due_before).await.expect("claim")), ["b"]);
    // Beside the claim just taken (a plain claim takes this process's own claims again).
    assert_eq!(
        keys(store.claim_inbox_beside_own(10, &due_before).await.expect("claim")),
        ["a", "c"]
    );
}
on_both!(one_claim_takes_due_retries_before_new_versions, due_retries_first);
