//! Evidence at scale: verification and export a page at a time, and record hashes over RFC 8785
//! canonical JSON, with logs written before it still verifying.

use deskbridge::audit::{self, AuditSigner, Format};
use deskbridge::store::audit::{append, Event, JCS_SCHEME};
use deskbridge::store::Store;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::TestApp;

async fn store_with(records: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("audit.db")).await.expect("store");
    let mut tx = store.begin_write().await.expect("tx");
    for n in 0..records {
        append(
            &mut tx,
            "c",
            &format!("T{}", n % 97),
            Event::TicketSeen,
            json!({"n": n, "hash": format!("{n:064x}")}),
        )
        .await
        .expect("append");
    }
    tx.commit().await.expect("commit");
    (dir, store)
}

async fn sign_at(store: &Store, signer: &AuditSigner, seqs: &[i64]) {
    for seq in seqs {
        let records = store.audit_page(seq - 1, "", 1).await.expect("page");
        let r = &records[0];
        store.insert_checkpoint(&signer.sign(r.seq, &r.hash)).await.expect("checkpoint");
    }
}

#[tokio::test]
async fn a_log_of_many_pages_verifies_and_damage_deep_inside_is_named() {
    let (_dir, store) = store_with(2_600).await;
    let (secret, _) = AuditSigner::generate();
    let signer = AuditSigner::from_secret(&secret).expect("key");
    sign_at(&store, &signer, &[1, 999, 1000, 1001, 2_600]).await;
    let summary = audit::verify_store(&store).await.expect("reads").expect("verifies");
    assert_eq!(summary, "audit log verified: 2600 records, 5 signed checkpoints");

    let pool = store.pool();
    sqlx::query("DROP TRIGGER audit_no_update").execute(pool).await.expect("drop");
    sqlx::query("DROP TRIGGER audit_no_delete").execute(pool).await.expect("drop");
    // A checkpoint beyond the end: records were cut off.
    store
        .insert_checkpoint(&signer.sign(2_700, &"a".repeat(64)))
        .await
        .expect("checkpoint");
    let problem = audit::verify_store(&store).await.expect("reads").expect_err("cut");
    assert!(
        problem.contains("covers seq 2700") && problem.contains("deleted from the end"),
        "{problem}"
    );
    sqlx::query("UPDATE audit SET payload = '{\"forged\":true}' WHERE seq = 1500")
        .execute(pool)
        .await
        .expect("update");
    let problem = audit::verify_store(&store).await.expect("reads").expect_err("tampered");
    assert!(problem.contains("record seq 1500 "), "{problem}");
}

#[tokio::test]
async fn an_export_since_a_time_is_filtered_in_the_store_and_verifies() {
    let (_dir, store) = store_with(2_100).await;
    let (secret, public) = AuditSigner::generate();
    let signer = AuditSigner::from_secret(&secret).expect("key");
    let middle = store.audit_page(1_499, "", 1).await.expect("page").remove(0);
    let since = chrono::DateTime::parse_from_rfc3339(&middle.at)
        .expect("time")
        .with_timezone(&chrono::Utc);
    for format in [Format::Jsonl, Format::Csv] {
        let mut out = Vec::new();
        let n = audit::export(&store, Some(since), format, Some(&signer), &mut out)
            .await
            .expect("export");
        let expected = store.audit_page(0, &middle.at, 10_000).await.expect("page").len();
        assert_eq!(n, expected, "{format:?}");
        assert!((600..2_100).contains(&n), "{n}");
        let file = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(file.path(), &out).expect("write");
        let key = audit::signing::parse_public_key(&public).expect("key");
        let verified = audit::verify_export(file.path(), &key).expect("verifies");
        assert!(verified.contains(&format!("{n} records")), "{verified}");
    }
}

