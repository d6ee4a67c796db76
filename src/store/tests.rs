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

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("t.db")).await.expect("open");
    (store, dir)
}

#[tokio::test]
async fn a_page_and_its_cursor_are_stored_together_and_versions_deduplicate() {
    let (store, _dir) = store().await;
    assert_eq!(store.cursor("snow").await.expect("cursor"), Cursor::start());
    let next = Cursor(Some("c1".into()));
    let n = store
        .ingest_page("snow", &[ticket("a", "1"), ticket("b", "1")], &next)
        .await
        .expect("ingest");
    assert_eq!(n, 2);
    assert_eq!(store.cursor("snow").await.expect("cursor"), next);
    let again = store
        .ingest_page("snow", &[ticket("a", "1"), ticket("a", "2")], &Cursor(Some("c2".into())))
        .await
        .expect("ingest");
    assert_eq!(again, 1, "only the new version counts");
    assert_eq!(store.counts().await.expect("counts").inbox, 3);
    let rows = store.claim_inbox(10, &now()).await.expect("due");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].ticket().expect("ticket").raw, json!({"k": "a", "v": "1"}));
}

#[tokio::test]
async fn the_audit_log_chains_and_refuses_edits() {
    let (store, _dir) = store().await;
    store
        .ingest_page("snow", &[ticket("a", "1"), ticket("b", "1")], &Cursor::start())
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
    assert!(delete.is_err());
}

#[tokio::test]
async fn a_path_with_url_characters_opens_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("odd name?#1.db");
    Store::open(&path).await.expect("open");
    assert!(path.exists());
}
