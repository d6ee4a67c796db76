//! Audit evidence: tampering of any kind is detected and named; exports verify with the
//! public key alone; a ticket's trace shows its whole timeline.

use std::process::Command;

use deskbridge::audit::{self, AuditSigner, Format};
use deskbridge::store::audit::{verify, AuditRecord};

use crate::helpers::TestApp;

async fn decided_app() -> (TestApp, Vec<AuditRecord>) {
    let app = TestApp::spawn().await;
    app.pipeline().run_once().await.expect("pass");
    let records = app.store.audit_records().await.expect("records");
    assert!(records.len() > 20);
    assert_eq!(verify(&records), Ok(records.len()));
    (app, records)
}

#[tokio::test]
async fn payloads_are_stored_in_the_canonical_form_they_are_hashed_in() {
    let (app, records) = decided_app().await;
    // Each payload's text is its own RFC 8785 form (it is written once, for both).
    for r in &records {
        let value: serde_json::Value = serde_json::from_str(&r.payload).expect("payload");
        let canonical = serde_json_canonicalizer::to_string(&value).expect("jcs");
        assert_eq!(r.payload, canonical, "record seq {}", r.seq);
    }
    // A version's `normalized` record carries the normalized form stored on its inbox row,
    // with its version, request hash and classification beside it.
    let rows: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT ticket_key, version, request_hash, normalized FROM inbox WHERE normalized IS NOT NULL")
            .fetch_all(app.store.pool())
            .await
            .expect("inbox");
    assert!(rows.len() > 5, "{}", rows.len());
    for (key, version, request_hash, normalized) in rows {
        let (record, payload) = records
            .iter()
            .filter(|r| r.kind == "normalized" && r.ticket_key.as_deref() == Some(key.as_str()))
            .map(|r| (r, serde_json::from_str::<serde_json::Value>(&r.payload).expect("payload")))
            .find(|(_, p)| p["version"] == version.as_str())
            .expect("the version's normalized record");
        let stored: serde_json::Value = serde_json::from_str(&normalized).expect("normalized");
        assert_eq!(
            (&payload["normalized"], &payload["request_hash"], &payload["version"]),
            (&stored, &serde_json::json!(request_hash), &serde_json::json!(version)),
            "{key}"
        );
        assert!(payload["status"].is_string(), "{key}");
        assert!(record.payload.starts_with(&format!("{{\"normalized\":{normalized},")), "{key}");
    }
}

fn names(result: Result<usize, String>, seq: i64) {
    let problem = result.expect_err("tampering is detected");
    assert!(problem.contains(&format!("record seq {seq} ")), "names seq {seq}: {problem}");
}

#[tokio::test]
async fn changing_any_field_of_any_record_is_detected_and_named() {
    let (_app, records) = decided_app().await;
    for m in [0, records.len() / 2, records.len() - 1] {
        let seq = records[m].seq;
        let edits: [fn(&mut AuditRecord); 7] = [
            |r| r.at.push('1'),
            |r| r.connector = Some("other".into()),
            |r| r.ticket_key = Some("other".into()),
            |r| r.kind = "forged_kind".into(),
            |r| r.payload = r.payload.replacen('"', "\"x", 1),
            |r| r.prev_hash = "1".repeat(64),
            |r| r.hash = "f".repeat(64),
        ];
        for edit in &edits {
            let mut tampered = records.clone();
            edit(&mut tampered[m]);
            assert_ne!(tampered[m], records[m]);
            names(verify(&tampered), seq);
        }
        let mut reseq = records.clone();
        reseq[m].seq += 100;
        names(verify(&reseq), seq + 100);
    }
}

#[tokio::test]
async fn deleting_inserting_or_reordering_records_is_detected_and_named() {
    let (_app, records) = decided_app().await;
    let m = records.len() / 2;

    let mut deleted = records.clone();
    deleted.remove(m);
    names(verify(&deleted), records[m + 1].seq);

    let mut first_deleted = records.clone();
    first_deleted.remove(0);
    names(verify(&first_deleted), records[1].seq);

    let mut inserted = records.clone();
    let mut forged = records[m].clone();
    forged.payload = r#"{"decision":{"outcome":"approve"}}"#.into();
    inserted.insert(m, forged);
    names(verify(&inserted), records[m].seq);

    let mut reordered = records.clone();
    reordered.swap(m, m + 1);
    names(verify(&reordered), records[m + 1].seq);
}

fn deskbridge() -> Command {
    let mut cmd = crate::helpers::deskbridge();
    cmd.env_remove("DESKBRIDGE_AUDIT_KEY");
    cmd
}

