//! The pipeline: poll → inbox → normalize → decide → outbox → post.
//!
//! Each stage reads durable state and writes durable state, so a crash between any two
//! resumes where it stopped. A decision-point failure leaves the request pending (retried with
//! backoff), never approved. A comment is posted only after its marker is not found on the
//! ticket.

mod backfill;
pub(crate) mod decide;
pub mod enrich;
mod post;

pub use backfill::Progress;
pub use decide::request_hash;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deskbridge_connector::{Connector, ConnectorError, Cursor, Page};

use crate::decision::DecisionPoint;
use crate::mapping::Mapping;
use crate::render::CommentRenderer;
use crate::store::Store;

/// One configured connector instance with its mapping.
#[derive(Clone)]
pub struct Instance {
    /// The connector.
    pub connector: Arc<dyn Connector>,
    /// The mapping its tickets go through.
    pub mapping: Arc<Mapping>,
}

/// Tuning.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Inbox rows and outbox comments handled per batch.
    pub batch_size: i64,
    /// First wait before retrying a failed decision; doubles per attempt.
    pub decision_retry_base: Duration,
    /// Longest wait between decision retries.
    pub decision_retry_max: Duration,
    /// Pages polled per connector in one pass (bounds one pass over a large backlog).
    pub max_pages_per_pass: usize,
    /// A request undecided this long after it arrived gets one "decision delayed" comment.
    pub delayed_comment_after: Option<Duration>,
    /// First wait before a failed comment post is tried again (after looking for its marker);
    /// doubles per attempt.
    pub post_retry_base: Duration,
    /// Longest wait between comment post attempts.
    pub post_retry_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_size: 250,
            decision_retry_base: Duration::from_secs(5),
            decision_retry_max: Duration::from_secs(600),
            max_pages_per_pass: 1000,
            delayed_comment_after: Some(Duration::from_secs(4 * 3600)),
            post_retry_base: Duration::from_secs(2),
            post_retry_max: Duration::from_secs(600),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// New ticket versions stored.
    pub ingested: usize,
    /// Decisions made (policy and needs-info).
    pub decided: usize,
    /// Ticket versions that were not access requests or changed nothing material.
    pub settled: usize,
    /// Requests another replica decided between this replica's read and write; decided again.
    pub contended: usize,
    /// Requests left pending after a decision-point failure.
    pub failed_decisions: usize,
    /// Of those, requests the circuit breaker held back without calling the decision point.
    pub held_back: usize,
    /// Comments posted (or found already posted).
    pub posted: usize,
    /// Comments whose posting failed this pass.
    pub failed_posts: usize,
    /// Ticket versions and comments parked this pass (a failure a retry will not fix; they
    /// wait for `deskbridge retry`).
    pub parked: usize,
    /// Connector errors, as `connector: message`.
    pub connector_errors: Vec<String>,
    /// Entitlement changes processed and lifecycle timers fired.
    pub evidence: usize,
}

impl Report {
    /// Adds what another part of the same pass did.
    fn absorb(&mut self, other: Report) {
        self.ingested += other.ingested;
        self.decided += other.decided;
        self.settled += other.settled;
        self.contended += other.contended;
        self.failed_decisions += other.failed_decisions;
        self.held_back += other.held_back;
        self.posted += other.posted;
        self.failed_posts += other.failed_posts;
        self.parked += other.parked;
        self.connector_errors.extend(other.connector_errors);
        self.evidence += other.evidence;
    }
}

/// What an operator needs to know about one connector instance, kept in memory by this
/// process (`/status`, `/readyz`).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct ConnectorState {
    /// The connector kind (`servicenow`, `jira`).
    pub kind: String,
    /// The stored poll cursor after the last page this process read.
    pub cursor: Option<String>,
    /// When this process's last poll of it succeeded.
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    /// When a poll last reached the end of the connector's changes.
    pub caught_up_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds since then (computed when read).
    pub lag_secs: Option<f64>,
    /// The last poll's error, when the last poll failed (cleared by a successful one).
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the last poll was refused for credentials or configuration (nothing is read
    /// until an admin acts).
    pub fatal: bool,
    /// Whether another replica holds the poller lease (this process does not poll it).
    pub polled_elsewhere: bool,
}

