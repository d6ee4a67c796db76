//! Load harness: prints figures, asserts nothing. Targets live in shared/DESIGN.md.
//!
//!     cargo run --release --example throughput -- [TICKETS] [sqlite|postgres] [backfill]
//!
//! 1. normalize + decide per ticket, in-process (the shipped mapping and Rego policy);
//! 2. the pipeline against a ServiceNow simulator on loopback seeded with TICKETS synthetic
//!    access requests: the read path (poll → inbox → normalize → decide) and the write-back,
//!    on a SQLite file or a fresh schema of `DESKBRIDGE_TEST_POSTGRES`;
//! 3. with `backfill`, a backfill over the same tickets instead, printing how much memory
//!    deskbridge added on top of the simulator's own data (run it at two sizes: flat memory
//!    means the same figure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use deskbridge::commands::demo::{servicenow_config, shipped};
use deskbridge::pipeline::{Instance, Pipeline, Report, Settings};
use deskbridge::render::CommentRenderer;
use deskbridge::schema::{AccessRequest, Normalized};
use deskbridge::store::Store;
use deskbridge_connector::Ticket;
use deskbridge_servicenow::simulator::{SimConfig, Simulator};
use deskbridge_servicenow::ServiceNow;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn peak_rss_mib() -> f64 {
    rss_mib("self", "VmHWM:")
}

fn in_process(iterations: usize) -> anyhow::Result<()> {
    let (mapping, policy) = shipped()?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/servicenow");
    let mut tickets: Vec<Ticket> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        tickets.push(serde_json::from_str(&std::fs::read_to_string(entry?.path())?)?);
    }
    let (mut both, mut decide_only) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
    for i in 0..iterations {
        let ticket = &tickets[i % tickets.len()];
        let started = Instant::now();
        if let Normalized::AccessRequest { request } = mapping.normalize(ticket) {
            let decided_at = Instant::now();
            policy.decide_now(&request)?;
            decide_only.push(decided_at.elapsed());
        }
        both.push(started.elapsed());
    }
    both.sort();
    decide_only.sort();
    println!(
        "normalize + decide: median {:.1} µs, p99 {:.1} µs per ticket ({} tickets)",
        percentile(&both, 0.5).as_secs_f64() * 1e6,
        percentile(&both, 0.99).as_secs_f64() * 1e6,
        iterations
    );
    print_times("embedded Rego decision alone (interpreter)", &decide_only);
    let requests: Vec<AccessRequest> = tickets
        .iter()
        .filter_map(|t| match mapping.normalize(t) {
            Normalized::AccessRequest { request } => Some(*request),
            _ => None,
        })
        .collect();
    // Beside it, the same policy evaluated by regorus on this thread: what the hop to the
    // evaluation threads (which give decisions their wall-clock limit) costs.
    let mut engine = regorus::Engine::new();
    engine
        .add_policy(
            "access.rego".into(),
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies/access.rego"))?,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let inline = time_each(&requests, iterations, |request| {
        let input = regorus::Value::from(serde_json::to_value(request)?);
        let started = Instant::now();
        engine.set_input(input);
        let _ = engine.eval_rule("data.deskbridge.access.decision".into());
        Ok(started.elapsed())
    })?;
    print_times("  the same evaluation on the calling thread (no time limit)", &inline);
    // Beside it, the register VM decisions no longer use (it answers some policies wrongly).
    let vm = shipped()?.1.with_vm();
    let vm_only = time_each(&requests, iterations, |request| {
        let started = Instant::now();
        let _ = vm.decide_now(request);
        Ok(started.elapsed())
    })?;
    print_times("  for comparison, regorus's register VM", &vm_only);
    Ok(())
}

/// `measure` run `iterations` times over `requests` in turn; the durations it returns, sorted.
fn time_each(
    requests: &[AccessRequest],
    iterations: usize,
    mut measure: impl FnMut(&AccessRequest) -> anyhow::Result<Duration>,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        times.push(measure(&requests[i % requests.len()])?);
    }
    times.sort();
    Ok(times)
}

fn print_times(label: &str, sorted: &[Duration]) {
    println!(
        "{label}: median {:.1} µs, p99 {:.1} µs",
        percentile(sorted, 0.5).as_secs_f64() * 1e6,
        percentile(sorted, 0.99).as_secs_f64() * 1e6
    );
}

