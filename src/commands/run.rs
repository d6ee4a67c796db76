//! `deskbridge serve` and `deskbridge sync`: the pipeline from a config file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::{Pipeline, Report};
use crate::store::Store;

async fn pipeline_from(config_path: &Path) -> anyhow::Result<(Config, Pipeline)> {
    let config = Config::load(config_path)?;
    // Checked here so a bad key stops start-up rather than the first pass.
    config.audit.signer()?;
    let built = config.build(&config_path.display().to_string())?;
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
        .with_enricher(built.enricher);
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

/// `deskbridge serve --config FILE`: the pipeline on an interval plus a small HTTP API
/// (`/healthz`, `/status`), stopped gracefully on SIGTERM or Ctrl-C: the pass in flight
/// finishes, so no post is cut in half.
pub async fn serve(config_path: &Path) -> anyhow::Result<()> {
    let (config, pipeline) = pipeline_from(config_path).await?;
    let pipeline = Arc::new(pipeline);
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "deskbridge serving");
    let (tx, rx) = watch::channel(false);
    let wake = Arc::new(tokio::sync::Notify::new());
    let app = app(pipeline.clone(), wake.clone());
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

/// The HTTP API of `serve`: `/healthz`, `/status`, and `POST /webhooks/<connector id>` for
/// every connector instance with `[connectors.webhook]`. `wake` is notified when a delivery
/// stored something, so decisions follow within moments rather than at the next poll.
pub fn app(pipeline: Arc<Pipeline>, wake: Arc<tokio::sync::Notify>) -> Router {
    let limit = pipeline.webhook_body_limit();
    let hooks = Router::new()
        .route("/webhooks/{connector}", axum::routing::post(webhook))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(Hooks {
            pipeline: pipeline.clone(),
            wake,
        });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status))
        .with_state(pipeline)
        .merge(hooks)
}

#[derive(Clone)]
struct Hooks {
    pipeline: Arc<Pipeline>,
    wake: Arc<tokio::sync::Notify>,
}

/// One webhook delivery: verified on the raw body before anything is read or stored (401),
/// dropped if its delivery id was seen (200), then the tickets it names are read again from the
/// ITSM and stored with the delivery id in one transaction (202). A failure to read them is a
/// 503, so the ITSM retries; nothing is stored.
async fn webhook(
    State(hooks): State<Hooks>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    let Some(instance) = hooks.pipeline.instance(&id) else {
        return (StatusCode::NOT_FOUND, "no such connector\n");
    };
    let connector = instance.connector.clone();
    let Some(verifier) = connector.webhook() else {
        return (StatusCode::NOT_FOUND, "webhooks are not configured for this connector\n");
    };
    if body.len() > verifier.max_body_bytes {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
    }
    if let Err(why) = verifier.verify(&headers, &body) {
        tracing::warn!(connector = %id, reason = %why, "webhook delivery refused");
        return (StatusCode::UNAUTHORIZED, "signature missing or invalid\n");
    }
    let event = match connector.webhook_event(&headers, &body) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(connector = %id, error = %e, "webhook delivery unreadable");
            return (StatusCode::BAD_REQUEST, "payload names no ticket\n");
        }
    };
    let store = hooks.pipeline.store();
    if let Some(delivery) = &event.delivery_id {
        match store.delivery_seen(&id, delivery).await {
            Ok(true) => return (StatusCode::OK, "duplicate delivery ignored\n"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(connector = %id, error = %format!("{e:#}"), "webhook dedup query failed");
                return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n");
            }
        }
    }
    let mut tickets = Vec::new();
    for key in &event.keys {
        match connector.fetch(key).await {
            Ok(Some(ticket)) => tickets.push(ticket),
            // Gone, or outside the projects/filter this connector reads.
            Ok(None) => tracing::info!(connector = %id, ticket = %key, "webhook names a ticket this connector does not read"),
            Err(e) => {
                tracing::warn!(connector = %id, ticket = %key, error = %e, "could not read the ticket a webhook named; the ITSM will retry");
                return (StatusCode::SERVICE_UNAVAILABLE, "could not read the ticket; retry later\n");
            }
        }
    }
    match store.ingest_webhook(&id, event.delivery_id.as_deref(), &tickets).await {
        Ok(None) => (StatusCode::OK, "duplicate delivery ignored\n"),
        Ok(Some(inserted)) => {
            tracing::info!(connector = %id, tickets = tickets.len(), new_versions = inserted, "webhook delivery taken in");
            if inserted > 0 {
                hooks.wake.notify_one();
            }
            (StatusCode::ACCEPTED, "accepted\n")
        }
        Err(e) => {
            tracing::error!(connector = %id, error = %format!("{e:#}"), "storing a webhook delivery failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

async fn status(State(pipeline): State<Arc<Pipeline>>) -> Result<Json<serde_json::Value>, (axum::http::StatusCode, &'static str)> {
    let store = pipeline.store();
    let read = async { Ok::<_, anyhow::Error>((store.counts().await?, store.parked().await?, store.halts().await?)) };
    match read.await {
        Ok((c, parked, halts)) => Ok(Json(serde_json::json!({
            "last_pass": pipeline.last_report().map(|(at, r)| serde_json::json!({
                "finished_at": at, "ingested": r.ingested, "decided": r.decided, "failed_decisions": r.failed_decisions,
                "held_back_by_open_circuit": r.held_back,
                "posted": r.posted, "failed_posts": r.failed_posts, "parked": r.parked, "connector_errors": r.connector_errors,
            })),
            "inbox": c.inbox, "decisions": c.decisions, "comments_posted": c.posted,
            "comments_queued": c.queued, "pending_decisions": c.pending,
            "parked": parked, "halted_connectors": halts,
            "catalog": pipeline.enricher().map(|e| e.catalog.get().label()),
            "directory": pipeline.enricher().and_then(|e| e.directory.as_ref().map(|d| d.describe())),
        }))),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "status query failed");
            Err((axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
        }
    }
}

/// Signs the latest audit record when a key is configured.
async fn sign(pipeline: &Pipeline, config: &Config) -> anyhow::Result<()> {
    if let Some(signer) = config.audit.signer()? {
        crate::audit::checkpoint(pipeline.store(), &signer).await?;
    }
    Ok(())
}

async fn work(
    pipeline: Arc<Pipeline>,
    config: Arc<Config>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    wake: Arc<tokio::sync::Notify>,
) {
    loop {
        reload_catalog(&pipeline, false);
        match pipeline.run_once().await {
            Ok(_) if pipeline.stopping() => return,
            Ok(report) => tracing::info!(summary = %summarize(&report), "pass complete"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "pass failed; retrying next interval"),
        }
        if let Err(e) = sign(&pipeline, &config).await {
            tracing::error!(error = %format!("{e:#}"), "signing an audit checkpoint failed");
        }
        // A verified webhook wakes the worker early; polling stays on as the safety net.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
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

async fn shutdown_signal() {
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