/// The pipeline over a set of connector instances.
///
/// Its state is behind an [`Arc`], so the stages of a pass run as tasks of their own, each with
/// a handle on it, side by side on the runtime's threads (see [`StageTask`]).
pub struct Pipeline(Arc<State>);

/// What a [`Pipeline`] handle shares.
pub struct State {
    store: Store,
    instances: HashMap<String, Instance>,
    order: Vec<String>,
    decision_point: Arc<dyn DecisionPoint>,
    shadow: Option<Arc<dyn DecisionPoint>>,
    renderer: CommentRenderer,
    settings: Settings,
    last_report: std::sync::Mutex<Option<(chrono::DateTime<chrono::Utc>, Report)>>,
    stopping: AtomicBool,
    enricher: Option<Arc<enrich::Enricher>>,
    decision_point_name: String,
    states: std::sync::Mutex<HashMap<String, ConnectorState>>,
    heartbeat: std::sync::atomic::AtomicI64,
    /// Provisioning evidence and the access lifecycle, when configured.
    provisioning: Option<Arc<crate::provisioning::Provisioning>>,
    /// Why the last provisioning pass stopped at a change it could not resolve.
    provisioning_blocked: std::sync::Mutex<Option<String>>,
    /// Signalled when a polled page was stored (the deciding stage of a pass has work).
    stored: tokio::sync::Notify,
    /// Signalled when decisions were recorded (the posting stage of a pass has comments).
    queued: tokio::sync::Notify,
    /// How many comments the last batch ended posting at once (see [`Window`]): the next batch
    /// goes on from there, so a steady stream of small batches is not posted one at a time.
    post_window: std::sync::Mutex<usize>,
    /// The last failure of the decision point and of the facts (catalog and directory), cleared
    /// by the next success: readiness says why requests stay pending.
    last_failures: std::sync::Mutex<LastFailures>,
}

impl std::ops::Deref for Pipeline {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

/// A provisioning pass runs on the pipeline's store, catalog, heartbeat and connectors.
impl crate::provisioning::engine::Host for Pipeline {
    fn store(&self) -> &Store {
        &self.store
    }

    fn catalog(&self) -> Option<Arc<crate::catalog::Catalog>> {
        self.enricher.as_ref().map(|e| e.catalog.get())
    }

    fn stopping(&self) -> bool {
        Pipeline::stopping(self)
    }

    fn beat(&self) {
        Pipeline::beat(self)
    }

    fn markup(&self, connector: &str) -> Option<&dyn deskbridge_connector::Markup> {
        self.instances.get(connector).map(|i| i.connector.markup())
    }
}

/// When the decision point or the facts last failed, and how.
#[derive(Debug, Clone, Default)]
pub struct LastFailures {
    /// The decision point's last failure, while it lasts.
    pub decision: Option<(chrono::DateTime<chrono::Utc>, String)>,
    /// The facts' (enrichment's) last failure, while it lasts.
    pub facts: Option<(chrono::DateTime<chrono::Utc>, String)>,
}

impl Pipeline {
    /// Assembles a pipeline.
    pub fn new(
        store: Store,
        instances: Vec<Instance>,
        decision_point: Arc<dyn DecisionPoint>,
        renderer: CommentRenderer,
        settings: Settings,
    ) -> Self {
        // Registers the metrics and the observer of ITSM requests before the first request.
        let _ = crate::metrics::global();
        let order = instances.iter().map(|i| i.connector.id().to_owned()).collect();
        let states = instances
            .iter()
            .map(|i| {
                let state = ConnectorState {
                    kind: i.connector.kind().to_owned(),
                    ..ConnectorState::default()
                };
                (i.connector.id().to_owned(), state)
            })
            .collect();
        let instances = instances.into_iter().map(|i| (i.connector.id().to_owned(), i)).collect();
        Self(Arc::new(State {
            store,
            instances,
            order,
            shadow: None,
            renderer,
            settings,
            last_report: std::sync::Mutex::new(None),
            stopping: AtomicBool::new(false),
            enricher: None,
            decision_point_name: decision_point.describe(),
            states: std::sync::Mutex::new(states),
            heartbeat: std::sync::atomic::AtomicI64::new(chrono::Utc::now().timestamp_millis()),
            last_failures: std::sync::Mutex::new(LastFailures::default()),
            provisioning: None,
            provisioning_blocked: std::sync::Mutex::new(None),
            stored: tokio::sync::Notify::new(),
            queued: tokio::sync::Notify::new(),
            post_window: std::sync::Mutex::new(1),
            decision_point,
        }))
    }

