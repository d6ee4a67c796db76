//! Load harness with deskbridge and the simulators each in their own process: `deskbridge
//! serve` (the release binary) against `deskbridge simulate --tickets N` (the ServiceNow, Jira
//! and SCIM simulators, seeded with N more access requests each), talking to them only over
//! HTTP, as it would to a real instance. Prints figures, asserts nothing.
//!
//!     cargo build --release && cargo run --release --example serve_latency -- [TICKETS] [RATE] [SECONDS] [sqlite|postgres] [jira]
//!     cargo build --release && cargo run --release --example serve_latency -- --growth [sqlite|postgres] [jira]
//!
//! 1. Backlog: TICKETS (default 5,000) access requests wait when `serve` starts. It prints the
//!    time until every one is read, decided and commented, deskbridge's CPU time per ticket
//!    (from /proc) beside the simulators' (their process's, in the same time), deskbridge's
//!    peak RSS, and the SQLite file's size.
//! 2. Steady webhooks (ServiceNow only): RATE (default 200) tickets per second, for SECONDS
//!    (default 10), change their ask (the role and duration requested, through the Table API)
//!    and a signed webhook names each. It prints the time from each webhook to its comment on
//!    the ticket: p50, p90, p99 and the longest. SECONDS 0 skips this phase.
//!
//! The connector is ServiceNow (over TLS, with the simulator's CA), or with `jira` Jira Cloud.
//! The store is a SQLite file, or with `postgres` a fresh schema of `DESKBRIDGE_TEST_POSTGRES`.
//! `--growth` runs the backlog phase at 10,000 and then 100,000 tickets and prints both rates,
//! their ratio and both peak RSS figures, so growth is visible in one run.
//!
//! `DESKBRIDGE_BIN=path` runs that build of `deskbridge serve` instead of
//! `target/release/deskbridge`, so two builds can be compared side by side in one session; the
//! simulators always run from `target/release/deskbridge`. `KEEP_LOG=path` and `KEEP_STORE=path`
//! keep serve's log and its SQLite store (with its WAL) after the run. `POLL_SECS=n` sets serve's poll
//! interval (default 1 s: the poll, the webhooks' safety net, reads every changed ticket again).

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deskbridge::store::Store;
use deskbridge_jira::simulator as jira;
use deskbridge_servicenow::simulator as snow;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt as _;

const SECRET: &str = "load-webhook-secret-0123456789";

/// `(user + system CPU seconds, peak RSS MiB)` of a live process, from /proc.
fn usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name and state.
    let cpu = (ticks(11)? + ticks(12)?) / 100.0;
    Some((cpu, common::peak_rss_mib(&pid.to_string())))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A Table API field's text: a plain value, or a reference's `{link, value}`.
