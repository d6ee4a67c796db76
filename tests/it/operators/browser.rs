//! The web console in a real browser: Debian's Chromium driven through chromedriver with
//! fantoccini. `.ci/run` installs both; `DESKBRIDGE_CHROMIUM` and `DESKBRIDGE_CHROMEDRIVER`
//! override their paths. Screenshots of each view are written to `DESKBRIDGE_SCREENSHOTS`
//! (default: a `deskbridge-screenshots` folder in the temporary directory).

use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::Console;
use crate::helpers::TestApp;

/// A chromedriver child process, killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(downloads: &std::path::Path) -> (Driver, Client) {
    let driver = std::env::var("DESKBRIDGE_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let chromium = std::env::var("DESKBRIDGE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = std::process::Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("chromedriver is not installed ({driver}: {e}); .ci/run installs chromium and chromium-driver"));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let profile = tempfile::tempdir().expect("profile").keep();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.display())],
            "prefs": {"download.default_directory": downloads.display().to_string(), "download.prompt_for_download": false},
        }),
    );
    let mut last = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&driver.url).await {
            Ok(client) => return (driver, client),
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no browser session through {}: {last:?}", driver.url)
}

async fn shot(client: &Client, name: &str) {
    let dir = std::env::var("DESKBRIDGE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("deskbridge-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

/// Waits until the element's text satisfies `check`; returns the text.
async fn text_of(client: &Client, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(e) = client.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if check(&t) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {css} never matched; last text {last:?}")
}

/// Waits for the element, then clicks it.
async fn click(client: &Client, locator: Locator<'_>, what: &str) {
    client
        .wait()
        .for_element(locator)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {what}: {e}"));
}

async fn sign_in(client: &Client, console: &Console, token: &str) {
    client.goto(&format!("{}/ui", console.url)).await.expect("open the console");
    let field = client.wait().for_element(Locator::Id("token")).await.expect("token field");
    field.send_keys(token).await.expect("type the token");
    click(client, Locator::Id("login-button"), "button").await;
    text_of(client, "#who", "signed in", |t| !t.is_empty()).await;
}

async fn sign_out(client: &Client) {
    click(client, Locator::Id("logout"), "sign out").await;
    client.wait().for_element(Locator::Id("token")).await.expect("signed out");
}

const HOSTILE: &str = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>payroll";

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let app = TestApp::spawn().await;
    // A ticket whose text is markup, and a comment the ITSM refuses for good (parked).
    let hostile = app.sim.sys_id_of("sc_req_item", "RITM0010004").expect("seeded");
    app.sim.set_variable(&hostile, "application", HOSTILE);
    let parked = app.sim.sys_id_of("sc_req_item", "RITM0010001").expect("seeded");
    app.sim.inject(
        deskbridge_servicenow::simulator::Fault::Status(400),
        1,
        Some(&format!("/api/now/table/sc_req_item/{parked}")),
    );
    let console = Console::over(app).await;
    assert_eq!(console.app.store.parked().await.expect("parked").len(), 1, "one comment parked");
    let downloads = tempfile::tempdir().expect("downloads");
    let (_driver, client) = browser(downloads.path()).await;

    // A wrong token is refused on the page.
    sign_in_refused(&client, &console).await;
    // Sign in as a viewer: the ticket list.
    sign_in(&client, &console, &console.tokens.viewer).await;
    let list = text_of(&client, "#tickets", "ticket list", |t| t.contains("RITM0010002")).await;
    // Ticket text is shown as text, never run.
    assert!(list.contains(HOSTILE), "the hostile value is shown literally: {list}");
    let pwned: Value = client
        .execute("return window.__pwned === undefined ? null : window.__pwned", vec![])
        .await
        .expect("js");
    assert_eq!(pwned, Value::Null, "ticket text ran as script");
    let scripts: Value = client
        .execute(
            "return document.querySelectorAll('script').length + document.querySelectorAll('img').length",
            vec![],
        )
        .await
        .expect("js");
    assert_eq!(scripts, json!(1), "only the console's own script; no element from ticket text");
    shot(&client, "tickets").await;

    // Open a ticket: its timeline.
    click(&client, Locator::Css("tr[data-number='RITM0010002'] a.ticket-link"), "ticket link").await;
    let timeline = text_of(&client, "#timeline", "timeline", |t| t.contains("comment_posted")).await;
    assert!(timeline.contains("decided") && timeline.contains("ticket_seen"), "{timeline}");
    shot(&client, "ticket").await;

    // Drift: the charts are drawn.
    client.goto(&format!("{}/ui#drift", console.url)).await.expect("drift");
    client.wait().for_element(Locator::Css("#chart-kinds rect")).await.expect("chart");
    let bars: Value = client
        .execute("return document.querySelectorAll('#chart-kinds rect').length", vec![])
        .await
        .expect("js");
    assert_eq!(bars, json!(deskbridge::report::drift::KINDS.len()));
    shot(&client, "drift").await;

    // Access: the lifecycle of an approval, waiting for its grant.
    client.goto(&format!("{}/ui#access", console.url)).await.expect("access");
    let access = text_of(&client, "#access", "access table", |t| t.contains("RITM0010001")).await;
    assert!(
        access.contains("jira-software/jira-developers") && access.contains("approved"),
        "{access}"
    );
    shot(&client, "access").await;

    // A viewer's retry is refused, and nothing changes.
    client.goto(&format!("{}/ui#parked", console.url)).await.expect("parked");
    click(&client, Locator::Css("#parked button.retry"), "retry button").await;
    let flash = text_of(&client, "#flash", "refusal", |t| !t.is_empty()).await;
    assert!(flash.contains("Refused") && flash.contains("operator"), "{flash}");
    assert_eq!(console.app.store.parked().await.expect("parked").len(), 1);
    shot(&client, "parked-viewer").await;

    // As an operator it goes back to work.
    sign_out(&client).await;
    sign_in(&client, &console, &console.tokens.operator).await;
    client.goto(&format!("{}/ui#parked", console.url)).await.expect("parked");
    click(&client, Locator::Css("#parked button.retry"), "retry button").await;
    let flash = text_of(&client, "#flash", "retried", |t| t.contains("Queued again")).await;
    assert!(flash.contains("1 comment(s)"), "{flash}");
    assert!(console.app.store.parked().await.expect("parked").is_empty());
    let actor = console
        .app
        .store
        .audit_records()
        .await
        .expect("audit")
        .iter()
        .rev()
        .find(|r| r.kind == "retry_requested")
        .map(|r| r.payload.clone())
        .expect("retry audited");
    assert!(actor.contains("api:otto"), "{actor}");

    // The mapping playground: a stored ticket through the configured mapping, then edits.
    client.goto(&format!("{}/ui#playground", console.url)).await.expect("playground");
    client.wait().for_element(Locator::Id("pg-mapping")).await.expect("editor");
    client
        .find(Locator::Id("pg-ticket"))
        .await
        .expect("ticket picker")
        .select_by_value(&console.app.sim.sys_id_of("sc_req_item", "RITM0010002").expect("seeded"))
        .await
        .expect("pick the stored ticket");
    let normalized = text_of(&client, "#pg-normalized", "the picked ticket normalized", |t| {
        t.contains("RITM0010002") && t.contains("access_request")
    })
    .await;
    assert!(normalized.contains("\"entitlement\""), "{normalized}");
    let comment = text_of(&client, "#pg-comment", "comment preview", |t| t.contains("deskbridge-id:preview")).await;
    assert!(comment.starts_with("deskbridge decision:"), "{comment}");
    text_of(&client, "#pg-stage", "complete", |t| t.contains("Reached: comment")).await;
    shot(&client, "playground").await;
    // The ticket with its expected output, as a fixture for tests/fixtures/expected.
    click(&client, Locator::Id("pg-download-fixture"), "download button").await;
    let file = downloads.path().join("RITM0010002.expected.json");
    let mut fixture = None;
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                fixture = Some(v);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fixture = fixture.unwrap_or_else(|| panic!("no fixture downloaded to {}", file.display()));
    assert_eq!(fixture["mapping"], "servicenow-sc_req_item");
    assert_eq!(fixture["ticket"]["number"], "RITM0010002");
    assert_eq!(fixture["expected"]["normalized"]["status"], "access_request");
    let mapping = crate::helpers::shipped_mapping();
    let ticket = deskbridge::mapping::ticket_from_value(fixture["ticket"].clone(), "fixture").expect("ticket");
    assert_eq!(
        serde_json::to_value(mapping.normalize(&ticket)).expect("json"),
        fixture["expected"]["normalized"],
        "the downloaded fixture is what tests/fixtures/expected checks"
    );
    // Edit as a user types: the entitlement now comes from a field the ticket lacks.
    let editor = client.find(Locator::Id("pg-mapping")).await.expect("editor");
    let text: Value = client
        .execute("return document.getElementById('pg-mapping').value", vec![])
        .await
        .expect("js");
    let text = text.as_str().expect("text").to_owned();
    let edited = text.replacen(
        "\"entitlement.id\" = { path = \"variables.role\" }",
        "\"entitlement.id\" = { path = \"variables.rol\" }",
        1,
    );
    assert_ne!(edited, text);
    editor.clear().await.expect("clear");
    editor.send_keys(&edited).await.expect("type the edited mapping");
    let normalized = text_of(&client, "#pg-normalized", "incomplete", |t| t.contains("\"incomplete\"")).await;
    assert!(normalized.contains("entitlement.id"), "{normalized}");
    text_of(&client, "#pg-comment", "needs-info comment", |t| t.contains("MORE INFORMATION")).await;
    text_of(&client, "#pg-decision", "needs-info decision", |t| t.contains("needs_info")).await;
    // A broken line: the error names it and the gutter marks it.
    editor.send_keys("\nthis line = = is not TOML").await.expect("type a broken line");
    let lines = edited.split('\n').count() + 1;
    let errors = text_of(&client, "#pg-errors", "error with its line", |t| t.contains("line")).await;
    assert!(errors.contains(&format!("line {lines}")), "line {lines}: {errors}");
    let marked: Value = client
        .execute(
            "return Array.from(document.querySelectorAll('#pg-gutter .bad')).map(e => e.textContent)",
            vec![],
        )
        .await
        .expect("js");
    assert_eq!(marked, json!([lines.to_string()]));
    shot(&client, "playground-error").await;
    // Nothing the playground did reached the store or the ITSM's journal.
    let posted = console.app.journal_of("RITM0010002").len();
    assert_eq!(posted, 1, "exactly the decision's one comment");

    client.close().await.expect("close the browser");
}

async fn sign_in_refused(client: &Client, console: &Console) {
    client.goto(&format!("{}/ui", console.url)).await.expect("open the console");
    let field = client.wait().for_element(Locator::Id("token")).await.expect("token field");
    field.send_keys("dbt_wrong").await.expect("type");
    click(client, Locator::Id("login-button"), "button").await;
    let error = text_of(client, "#login-error", "refusal", |t| !t.is_empty()).await;
    assert!(error.contains("not valid"), "{error}");
    shot(client, "login-refused").await;
    client
        .find(Locator::Id("token"))
        .await
        .expect("field")
        .clear()
        .await
        .expect("clear");
}