fn rss_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `deskbridge sync --backfill` (the release binary) as its own process against the
/// simulator in this one, and reads that process's peak RSS, so the simulator's growing data
/// (journal, request log) is not counted.
async fn backfill_process(sim: &Simulator, count: usize, backend: &str, dir: &tempfile::TempDir) -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = root.join("target/release/deskbridge");
    anyhow::ensure!(binary.exists(), "build the binary first: cargo build --release");
    let store = match backend {
        "postgres" => format!("url = \"{}\"", deskbridge::store::testing::fresh_postgres_schema().await),
        _ => format!("path = \"{}\"", dir.path().join("backfill.db").display()),
    };
    let config = dir.path().join("backfill.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\n{store}\n\n[decision]\nkind = \"rego\"\npolicies = [\"{root}/examples/policies/access.rego\"]\n\n[[connectors]]\nid = \"load\"\nkind = \"servicenow\"\nmapping = \"{root}/mappings/servicenow/sc_req_item.toml\"\nbase_url = \"{url}\"\npage_size = 500\nlag_secs = 0\nauth = {{ type = \"basic\", username = \"{user}\", password = \"{password}\" }}\n",
            root = root.display(),
            url = sim.base_url(),
            user = deskbridge_servicenow::simulator::INTEGRATION_USER,
            password = deskbridge_servicenow::simulator::INTEGRATION_PASSWORD,
        ),
    )?;
    let since = (chrono::Utc::now() - chrono::TimeDelta::days(1)).format("%Y-%m-%d").to_string();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .args(["sync", "--backfill", "--since", &since, "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
    let mut peak: f64 = 0.0;
    loop {
        peak = peak.max(rss_mib(&pid, "VmHWM:"));
        if child.try_wait()?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = child.wait_with_output().await?;
    anyhow::ensure!(output.status.success(), "backfill failed");
    println!(
        "backfill of {count} tickets as its own process ({backend}): {:.2} s, {:.0} tickets/s, deskbridge peak RSS {peak:.1} MiB",
        started.elapsed().as_secs_f64(),
        count as f64 / started.elapsed().as_secs_f64()
    );
    print!("  {}", String::from_utf8_lossy(&output.stdout));
    Ok(())
}

async fn end_to_end(count: usize, backend: &str, backfill: bool) -> anyhow::Result<()> {
    let sim = Simulator::start(SimConfig {
        seed: false,
        ..SimConfig::default()
    })
    .await?;
    sim.generate(count);
    let dir = tempfile::tempdir()?;
    let store = match backend {
        "postgres" => Store::connect_postgres(&deskbridge::store::testing::fresh_postgres_schema().await).await?,
        _ => Store::open(&dir.path().join("load.db")).await?,
    };
    let mut config = servicenow_config(sim.base_url())?;
    config.page_size = 500;
    let (mapping, policy) = shipped()?;
    let pipeline = Pipeline::new(
        store.clone(),
        vec![Instance {
            connector: Arc::new(ServiceNow::new("load", config)?),
            mapping: Arc::new(mapping),
        }],
        Arc::new(policy),
        CommentRenderer::new(None)?,
        Settings::default(),
    )
    // Decisions on facts, as in production: the example catalog and directory export.
    .with_enricher(Some(Arc::new(deskbridge::pipeline::enrich::Enricher {
        catalog: Arc::new(deskbridge::pipeline::enrich::CatalogHandle::fixed(deskbridge::catalog::parse(
            deskbridge::commands::demo::CATALOG,
            "examples/catalog.toml",
        )?)),
        directory: Some(Arc::new(deskbridge::directory::file::FileDirectory::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/directory.json"),
        )?)),
    })));
    if backfill {
        return backfill_process(&sim, count, backend, &dir).await;
    }
    let mut report = Report::default();
    let started = Instant::now();
    pipeline.poll(&mut report).await?;
    let polled = started.elapsed();
    pipeline.decide_all(&mut report).await?;
    let read_path = started.elapsed();
    pipeline.post_all(&mut report).await?;
    let total = started.elapsed();
    let per_sec = |d: Duration| count as f64 / d.as_secs_f64();
    println!("pipeline over {count} tickets (simulator on loopback, {backend}, embedded Rego):");
    println!(
        "  poll + store:                 {:>8.0} tickets/s ({:.2} s)",
        per_sec(polled),
        polled.as_secs_f64()
    );
    println!(
        "  read path (poll → decide):    {:>8.0} tickets/s ({:.2} s)",
        per_sec(read_path),
        read_path.as_secs_f64()
    );
    println!(
        "  end to end with write-back:   {:>8.0} tickets/s ({:.2} s)",
        per_sec(total),
        total.as_secs_f64()
    );
    println!(
        "  decided {}, posted {}, pending {}",
        report.decided,
        report.posted,
        store.counts().await?.pending
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let backend = args.get(2).map_or("sqlite", String::as_str);
    let backfill = args.get(3).is_some_and(|a| a == "backfill");
    if !backfill {
        in_process(20_000)?;
    }
    end_to_end(count, backend, backfill).await?;
    println!("peak RSS: {:.1} MiB", peak_rss_mib());
    Ok(())
}