fn text(field: &Value) -> String {
    field.as_str().or_else(|| field["value"].as_str()).unwrap_or_default().to_owned()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `deskbridge simulate` in its own process, and how to reach it.
struct Simulators {
    /// Killed when dropped.
    _child: tokio::process::Child,
    pid: u32,
    servicenow: String,
    jira: String,
    /// The ServiceNow simulator's CA certificate file.
    ca: PathBuf,
    /// A Table API client that trusts that CA.
    client: reqwest::Client,
}

impl Simulators {
    /// Starts `deskbridge simulate --tickets count` and waits until it has printed its URLs
    /// (its seeding is done by then), reading them from the config it wrote.
    async fn start(dir: &Path, count: usize) -> anyhow::Result<Self> {
        let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/deskbridge");
        anyhow::ensure!(
            binary.exists(),
            "build the binary first: cargo build --release ({} is missing)",
            binary.display()
        );
        let mut child = tokio::process::Command::new(&binary)
            .args(["simulate", "--tickets", &count.to_string(), "--dir"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.with_extension("log"))?)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("simulate's stdout")?).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Ctrl-C stops the simulators") {
                    return Ok(());
                }
            }
            anyhow::bail!("deskbridge simulate exited; see {}", dir.with_extension("log").display())
        };
        tokio::time::timeout(Duration::from_secs(600), ready)
            .await
            .context("deskbridge simulate was not ready within 600 s")??;
        // Nothing more is printed until it stops; its stdout stays open with the reader.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let config: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("deskbridge.toml"))?)?;
        let connector = |id: &str| -> anyhow::Result<toml::Table> {
            config
                .get("connectors")
                .and_then(toml::Value::as_array)
                .and_then(|all| {
                    all.iter()
                        .filter_map(toml::Value::as_table)
                        .find(|c| c.get("id").and_then(toml::Value::as_str) == Some(id))
                })
                .cloned()
                .with_context(|| format!("simulate's config has no connector {id}"))
        };
        let text = |table: &toml::Table, key: &str| {
            table
                .get(key)
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("no {key}"))
        };
        let servicenow = connector("servicenow")?;
        let ca = PathBuf::from(text(
            servicenow.get("http").and_then(toml::Value::as_table).context("no http")?,
            "ca_cert_file",
        )?);
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca)?)?)
            .build()?;
        Ok(Self {
            pid,
            servicenow: text(&servicenow, "base_url")?,
            jira: text(&connector("jira")?, "base_url")?,
            ca,
            client,
            _child: child,
        })
    }

    /// Rows of a ServiceNow table through the Table API.
    async fn rows(&self, table: &str, query: &str, fields: &str, limit: usize, offset: usize) -> anyhow::Result<Vec<Value>> {
        let answer = self
            .client
            .get(format!("{}/api/now/table/{table}", self.servicenow))
            .basic_auth(snow::INTEGRATION_USER, Some(snow::INTEGRATION_PASSWORD))
            .query(&[
                ("sysparm_query", query),
                ("sysparm_fields", fields),
                ("sysparm_limit", &limit.to_string()),
                ("sysparm_offset", &offset.to_string()),
            ])
            .send()
            .await?
            .error_for_status()?;
        let mut body: Value = answer.json().await?;
        Ok(match body["result"].take() {
            Value::Array(rows) => rows,
            _ => Vec::new(),
        })
    }

    /// Changes fields of a ServiceNow record through the Table API, as a user would.
    async fn patch(&self, table: &str, sys_id: &str, fields: Value) -> anyhow::Result<()> {
        self.client
            .patch(format!("{}/api/now/table/{table}/{sys_id}", self.servicenow))
            .basic_auth(snow::INTEGRATION_USER, Some(snow::INTEGRATION_PASSWORD))
            .json(&fields)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// How many tickets the connector reads in all, the seeded ones included: ServiceNow's
    /// `X-Total-Count` of requested items, or the `total` of a Jira search of the project.
    async fn total(&self, jira: bool) -> anyhow::Result<i64> {
        if jira {
            let answer: Value = self
                .client
                .get(format!("{}/rest/api/2/search", self.jira))
                .basic_auth(jira::INTEGRATION_EMAIL, Some(jira::API_TOKEN))
                .query(&[("jql", format!("project = {}", jira::SEEDED_PROJECT)), ("maxResults", "0".into())])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            return answer["total"].as_i64().context("the Jira search answered no total");
        }
        let answer = self
            .client
            .get(format!("{}/api/now/table/sc_req_item", self.servicenow))
            .basic_auth(snow::INTEGRATION_USER, Some(snow::INTEGRATION_PASSWORD))
            .query(&[("sysparm_fields", "sys_id"), ("sysparm_limit", "1")])
            .send()
            .await?
            .error_for_status()?;
        let total = answer
            .headers()
            .get("X-Total-Count")
            .context("ServiceNow answered no X-Total-Count")?;
        Ok(total.to_str()?.parse()?)
    }

    /// How many journal entries each record has: one request per 200 records.
    async fn journal_counts(&self, sys_ids: &[&str]) -> anyhow::Result<Vec<usize>> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for chunk in sys_ids.chunks(200) {
            let query = format!("element_idIN{}", chunk.join(","));
            for row in self.rows("sys_journal_field", &query, "element_id", 100_000, 0).await? {
                *counts.entry(text(&row["element_id"])).or_default() += 1;
            }
        }
        Ok(sys_ids.iter().map(|id| counts.get(*id).copied().unwrap_or(0)).collect())
    }

    /// The generated requested items (numbers from RITM2000000), oldest first, up to `limit`.
    async fn generated(&self, limit: usize) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        while ids.len() < limit {
            let page = self
                .rows(
                    "sc_req_item",
                    "numberSTARTSWITHRITM2^ORDERBYnumber",
                    "sys_id",
                    1_000.min(limit - ids.len()),
                    ids.len(),
                )
                .await?;
            let n = page.len();
            ids.extend(page.into_iter().filter_map(|r| r["sys_id"].as_str().map(str::to_owned)));
            if n == 0 {
                break;
            }
        }
        Ok(ids)
    }

    /// The `sc_item_option` sys_id of each catalog variable of each requested item, by name.
    async fn variables(&self, items: &[String]) -> anyhow::Result<HashMap<String, HashMap<String, String>>> {
        let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
        for chunk in items.chunks(100) {
            let query = format!("request_itemIN{}", chunk.join(","));
            let fields = "request_item,sc_item_option,sc_item_option.item_option_new.name";
            for row in self.rows("sc_item_option_mtom", &query, fields, 100_000, 0).await? {
                out.entry(text(&row["request_item"]))
                    .or_default()
                    .insert(text(&row["sc_item_option.item_option_new.name"]), text(&row["sc_item_option"]));
            }
        }
        Ok(out)
    }

    fn cpu(&self) -> f64 {
        usage(self.pid).map_or(0.0, |(cpu, _)| cpu)
    }
}