    /// The state, while the pipeline is assembled: before a pass gives a stage a handle.
    fn assembling(&mut self) -> &mut State {
        Arc::get_mut(&mut self.0).expect("a pipeline is assembled before its first pass")
    }

    /// Another handle on this pipeline, for a stage's task.
    fn handle(&self) -> Self {
        Self(self.0.clone())
    }

    /// Decides on facts from the entitlement catalog and the identity directory (see
    /// [`enrich`]); without it, requests carry no facts and the policy reviews them.
    pub fn with_enricher(mut self, enricher: Option<Arc<enrich::Enricher>>) -> Self {
        self.assembling().enricher = enricher;
        self
    }

    /// Matches entitlement changes to decisions and times the access lifecycle (see
    /// [`crate::provisioning`]).
    pub fn with_provisioning(mut self, provisioning: Option<Arc<crate::provisioning::Provisioning>>) -> Self {
        self.assembling().provisioning = provisioning;
        self
    }

    /// Provisioning evidence, when configured.
    pub fn provisioning(&self) -> Option<&Arc<crate::provisioning::Provisioning>> {
        self.provisioning.as_ref()
    }

    /// Why the last provisioning pass stopped at a change the directory could not resolve.
    pub fn provisioning_blocked(&self) -> Option<String> {
        self.provisioning_blocked.lock().ok().and_then(|b| b.clone())
    }

    /// The enricher, when one is configured (for catalog reloads).
    pub fn enricher(&self) -> Option<&Arc<enrich::Enricher>> {
        self.enricher.as_ref()
    }

    /// Evaluates `shadow` beside the primary decision point for every request; it never
    /// changes an outcome.
    pub fn with_shadow(mut self, shadow: Option<Arc<dyn DecisionPoint>>) -> Self {
        self.assembling().shadow = shadow;
        self
    }

    /// Asks the pass in flight to stop at the next ticket or comment: the one being handled
    /// finishes (a post in flight completes and is recorded), nothing new starts.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A pass waiting for work (see [`Pipeline::run_stored`]) notices at once.
        self.stored.notify_one();
        self.queued.notify_one();
    }

    /// Says a webhook delivery stored new ticket versions, so a pass over stored work
    /// ([`Pipeline::run_stored`]) decides them at once.
    pub fn versions_stored(&self) {
        self.stored.notify_one();
    }

    /// Whether [`Pipeline::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Hands back everything this process holds (claims, poller leases), so another replica
    /// takes over at once. Called on graceful shutdown.
    pub async fn release_all(&self) -> anyhow::Result<()> {
        for id in &self.order {
            self.store.release_lease(&poll_lease(id)).await?;
        }
        self.store.release_lease("provisioning").await?;
        self.store.release_claims().await
    }

