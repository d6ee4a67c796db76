//! Load harness: prints figures, asserts nothing. Targets live in shared/DESIGN.md.
//!
//!     cargo run --release --example throughput -- [TICKETS]
//!
//! 1. normalize + decide per ticket, in-process (the shipped mapping and Rego policy);
//! 2. the pipeline against a ServiceNow simulator on loopback seeded with TICKETS synthetic
//!    access requests: the read path (poll → inbox → normalize → decide) and the write-back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deskbridge::commands::demo::{servicenow_config, shipped};
use deskbridge::pipeline::{Instance, Pipeline, Report, Settings};
use deskbridge::render::CommentRenderer;
use deskbridge::schema::Normalized;
use deskbridge::store::Store;
use deskbridge_connector::Ticket;
use deskbridge_servicenow::simulator::{SimConfig, Simulator};
use deskbridge_servicenow::ServiceNow;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
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
    println!(
        "embedded Rego decision alone: median {:.1} µs, p99 {:.1} µs",
        percentile(&decide_only, 0.5).as_secs_f64() * 1e6,
        percentile(&decide_only, 0.99).as_secs_f64() * 1e6
    );
    Ok(())
}

async fn end_to_end(count: usize) -> anyhow::Result<()> {
    let sim = Simulator::start(SimConfig {
        seed: false,
        ..SimConfig::default()
    })
    .await?;
    sim.generate(count);
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("load.db")).await?;
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
    );
    let mut report = Report::default();
    let started = Instant::now();
    pipeline.poll(&mut report).await?;
    let polled = started.elapsed();
    pipeline.decide_all(&mut report).await?;
    let read_path = started.elapsed();
    pipeline.post_all(&mut report).await?;
    let total = started.elapsed();
    let per_sec = |d: Duration| count as f64 / d.as_secs_f64();
    println!("pipeline over {count} tickets (simulator on loopback, SQLite, embedded Rego):");
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
    let count: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    in_process(20_000)?;
    end_to_end(count).await?;
    println!("peak RSS: {:.1} MiB", peak_rss_mib());
    Ok(())
}
