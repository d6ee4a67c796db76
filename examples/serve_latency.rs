//! Load harness with deskbridge as its own process: `deskbridge serve` (the release binary)
//! against a ServiceNow simulator in this process. Prints figures, asserts nothing.
//!
//!     cargo build --release && cargo run --release --example serve_latency -- [TICKETS] [RATE] [SECONDS] [sqlite|postgres]
//!     cargo build --release && cargo run --release --example serve_latency -- --growth [sqlite|postgres]
//!
//! 1. Backlog: TICKETS (default 5,000) access requests wait when `serve` starts. It prints the
//!    time until every one is decided and commented, deskbridge's CPU time per ticket (from
//!    /proc) beside the simulator's (this process's, in the same time), deskbridge's peak RSS,
//!    and the SQLite file's size.
//! 2. Steady webhooks: RATE (default 200) tickets per second, for SECONDS (default 10), change
//!    their ask (the role and duration requested) in the simulator, and a signed webhook names each.
//!    It prints the time from each webhook to its comment on the ticket: p50, p90, p99 and the
//!    longest. SECONDS 0 skips this phase.
//!
//! The store is a SQLite file, or with `postgres` a fresh schema of `DESKBRIDGE_TEST_POSTGRES`.
//! `--growth` runs the backlog phase at 10,000 and then 100,000 tickets and prints both rates,
//! their ratio and both peak RSS figures, so growth is visible in one run.
//!
//! `DESKBRIDGE_BIN=path` runs that build of deskbridge instead of `target/release/deskbridge`,
//! so two builds can be compared side by side in one session.

#[allow(dead_code)]
mod common;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deskbridge::store::Store;
use deskbridge_servicenow::simulator::{SimConfig, Simulator, INTEGRATION_PASSWORD, INTEGRATION_USER};

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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config(sim: &Simulator, store: &str, port: u16) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
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
poll_interval_secs = 1
post_retry_base_secs = 1

[server]
listen = "127.0.0.1:{port}"

[[connectors]]
id = "load"
kind = "servicenow"
mapping = "{root}/mappings/servicenow/sc_req_item.toml"
base_url = "{url}"
page_size = 500
lag_secs = 0
auth = {{ type = "basic", username = "{user}", password = "{password}" }}
webhook = {{ secret = "{SECRET}" }}
"#,
        root = root.display(),
        url = sim.base_url(),
        user = INTEGRATION_USER,
        password = INTEGRATION_PASSWORD,
    )
}

