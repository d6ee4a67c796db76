//! `deskbridge serve` and `deskbridge sync`: the pipeline from a config file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::{Pipeline, Report};
use crate::store::Store;

async fn pipeline_from(config_path: &Path) -> anyhow::Result<(Config, Pipeline)> {
    let config = crate::wiring::load(config_path)?;
    // Checked here so a bad key stops start-up rather than the first pass.
    crate::wiring::signer(&config.audit)?;
    let built = crate::wiring::build(&config, &config_path.display().to_string())?;
    // One worker per SQLite file: a second `serve` or `sync` on the same file is refused.
    let store = Store::from_config(&config.store).await?.exclusive()?;
    // Rotating OAuth refresh tokens live in the store, so replicas share one token chain.
    let vault: Arc<dyn deskbridge_connector::auth::TokenVault> = Arc::new(store.token_vault());
    for instance in &built.instances {
        if let Some(auth) = instance.connector.auth() {
            auth.share_tokens(vault.clone(), &format!("oauth:{}", instance.connector.id()));
        }
    }
    let pipeline = Pipeline::new(store, built.instances, built.decision_point, built.renderer, built.settings)
        .with_shadow(built.shadow)
        .with_enricher(built.enricher)
        .with_provisioning(built.provisioning);
    // Credentials, permissions and custom fields are checked before anything runs.
    let problems = pipeline.check_connectors().await;
    if !problems.is_empty() {
        anyhow::bail!(
            "start-up check failed for {} connector(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok((config, pipeline))
}

fn summarize(report: &Report) -> String {
    format!(
        "{} new ticket versions, {} decided, {} settled without a decision, {} left pending (decision point failed), {} comments posted, {} comment posts failed, {} parked",
        report.ingested, report.decided, report.settled, report.failed_decisions, report.posted, report.failed_posts, report.parked
    )
}

/// `deskbridge sync [--once] --config FILE`. With `once`, one pass; fails when a connector
/// could not be reached or refused the credentials.
pub async fn sync(config_path: &Path, once: bool) -> anyhow::Result<String> {
    let (config, pipeline) = pipeline_from(config_path).await?;
    if once {
        let report = pipeline.run_once().await?;
        sign(&pipeline, &config).await?;
        let mut out = summarize(&report) + "\n";
        out.push_str(&super::table::render(&pipeline.store().ticket_states().await?));
        if !report.connector_errors.is_empty() {
            anyhow::bail!("{out}\nconnector errors:\n  {}", report.connector_errors.join("\n  "));
        }
        return Ok(out);
    }
    let (tx, rx) = watch::channel(false);
    let interval = Duration::from_secs(config.pipeline.poll_interval_secs);
    let pipeline = Arc::new(pipeline);
    let worker = tokio::spawn(work(
        pipeline.clone(),
        Arc::new(config),
        interval,
        rx,
        Arc::new(tokio::sync::Notify::new()),
    ));
    shutdown_signal().await;
    stop(&pipeline, &tx, worker).await?;
    Ok("stopped\n".into())
}

/// `deskbridge sync --backfill --since DATE --config FILE`: every ticket updated since `since`,
/// with a progress bar on a terminal and a summary at the end. SIGTERM or Ctrl-C stops after
/// the ticket or comment in flight; the same command then resumes.
pub async fn backfill(config_path: &Path, since: chrono::DateTime<chrono::Utc>) -> anyhow::Result<String> {
    let (config, pipeline) = pipeline_from(config_path).await?;
    let pipeline = Arc::new(pipeline);
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {prefix}: {pos} tickets read ({per_sec}) · {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let stopper = pipeline.clone();
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        stopper.stop();
    });
    let result = pipeline
        .backfill(since, |progress, report| {
            bar.set_prefix(format!(
                "{}{}",
                progress.connector,
                if progress.resumed { " (resumed)" } else { "" }
            ));
            bar.set_position(progress.read as u64);
            bar.set_message(format!("{} decided, {} comments posted", report.decided, report.posted));
        })
        .await;
    bar.finish_and_clear();
    signal.abort();
    let stopped = pipeline.stopping();
    pipeline.release_all().await?;
    let report = result?;
    sign(&pipeline, &config).await?;
    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(if stopped {
        format!(
            "backfill since {since} interrupted: {}
run the same command again to resume
",
            summarize(&report)
        )
    } else {
        format!(
            "backfill since {since} complete: {}
",
            summarize(&report)
        )
    })
}

/// `deskbridge serve --config FILE`: the pipeline on an interval plus the HTTP side (health,
/// readiness, status, metrics, webhooks, the admin API and console; see [`crate::server`]), stopped gracefully on SIGTERM or Ctrl-C: the pass in flight
/// finishes, so no post is cut in half.
pub async fn serve(config_path: &Path) -> anyhow::Result<()> {
    let (config, pipeline) = pipeline_from(config_path).await?;
    let pipeline = Arc::new(pipeline);
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "deskbridge serving");
    if config.server.tokens.is_empty() {
        let metrics = if config.server.metrics_public { "" } else { ", /metrics" };
        tracing::warn!("no [[server.tokens]] configured: /status{metrics}, the admin API and the console refuse every request (`deskbridge token new` makes one)");
    }
    let (tx, rx) = watch::channel(false);
    let wake = Arc::new(tokio::sync::Notify::new());
    let app = crate::server::app(pipeline.clone(), wake.clone(), crate::server::Options::from_config(&config));
    let mut server_rx = rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    let interval = Duration::from_secs(config.pipeline.poll_interval_secs);
    let worker = tokio::spawn(work(pipeline.clone(), Arc::new(config), interval, rx, wake));
    let reloader = tokio::spawn(reload_on_sighup(pipeline.clone()));
    shutdown_signal().await;
    reloader.abort();
    stop(&pipeline, &tx, worker).await?;
    server.await??;
    Ok(())
}

