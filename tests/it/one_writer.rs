//! One worker per SQLite file, migrations once, leases that cover a post: a cron `sync --once`
//! beside `serve`, processes starting together on a new file or an empty PostgreSQL schema, and
//! a lease shorter than a write.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use deskbridge::store::Store;
use deskbridge_servicenow::simulator::{SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};

use crate::helpers::{root, Killed};

fn config(dir: &Path, sim: &Simulator, extra_store: &str) -> PathBuf {
    let path = dir.join("deskbridge.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = \"{db}\"\n{extra_store}\n\n\
             [decision]\nkind = \"rego\"\npolicies = [\"{root}/examples/policies/access.rego\"]\n\n\
             [pipeline]\npoll_interval_secs = 1\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\n\
             [[connectors]]\nid = \"snow\"\nkind = \"servicenow\"\nmapping = \"{root}/mappings/servicenow/sc_req_item.toml\"\n\
             base_url = \"{url}\"\nlag_secs = 0\n\
             auth = {{ type = \"basic\", username = \"{user}\", password = \"{password}\" }}\n",
            db = dir.join("deskbridge.db").display(),
            root = root().display(),
            url = sim.base_url(),
            user = INTEGRATION_USER,
            password = INTEGRATION_PASSWORD,
        ),
    )
    .expect("write config");
    path
}

fn deskbridge(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deskbridge"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("DESKBRIDGE_CONFIG")
        .env("RUST_LOG", "warn");
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
        .await
        .expect("join")
}

/// `(number, deskbridge comments on it)` for every requested item.
fn comments_per_ticket(sim: &Simulator) -> Vec<(String, usize)> {
    sim.numbers("sc_req_item")
        .into_iter()
        .map(|(number, sys_id)| {
            let ours = sim
                .journal(&sys_id)
                .iter()
                .filter(|e| e.created_by == INTEGRATION_USER && e.value.contains("deskbridge-id:"))
                .count();
            (number, ours)
        })
        .collect()
}

fn assert_at_most_one_comment_each(sim: &Simulator) {
    let twice: Vec<_> = comments_per_ticket(sim).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "tickets commented more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_is_refused_and_nothing_is_posted_twice() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    sim.generate(500);
    let dir = tempfile::tempdir().expect("dir");
    let config = config(dir.path(), &sim, "");
    let serve = Killed(
        deskbridge(&["serve"], &config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let lock = dir.path().join("deskbridge.db.lock");
    let started = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "serve never took the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A cron job's `sync --once` on the same file, twice, while serve works.
    for _ in 0..2 {
        let second = run(deskbridge(&["sync", "--once"], &config)).await;
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(!second.status.success(), "the second process is refused");
        assert!(
            stderr.contains("is in use by another deskbridge process (pid ") && stderr.contains(&format!("pid {}", serve.0.id())),
            "the error names the holder: {stderr}"
        );
    }
    let db = dir.path().join("deskbridge.db");
    let reader = Store::open(&db).await.expect("reader");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = reader.counts().await.expect("counts");
        if c.posted >= 506 && c.queued == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not finish: {c:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(serve);
    assert_at_most_one_comment_each(&sim);
    let commented = comments_per_ticket(&sim).into_iter().filter(|(_, n)| *n == 1).count();
    assert_eq!(commented, 506, "every access ticket commented once");
    // Once serve is gone (SIGKILL included), the lock is free again.
    let after = run(deskbridge(&["sync", "--once"], &config)).await;
    assert!(after.status.success(), "{}", String::from_utf8_lossy(&after.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_on_a_new_file_do_not_race() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let config = config(dir.path(), &sim, "");
    let runs: Vec<_> = (0..4)
        .map(|_| tokio::spawn(run(deskbridge(&["sync", "--once"], &config))))
        .collect();
    let mut succeeded = 0;
    for r in runs {
        let out = r.await.expect("join");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("already exists"), "migrations raced: {stderr}");
        if out.status.success() {
            succeeded += 1;
        } else {
            assert!(stderr.contains("is in use by another deskbridge process"), "{stderr}");
        }
    }
    assert!(succeeded >= 1);
    assert_at_most_one_comment_each(&sim);
}

#[tokio::test]
async fn replicas_starting_together_on_an_empty_postgres_schema_migrate_once() {
    let url = deskbridge::store::testing::fresh_postgres_schema().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::connect_postgres(&url).await.map(|s| s.marker("c", "k", "h")) })
        })
        .collect();
    let mut markers = Vec::new();
    for open in opens {
        markers.push(open.await.expect("join").expect("every replica opens the store"));
    }
    markers.dedup();
    assert_eq!(markers.len(), 1, "every replica shares one marker key: {markers:?}");
}