#[tokio::test]
async fn record_hashes_are_rfc_8785_canonical_json() {
    let app = TestApp::spawn().await;
    let store = &app.store;
    let mut tx = store.begin_write().await.expect("tx");
    // Key order by UTF-16 code units (RFC 8785 §3.2.3) differs from UTF-8 byte order for
    // characters beyond the BMP; numbers are written as ECMAScript writes them.
    let payload = json!({"\u{e000}": 1, "\u{1f600}": 2, "big": 1e21, "small": 0.000001, "n": -0.0, "text": "é\u{2028}"});
    append(&mut tx, "c", "T1", Event::TicketSeen, payload.clone())
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    let r = store.last_audit_record().await.expect("read").expect("a record");
    assert_eq!(r.scheme, JCS_SCHEME);
    // The payload is stored in the canonical form it was hashed in (one walk makes both).
    assert_eq!(
        r.payload.as_bytes(),
        serde_json_canonicalizer::to_vec(&payload).expect("jcs").as_slice()
    );
    assert!(audit::verify_store(store).await.expect("reads").is_ok());
    let stored: serde_json::Value = serde_json::from_str(&r.payload).expect("payload");
    let canonical = serde_json_canonicalizer::to_vec(&json!({
        "seq": r.seq, "at": r.at, "connector": "c", "ticket_key": "T1", "kind": "ticket_seen",
        "payload": stored, "prev_hash": r.prev_hash, "scheme": 2,
    }))
    .expect("jcs");
    let text = String::from_utf8(canonical.clone()).expect("utf-8");
    assert!(text.find("\u{1f600}") < text.find("\u{e000}"), "UTF-16 order: {text}");
    assert!(text.contains("\"big\":1e+21"), "{text}");
    assert_eq!(r.hash, hex::encode(Sha256::digest(&canonical)));
}

#[tokio::test]
async fn a_log_written_before_rfc_8785_still_verifies_and_cannot_go_back() {
    let app = TestApp::spawn().await;
    let pool = app.store.pool();
    // Records as the previous version wrote them: serde_json's sorted-key text, no scheme.
    let mut prev = deskbridge::store::audit::GENESIS.to_owned();
    for seq in 1..=3i64 {
        let at = format!("2026-11-0{seq}T00:00:00.000000Z");
        let payload = json!({"b": [1, {"z": true, "a": null}], "a": "x"});
        let old = json!({"seq": seq, "at": at, "connector": "c", "ticket_key": "T", "kind": "ticket_seen", "payload": payload, "prev_hash": prev});
        let hash = hex::encode(Sha256::digest(old.to_string().as_bytes()));
        sqlx::query("INSERT INTO audit (seq, at, connector, ticket_key, kind, payload, prev_hash, hash) VALUES ($1, $2, 'c', 'T', 'ticket_seen', $3, $4, $5)")
            .bind(seq)
            .bind(&at)
            .bind(payload.to_string())
            .bind(&prev)
            .bind(&hash)
            .execute(pool)
            .await
            .expect("insert");
        prev = hash;
    }
    // This version appends after them, under RFC 8785.
    app.pipeline().run_once().await.expect("pass");
    let records = app.store.audit_records().await.expect("records");
    assert!(records.len() > 10);
    assert_eq!((records[0].scheme, records[3].scheme), (1, 2));
    let summary = audit::verify_store(&app.store).await.expect("reads").expect("verifies");
    assert!(
        summary.starts_with(&format!("audit log verified: {} records", records.len())),
        "{summary}"
    );

    sqlx::query("DROP TRIGGER audit_no_update").execute(pool).await.expect("drop");
    // Relabelling an old record as new, or a new one as old, breaks its hash or the order.
    for (seq, scheme) in [(2, 2), (5, 1)] {
        sqlx::query("UPDATE audit SET scheme = $1 WHERE seq = $2")
            .bind(scheme)
            .bind(seq)
            .execute(pool)
            .await
            .expect("update");
        let problem = audit::verify_store(&app.store).await.expect("reads").expect_err("relabelled");
        assert!(problem.contains(&format!("record seq {seq} ")), "{problem}");
        sqlx::query("UPDATE audit SET scheme = $1 WHERE seq = $2")
            .bind(3 - scheme)
            .bind(seq)
            .execute(pool)
            .await
            .expect("restore");
    }
}