/// Waits until `expected` comments are posted, every stored version is settled and every
/// queued comment posted, twice in a row (between two pages of the backlog, everything stored
/// so far can be done while most of it is still unread).
async fn settled(store: &Store, child: &mut tokio::process::Child, pid: u32, peak: &mut f64, expected: i64) -> anyhow::Result<(i64, f64)> {
    let mut calm = 0;
    let mut cpu = 0.0;
    let mut progress = (0, Instant::now());
    loop {
        anyhow::ensure!(child.try_wait()?.is_none(), "deskbridge serve exited");
        anyhow::ensure!(
            progress.1.elapsed() < Duration::from_secs(60),
            "no comment posted for 60 s, at {} of {expected}",
            progress.0
        );
        if let Some((c, rss)) = usage(pid) {
            cpu = c;
            *peak = peak.max(rss);
        }
        let counts = store.counts().await?;
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE status IN ('received', 'pending')")
            .fetch_one(store.pool())
            .await?;
        if counts.posted != progress.0 {
            progress = (counts.posted, Instant::now());
        }
        if counts.posted >= expected && open == 0 && counts.queued == 0 {
            calm += 1;
            if calm == 2 {
                return Ok((counts.posted, cpu));
            }
        } else {
            calm = 0;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Changes the ask of ticket `sys_id` (the role and duration requested) and sends the signed
/// webhook naming it. Answers the ticket's journal length before the change, and when.
async fn change_and_notify(
    sim: &Simulator,
    client: &reqwest::Client,
    url: &str,
    sys_id: &str,
    n: usize,
) -> (usize, Instant, tokio::task::JoinHandle<bool>) {
    let before = sim.journal(sys_id).len();
    sim.set_variable(sys_id, "access_duration", "97 days");
    sim.set_variable(sys_id, "role", &format!("load-role-{n}"));
    sim.update("sc_req_item", sys_id, &[]);
    let body = serde_json::json!({"sys_id": sys_id}).to_string();
    let signature = deskbridge_connector::webhook::sign(SECRET, body.as_bytes());
    let at = Instant::now();
    let (client, url) = (client.clone(), url.to_owned());
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
    (before, at, answer)
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
    if args.iter().any(|a| a == "--growth") {
        let small = run(10_000, 0, 0, postgres).await?;
        let large = run(100_000, 0, 0, postgres).await?;
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
    run(arg(0, 5_000) as usize, arg(1, 200), arg(2, 10), postgres).await?;
    Ok(())
}

/// One run of `deskbridge serve` over `count` waiting tickets, then `seconds` of webhooks at
/// `rate` per second.
async fn run(count: usize, rate: u64, seconds: u64, postgres: bool) -> anyhow::Result<Backlog> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // `DESKBRIDGE_BIN` names another build (an earlier commit's, say) to compare side by side.
    let binary = std::env::var_os("DESKBRIDGE_BIN").map_or_else(|| root.join("target/release/deskbridge"), std::path::PathBuf::from);
    anyhow::ensure!(
        binary.exists(),
        "build the binary first: cargo build --release ({} is missing)",
        binary.display()
    );

    let sim = Arc::new(
        Simulator::start(SimConfig {
            seed: false,
            ..SimConfig::default()
        })
        .await?,
    );
    sim.generate(count);
    sim.set_recording(false);
    let tickets: Vec<(String, String)> = sim.numbers("sc_req_item");
    let dir = tempfile::tempdir()?;
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
    std::fs::write(&config_path, config(&sim, &store_lines, port))?;

    let started = Instant::now();
    let harness_cpu = usage(std::process::id()).map_or(0.0, |(cpu, _)| cpu);
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
    // Every generated ticket is an access request: one comment each.
    let (posted, cpu) = settled(&store, &mut child, pid, &mut peak, count as i64).await?;
    let elapsed = started.elapsed();
    let backend = if postgres { "PostgreSQL" } else { "SQLite" };
    println!("deskbridge serve as its own process, {count} tickets waiting ({backend}, simulator in the harness):");
    println!(
        "  backlog decided and commented: {:.2} s, {:.0} tickets/s (from process start), {posted} comments",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    let simulator_cpu = usage(std::process::id()).map_or(0.0, |(cpu, _)| cpu) - harness_cpu;
    println!(
        "  CPU time per ticket:           {:.0} µs ({cpu:.2} s user + system); the simulator (this process) {:.0} µs ({simulator_cpu:.2} s)",
        cpu / count as f64 * 1e6,
        simulator_cpu / count as f64 * 1e6
    );
    println!("  peak RSS:                      {peak:.1} MiB");
    if !postgres {
        println!(
            "  store file:                    {:.1} MiB",
            std::fs::metadata(&db)?.len() as f64 / 1048576.0
        );
    }
    let backlog = Backlog {
        rate: count as f64 / elapsed.as_secs_f64(),
        peak_rss: peak,
    };
    if seconds == 0 {
        child.kill().await?;
        return Ok(backlog);
    }

    // Which of the generated kinds of request get a new decision when their ask changes (an
    // incomplete one, say, still misses the same fields and gets none): one of each, first.
    let url = format!("http://127.0.0.1:{port}/webhooks/load");
    let client = reqwest::Client::new();
    const KINDS: usize = 6;
    let mut probes = Vec::new();
    for (n, (_, sys_id)) in tickets.iter().take(KINDS).enumerate() {
        probes.push((n, sys_id.clone(), change_and_notify(&sim, &client, &url, sys_id, n).await.0));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kinds: Vec<usize> = probes
        .iter()
        .filter(|(_, sys_id, before)| sim.journal(sys_id).len() > *before)
        .map(|(n, _, _)| *n)
        .collect();
    let candidates: Vec<String> = tickets
        .iter()
        .enumerate()
        .skip(KINDS)
        .filter(|(n, _)| kinds.contains(&(n % KINDS)))
        .map(|(_, (_, id))| id.clone())
        .collect();
    // Steady webhooks: each changes one ticket's ask, then names it. A sender keeps the rate;
    // this loop watches the tickets for their comments.
    let total = ((rate * seconds) as usize).min(candidates.len());
    let waiting: Arc<Mutex<Vec<(String, usize, Instant)>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let phase = tokio::time::Instant::now();
    let sender = {
        let (sim, waiting, refused, url) = (sim.clone(), waiting.clone(), refused.clone(), url.clone());
        let tickets: Vec<String> = candidates.into_iter().take(total).collect();
        tokio::spawn(async move {
            for (i, sys_id) in tickets.into_iter().enumerate() {
                tokio::time::sleep_until(phase + every * i as u32).await;
                let (before, at, answer) = change_and_notify(&sim, &client, &url, &sys_id, KINDS + i).await;
                lock(&waiting).push((sys_id, before, at));
                let refused = refused.clone();
                tokio::spawn(async move {
                    if !answer.await.unwrap_or(false) {
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        })
    };
    let mut latencies = Vec::with_capacity(total);
    let mut unchanged = 0;
    let deadline = Duration::from_secs(seconds + 30);
    let mut rounds = 0u64;
    while (!sender.is_finished() || !lock(&waiting).is_empty()) && phase.elapsed() < deadline {
        let pending: Vec<(String, usize, Instant)> = lock(&waiting).clone();
        let mut done = Vec::new();
        // One look at the simulator for every waiting ticket: a look per ticket took the
        // simulator's lock hundreds of times per round once comments fell behind, slowing the
        // very requests being measured.
        let ids: Vec<&str> = pending.iter().map(|(id, _, _)| id.as_str()).collect();
        for ((sys_id, before, at), count) in pending.iter().zip(sim.journal_counts(&ids)) {
            if count > *before {
                latencies.push(at.elapsed());
                done.push(sys_id.clone());
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
    let next = total;
    let waiting = lock(&waiting).len();
    let sending = phase.elapsed();
    if let Some((_, rss)) = usage(pid) {
        peak = peak.max(rss);
    }
    latencies.sort();
    println!(
        "steady webhooks to the {} of {KINDS} kinds whose ask changes: {next} sent at {rate}/s ({:.1} s), {} refused, {} commented, {unchanged} settled with the same ask, {waiting} still waiting:",
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
    if let Ok(keep) = std::env::var("KEEP_LOG") {
        std::fs::copy(dir.path().join("serve.log"), keep)?;
    }
    Ok(backlog)
}
