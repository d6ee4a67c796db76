//! Load harness: prints figures, asserts nothing. Targets live in shared/DESIGN.md.
//!
//!     cargo run --release --example throughput -- [TICKETS] [sqlite|postgres] [backfill]
//!         [--latency-ms N] [--concurrency N] [--pipeline-only] [--replicas N]
//!
//! 1. normalize + enrich + decide per ticket, in-process (the shipped mapping, the example
//!    catalog and directory, the shipped Rego policy), with the policy evaluated on the calling
//!    thread by the interpreter and by regorus's register VM beside it;
//! 2. the pipeline against a ServiceNow simulator on loopback seeded with TICKETS synthetic
//!    access requests: the read path (poll → inbox → normalize → decide) and the write-back,
//!    on a SQLite file or a fresh schema of `DESKBRIDGE_TEST_POSTGRES`; beside it, the same
//!    simulator's own serving rate for the same requests (the connector alone paging through
//!    it, and posting one comment per ticket at the same concurrency), the SQL statements per
//!    ticket, and, with `--latency-ms`, the ceiling that latency and `--concurrency` (the
//!    connector's `max_concurrency`, default 4) allow;
//! 3. with `backfill`, a backfill over the same tickets instead, printing how much memory
//!    deskbridge added on top of the simulator's own data (run it at two sizes: flat memory
//!    means the same figure);
//! 4. with `--replicas N` (PostgreSQL), the end-to-end rate of one replica beside N replicas
//!    sharing one database, each with its own store connection, claims and connector
//!    concurrency, side by side on fresh simulators and schemas, each with how busy the whole
//!    machine was meanwhile. Replicas, the simulator and PostgreSQL share this machine's cores:
//!    once one replica keeps them busy a second has nothing to add, so on a small machine run it
//!    with `--latency-ms` as well, where the ITSM's latency is what replicas overlap.

#[allow(dead_code)]
mod common;

/// The allocator the `deskbridge` binary ships with (src/main.rs), so the pipeline measured here
/// allocates as it does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Comments posted per batch by the raw comparison, as the pipeline claims them
/// (`PipelineSettings::batch_size`).
const POST_BATCH: usize = 250;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deskbridge::commands::demo::{servicenow_config, shipped};
use deskbridge::pipeline::{Instance, Pipeline, Report, Settings};
use deskbridge::render::CommentRenderer;
use deskbridge::schema::{AccessRequest, Normalized};
use deskbridge::store::Store;
use deskbridge_connector::{Connector as _, Ticket};
use deskbridge_servicenow::simulator::{Fault, SimConfig, Simulator};
use deskbridge_servicenow::ServiceNow;

/// The catalog and directory `serve` decides with in the demo: the facts a decision rests on.
fn example_enricher() -> anyhow::Result<deskbridge::pipeline::enrich::Enricher> {
    Ok(deskbridge::pipeline::enrich::Enricher {
        catalog: deskbridge::commands::demo::example_catalog()?,
        directory: Some(Arc::new(deskbridge::directory::file::FileDirectory::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/directory.json"),
        )?)),
    })
}

/// Per ticket, in this process: normalize, enrich (catalog and directory, as the pipeline
/// does, so the policy walks the rules a real decision walks) and decide.
async fn in_process(iterations: usize) -> anyhow::Result<()> {
    let (mapping, policy) = shipped()?;
    let enricher = example_enricher()?;
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
            let mut request = *request;
            enricher.enrich(&mut request).await.map_err(anyhow::Error::msg)?;
            let decided_at = Instant::now();
            policy.decide_now(&request)?;
            decide_only.push(decided_at.elapsed());
        }
        both.push(started.elapsed());
    }
    both.sort();
    decide_only.sort();
    println!(
        "normalize + enrich + decide: median {:.1} µs, p99 {:.1} µs per ticket ({} tickets)",
        common::percentile(&both, 0.5).as_secs_f64() * 1e6,
        common::percentile(&both, 0.99).as_secs_f64() * 1e6,
        iterations
    );
    print_times("embedded Rego decision alone (interpreter)", &decide_only);
    let mut requests: Vec<AccessRequest> = tickets
        .iter()
        .filter_map(|t| match mapping.normalize(t) {
            Normalized::AccessRequest { request } => Some(*request),
            _ => None,
        })
        .collect();
    for request in &mut requests {
        enricher.enrich(request).await.map_err(anyhow::Error::msg)?;
    }
    // Beside it, the same policy evaluated by regorus on this thread: what the hop to the
    // evaluation threads (which give decisions their wall-clock limit) costs.
    let entrypoint = "data.deskbridge.access.decision";
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
        let _ = engine.eval_rule(entrypoint.into());
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
    // And the VM on this thread, compiled from the interpreter's engine above: the evaluation
    // alone, as the interpreter's line.
    let compiled = engine
        .clone()
        .compile_with_entrypoint(&regorus::Rc::from(entrypoint))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let program =
        regorus::languages::rego::compiler::Compiler::compile_from_policy(&compiled, &[entrypoint]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut machine = regorus::rvm::vm::RegoVM::new();
    machine.load_program(program);
    machine.set_max_instructions(deskbridge::decision::rego::MAX_INSTRUCTIONS);
    let vm_inline = time_each(&requests, iterations, |request| {
        let input = regorus::Value::from(serde_json::to_value(request)?);
        let started = Instant::now();
        machine.set_input(input);
        machine.execute().map_err(|e| anyhow::anyhow!("the register VM: {e}"))?;
        Ok(started.elapsed())
    })?;
    print_times("  the register VM on the calling thread", &vm_inline);
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
        common::percentile(sorted, 0.5).as_secs_f64() * 1e6,
        common::percentile(sorted, 0.99).as_secs_f64() * 1e6
    );
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
        peak = peak.max(common::peak_rss_mib(&pid));
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