    /// The connector instance `id`.
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id)
    }

    /// The largest webhook body any connector instance accepts (the HTTP layer's limit).
    pub fn webhook_body_limit(&self) -> usize {
        self.instances
            .values()
            .filter_map(|i| i.connector.webhook().map(|w| w.max_body_bytes))
            .max()
            .unwrap_or(64 * 1024)
    }

    /// Runs every connector's start-up check; each failure is `connector: what is missing`.
    pub async fn check_connectors(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for id in &self.order {
            if let Some(instance) = self.instances.get(id) {
                if let Err(e) = instance.connector.check().await {
                    problems.push(e.to_string());
                }
            }
        }
        problems
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Polls every connector until it has nothing more (or the per-pass page bound).
    ///
    /// The next page is fetched while the current one is stored, on a task of its own (a
    /// prefetch). A page is stored, and the cursor after it with it, only once the one before
    /// it is stored and the poller's lease has been renewed for it; a prefetched page that is
    /// not stored (the lease lost, a store failure, a stop) is dropped unread, and the next
    /// pass asks for it again from the stored cursor.
    pub async fn poll(&self, report: &mut Report) -> anyhow::Result<()> {
        for id in &self.order {
            let Some(instance) = self.instances.get(id) else { continue };
            let mut cursor = self.store.cursor(id).await?;
            let started = chrono::Utc::now();
            let mut pages = PageReader::new(&instance.connector);
            for page_number in 0..self.settings.max_pages_per_pass {
                // One poller per connector instance across replicas; renewed every page.
                if self.stopping() {
                    break;
                }
                if !self.store.try_lease(&poll_lease(id)).await? {
                    if page_number == 0 {
                        self.update_state(id, |s| s.polled_elsewhere = true);
                    }
                    break;
                }
                self.beat();
                let page = match pages.page(&cursor).await? {
                    Ok(page) => page,
                    Err(e) => {
                        let fatal = is_fatal(&e);
                        if fatal {
                            tracing::error!(connector = %id, error = %e, "the ITSM refused deskbridge's credentials or the configuration; nothing is read until an admin fixes it");
                        } else {
                            tracing::warn!(connector = %id, error = %e, "poll failed; will retry next pass");
                        }
                        report.connector_errors.push(e.to_string());
                        self.update_state(id, |s| {
                            s.last_error = Some(e.to_string());
                            s.last_error_at = Some(chrono::Utc::now());
                            s.fatal = fatal;
                        });
                        break;
                    }
                };
                if page.more && page_number + 1 < self.settings.max_pages_per_pass && !self.stopping() {
                    pages.fetch_ahead(&page.next);
                }
                let stored = self
                    .store
                    .ingest_page(id, &page.tickets, instance.connector.volatile_fields(), &page.next)
                    .await?;
                if stored > 0 {
                    self.stored.notify_one();
                }
                crate::metrics::global().tickets_read(id, stored);
                report.ingested += stored;
                cursor = page.next;
                self.update_state(id, |s| {
                    s.cursor = cursor.0.clone();
                    s.last_success = Some(chrono::Utc::now());
                    s.last_error = None;
                    s.last_error_at = None;
                    s.fatal = false;
                    s.polled_elsewhere = false;
                    if !page.more {
                        s.caught_up_at = Some(started);
                    }
                });
                if !page.more {
                    break;
                }
            }
        }
        Ok(())
    }

    fn update_state(&self, id: &str, change: impl FnOnce(&mut ConnectorState)) {
        if let Ok(mut states) = self.states.lock() {
            if let Some(state) = states.get_mut(id) {
                change(state);
            }
        }
    }

    /// Sets every connector's poll-lag gauge (now − when its poll last caught up); `/metrics`
    /// calls it before rendering, so the gauge is as of the scrape.
    pub fn refresh_lag(&self) {
        for (id, state) in self.connector_states() {
            if let Some(lag) = state.lag_secs {
                crate::metrics::global().poll_lag(&id, Duration::from_secs_f64(lag));
            }
        }
    }

    /// Every connector instance's state, in configuration order, with its lag as of now.
    pub fn connector_states(&self) -> Vec<(String, ConnectorState)> {
        let Ok(states) = self.states.lock() else {
            return Vec::new();
        };
        let now = chrono::Utc::now();
        self.order
            .iter()
            .filter_map(|id| {
                let mut state = states.get(id)?.clone();
                state.lag_secs = state.caught_up_at.map(|at| (now - at).to_std().unwrap_or_default().as_secs_f64());
                Some((id.clone(), state))
            })
            .collect()
    }

    /// The decision point's and the facts' failures that have not been followed by a success.
    pub fn last_failures(&self) -> LastFailures {
        self.last_failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Says decisions were recorded, so an overlapped pass's posting stage looks at once.
    pub(crate) fn decisions_recorded(&self) {
        self.queued.notify_one();
    }

    pub(crate) fn note_decision(&self, failure: Option<String>) {
        if let Ok(mut f) = self.last_failures.lock() {
            f.decision = failure.map(|e| (chrono::Utc::now(), e));
        }
    }

    pub(crate) fn note_facts(&self, failure: Option<String>) {
        if let Ok(mut f) = self.last_failures.lock() {
            f.facts = failure.map(|e| (chrono::Utc::now(), e));
        }
    }

    /// Marks the work loop as turning (liveness).
    pub fn beat(&self) {
        self.heartbeat.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// How long ago the work loop last showed it was turning.
    pub fn since_heartbeat(&self) -> Duration {
        let ms = chrono::Utc::now().timestamp_millis() - self.heartbeat.load(Ordering::Relaxed);
        Duration::from_millis(ms.max(0) as u64)
    }

    /// The decision point's name (`rego:deskbridge.access.decision`).
    pub fn decision_point_name(&self) -> &str {
        &self.decision_point_name
    }

    /// The decision point (for the admin API's mapping preview).
    pub fn decision_point(&self) -> &Arc<dyn DecisionPoint> {
        &self.decision_point
    }

    /// The comment renderer (for the admin API's mapping preview).
    pub fn renderer(&self) -> &CommentRenderer {
        &self.renderer
    }

    /// Connector instance ids in configuration order.
    pub fn connector_ids(&self) -> &[String] {
        &self.order
    }

    /// A pass over what is already stored, without polling, that keeps going until `until`:
    /// it decides what webhook deliveries store as they store it ([`Pipeline::versions_stored`])
    /// and posts what that queues, the two overlapping, waiting for the next delivery between
    /// rounds instead of polling the store. `serve` runs it when a webhook wakes it between
    /// polls, until the next poll is due; the poll, the provisioning evidence, retries not yet
    /// due and anything the webhooks did not bring wait for the next full pass
    /// ([`Pipeline::run_once`]). [`Pipeline::stop`] ends it at once.
    pub async fn run_stored(&self, until: tokio::time::Instant) -> anyhow::Result<Report> {
        let mut report = Report::default();
        self.beat();
        let intake = AtomicBool::new(true);
        let deciding = Arc::new(AtomicBool::new(true));
        let post = self.spawn_rounds(Stage::Post, deciding.clone(), Some(until));
        let decided = {
            let decide = async {
                let result = self.rounds(Stage::Decide, &intake, &mut report, Some(until)).await;
                self.stage_ended(&deciding, &self.queued);
                result
            };
            tokio::pin!(decide);
            // On stop the stages end by themselves (stop signals them); at `until` the intake
            // closes and they finish what is stored.
            tokio::select! {
                done = &mut decide => done,
                () = tokio::time::sleep_until(until) => {
                    self.stage_ended(&intake, &self.stored);
                    decide.await
                }
            }
        };
        let (posted, post) = post.join().await;
        report.absorb(posted);
        decided?;
        post?;
        self.pass_ended(report).await
    }

    /// One full pass: poll, decide everything due, post everything due.
    pub async fn run_once(&self) -> anyhow::Result<Report> {
        let mut report = Report::default();
        self.beat();
        self.poll_decide_post(&mut report).await?;
        // Provisioning evidence never holds up the decisions' comments: a failure here is
        // logged and the pass goes on to post.
        if let Some(provisioning) = &self.provisioning {
            match crate::provisioning::engine::run(self, provisioning).await {
                Ok(done) => {
                    report.evidence = done.processed + done.timers;
                    if let Ok(mut blocked) = self.provisioning_blocked.lock() {
                        *blocked = done.blocked;
                    }
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "the provisioning pass failed; it runs again next pass"),
            }
        }
        self.post_all(&mut report).await?;
        self.pass_ended(report).await
    }

    /// What follows every pass: the heartbeat, the metrics, the last report.
    async fn pass_ended(&self, report: Report) -> anyhow::Result<Report> {
        self.beat();
        let metrics = crate::metrics::global();
        metrics.pass();
        match self.store.backlog().await {
            Ok(backlog) => metrics.backlog(&backlog),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "counting unfinished work for metrics failed"),
        }
        if let Ok(mut last) = self.last_report.lock() {
            *last = Some((chrono::Utc::now(), report.clone()));
        }
        Ok(report)
    }

    /// When the last pass ended and what it did.
    pub fn last_report(&self) -> Option<(chrono::DateTime<chrono::Utc>, Report)> {
        self.last_report.lock().ok().and_then(|last| last.clone())
    }

    /// Polls every connector and decides what arrives, the two overlapping: stored batches are
    /// decided (on a task of their own) while the next pages are read.
    pub async fn poll_and_decide(&self, report: &mut Report) -> anyhow::Result<()> {
        let polling = Arc::new(AtomicBool::new(true));
        let decide = self.spawn_rounds(Stage::Decide, polling.clone(), None);
        let mut polled = Report::default();
        let polled_result = self.poll(&mut polled).await;
        self.stage_ended(&polling, &self.stored);
        let (decided, decided_result) = decide.join().await;
        report.absorb(polled);
        report.absorb(decided);
        polled_result?;
        decided_result
    }

    /// Polls, decides and posts, the three overlapping: comments are posted (on a task of their
    /// own) while later pages are still read and decided, so a large backlog does not hold
    /// every comment back until the whole of it is decided.
    pub async fn poll_decide_post(&self, report: &mut Report) -> anyhow::Result<()> {
        let deciding = Arc::new(AtomicBool::new(true));
        let post = self.spawn_rounds(Stage::Post, deciding.clone(), None);
        let read_result = self.poll_and_decide(report).await;
        self.stage_ended(&deciding, &self.queued);
        let (posted, post_result) = post.join().await;
        report.absorb(posted);
        read_result?;
        post_result
    }

    /// Runs [`Pipeline::rounds`] of `stage` on a task of its own (see [`StageTask`]), while
    /// `running` says the stage before it goes on.
    fn spawn_rounds(
        &self,
        stage: Stage,
        running: Arc<AtomicBool>,
        until: Option<tokio::time::Instant>,
    ) -> StageTask<(Report, anyhow::Result<()>)> {
        let this = self.handle();
        StageTask::spawn(async move {
            let mut report = Report::default();
            let result = this.rounds(stage, &running, &mut report, until).await;
            (report, result)
        })
    }

    /// Says the stage before `signal`'s has ended, so the stage after it does its last round
    /// at once instead of after its pause.
    fn stage_ended(&self, running: &AtomicBool, signal: &tokio::sync::Notify) {
        running.store(false, Ordering::SeqCst);
        signal.notify_one();
    }

    /// Runs `stage` round after round while the stage before it is `running`, waiting between
    /// rounds for that stage's signal, and once more after it ended. The wait is at most
    /// [`STAGE_WAIT`], or with `until` as long as it takes (up to `until`): the stage before
    /// signals every piece of work it hands on and its own end. One pass start serves every
    /// round: what fails during the pass is not retried within it.
    async fn rounds(
        &self,
        stage: Stage,
        running: &AtomicBool,
        report: &mut Report,
        until: Option<tokio::time::Instant>,
    ) -> anyhow::Result<()> {
        let pass_start = crate::store::now();
        loop {
            // Read before the round, so one more round follows the end of the stage before.
            let more_coming = running.load(Ordering::SeqCst);
            match stage {
                Stage::Decide => self.decide_due_before(report, &pass_start).await?,
                Stage::Post => self.post_due_before(report, &pass_start).await?,
            }
            if !more_coming || self.stopping() {
                return Ok(());
            }
            let signal = match stage {
                Stage::Decide => &self.stored,
                Stage::Post => &self.queued,
            };
            let wait = until.map_or(STAGE_WAIT, |until| until.saturating_duration_since(tokio::time::Instant::now()));
            let _ = tokio::time::timeout(wait, signal.notified()).await;
            self.beat();
        }
    }

    /// Normalizes and decides every due inbox row, batch after batch.
    pub async fn decide_all(&self, report: &mut Report) -> anyhow::Result<()> {
        self.decide_due_before(report, &crate::store::now()).await
    }

    /// Decides every new inbox row and every pending one due before `pass_start` (a request
    /// that fails during the pass is not retried within it). A batch that claimed less than
    /// it could is the last: nothing else was due when it was claimed, and what arrives later
    /// signals its own round ([`Pipeline::versions_stored`]). Each batch is decided and written
    /// on a task of its own ([`Pipeline::spawn_batch`]), up to [`BATCHES_IN_FLIGHT`] at once:
    /// the next batch is claimed and decided while the one before it is written, and batches
    /// are written in the order they were claimed. After a failure nothing more is claimed;
    /// what is in flight is still written, then the round fails.
    async fn decide_due_before(&self, report: &mut Report, pass_start: &str) -> anyhow::Result<()> {
        // The batches claimed and not yet joined, oldest first, and when the newest is written.
        let mut in_flight: std::collections::VecDeque<BatchTask> = std::collections::VecDeque::new();
        let mut last_written: Option<tokio::sync::oneshot::Receiver<()>> = None;
        let mut claim = true;
        let mut failure = None;
        loop {
            if claim && failure.is_none() && !self.stopping() && in_flight.len() < BATCHES_IN_FLIGHT {
                match self.claim_batch(!in_flight.is_empty(), pass_start).await {
                    Ok(rows) => {
                        // A batch that claimed less than it could is the last one due.
                        claim = rows.len() as i64 >= self.settings.batch_size;
                        if !rows.is_empty() {
                            let (written_tx, written) = tokio::sync::oneshot::channel();
                            in_flight.push_back(self.spawn_batch(rows, last_written.replace(written), written_tx));
                        }
                    }
                    Err(e) => failure = Some(e),
                }
                continue;
            }
            let Some(oldest) = in_flight.pop_front() else {
                return failure.map_or(Ok(()), Err);
            };
            let (done, result) = oldest.join().await;
            // A batch that moved no row on ends the claiming (a row that neither decides nor
            // fails is not claimed over and over); one that gave rows back claims them again.
            let moved = progress(&done) != progress(&Report::default());
            report.absorb(done);
            match result {
                Ok(given_back) => claim = moved && (claim || given_back),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
    }

    /// Posts every due comment, batch after batch.
    pub async fn post_all(&self, report: &mut Report) -> anyhow::Result<()> {
        self.post_due_before(report, &crate::store::now()).await
    }

    /// Posts every comment queued, and every retry due before `pass_start` (a post that fails
    /// during the pass is not tried again within it); a batch that claimed less than it could
    /// is the last (decisions signal their own round, [`Pipeline::decisions_recorded`]).
    async fn post_due_before(&self, report: &mut Report, pass_start: &str) -> anyhow::Result<()> {
        loop {
            let before = (report.posted, report.failed_posts, report.parked);
            let more = self.post_due(report, pass_start).await?;
            if !more || self.stopping() || (report.posted, report.failed_posts, report.parked) == before {
                return Ok(());
            }
        }
    }
}

/// What a report counts of deciding: whether a turn of the decide loop moved any row on.
fn progress(report: &Report) -> (usize, usize, usize, usize, usize) {
    (
        report.decided,
        report.settled,
        report.failed_decisions,
        report.contended,
        report.parked,
    )
}

/// A stage of a pass on a task of its own, so the stages' work (a page parsed and stored, a
/// batch decided and written, comments posted) runs side by side on the runtime's threads
/// instead of taking turns on one. Joined by the pass that started it; aborted when that pass
/// is dropped unfinished, as a stage joined in the pass's own task would be.
struct StageTask<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> StageTask<T> {
    fn spawn(work: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(work))
    }

    /// What the task gave, or an error if it was cancelled. A task that panicked panics here,
    /// as it would have in the pass's own task.
    async fn outcome(mut self) -> anyhow::Result<T> {
        match (&mut self.0).await {
            Ok(done) => Ok(done),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(anyhow::anyhow!("a stage of the pass was cancelled: {e}")),
        }
    }
}

impl<T: Send + 'static> StageTask<(Report, anyhow::Result<T>)> {
    /// The task's report and result (see [`StageTask::outcome`]).
    async fn join(self) -> (Report, anyhow::Result<T>) {
        self.outcome().await.unwrap_or_else(|e| (Report::default(), Err(e)))
    }
}

/// A connector's pages, read in order, the next one fetched ahead on a task of its own while
/// the caller stores the current one ([`Pipeline::poll`], [`Pipeline::backfill`]). A page
/// fetched ahead is only handed out for the cursor it was fetched from; dropping the reader
/// drops it unread.
struct PageReader {
    connector: Arc<dyn Connector>,
    ahead: Option<(Cursor, StageTask<Result<Page, ConnectorError>>)>,
}

impl PageReader {
    fn new(connector: &Arc<dyn Connector>) -> Self {
        Self {
            connector: connector.clone(),
            ahead: None,
        }
    }

    /// The page at `cursor`: the one fetched ahead from it, or else fetched now. The outer
    /// error is the fetching task's (a cancel); the inner one is the connector's.
    async fn page(&mut self, cursor: &Cursor) -> anyhow::Result<Result<Page, ConnectorError>> {
        match self.ahead.take() {
            Some((from, task)) if from == *cursor => task.outcome().await,
            _ => Ok(self.connector.poll(cursor).await),
        }
    }

    /// Starts fetching the page at `next` (the page being stored's `next`).
    fn fetch_ahead(&mut self, next: &Cursor) {
        let (connector, from) = (self.connector.clone(), next.clone());
        self.ahead = Some((next.clone(), StageTask::spawn(async move { connector.poll(&from).await })));
    }
}

/// A batch decided and written on a task of its own (see [`Pipeline::spawn_batch`]): its report
/// and whether a row was given back to be decided again.
type BatchTask = StageTask<(Report, anyhow::Result<bool>)>;

impl<T> Drop for StageTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The later stages of an overlapped pass (see [`Pipeline::poll_decide_post`]).
#[derive(Clone, Copy)]
enum Stage {
    /// Deciding what polling stored.
    Decide,
    /// Posting what deciding queued.
    Post,
}

/// Batches claimed at once by a decide round: one decided while the one before it is written.
/// Three (two decided side by side) measured slower on two cores: 1,867–2,234 against
/// 2,376–2,584 tickets/s end to end, with 10–20 % more CPU per ticket.
const BATCHES_IN_FLIGHT: usize = 2;

/// The longest a stage of an overlapped pass waits for the stage before it to signal more work.
const STAGE_WAIT: Duration = Duration::from_millis(10);

/// How much work runs at once: one at first and after any failure, one more after each
/// success, up to a bound (additive increase, reset on failure).
struct Window {
    size: usize,
    max: usize,
}

impl Window {
    fn new(max: usize) -> Self {
        Self::resume(1, max)
    }

    /// A window that goes on at `size` (where an earlier one ended).
    fn resume(size: usize, max: usize) -> Self {
        let max = max.max(1);
        Self {
            size: size.clamp(1, max),
            max,
        }
    }

    fn size(&self) -> usize {
        self.size
    }

    fn answered(&mut self, ok: bool) {
        self.size = if ok { (self.size + 1).min(self.max) } else { 1 };
    }
}

/// The lease that makes one replica the poller of a connector instance.
fn poll_lease(connector: &str) -> String {
    format!("poll:{connector}")
}

/// Whether a store error says another replica took the claimed work over or decided the same
/// ticket meanwhile: the row is skipped (or decided again), not a failure of the pass.
fn contended(error: &anyhow::Error) -> bool {
    error.downcast_ref::<crate::store::LostClaim>().is_some() || error.downcast_ref::<crate::store::ChangedMeanwhile>().is_some()
}

/// Whether a connector error means nothing will work until an admin acts.
pub fn is_fatal(error: &ConnectorError) -> bool {
    matches!(error, ConnectorError::Unauthorized { .. } | ConnectorError::Config { .. })
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn a_resumed_window_goes_on_where_the_last_ended_within_its_bound() {
        let mut window = Window::new(4);
        assert_eq!(window.size(), 1, "a new window starts alone");
        for _ in 0..6 {
            window.answered(true);
        }
        assert_eq!(window.size(), 4, "successes widen it to its bound, no further");
        let mut next = Window::resume(window.size(), 4);
        assert_eq!(next.size(), 4, "the next batch goes on at that width");
        next.answered(false);
        assert_eq!(
            Window::resume(next.size(), 4).size(),
            1,
            "after a failure the next batch starts alone"
        );
        assert_eq!(Window::resume(9, 3).size(), 3, "a smaller bound (fewer connectors) caps it");
        assert_eq!(Window::resume(0, 0).size(), 1, "never less than one");
    }
}