#[tokio::test]
async fn audit_verify_on_a_tampered_store_names_the_record_and_a_cut_off_end_is_caught_by_its_checkpoint() {
    let (app, records) = decided_app().await;
    let (secret, _) = AuditSigner::generate();
    let signer = AuditSigner::from_secret(&secret).expect("key");
    audit::checkpoint(&app.store, &signer).await.expect("checkpoint");
    let db = app.db_path();
    let ok = deskbridge().args(["audit", "verify", "--db"]).arg(&db).output().expect("runs");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("1 signed checkpoints"));

    // Someone with write access to the file drops the triggers and removes the last record.
    let pool = app.store.pool();
    sqlx::query("DROP TRIGGER audit_no_delete").execute(pool).await.expect("drop");
    sqlx::query("DROP TRIGGER audit_no_update").execute(pool).await.expect("drop");
    let last = records.last().expect("records").seq;
    sqlx::query("DELETE FROM audit WHERE seq = ?")
        .bind(last)
        .execute(pool)
        .await
        .expect("delete");
    let cut = deskbridge().args(["audit", "verify", "--db"]).arg(&db).output().expect("runs");
    assert_eq!(cut.status.code(), Some(1));
    let text = String::from_utf8_lossy(&cut.stdout);
    assert!(
        text.contains(&format!("covers seq {last}")) && text.contains("deleted from the end"),
        "{text}"
    );

    let middle = records[records.len() / 2].seq;
    sqlx::query("UPDATE audit SET payload = '{\"forged\":true}' WHERE seq = ?")
        .bind(middle)
        .execute(pool)
        .await
        .expect("update");
    let edited = deskbridge().args(["audit", "verify", "--db"]).arg(&db).output().expect("runs");
    assert_eq!(edited.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&edited.stdout).contains(&format!("record seq {middle} ")),
        "{}",
        String::from_utf8_lossy(&edited.stdout)
    );
}

/// Verifies an export held in memory, through a file as `audit verify --export` reads it.
fn verify_text(text: &str, key: &ed25519_dalek::VerifyingKey) -> Result<String, String> {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write");
    audit::verify_export(file.path(), key)
}

#[tokio::test]
async fn an_export_verifies_with_the_public_key_alone_and_tampering_fails_it() {
    let (app, records) = decided_app().await;
    let (secret, public) = AuditSigner::generate();
    let signer = AuditSigner::from_secret(&secret).expect("key");
    let key = audit::signing::parse_public_key(&public).expect("public key");
    for format in [Format::Jsonl, Format::Csv] {
        let mut out = Vec::new();
        let n = audit::export(&app.store, None, format, Some(&signer), &mut out)
            .await
            .expect("export");
        assert_eq!(n, records.len());
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            verify_text(&text, &key).expect("verifies").contains(&format!("{n} records")),
            "{format:?}"
        );

        let tampered = text.replacen("servicenow", "servicen0w", 1);
        assert!(verify_text(&tampered, &key).is_err(), "{format:?}: an edit fails");
        let (_, other) = AuditSigner::generate();
        let other = audit::signing::parse_public_key(&other).expect("key");
        assert!(
            verify_text(&text, &other).expect_err("wrong key").contains("another key"),
            "{format:?}"
        );
    }
    // Cutting records off the end leaves the checkpoint covering nothing exported.
    let mut out = Vec::new();
    audit::export(&app.store, None, Format::Jsonl, Some(&signer), &mut out)
        .await
        .expect("export");
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    let cut: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != records.len() - 1)
        .map(|(_, l)| *l)
        .collect();
    assert!(verify_text(&cut.join("\n"), &key).is_err());
    let unsigned: Vec<&str> = lines.iter().filter(|l| !l.contains("\"type\":\"checkpoint\"")).copied().collect();
    assert!(verify_text(&unsigned.join("\n"), &key)
        .expect_err("unsigned")
        .contains("not covered by a signed checkpoint"));

    // --since exports a tail that still verifies.
    let since = chrono::DateTime::parse_from_rfc3339(&records[records.len() / 2].at)
        .expect("time")
        .with_timezone(&chrono::Utc);
    let mut tail = Vec::new();
    let n = audit::export(&app.store, Some(since), Format::Jsonl, Some(&signer), &mut tail)
        .await
        .expect("export");
    assert!(n < records.len() && n > 0);
    verify_text(&String::from_utf8(tail).expect("utf8"), &key).expect("a tail verifies");
}

#[tokio::test]
async fn the_cli_round_trip_keygen_export_verify() {
    let (app, _) = decided_app().await;
    let keys = deskbridge().args(["audit", "keygen"]).output().expect("runs");
    let text = String::from_utf8_lossy(&keys.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let (secret, public) = (lines[1], lines[3]);
    let file = app.db_path().with_extension("jsonl");
    let export = deskbridge()
        .args(["audit", "export", "--format", "jsonl", "--since", "2000-01-01", "--db"])
        .arg(app.db_path())
        .arg("--output")
        .arg(&file)
        .env("DESKBRIDGE_AUDIT_KEY", secret)
        .output()
        .expect("runs");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    assert!(String::from_utf8_lossy(&export.stdout).contains("ending on a signed checkpoint"));
    let check = deskbridge()
        .args(["audit", "verify", "--public-key", public, "--export"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}

#[tokio::test]
async fn trace_shows_raw_normalized_decision_and_comment_with_hashes() {
    let (app, _) = decided_app().await;
    let out = deskbridge()
        .args(["trace", "RITM0010002", "--db"])
        .arg(app.db_path())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let order: Vec<usize> = [
        "ticket_seen",
        "normalized",
        "itsm_approval",
        "decided",
        "comment_queued",
        "comment_posted",
    ]
    .iter()
    .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(
        text.contains("raw sha256 ")
            && text.contains("deny")
            && text.contains("catalog 2026.12.1 (sha256:")
            && text.contains("beneficiary beth.anglin (active)"),
        "{text}"
    );
    let missing = deskbridge()
        .args(["trace", "RITM9999999", "--db"])
        .arg(app.db_path())
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(2));
}