/// Graceful shutdown: the ticket or comment in flight finishes (a post that has started is
/// completed and recorded), nothing new starts, and this replica's claims and poller leases
/// are handed back so another replica carries on at once.
async fn stop(pipeline: &Pipeline, tx: &watch::Sender<bool>, worker: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    tracing::info!("shutting down: finishing the ticket or comment in flight");
    pipeline.stop();
    let _ = tx.send(true);
    worker.await?;
    pipeline.release_all().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Signs the latest audit record when a key is configured.
async fn sign(pipeline: &Pipeline, config: &Config) -> anyhow::Result<()> {
    if let Some(signer) = crate::wiring::signer(&config.audit)? {
        crate::audit::checkpoint(pipeline.store(), &signer).await?;
    }
    Ok(())
}

const FINDINGS_EVERY: Duration = Duration::from_secs(300);

async fn work(
    pipeline: Arc<Pipeline>,
    config: Arc<Config>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    wake: Arc<tokio::sync::Notify>,
) {
    // The drift findings gauge has its own task: the report reads every ticket (about 9 s at
    // 100,000), so counting inline would hold the pipeline still that long.
    let first_pass = Arc::new(tokio::sync::Notify::new());
    let findings = tokio::spawn(count_findings(pipeline.clone(), first_pass.clone(), stop.clone()));
    let _findings = AbortOnDrop(findings);
    let mut next_poll = tokio::time::Instant::now();
    let mut woken_by_webhook = false;
    loop {
        // A webhook between polls gets a pass over what it stored, at once: no poll reads every
        // changed ticket again before its decision. Polling, the provisioning evidence and the
        // checkpoints keep their interval however many webhooks arrive.
        let poll_due = !woken_by_webhook || tokio::time::Instant::now() >= next_poll;
        reload_catalog(&pipeline, false);
        let result = if poll_due {
            next_poll = tokio::time::Instant::now() + interval;
            pipeline.run_once().await
        } else {
            // Until the next poll is due: deliveries meanwhile are decided as they arrive.
            pipeline.run_stored(next_poll).await
        };
        match result {
            Ok(_) if pipeline.stopping() => return,
            // An idle pass says so once, at debug level; a pass that did something at info.
            Ok(report) if report == Report::default() => tracing::debug!("idle pass: nothing new"),
            Ok(report) => tracing::info!(summary = %summarize(&report), "pass complete"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "pass failed; retrying next interval"),
        }
        if poll_due {
            first_pass.notify_one();
            if let Err(e) = sign(&pipeline, &config).await {
                tracing::error!(error = %format!("{e:#}"), "signing an audit checkpoint failed");
            }
        }
        // A verified webhook wakes the worker early; polling stays on as the safety net, every
        // `interval` from the last poll.
        woken_by_webhook = tokio::select! {
            _ = tokio::time::sleep_until(next_poll) => false,
            _ = wake.notified() => true,
            _ = stop.wait_for(|s| *s) => return,
        };
    }
}

/// Aborts a helper task when its owner ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The drift findings gauge: counted after the first poll, then at most every
/// [`FINDINGS_EVERY`] (the report reads every ticket), beside the worker, not in its way.
async fn count_findings(pipeline: Arc<Pipeline>, first_pass: Arc<tokio::sync::Notify>, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = first_pass.notified() => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    loop {
        match crate::report::drift::drift(pipeline.store(), &Default::default()).await {
            Ok(findings) => crate::metrics::global().findings(&findings),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "counting drift findings for metrics failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(FINDINGS_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Reloads the catalog when it changed (every pass) or on SIGHUP (always). A broken edit keeps
/// the catalog in use and says why.
fn reload_catalog(pipeline: &Pipeline, force: bool) {
    let Some(enricher) = pipeline.enricher() else { return };
    match enricher.catalog.reload_if_changed(force) {
        Ok(Some(label)) => tracing::info!(catalog = %label, "catalog loaded"),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), in_use = %enricher.catalog.get().label(), "the edited catalog is invalid; the previous catalog stays in use")
        }
    }
}

async fn reload_on_sighup(pipeline: Arc<Pipeline>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            reload_catalog(&pipeline, true);
        }
    }
    #[cfg(not(unix))]
    let _ = pipeline;
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