/// What a run is asked to do.
struct Options {
    count: usize,
    backend: String,
    backfill: bool,
    latency: Option<Duration>,
    concurrency: usize,
    replicas: usize,
}

/// A simulator seeded with `count` tickets, every request delayed by `latency`.
async fn simulator(count: usize, latency: Option<Duration>) -> anyhow::Result<Simulator> {
    let sim = Simulator::start(SimConfig {
        seed: false,
        ..SimConfig::default()
    })
    .await?;
    sim.generate(count);
    sim.set_recording(false);
    if let Some(latency) = latency {
        sim.inject(Fault::Delay(latency), usize::MAX, None);
    }
    Ok(sim)
}

fn connector(sim: &Simulator, options: &Options) -> anyhow::Result<ServiceNow> {
    let mut config = servicenow_config(sim.base_url())?;
    config.page_size = 500;
    config.http.max_concurrency = options.concurrency;
    Ok(ServiceNow::new("load", config)?)
}

/// The simulator's own serving rate for the requests deskbridge makes: the connector alone
/// pages through every ticket (no store, no decision), then posts one comment per ticket at
/// the same concurrency. A fresh simulator with the same tickets, so deskbridge's run is not
/// disturbed.
async fn raw_rates(options: &Options) -> anyhow::Result<(f64, f64)> {
    use futures_util::stream::StreamExt as _;
    let sim = simulator(options.count, options.latency).await?;
    let connector = connector(&sim, options)?;
    let started = Instant::now();
    let mut cursor = deskbridge_connector::Cursor::start();
    let mut keys = Vec::new();
    loop {
        let page = connector.poll(&cursor).await?;
        keys.extend(page.tickets.iter().map(|t| t.key.clone()));
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    let read = keys.len() as f64 / started.elapsed().as_secs_f64();
    // As the pipeline posts: a batch's comments concurrently, then their ids read back
    // together (one request per 100 tickets on ServiceNow; Jira's write answers the id).
    let started = Instant::now();
    let mut written = 0;
    for (b, batch) in keys.chunks(POST_BATCH).enumerate() {
        let posted: Vec<(String, String, Option<deskbridge_connector::CommentId>)> = futures_util::stream::iter(batch.iter().enumerate())
            .map(|(i, key)| {
                let connector = &connector;
                async move {
                    let marker = format!("deskbridge-id:raw{b}x{i}");
                    let comment = deskbridge_connector::Comment {
                        body: format!("raw post\n[{marker}]"),
                        marker,
                    };
                    let answer = connector.post_comment_in_batch(key, &comment).await;
                    answer.ok().map(|id| (key.clone(), comment.marker, id))
                }
            })
            .buffer_unordered(options.concurrency)
            .filter_map(|done| async move { done })
            .collect()
            .await;
        let unread: Vec<(&str, &str)> = posted
            .iter()
            .filter(|(_, _, id)| id.is_none())
            .map(|(key, marker, _)| (key.as_str(), marker.as_str()))
            .collect();
        if !unread.is_empty() {
            connector.posted_comment_ids(&unread).await;
        }
        written += posted.len();
    }
    let write = written as f64 / started.elapsed().as_secs_f64();
    Ok((read, write))
}

/// Counts the SQL statements sqlx runs (its `sqlx::query` events), while switched on.
#[derive(Default)]
struct StatementCounter {
    on: std::sync::atomic::AtomicBool,
    count: std::sync::atomic::AtomicUsize,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for &'static StatementCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" && self.on.load(std::sync::atomic::Ordering::Relaxed) {
            self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn statements() -> &'static StatementCounter {
    static COUNTER: std::sync::OnceLock<&'static StatementCounter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| {
        let counter: &'static StatementCounter = Box::leak(Box::default());
        use tracing_subscriber::layer::SubscriberExt as _;
        let filter = tracing_subscriber::filter::Targets::new().with_target("sqlx::query", tracing::Level::DEBUG);
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(counter).with(filter));
        counter
    })
}