fn config(sims: &Simulators, jira: bool, store: &str, port: u16) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let connector = if jira {
        format!(
            r#"kind = "jira"
mapping = "{root}/mappings/jira/service-management-access.toml"
deployment = "cloud"
base_url = "{url}"
projects = ["{project}"]
auth = {{ type = "basic", username = "{user}", password = "{token}" }}"#,
            root = root.display(),
            url = sims.jira,
            project = jira::SEEDED_PROJECT,
            user = jira::INTEGRATION_EMAIL,
            token = jira::API_TOKEN,
        )
    } else {
        format!(
            r#"kind = "servicenow"
mapping = "{root}/mappings/servicenow/sc_req_item.toml"
base_url = "{url}"
page_size = 500
lag_secs = 0
auth = {{ type = "basic", username = "{user}", password = "{password}" }}
http = {{ ca_cert_file = {ca} }}
webhook = {{ secret = "{SECRET}" }}"#,
            root = root.display(),
            url = sims.servicenow,
            user = snow::INTEGRATION_USER,
            password = snow::INTEGRATION_PASSWORD,
            ca = toml::Value::String(sims.ca.display().to_string()),
        )
    };
    format!(
        r#"[store]
{store}

[decision]
kind = "rego"
policies = ["{root}/examples/policies/access.rego"]

[catalog]
path = "{root}/examples/catalog.toml"

[directory]
kind = "file"
path = "{root}/examples/directory.json"

[pipeline]
poll_interval_secs = {poll}
post_retry_base_secs = 1

[server]
listen = "127.0.0.1:{port}"

[[connectors]]
id = "load"
{connector}
"#,
        root = root.display(),
        poll = std::env::var("POLL_SECS").unwrap_or_else(|_| "1".into()),
    )
}

