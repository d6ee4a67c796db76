//! Secrets: never in a config error, never in a URL that reaches a log or error, a store file
//! only its owner reads, and no webhook secret anyone could guess.

use crate::helpers::{deskbridge, write_config};

const SECRET: &str = "hunter2-very-secret-value";

/// A config whose connector block ends with `extra` (a line or two).
fn config_with(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    write_config(dir, None, &format!("base_url = \"http://127.0.0.1:9\"\n{extra}"))
}

fn check(path: &std::path::Path) -> (bool, String) {
    let out = deskbridge()
        .args(["sync", "--once", "--config"])
        .arg(path)
        .env("SN_PASSWORD", SECRET)
        .output()
        .expect("runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_mistake_on_a_secrets_line_never_prints_the_secret() {
    let dir = tempfile::tempdir().expect("dir");
    for (what, extra) in [
        (
            "a syntax error on the secret's line",
            r#"auth = { type = "basic", username = "u", password = "${SN_PASSWORD}" } oops"#,
        ),
        (
            "a secret where a number belongs",
            "auth = { type = \"basic\", username = \"u\", password = \"p\" }\npage_size = \"${SN_PASSWORD}\"",
        ),
        ("a secret where a table belongs", r#"auth = "${SN_PASSWORD}""#),
    ] {
        let (ok, stderr) = check(&config_with(dir.path(), extra));
        assert!(!ok, "{what}: {stderr}");
        assert!(stderr.contains("deskbridge.toml"), "{what}: the file is named: {stderr}");
        assert!(
            !stderr.contains(SECRET) && !stderr.contains("hunter2"),
            "{what} printed the secret: {stderr}"
        );
    }
}

#[test]
fn a_loaded_config_shows_no_secret_when_debug_printed() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config_with(
        dir.path(),
        r#"auth = { type = "basic", username = "u", password = "hunter2-in-the-file" }"#,
    );
    let config = deskbridge::wiring::load(&path).expect("loads");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("snow"), "{shown}");
}

#[test]
fn credentials_in_urls_are_refused_at_load_without_being_repeated() {
    let dir = tempfile::tempdir().expect("dir");
    let basic = r#"auth = { type = "basic", username = "u", password = "p" }"#;
    let in_base = config_with(dir.path(), basic);
    let text = std::fs::read_to_string(&in_base).expect("read").replace(
        "base_url = \"http://127.0.0.1:9\"",
        "base_url = \"http://svc:hunter2pw@127.0.0.1:9\"",
    );
    std::fs::write(&in_base, text).expect("write");
    let (ok, stderr) = check(&in_base);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("base_url") && stderr.contains("credentials"), "{stderr}");
    assert!(stderr.contains("deskbridge.toml:13: connectors[0]"), "the line is named: {stderr}");
    assert!(!stderr.contains("hunter2pw"), "{stderr}");

    let in_token_url = config_with(
        dir.path(),
        r#"auth = { type = "oauth_password", token_url = "http://svc:hunter2pw@127.0.0.1:9/oauth_token.do", client_id = "c", client_secret = "s", username = "u", password = "p" }"#,
    );
    let (ok, stderr) = check(&in_token_url);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("credentials"), "{stderr}");
    assert!(!stderr.contains("hunter2pw"), "{stderr}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_store_and_its_side_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("deskbridge.db");
    let store = deskbridge::store::Store::open(&db).await.expect("opens");
    let _store = store.exclusive().expect("lock");
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    let side = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    for path in [db.clone(), side("-wal"), side("-shm"), side(".lock"), side(".migrate.lock")] {
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(side("-wal").exists(), "WAL mode makes a -wal file");

    // A file someone made readable is tightened when deskbridge opens it.
    let loose = dir.path().join("loose.db");
    std::fs::write(&loose, b"").expect("create");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    deskbridge::store::Store::open(&loose).await.expect("opens");
    assert_eq!(mode(&loose), 0o600);
}

#[test]
fn an_empty_or_short_webhook_secret_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("dir");
    for (secret, needle) in [("", "empty"), ("short", "at least 16")] {
        let extra = format!("auth = {{ type = \"basic\", username = \"u\", password = \"p\" }}\nwebhook = {{ secret = \"{secret}\" }}");
        let (ok, stderr) = check(&config_with(dir.path(), &extra));
        assert!(!ok, "{stderr}");
        assert!(stderr.contains(needle) && stderr.contains("webhook"), "{stderr}");
    }
    let decision = tempfile::tempdir().expect("dir");
    let path = write_config(
        decision.path(),
        Some("kind = \"webhook\"\nurl = \"http://127.0.0.1:9/decide\"\nsecret = \"tiny\""),
        "base_url = \"http://127.0.0.1:9\"\nauth = { type = \"basic\", username = \"u\", password = \"p\" }",
    );
    let (ok, stderr) = check(&path);
    assert!(!ok && stderr.contains("at least 16"), "{stderr}");
    assert!(!stderr.contains("tiny"), "{stderr}");
}