/// Statements counted while `phase` runs.
async fn counted<T>(phase: impl std::future::Future<Output = T>) -> (T, usize) {
    let counter = statements();
    counter.count.store(0, std::sync::atomic::Ordering::Relaxed);
    counter.on.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = phase.await;
    counter.on.store(false, std::sync::atomic::Ordering::Relaxed);
    (out, counter.count.load(std::sync::atomic::Ordering::Relaxed))
}

/// The pipeline over `sim`, deciding on facts as in production: the example catalog and
/// directory export.
fn pipeline_for(sim: &Simulator, store: &Store, options: &Options) -> anyhow::Result<Pipeline> {
    let (mapping, policy) = shipped()?;
    Ok(Pipeline::new(
        store.clone(),
        vec![Instance {
            connector: Arc::new(connector(sim, options)?),
            mapping: Arc::new(mapping),
        }],
        Arc::new(policy),
        CommentRenderer::new(None)?,
        Settings::default(),
    )
    .with_enricher(Some(Arc::new(example_enricher()?))))
}

/// A fresh store: a SQLite file in `dir`, or a fresh schema of `DESKBRIDGE_TEST_POSTGRES`.
async fn store_for(backend: &str, dir: &tempfile::TempDir) -> anyhow::Result<Store> {
    Ok(match backend {
        "postgres" => Store::connect_postgres(&deskbridge::store::testing::fresh_postgres_schema().await).await?,
        _ => Store::open(&dir.path().join("load.db")).await?,
    })
}

async fn end_to_end(options: &Options) -> anyhow::Result<()> {
    let count = options.count;
    let backend = options.backend.as_str();
    let sim = simulator(count, options.latency).await?;
    let dir = tempfile::tempdir()?;
    let store = store_for(backend, &dir).await?;
    let pipeline = pipeline_for(&sim, &store, options)?;
    if options.backfill {
        return backfill_process(&sim, count, backend, &dir).await;
    }
    let mut report = Report::default();
    let started = Instant::now();
    let (read, read_statements) = counted(pipeline.poll_and_decide(&mut report)).await;
    read?;
    let read_path = started.elapsed();
    let (posted, post_statements) = counted(pipeline.post_all(&mut report)).await;
    posted?;
    let total = started.elapsed();
    let requests: usize = sim.faults_fired().values().sum();
    let per_sec = |d: Duration| count as f64 / d.as_secs_f64();
    let latency = options.latency.map_or("no added latency".to_owned(), |l| {
        format!("{} ms added per ITSM request", l.as_millis())
    });
    println!(
        "pipeline over {count} tickets (simulator on loopback, {backend}, embedded Rego, {latency}, max_concurrency {}):",
        options.concurrency
    );
    println!(
        "  read path (poll → decide):    {:>8.0} tickets/s ({:.2} s)",
        per_sec(read_path),
        read_path.as_secs_f64()
    );
    println!(
        "  end to end, one after other:  {:>8.0} tickets/s ({:.2} s)",
        per_sec(total),
        total.as_secs_f64()
    );
    let per_ticket = |n: usize| n as f64 / count as f64;
    println!(
        "  SQL statements per ticket:    read path {:.2}, write-back {:.2}",
        per_ticket(read_statements),
        per_ticket(post_statements)
    );
    println!(
        "  decided {}, posted {}, pending {}",
        report.decided,
        report.posted,
        store.counts().await?.pending
    );
    // What `serve` does: the three overlapping, on a fresh simulator and store.
    let sim = simulator(count, options.latency).await?;
    let dir = tempfile::tempdir()?;
    let store = store_for(backend, &dir).await?;
    let pipeline = pipeline_for(&sim, &store, options)?;
    let mut overlapped = Report::default();
    let started = Instant::now();
    pipeline.poll_decide_post(&mut overlapped).await?;
    let elapsed = started.elapsed();
    println!(
        "  end to end, overlapped:       {:>8.0} tickets/s ({:.2} s; poll, decide and post at once, as `serve` runs; posted {})",
        per_sec(elapsed),
        elapsed.as_secs_f64(),
        overlapped.posted
    );
    let total = elapsed;
    let (raw_read, raw_write) = raw_rates(options).await?;
    println!("the simulator alone, for the same requests (the connector without deskbridge's pipeline):");
    println!("  pages read:                   {raw_read:>8.0} tickets/s");
    println!(
        "  comments posted:              {raw_write:>8.0} tickets/s ({} at once)",
        options.concurrency
    );
    let raw_total = 1.0 / (1.0 / raw_read + 1.0 / raw_write);
    println!(
        "  both, one after the other:    {raw_total:>8.0} tickets/s; deskbridge reaches {:.0} % of it",
        100.0 * per_sec(total) / raw_total
    );
    if let Some(latency) = options.latency {
        let per_ticket_requests = requests as f64 / count as f64;
        let ceiling = options.concurrency as f64 / latency.as_secs_f64() / per_ticket_requests;
        println!(
            "  concurrency ceiling:          {ceiling:>8.0} tickets/s ({} at once / {} ms / {per_ticket_requests:.2} requests per ticket); deskbridge reaches {:.0} %",
            options.concurrency,
            latency.as_millis(),
            100.0 * per_sec(total) / ceiling
        );
    }
    Ok(())
}