/// Waits until at least `expected` tickets are stored, every stored version is settled and
/// every queued comment posted, twice in a row (between two pages of the backlog, everything
/// stored so far can be done while most of it is still unread). Answers the comments posted
/// and deskbridge's CPU seconds.
///
/// The harness shares the machine with deskbridge, so its looking must not grow with the store:
/// every 20 ms it reads only the unfinished work (the status indexes over unfinished rows), and
/// the counts that read every ticket run once a second, or every 100 ms once nothing is
/// unfinished. When the backlog ended is read from the store's own timestamps
/// ([`last_activity`]), not from when the harness looked.
async fn settled(store: &Store, child: &mut tokio::process::Child, pid: u32, peak: &mut f64, expected: i64) -> anyhow::Result<(i64, f64)> {
    let mut calm = 0;
    let mut cpu = 0.0;
    let mut progress = ((0, 0), Instant::now());
    let mut counted: Option<Instant> = None;
    loop {
        anyhow::ensure!(child.try_wait()?.is_none(), "deskbridge serve exited");
        anyhow::ensure!(
            progress.1.elapsed() < Duration::from_secs(60),
            "nothing read or posted for 60 s, at {} tickets read and {} comments posted, of {expected}",
            progress.0 .0,
            progress.0 .1
        );
        if let Some((c, rss)) = usage(pid) {
            cpu = c;
            *peak = peak.max(rss);
        }
        // Versions not yet settled (received or pending) and comments not yet posted.
        let backlog = store.backlog().await?;
        let idle = backlog.received + backlog.pending + backlog.queued == 0;
        let every = if idle { Duration::from_millis(100) } else { Duration::from_secs(1) };
        if counted.is_none_or(|at| at.elapsed() >= every) {
            counted = Some(Instant::now());
            let (tickets, posted): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(DISTINCT ticket_key) FROM inbox), (SELECT COUNT(*) FROM outbox WHERE status = 'posted')",
            )
            .fetch_one(store.pool())
            .await?;
            if (tickets, posted) != progress.0 {
                progress = ((tickets, posted), Instant::now());
            }
            if tickets >= expected && idle {
                calm += 1;
                if calm == 2 {
                    return Ok((posted, cpu));
                }
            } else {
                calm = 0;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When deskbridge last did something the backlog asked of it, from the store's own
/// timestamps: the last comment recorded posted, decision made or version stored.
async fn last_activity(store: &Store) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    let stamps: (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT (SELECT MAX(posted_at) FROM outbox), (SELECT MAX(decided_at) FROM decisions), (SELECT MAX(received_at) FROM inbox)",
    )
    .fetch_one(store.pool())
    .await?;
    Ok([stamps.0, stamps.1, stamps.2]
        .into_iter()
        .flatten()
        .filter_map(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .max())
}

/// Changes the ask of requested item `sys_id` (the role and duration requested) through the
/// Table API, as a user editing its variables would, and sends the signed webhook naming it.
/// Answers the item's journal length before the change, and when the webhook left.
async fn change_and_notify(
    sims: &Simulators,
    options: Option<&HashMap<String, String>>,
    url: &str,
    sys_id: &str,
    n: usize,
) -> anyhow::Result<(usize, Sent, tokio::task::JoinHandle<bool>)> {
    let before = sims.journal_counts(&[sys_id]).await?[0];
    for (name, value) in [("access_duration", "97 days".to_owned()), ("role", format!("load-role-{n}"))] {
        if let Some(option) = options.and_then(|o| o.get(name)) {
            sims.patch("sc_item_option", option, json!({ "value": value })).await?;
        }
    }
    // Editing a variable does not touch the item itself; the form's save does (its version).
    let description = format!("Edited by the load harness (change {n}).");
    sims.patch("sc_req_item", sys_id, json!({ "description": description })).await?;
    let body = json!({"sys_id": sys_id}).to_string();
    let signature = deskbridge_connector::webhook::sign(SECRET, body.as_bytes());
    let at = (Instant::now(), chrono::Utc::now());
    let (client, url) = (reqwest::Client::new(), url.to_owned());
    let answer = tokio::spawn(async move {
        client
            .post(&url)
            .header("X-Deskbridge-Signature", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .is_ok_and(|a| a.status().is_success())
    });
    Ok((before, at, answer))
}

/// When a webhook left: for its latency, and (wall clock) to set beside the store's timestamps.
type Sent = (Instant, chrono::DateTime<chrono::Utc>);

/// Where the time from webhook to comment went, ticket by ticket, from the store's own
/// timestamps: until the version the webhook brought was stored (deskbridge read the ticket
/// back from the ITSM), until it was decided, and until the harness saw the comment in the
/// journal (the post; the store records it posted only once its whole batch is done, so that
/// time is not used). Each `(ticket, webhook sent, comment seen)`.
async fn stages(store: &Store, seen: &[(String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)]) -> anyhow::Result<()> {
    let mut spans: [Vec<Duration>; 3] = Default::default();
    for (ticket, sent, noticed) in seen {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT i.received_at, d.decided_at FROM outbox o JOIN decisions d ON d.decision_id = o.decision_id \
             JOIN inbox i ON i.id = d.inbox_id WHERE o.ticket_key = $1 AND o.posted_at IS NOT NULL ORDER BY o.id DESC LIMIT 1",
        )
        .bind(ticket)
        .fetch_optional(store.pool())
        .await?;
        let Some(row) = row else { continue };
        let mut at = *sent;
        for (n, stamp) in [row.0, row.1].iter().enumerate() {
            let next = chrono::DateTime::parse_from_rfc3339(stamp)?.with_timezone(&chrono::Utc).max(at);
            spans[n].push((next - at).to_std().unwrap_or_default());
            at = next;
        }
        spans[2].push((*noticed - at).to_std().unwrap_or_default());
    }
    let names = ["webhook → stored", "stored → decided", "decided → comment seen"];
    for (name, mut span) in names.into_iter().zip(spans) {
        span.sort();
        if span.is_empty() {
            continue;
        }
        println!(
            "    {name:<23} p50 {:.1} ms, p99 {:.1} ms",
            common::percentile(&span, 0.5).as_secs_f64() * 1e3,
            common::percentile(&span, 0.99).as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// What the backlog phase measured.
struct Backlog {
    rate: f64,
    peak_rss: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let postgres = args.iter().any(|a| a == "postgres");
    let jira = args.iter().any(|a| a == "jira");
    if args.iter().any(|a| a == "--growth") {
        let small = run(10_000, 0, 0, postgres, jira).await?;
        let large = run(100_000, 0, 0, postgres, jira).await?;
        println!(
            "growth: 10,000 tickets {:.0}/s, {:.1} MiB; 100,000 tickets {:.0}/s, {:.1} MiB; the rate at 100,000 is {:.0} % of the rate at 10,000",
            small.rate,
            small.peak_rss,
            large.rate,
            large.peak_rss,
            100.0 * large.rate / small.rate
        );
        return Ok(());
    }
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, default: u64| numbers.get(i).copied().unwrap_or(default);
    run(arg(0, 5_000) as usize, arg(1, 200), arg(2, 10), postgres, jira).await?;
    Ok(())
}

/// Copies serve's log (`KEEP_LOG=path`) and its SQLite store with its WAL (`KEEP_STORE=path`)
/// out of the run's directory, once serve has stopped.
fn keep(dir: &Path) -> anyhow::Result<()> {
    if let Ok(keep) = std::env::var("KEEP_LOG") {
        std::fs::copy(dir.join("serve.log"), keep)?;
    }
    if let Ok(keep) = std::env::var("KEEP_STORE") {
        for (side, to) in [("serve.db", keep.clone()), ("serve.db-wal", format!("{keep}-wal"))] {
            if dir.join(side).exists() {
                std::fs::copy(dir.join(side), to)?;
            }
        }
    }
    Ok(())
}

/// One run of `deskbridge serve` over `count` waiting tickets, then `seconds` of webhooks at
/// `rate` per second.
async fn run(count: usize, rate: u64, seconds: u64, postgres: bool, jira: bool) -> anyhow::Result<Backlog> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `DESKBRIDGE_BIN` names another build (an earlier commit's, say) to compare side by side.
    let binary = std::env::var_os("DESKBRIDGE_BIN").map_or_else(|| root.join("target/release/deskbridge"), PathBuf::from);
    anyhow::ensure!(
        binary.exists(),
        "build the binary first: cargo build --release ({} is missing)",
        binary.display()
    );

    let dir = tempfile::tempdir()?;
    let seeding = Instant::now();
    let sims = Simulators::start(&dir.path().join("simulators"), count).await?;
    let seeded = seeding.elapsed();
    let db = dir.path().join("serve.db");
    let url = if postgres {
        Some(deskbridge::store::testing::fresh_postgres_schema().await)
    } else {
        None
    };
    let port = free_port()?;
    let config_path = dir.path().join("serve.toml");
    let store_lines = match &url {
        Some(url) => format!("url = \"{url}\""),
        None => format!("path = \"{}\"", db.display()),
    };
    std::fs::write(&config_path, config(&sims, jira, &store_lines, port))?;

    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let simulator_cpu = sims.cpu();
    let machine = common::machine_ticks();
    let mut child = tokio::process::Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", std::env::var("SERVE_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log"))?)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    // The store exists once serve has migrated it.
    let store = loop {
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "deskbridge serve exited; see {}",
            dir.path().join("serve.log").display()
        );
        if let Some(url) = &url {
            // serve migrates the schema first; the harness waits for its tables.
            if let Ok(store) = Store::connect_postgres(url).await {
                break store.with_holder("harness-reader");
            }
        } else if db.exists() {
            if let Ok(store) = Store::open(&db).await {
                break store.with_holder("harness-reader");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut peak = 0.0;
    // Done once every ticket the connector reads is commented or settled, the simulators'
    // seeded tickets with the generated ones.
    let expected = sims.total(jira).await?;
    let (posted, cpu) = settled(&store, &mut child, pid, &mut peak, expected).await?;
    // Until the last thing deskbridge did, by its own timestamps (at most until the harness saw
    // it done).
    let elapsed = match last_activity(&store).await? {
        Some(last) => (last - started_at).to_std().unwrap_or_default().min(started.elapsed()),
        None => started.elapsed(),
    };
    let simulator_cpu = sims.cpu() - simulator_cpu;
    let busy = common::busy_between(machine, common::machine_ticks());
    let backend = if postgres { "PostgreSQL" } else { "SQLite" };
    let itsm = if jira { "Jira Cloud" } else { "ServiceNow" };
    println!(
        "deskbridge serve and the simulators each in their own process, {expected} {itsm} tickets waiting ({count} generated, the rest seeded; {backend}; seeding took {:.1} s):",
        seeded.as_secs_f64()
    );
    println!(
        "  backlog read, decided and commented: {:.2} s, {:.0} tickets/s (from process start), {posted} comments",
        elapsed.as_secs_f64(),
        expected as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  CPU time per ticket:           deskbridge {:.0} µs ({cpu:.2} s user + system); the simulators {:.0} µs ({simulator_cpu:.2} s)",
        cpu / expected as f64 * 1e6,
        simulator_cpu / expected as f64 * 1e6
    );
    if let Some(busy) = busy {
        // Beside the two CPU figures: whether the machine itself was the limit.
        println!(
            "  the machine meanwhile:          {:.0} % busy over its {} cores (every process: deskbridge, the simulators, the store, this harness)",
            100.0 * busy,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    println!("  peak RSS:                      deskbridge {peak:.1} MiB");
    if !postgres {
        println!(
            "  store file:                    {:.1} MiB",
            std::fs::metadata(&db)?.len() as f64 / 1048576.0
        );
    }
    // What the policy decided, and how big a stored ticket is: a faithful simulator gives the
    // decision point complete requests to evaluate, not mostly incomplete ones.
    let outcomes: Vec<(String, i64)> = sqlx::query_as("SELECT outcome, COUNT(*) FROM decisions GROUP BY outcome ORDER BY outcome")
        .fetch_all(store.pool())
        .await?;
    let raw: f64 = sqlx::query_scalar("SELECT CAST(COALESCE(AVG(LENGTH(raw)), 0) AS DOUBLE PRECISION) FROM inbox")
        .fetch_one(store.pool())
        .await?;
    println!(
        "  decisions:                     {}; a stored ticket {:.1} KiB on average",
        outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", "),
        raw / 1024.0
    );
    let backlog = Backlog {
        rate: expected as f64 / elapsed.as_secs_f64(),
        peak_rss: peak,
    };
    if seconds == 0 || jira {
        if jira && seconds > 0 {
            println!("  (the steady webhook phase runs against ServiceNow only)");
        }
        child.kill().await?;
        keep(dir.path())?;
        return Ok(backlog);
    }

    // Which of the generated kinds of request get a new decision when their ask changes (an
    // incomplete one, say, still misses the same fields and gets none): one of each, first.
    let url = format!("http://127.0.0.1:{port}/webhooks/load");
    const KINDS: usize = 6;
    let tickets = sims.generated(KINDS * (rate * seconds) as usize + KINDS).await?;
    let options = sims.variables(&tickets).await?;
    let mut probes = Vec::new();
    for (n, sys_id) in tickets.iter().take(KINDS).enumerate() {
        let before = change_and_notify(&sims, options.get(sys_id), &url, sys_id, n).await?.0;
        probes.push((n, sys_id.clone(), before));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids: Vec<&str> = probes.iter().map(|(_, id, _)| id.as_str()).collect();
    let kinds: Vec<usize> = probes
        .iter()
        .zip(sims.journal_counts(&ids).await?)
        .filter(|((_, _, before), now)| now > before)
        .map(|((n, _, _), _)| *n)
        .collect();
    let candidates: Vec<String> = tickets
        .iter()
        .enumerate()
        .skip(KINDS)
        .filter(|(n, _)| kinds.contains(&(n % KINDS)))
        .map(|(_, id)| id.clone())
        .collect();
    // Steady webhooks: each changes one ticket's ask, then names it. A sender keeps the rate;
    // this loop watches the tickets for their comments.
    let total = ((rate * seconds) as usize).min(candidates.len());
    let waiting: Arc<Mutex<Vec<(String, usize, Sent)>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let phase = tokio::time::Instant::now();
    let cpu_before = (usage(pid).map_or(0.0, |(cpu, _)| cpu), sims.cpu());
    let sims = Arc::new(sims);
    let options = Arc::new(options);
    let sender = {
        let (sims, options, waiting, refused, url) = (sims.clone(), options.clone(), waiting.clone(), refused.clone(), url.clone());
        let tickets: Vec<String> = candidates.into_iter().take(total).collect();
        tokio::spawn(async move {
            for (i, sys_id) in tickets.into_iter().enumerate() {
                tokio::time::sleep_until(phase + every * i as u32).await;
                // Each change is its own task: a slow answer from the simulator does not
                // hold up the next webhook.
                let (sims, options, waiting, refused, url) = (sims.clone(), options.clone(), waiting.clone(), refused.clone(), url.clone());
                tokio::spawn(async move {
                    match change_and_notify(&sims, options.get(&sys_id), &url, &sys_id, KINDS + i).await {
                        Ok((before, at, answer)) => {
                            lock(&waiting).push((sys_id, before, at));
                            if !answer.await.unwrap_or(false) {
                                refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        Err(e) => {
                            eprintln!("changing {sys_id} failed: {e:#}");
                            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        })
    };
    let mut latencies = Vec::with_capacity(total);
    let mut seen = Vec::with_capacity(total);
    let mut unchanged = 0;
    let deadline = Duration::from_secs(seconds + 30);
    let mut rounds = 0u64;
    let mut looks = 0u64;
    while (!sender.is_finished()
        || !lock(&waiting).is_empty()
        || (latencies.len() + unchanged + refused.load(std::sync::atomic::Ordering::SeqCst)) < total)
        && phase.elapsed() < deadline
    {
        let pending: Vec<(String, usize, Sent)> = lock(&waiting).clone();
        let mut done = Vec::new();
        // One look at the simulator's journal for all waiting tickets (a request per 200).
        let ids: Vec<&str> = pending.iter().map(|(id, _, _)| id.as_str()).collect();
        if !ids.is_empty() {
            looks += 1;
            for ((sys_id, before, at), count) in pending.iter().zip(sims.journal_counts(&ids).await?) {
                if count > *before {
                    latencies.push(at.0.elapsed());
                    seen.push((sys_id.clone(), at.1, chrono::Utc::now()));
                    done.push(sys_id.clone());
                }
            }
        }
        // Some seeded requests do not change their ask with the duration (an incomplete one
        // still misses the same fields): their new version is settled `unchanged`, with no
        // comment to wait for.
        rounds += 1;
        if rounds.is_multiple_of(25) && !pending.is_empty() {
            let keys: Vec<&str> = pending.iter().map(|(id, _, _)| id.as_str()).collect();
            let sql = format!(
                "SELECT ticket_key FROM inbox WHERE status = 'unchanged' AND id IN (SELECT MAX(id) FROM inbox WHERE ticket_key IN ({}) GROUP BY ticket_key)",
                (1..=keys.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for key in &keys {
                query = query.bind(*key);
            }
            let settled = query.fetch_all(store.pool()).await?;
            unchanged += settled.len();
            done.extend(settled);
        }
        lock(&waiting).retain(|(id, _, _)| !done.contains(id));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let waiting = lock(&waiting).len();
    let sending = phase.elapsed();
    let cpu_used = (usage(pid).map_or(0.0, |(cpu, _)| cpu) - cpu_before.0, sims.cpu() - cpu_before.1);
    if let Some((_, rss)) = usage(pid) {
        peak = peak.max(rss);
    }
    latencies.sort();
    println!(
        "steady webhooks to the {} of {KINDS} kinds whose ask changes: {total} sent at {rate}/s ({:.1} s), {} refused, {} commented, {unchanged} settled with the same ask, {waiting} still waiting ({looks} looks at the journal):",
        kinds.len(),
        sending.as_secs_f64(),
        refused.load(std::sync::atomic::Ordering::SeqCst),
        latencies.len(),
    );
    if !latencies.is_empty() {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  webhook → posted comment: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(common::percentile(&latencies, 0.5)),
            ms(common::percentile(&latencies, 0.9)),
            ms(common::percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap_or(&Duration::ZERO))
        );
    }
    stages(&store, &seen).await?;
    println!(
        "  CPU in the phase: deskbridge {:.2} s ({:.0} % of a core), the simulators {:.2} s ({:.0} %)",
        cpu_used.0,
        100.0 * cpu_used.0 / sending.as_secs_f64(),
        cpu_used.1,
        100.0 * cpu_used.1 / sending.as_secs_f64()
    );
    println!("  deskbridge peak RSS: {peak:.1} MiB");
    let counts = store.counts().await?;
    println!(
        "  store: {} versions, {} decisions, {} comments posted, {} queued, {} pending",
        counts.inbox, counts.decisions, counts.posted, counts.queued, counts.pending
    );
    if waiting > 0 {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        println!("  serve.log ends:\n    {}", tail.join("\n    "));
    }
    child.kill().await?;
    keep(dir.path())?;
    drop(sims);
    Ok(backlog)
}
