//! What `/status`, `/readyz` and `/metrics` cost as the store grows: prints figures, asserts
//! nothing.
//!
//!     cargo run --release --example status_scale -- [TICKETS]
//!
//! Fills a SQLite store with TICKETS tickets (an inbox row, a decision and a comment each,
//! default 200,000), all finished but the last 50 (a pending decision and a queued comment),
//! then times, side by side in one run:
//!
//! - `counts`: the five whole-table counts the old `/status` ran on every call;
//! - `backlog`: the unfinished-work counts `/status` and the per-pass gauges run now (the
//!   status index over the unfinished rows only);
//! - `ping`: the store check of `/readyz`;
//! - `encode`: rendering `/metrics` (counters from memory) after as many observations.

use std::time::{Duration, Instant};

use deskbridge::store::Store;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f().await?;
        times.push(started.elapsed());
    }
    Ok(median(times))
}

async fn fill(store: &Store, tickets: usize) -> anyhow::Result<()> {
    let now = deskbridge::store::now();
    let batch = 10_000;
    let mut done = 0;
    while done < tickets {
        let mut tx = store.pool().begin().await?;
        for n in done..(done + batch).min(tickets) {
            // The last 50 tickets are unfinished: pending decisions and queued comments.
            let unfinished = n + 50 >= tickets;
            let key = format!("{n:032x}");
            sqlx::query(
                "INSERT INTO inbox (connector, ticket_key, version, number, url, updated, raw, raw_sha256, received_at, status)
                 VALUES ('snow', $1, '1', $2, '', $3, '{}', '', $3, $4)",
            )
            .bind(&key)
            .bind(format!("RITM{n:07}"))
            .bind(&now)
            .bind(if unfinished { "pending" } else { "decided" })
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO decisions (decision_id, inbox_id, connector, ticket_key, request_hash, outcome, decision, raw, decided_at)
                 VALUES ($1, $2, 'snow', $3, $1, 'review', '{}', '{}', $4)",
            )
            .bind(format!("d{n}"))
            .bind(n as i64 + 1)
            .bind(&key)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO outbox (connector, ticket_key, request_hash, decision_id, marker, body, status, next_attempt_at, created_at)
                 VALUES ('snow', $1, $2, $2, $2, 'body', $3, $4, $4)",
            )
            .bind(&key)
            .bind(format!("d{n}"))
            .bind(if unfinished { "queued" } else { "posted" })
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        done = (done + batch).min(tickets);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tickets: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("status.db")).await?;
    let started = Instant::now();
    fill(&store, tickets).await?;
    println!(
        "filled {tickets} tickets (the last 50 unfinished) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let backlog = store.backlog().await?;
    println!("backlog: {backlog:?}");
    let runs = 21;
    let counts = time(runs, || store.counts()).await?;
    let backlog = time(runs, || store.backlog()).await?;
    let ping = time(runs, || store.ping(Duration::from_secs(2))).await?;
    let metrics = deskbridge::metrics::global();
    for n in 0..tickets.min(100_000) {
        metrics.itsm_call(
            "snow",
            if n % 7 == 0 { "PATCH" } else { "GET" },
            Some(200),
            Duration::from_micros(800),
        );
    }
    let encode = time(runs, || async { Ok::<_, anyhow::Error>(metrics.encode()) }).await?;
    let per_call = {
        let n = 200_000;
        let started = Instant::now();
        for _ in 0..n {
            metrics.itsm_call("snow", "GET", Some(200), Duration::from_micros(800));
        }
        started.elapsed() / n
    };
    println!("median of {runs} runs at {tickets} tickets:");
    println!(
        "  counts  (old /status: five whole-table counts)   {:>10.3} ms",
        counts.as_secs_f64() * 1e3
    );
    println!(
        "  backlog (/status and per-pass gauges now)        {:>10.3} ms",
        backlog.as_secs_f64() * 1e3
    );
    println!(
        "  ping    (/readyz store check)                    {:>10.3} ms",
        ping.as_secs_f64() * 1e3
    );
    println!(
        "  encode  (/metrics text)                          {:>10.3} ms",
        encode.as_secs_f64() * 1e3
    );
    println!(
        "  one ITSM call recorded in metrics                {:>10.3} µs",
        per_call.as_secs_f64() * 1e6
    );
    Ok(())
}