/// End-to-end tickets/s of `replicas` replicas on one fresh schema and simulator: each runs
/// passes (as `serve` does) until every ticket's comment is posted; one of them holds the
/// poller lease, all of them decide and post. Beside it, how busy the whole machine was
/// meanwhile (every core, every process): replicas add throughput only while there is CPU left
/// for them.
async fn replicas_rate(options: &Options, replicas: usize) -> anyhow::Result<(f64, Option<f64>)> {
    let sim = simulator(options.count, options.latency).await?;
    let url = deskbridge::store::testing::fresh_postgres_schema().await;
    let mut pipelines = Vec::new();
    for _ in 0..replicas {
        pipelines.push(pipeline_for(&sim, &Store::connect_postgres(&url).await?, options)?);
    }
    let expected = options.count as i64;
    let started = Instant::now();
    let ticks = common::machine_ticks();
    let passes = pipelines.iter().map(|pipeline| async move {
        loop {
            let mut report = Report::default();
            pipeline.poll_decide_post(&mut report).await?;
            let counts = pipeline.store().counts().await?;
            if counts.posted + counts.pending >= expected && counts.queued == 0 {
                return anyhow::Ok(());
            }
            if report.ingested + report.decided + report.posted + report.settled == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    futures_util::future::try_join_all(passes).await?;
    let rate = options.count as f64 / started.elapsed().as_secs_f64();
    Ok((rate, common::busy_between(ticks, common::machine_ticks())))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a)
        .collect();
    let options = Options {
        count: positional.first().and_then(|a| a.parse().ok()).unwrap_or(2000),
        backend: positional.get(1).map_or("sqlite".to_owned(), |b| (*b).clone()),
        backfill: positional.get(2).is_some_and(|a| *a == "backfill"),
        latency: flag("--latency-ms").map(Duration::from_millis),
        concurrency: flag("--concurrency").map_or(4, |c| c.max(1) as usize),
        replicas: flag("--replicas").map_or(0, |c| c as usize),
    };
    if options.replicas > 0 {
        anyhow::ensure!(
            options.backend == "postgres",
            "--replicas needs postgres: SQLite has one worker process"
        );
        let (one, one_busy) = replicas_rate(&options, 1).await?;
        let (many, many_busy) = replicas_rate(&options, options.replicas).await?;
        let busy = |b: Option<f64>| b.map_or("machine load unknown".to_owned(), |b| format!("machine {:.0} % busy", 100.0 * b));
        println!(
            "replicas over {} tickets (PostgreSQL, max_concurrency {} each, {}): 1 replica {one:.0} tickets/s ({}), {} replicas {many:.0} tickets/s ({}): {:.2}×",
            options.count,
            options.concurrency,
            options.latency.map_or("no added latency".to_owned(), |l| format!("{} ms added per ITSM request", l.as_millis())),
            busy(one_busy),
            options.replicas,
            busy(many_busy),
            many / one
        );
        if one_busy.is_some_and(|b| b > 0.85) {
            println!(
                "  one replica already kept this machine's {} cores busy (it, the simulator and PostgreSQL share them): \
                 a second replica has no CPU to add here; with --latency-ms the ITSM is the wait, and the ratio shows what replicas add",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
        }
        return Ok(());
    }
    // `--pipeline-only` skips the in-process figures (for a profiler's view of the pipeline).
    if !options.backfill && !args.iter().any(|a| a == "--pipeline-only") {
        in_process(20_000).await?;
    }
    end_to_end(&options).await?;
    println!("peak RSS: {:.1} MiB", common::peak_rss_mib("self"));
    Ok(())
}