#[tokio::test]
async fn a_lease_shorter_than_a_write_is_rejected_naming_both_keys() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let config = config(dir.path(), &sim, "lease_secs = 10");
    let out = run(deskbridge(&["sync", "--once"], &config)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("store.lease_secs = 10") && stderr.contains("connectors[0].http.timeout_secs = 30"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_the_catalog_on_sighup_and_keeps_the_last_good_one() {
    let sim = Simulator::start(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let catalog = dir.path().join("catalog.toml");
    let good = std::fs::read_to_string(root().join("examples/catalog.toml")).expect("example");
    std::fs::write(&catalog, &good).expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let config = config(dir.path(), &sim, "");
    let tokens = crate::operators::tokens();
    let text = std::fs::read_to_string(&config)
        .expect("read")
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\"\n{}", tokens.toml),
        )
        .replace(
            "[pipeline]",
            &format!(
                "[catalog]\npath = \"{}\"\n\n[directory]\nkind = \"file\"\npath = \"{}/examples/directory.json\"\n\n[pipeline]",
                catalog.display(),
                root().display()
            ),
        );
    std::fs::write(&config, text).expect("write");
    let serve = Killed(
        deskbridge(&["serve"], &config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let status = || async {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/status"))
            .bearer_auth(&tokens.viewer)
            .send()
            .await
            .ok()?
            .json::<serde_json::Value>()
            .await
            .ok()
    };
    let label_now = || async {
        for _ in 0..100 {
            if let Some(s) = status().await {
                if let Some(l) = s["catalog"].as_str() {
                    return l.to_owned();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no /status")
    };
    let first = label_now().await;
    assert!(first.starts_with("2026.12.1 (sha256:"), "{first}");
    let hup = |pid: u32| Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill");
    // A broken edit: serve keeps the catalog in use.
    std::fs::write(&catalog, good.replace("environment = \"prod\"", "environment = \"production\"")).expect("write");
    assert!(hup(serve.0.id()).success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(label_now().await, first, "the last good catalog stays in use");
    // A good edit is taken.
    std::fs::write(&catalog, good.replace("version = \"2026.12.1\"", "version = \"2026.12.2\"")).expect("write");
    assert!(hup(serve.0.id()).success());
    let mut now = String::new();
    for _ in 0..50 {
        now = label_now().await;
        if now.starts_with("2026.12.2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(now.starts_with("2026.12.2 (sha256:"), "{now}");
    drop(serve);
}

#[tokio::test]
async fn a_configured_marker_key_survives_a_rebuilt_store() {
    let dir = tempfile::tempdir().expect("dir");
    let store_config = |db: &str, key: &str| -> deskbridge::config::StoreConfig {
        toml::from_str(&format!("path = \"{}\"\nmarker_key = \"{key}\"\n", dir.path().join(db).display())).expect("config")
    };
    let key = "0123456789abcdef0123456789abcdef-test";
    let a = Store::from_config(&store_config("a.db", key)).await.expect("a");
    let rebuilt = Store::from_config(&store_config("b.db", key)).await.expect("b");
    assert_eq!(
        a.marker("c", "k", "h"),
        rebuilt.marker("c", "k", "h"),
        "the same key, the same markers"
    );
    let random = Store::open(&dir.path().join("c.db")).await.expect("c");
    assert_ne!(a.marker("c", "k", "h"), random.marker("c", "k", "h"));
    let short = Store::from_config(&store_config("d.db", "short")).await.err().expect("refused");
    assert!(short.to_string().contains("marker_key"), "{short}");
    assert!(!short.to_string().contains("short\""), "{short}");
}
