//! Ticket text is hostile: it reaches neither the terminal nor a comment as escapes, bidi
//! controls or hidden characters, and no length of it pushes the marker out of a comment.

use std::sync::Arc;

use deskbridge_servicenow::simulator::{SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};

use crate::helpers::{deskbridge, write_config, TestApp};

const HOSTILE_ROLE: &str = "viewer\x1b[2K\x1b]0;pwned\x07FAKE-LINE\0\u{202E}exe.txt\u{200B}";

fn assert_terminal_safe(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| {
            (c.is_control() && *c != '\n' && *c != '\t') || deskbridge::text::is_bidi_control(*c) || deskbridge::text::is_zero_width(*c)
        })
        .collect();
    assert!(bad.is_empty(), "{what} printed {bad:?}:\n{text}");
}

#[tokio::test]
async fn escapes_and_bidi_controls_from_a_ticket_reach_neither_the_terminal_nor_the_comment() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let ritm = sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    sim.set_variable(&ritm, "role", HOSTILE_ROLE);
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("d.db");
    let config = write_config(
        dir.path(),
        None,
        &format!(
            "base_url = \"{}\"\nlag_secs = 0\nauth = {{ type = \"basic\", username = \"{INTEGRATION_USER}\", password = \"{INTEGRATION_PASSWORD}\" }}",
            sim.base_url()
        ),
    );
    let run = |args: Vec<String>| tokio::task::spawn_blocking(move || deskbridge().args(&args).output().expect("runs"));
    let arg = |s: &str| s.to_owned();
    let sync = run(vec![arg("sync"), arg("--once"), arg("--config"), config.display().to_string()])
        .await
        .expect("join");
    assert!(sync.status.success(), "{}", String::from_utf8_lossy(&sync.stderr));
    let stdout = String::from_utf8(sync.stdout).expect("utf-8");
    assert!(stdout.contains("RITM0010001"), "{stdout}");
    assert_terminal_safe("sync", &stdout);

    let db_arg = db.display().to_string();
    for args in [
        vec![arg("trace"), arg("RITM0010001"), arg("--db"), db_arg.clone()],
        vec![arg("audit"), arg("export"), arg("--db"), db_arg.clone()],
        vec![arg("report"), arg("drift"), arg("--db"), db_arg.clone()],
    ] {
        let out = run(args.clone()).await.expect("join");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        assert!(
            out.status.success() || out.status.code() == Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.is_empty(), "{args:?} printed nothing");
        assert_terminal_safe(&args.join(" "), &text);
    }

    // The work note quotes the role without any of it.
    let journal = sim.journal(&ritm);
    let note = &journal.last().expect("a work note").value;
    assert!(note.contains("viewer"), "{note}");
    assert_terminal_safe("the work note", note);
}

#[tokio::test]
async fn a_huge_field_is_capped_and_the_marker_stays_on_the_last_line() {
    let app = TestApp::spawn().await;
    let ritm = app.sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    app.sim.set_variable(&ritm, "role", &"A".repeat(200_000));
    app.sim.set_variable(&ritm, "business_justification", &"because ".repeat(20_000));
    let pipeline = Arc::new(app.pipeline());
    let report = pipeline.run_once().await.expect("pass");
    assert!(report.posted >= 1, "{report:?}");
    let note = app.journal_of("RITM0010001").last().expect("a work note").value.clone();
    let chars = note.chars().count();
    assert!(
        chars <= deskbridge::render::COMMENT_CHARS + 100,
        "the work note has {chars} characters"
    );
    assert!(note.starts_with("deskbridge decision:"), "{}", &note[..200]);
    let last = note.lines().last().expect("lines");
    assert!(last.starts_with("[deskbridge-id:"), "the marker is the last line: {last}");
    assert!(note.contains("AAAA…"), "the role is shown, shortened");
}

#[tokio::test]
async fn no_value_read_from_a_ticket_or_cursor_changes_a_servicenow_query() {
    use deskbridge_connector::{Connector, ConnectorError, Cursor};
    let app = TestApp::spawn().await;
    let connector = app.connector();
    app.sim.set_recording(true);
    for cursor in [
        serde_json::json!({"t": "2026-01-01 00:00:00^ORsys_id!=x", "id": "0"}),
        serde_json::json!({"t": "2026-01-01 00:00:00", "id": "0^NQactive=true"}),
        serde_json::json!({"t": "javascript:gs.getUserID()", "id": "0"}),
    ] {
        let result = connector.poll(&Cursor(Some(cursor.to_string()))).await;
        assert!(matches!(result, Err(ConnectorError::Permanent { .. })), "{cursor}: {result:?}");
    }
    let queries: Vec<String> = app
        .sim
        .requests()
        .iter()
        .flat_map(|r| r.query.iter().filter(|(k, _)| k == "sysparm_query").map(|(_, v)| v.clone()))
        .collect();
    assert!(
        queries
            .iter()
            .all(|q| !q.contains("^OR") && !q.contains("^NQ") && !q.contains("javascript")),
        "{queries:?}"
    );
}
