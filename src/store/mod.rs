//! Durable state: cursors, the inbox of raw tickets, decisions, the outbox of comments and the
//! audit log, in one SQLite file (one replica) or one PostgreSQL database (any number of
//! replicas). Each page of tickets is stored in one transaction together with the cursor that
//! follows it, so a crash never skips or loses a ticket.
//!
//! Both backends run the same SQL through sqlx's `Any` driver (`$n` placeholders, which SQLite
//! accepts too); what differs — migrations, row locking, serializing the audit chain — is in
//! [`Backend`]. Work is claimed with a lease before it is done, and every write that finishes
//! claimed work checks the claim is still its own, so a replica that stalls past its lease
//! cannot record a second decision or comment.

pub mod audit;
mod inbox;
mod leases;
pub mod lifecycle;
mod outbox;
mod parking;
mod reads;
#[doc(hidden)]
pub mod testing;
mod tokens;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deskbridge_connector::Ticket;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions as _, Connection as _, Executor as _};

pub use audit::{AuditRecord, Event};
pub use inbox::{content_digest, DecidedRow, Finished, Prior, Unwritten};
pub use parking::{Halt, Parked, Retried};
pub use tokens::StoreVault;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// Which database holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file; one deskbridge process at a time.
    Sqlite,
    /// PostgreSQL; any number of replicas.
    Postgres,
}

impl Backend {
    /// What claiming a row appends to its `SELECT`: PostgreSQL skips rows another replica has
    /// locked; SQLite has one writer, so there is nothing to skip.
    fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The conflict clause of a multi-row write inside a transaction (`INSERT{}`, `UPDATE{}`).
    /// On SQLite, `OR FAIL`: a failing row stops the statement but keeps the rows it wrote
    /// before, so SQLite need not journal the pages the statement changes in order to undo it
    /// alone. Under the default (`ABORT`) every such statement copied the pages earlier
    /// statements of its transaction had changed to a temporary file first: 47 % of the
    /// process's `pwrite` calls in a backlog (`strace`, 4 s). Nothing is kept either way,
    /// because every caller gives up the whole transaction on an error. PostgreSQL has no such
    /// clause; its statement is undone whole as before.
    pub(crate) fn or_fail(self) -> &'static str {
        match self {
            Self::Sqlite => " OR FAIL",
            Self::Postgres => "",
        }
    }
}

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where this process writes: on PostgreSQL the pool itself; on SQLite a pool of one
    /// connection that only makes the writer connection `writers` holds (and a new one should
    /// that one fail).
    writer: AnyPool,
    backend: Backend,
    /// The SQLite file, when the store is one.
    path: Option<std::sync::Arc<std::path::PathBuf>>,
    /// Held while this process is the SQLite file's one worker (see [`Store::exclusive`]).
    writer_lock: Option<std::sync::Arc<std::fs::File>>,
    /// This process's SQLite writes queue here, first come first served, for the file's one
    /// write lock and the one connection that writes (see [`Store::write_turn`]). `None` on
    /// PostgreSQL.
    writers: Option<std::sync::Arc<tokio::sync::Mutex<WriterSlot>>>,
    /// The WAL's checkpoints, run beside the writers (see [`Checkpoints`]).
    checkpoints: std::sync::Arc<Checkpoints>,
    /// The audit chain's last record as this process last wrote it (SQLite; see
    /// [`WriteTx::commit`]).
    audit_head: AuditHead,
    /// Keys comment markers; made once per installation, kept in the store.
    marker_key: std::sync::Arc<secrecy::SecretString>,
    /// Who this process is when it claims work.
    holder: std::sync::Arc<str>,
    /// How long a claim lasts before another replica may take the work over.
    lease: Duration,
}

/// Claimed work was taken over by another replica (this one stalled past its lease). Nothing
/// was written; the other replica finishes the work.
#[derive(Debug, thiserror::Error)]
#[error("the claim on this work expired and another replica took it over; nothing was written")]
pub struct LostClaim;

/// Checks a fenced write (`… WHERE id = … AND claimed_by = <this holder>`) found its row: when
/// it matched nothing, another replica holds the work now.
fn still_claimed(result: sqlx::any::AnyQueryResult) -> anyhow::Result<()> {
    if result.rows_affected() == 0 {
        Err(LostClaim.into())
    } else {
        Ok(())
    }
}

/// Another replica decided the same ticket between this replica's read and its write; nothing
/// was written, and the request should be decided again from fresh state.
#[derive(Debug, thiserror::Error)]
#[error("another replica decided this ticket meanwhile; nothing was written")]
pub struct ChangedMeanwhile;

/// The sequence number and hash of the audit chain's last record, as this process last
/// committed it (SQLite): the next transaction's records are chained after it without reading
/// the chain's head, one statement fewer per write. Another writer of the file (a second
/// process) may have appended since; the first insert then collides on the sequence number,
/// and the head is read again ([`audit::chain_and_write`]).
type AuditHead = std::sync::Arc<std::sync::Mutex<Option<(i64, String)>>>;

/// A write transaction: the database transaction and the audit records appended in it.
///
/// Audit records are kept in memory ([`audit::append`]) and join the chain when the
/// transaction commits ([`WriteTx::commit`]). No lock serializes write transactions on
/// PostgreSQL: a write whose checks depend on other writers' work takes the locks that make
/// them hold ([`WriteTx::lock_tickets`], [`WriteTx::lock_lifecycles`]). Dropping a `WriteTx`
/// without committing rolls back both.
pub struct WriteTx {
    tx: Tx,
    chain: audit::Pending,
    pool: AnyPool,
    backend: Backend,
    audit_head: AuditHead,
}

/// Where a write transaction runs.
enum Tx {
    /// PostgreSQL: a transaction on a connection of the pool.
    Pooled(sqlx::Transaction<'static, sqlx::Any>),
    /// SQLite: this process's writer connection, in its write turn, after `BEGIN IMMEDIATE`.
    /// Not committed, it is rolled back before the next turn writes (see [`WriterSlot`]).
    Turn(WriteTurn),
}

/// This process's one SQLite writer connection, held for good rather than taken from a pool
/// for each write and given back: sqlx pings a connection given back to its pool, a round trip
/// to the connection's thread after every transaction and every single write statement.
pub(crate) struct WriterSlot {
    conn: sqlx::AnyConnection,
    /// A transaction was begun on `conn` and not committed: it is rolled back before anything
    /// else runs on it.
    open: bool,
    /// Makes a new writer connection should this one fail.
    factory: AnyPool,
}

impl WriterSlot {
    /// Rolls back a transaction its last turn left open (dropped before its commit, or its
    /// commit interrupted). A rollback that fails for any reason but there being no
    /// transaction (its commit had gone through) replaces the connection: closing the old
    /// one rolls its transaction back.
    async fn settle(&mut self) -> anyhow::Result<()> {
        if !self.open {
            return Ok(());
        }
        if let Err(e) = self.conn.execute("ROLLBACK").await {
            let none_open = e
                .as_database_error()
                .is_some_and(|d| d.message().contains("no transaction is active"));
            if !none_open {
                tracing::warn!(error = %e, "rolling back an unfinished write failed; opening a new writer connection");
                self.conn = self.factory.acquire().await?.detach();
            }
        }
        self.open = false;
        Ok(())
    }
}

/// This process's turn to write to its SQLite file (see [`Store::write_turn`]), with the writer
/// connection. Given up when dropped, and then, if one is due, a WAL checkpoint starts beside
/// the next writer ([`Checkpoints`]): whatever the write was, a transaction or a single
/// statement. A transaction left open is rolled back at once, in a turn of its own.
pub(crate) struct WriteTurn {
    guard: tokio::sync::OwnedMutexGuard<WriterSlot>,
    checkpoints: std::sync::Arc<Checkpoints>,
    pool: AnyPool,
}

impl WriteTurn {
    /// The writer connection.
    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.guard.conn
    }
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        let writers = tokio::sync::OwnedMutexGuard::mutex(&self.guard);
        if self.guard.open {
            // Waits behind this guard (and any writer already queued, which settles it first).
            // Outside a runtime nothing is started: the next turn settles it.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let writers = writers.clone();
                runtime.spawn(async move {
                    if let Err(e) = writers.lock().await.settle().await {
                        tracing::warn!(error = %e, "rolling back an unfinished write failed; the next write tries again");
                    }
                });
            }
        }
        self.checkpoints.after_write(&self.pool, writers);
    }
}

/// SQLite's WAL is copied back into the database file by a checkpoint. Left to SQLite, the
/// commit that grows the WAL past 1,000 pages runs it, fsync included, while it still holds
/// the write lock, and every writer behind it waits. Here no commit checkpoints
/// (`wal_autocheckpoint = 0`); after a write, once the last one is at least [`Self::EVERY`]
/// old, a passive checkpoint runs on another connection, beside the writers instead of in
/// front of them. One at a time.
///
/// A passive checkpoint copies only the frames no reader still needs, and the log starts
/// again from its beginning only when a writer finds every frame of it copied and no reader
/// in it. In a backlog the writers append frames while each checkpoint runs, so that never
/// happened and the log grew without end: past 4 GB for a 1.4 GB database at 100,000
/// tickets. So when a passive checkpoint leaves more than `restart_frames` frames in the log,
/// a restarting one runs at once with this process's writers held back (the write turn,
/// [`Store::write_turn`]): it copies the frames written meanwhile, syncs the database file
/// and waits, briefly ([`Self::RESTART_WAIT`]), for readers still in the log; then the next
/// writer starts the log again. The file keeps its size and is written over. A reader that
/// outlasts the wait (another process reading a large table) leaves the log as it is; the
/// next try waits until the log has grown by a quarter of the limit again, so that the
/// writers are not held back every second meanwhile. So the log is bounded, if not tightly:
/// at 100,000 tickets in a backlog its file peaked at 1.9 GB where it passed 4.3 GB before.
struct Checkpoints {
    running: std::sync::atomic::AtomicBool,
    /// When the last one started (ms since the Unix epoch).
    last: std::sync::atomic::AtomicI64,
    /// Frames in the log past which a checkpoint holds the writers back to restart it.
    restart_frames: i64,
    /// Frames in the log past which the next restart is tried: `restart_frames`, or more after
    /// a reader kept the last one from restarting the log.
    restart_at: std::sync::atomic::AtomicI64,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Self::restarting_past(Self::RESTART_FRAMES)
    }
}

impl Checkpoints {
    const EVERY: chrono::Duration = chrono::Duration::seconds(1);
    /// 262,144 frames: 1 GiB of 4 KiB pages. A restart held the writers back for 50-250 ms on
    /// this project's test machine (mostly the database file's sync), so it must be rare: at
    /// 16,384 frames (truncating the file too) the p99 of webhooks at 200/s doubled.
    const RESTART_FRAMES: i64 = 262_144;
    /// How long a restarting checkpoint waits for readers, holding the writers back. A reader
    /// that outlasts it leaves the log for the next checkpoint.
    const RESTART_WAIT: Duration = Duration::from_millis(100);

    fn restarting_past(restart_frames: i64) -> Self {
        Self {
            running: Default::default(),
            last: Default::default(),
            restart_frames,
            restart_at: std::sync::atomic::AtomicI64::new(restart_frames),
        }
    }

    fn after_write(self: &std::sync::Arc<Self>, pool: &AnyPool, writers: &std::sync::Arc<tokio::sync::Mutex<WriterSlot>>) {
        use std::sync::atomic::Ordering;
        let now = Utc::now().timestamp_millis();
        // Outside a runtime (a turn dropped as the runtime shuts down) nothing is started: the
        // last connection's close checkpoints.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if now - self.last.load(Ordering::SeqCst) < Self::EVERY.num_milliseconds() || self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        self.last.store(now, Ordering::SeqCst);
        let (this, pool, writers) = (self.clone(), pool.clone(), writers.clone());
        runtime.spawn(async move {
            if let Err(e) = this.checkpoint(&pool, &writers).await {
                tracing::warn!(error = %e, "a WAL checkpoint failed; the next write starts another");
            }
            this.running.store(false, Ordering::SeqCst);
        });
    }

    /// A passive checkpoint beside the writers, then, if the log is longer than
    /// `restart_frames`, a restarting one with them held back (see [`Checkpoints`]).
    async fn checkpoint(&self, pool: &AnyPool, writers: &std::sync::Arc<tokio::sync::Mutex<WriterSlot>>) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        // (busy, frames in the log, frames copied)
        let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(pool).await?;
        if frames <= self.restart_at.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Not through `Store::write_turn`: giving that up would start another checkpoint.
        let Ok(mut turn) = tokio::time::timeout(SQLITE_BUSY_TIMEOUT, writers.lock()).await else {
            anyhow::bail!("waited {SQLITE_BUSY_TIMEOUT:?} for this process's writes to restart the WAL");
        };
        // A transaction left open would keep the log from starting again.
        turn.settle().await?;
        let mut conn = pool.acquire().await?;
        let restarted = async {
            sqlx::query(&busy_timeout(Self::RESTART_WAIT)).execute(&mut *conn).await?;
            let answer: sqlx::Result<(i64, i64, i64)> = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)").fetch_one(&mut *conn).await;
            sqlx::query(&busy_timeout(SQLITE_BUSY_TIMEOUT)).execute(&mut *conn).await?;
            answer
        }
        .await;
        match restarted {
            Ok((0, _, _)) => {
                self.restart_at.store(self.restart_frames, Ordering::SeqCst);
                Ok(())
            }
            Ok((_, frames, copied)) => {
                self.restart_at.store(frames + self.restart_frames / 4, Ordering::SeqCst);
                tracing::debug!(
                    frames,
                    copied,
                    "a reader kept the WAL from starting again; tried again once it has grown"
                );
                Ok(())
            }
            Err(e) => {
                // Its busy timeout may not be restored: no other work gets this connection.
                conn.close_on_drop();
                Err(e.into())
            }
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        match &self.tx {
            Tx::Pooled(tx) => tx,
            Tx::Turn(turn) => &turn.guard.conn,
        }
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.tx {
            Tx::Pooled(tx) => tx,
            Tx::Turn(turn) => turn.conn(),
        }
    }
}

/// The PostgreSQL advisory lock class of provisioning state (lifecycles and findings):
/// recording a decision takes it shared, processing entitlement changes and timers exclusive.
const LIFECYCLE_LOCK: i64 = 7_305_812_010;
/// The advisory lock key space (first of two `int4` keys) of one ticket or one beneficiary.
const SUBJECT_LOCK_CLASS: i32 = 730_581_201;

impl WriteTx {
    /// Writes the audit records appended in this transaction, then commits. On SQLite the
    /// records are chained inside the transaction (SQLite has one writer). On PostgreSQL they
    /// are committed with the transaction's other writes as unsealed records, then sealed into
    /// the chain; a sealing that fails after the commit is logged, not returned (the writes
    /// stand, and the next sealing by any replica, or the next start, seals the records).
    pub async fn commit(self) -> anyhow::Result<()> {
        let WriteTx {
            tx,
            chain,
            pool,
            audit_head,
            ..
        } = self;
        let records = chain.records;
        match tx {
            Tx::Turn(mut turn) => {
                // Chained after the head this process last committed, without reading it:
                // `audit::chain_and_write` reads it again if another writer of the file
                // appended since. Kept only once the records are committed.
                // A poisoned lock's value is still a head some write committed: only a hint,
                // which the sequence number's uniqueness checks.
                let cached = || audit_head.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let after = cached().clone();
                let head = audit::chain_and_write(turn.conn(), records, Backend::Sqlite, after).await?;
                turn.conn().execute("COMMIT").await?;
                turn.guard.open = false;
                if let Some(head) = head {
                    *cached() = Some(head);
                }
            }
            Tx::Pooled(mut tx) => {
                audit::write_unsealed(&mut tx, &records).await?;
                tx.commit().await?;
                if !records.is_empty() {
                    if let Err(e) = audit::seal(&pool).await {
                        tracing::warn!(error = %e, "sealing audit records into the chain failed; they are committed and the next sealing takes them");
                    }
                }
            }
        }
        Ok(())
    }

    /// Serializes this transaction with every other writer of the same tickets and
    /// beneficiaries (PostgreSQL; SQLite has one writer): a decision's "has anyone decided
    /// this ticket since I read it" check, and a lifecycle's "what does this person already
    /// hold", see every such write committed before. Also takes the provisioning lock shared.
    /// Every writer takes its locks in one global key order, so two writers cannot deadlock.
    pub async fn lock_tickets(&mut self, subjects: &[String]) -> anyhow::Result<()> {
        if self.backend != Backend::Postgres || subjects.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(LIFECYCLE_LOCK)
            .execute(&mut **self)
            .await?;
        // Keys sorted here, across every chunk: all writers lock in one global order.
        let mut keys: Vec<i32> = subjects
            .iter()
            .map(|s| {
                let digest = Sha256::digest(s.as_bytes());
                i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(500) {
            // A VALUES list is read in the order written.
            let mut sql = format!("SELECT pg_advisory_xact_lock({SUBJECT_LOCK_CLASS}, k) FROM (VALUES ");
            push_placeholders(&mut sql, chunk.len(), 1, Backend::Postgres);
            sql.push_str(") AS v(k)");
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query.bind(*key);
            }
            query.execute(&mut **self).await?;
        }
        Ok(())
    }

    /// Serializes this transaction with every other writer of provisioning state
    /// (PostgreSQL; SQLite has one writer): processing an entitlement change or a timer reads
    /// and moves lifecycles of any ticket.
    pub async fn lock_lifecycles(&mut self) -> anyhow::Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(LIFECYCLE_LOCK)
                .execute(&mut **self)
                .await?;
        }
        Ok(())
    }
}

/// `$first, $first+1, …` for `count` parameters.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// Rows per multi-row statement (at most 16 parameters each, so at most 4,000 parameters: far
/// inside both databases' limits, 32,766 for SQLite and 65,535 for PostgreSQL). A batch's
/// write takes one statement per table this way: on SQLite every other write of this process
/// waits while it runs, and each statement costs a round trip to the database's thread.
pub(crate) const ROWS_PER_STATEMENT: usize = 250;

/// The placeholder of parameter `n` when the ones before it were written by
/// [`push_placeholders`]: `$n` on PostgreSQL, `?` on SQLite.
pub(crate) fn next_placeholder(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Postgres => format!("${n}"),
        Backend::Sqlite => "?".to_owned(),
    }
}

/// Appends `rows` groups of `columns` placeholders, for a statement with no other parameters:
/// numbered on PostgreSQL (`($1, $2), ($3, $4)`), anonymous on SQLite (`(?, ?), (?, ?)`).
/// SQLite finds a numbered parameter by a linear scan of the statement's names each time one
/// is bound, so binding a multi-row insert's numbered parameters costs the square of their
/// count; anonymous ones are bound in order at once.
pub(crate) fn push_placeholders(sql: &mut String, rows: usize, columns: usize, backend: Backend) {
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        match backend {
            Backend::Postgres => sql.push_str(&placeholders(r * columns + 1, columns)),
            Backend::Sqlite => {
                for c in 0..columns {
                    sql.push_str(if c == 0 { "?" } else { ", ?" });
                }
            }
        }
        sql.push(')');
    }
}

/// `[store]` of the configuration file: exactly one of `path` or `url`. The store owns its
/// settings; the configuration file only reads them.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file (created if missing), for one deskbridge process.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// PostgreSQL URL (`postgres://user:password@host/db`), shared by any number of replicas.
    /// It may hold a password: write it as `${VAR}`; it is never logged.
    #[serde(default)]
    pub url: Option<secrecy::SecretString>,
    /// Seconds a replica's claim on a ticket or comment lasts: a replica that dies holds its
    /// work this long before another takes it over. Keep it above the ITSM's slowest post
    /// (timeout × retries).
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// This replica's stable name (a StatefulSet pod name, say). With one, a restarted replica
    /// resumes its own claimed work at once; without, it is a new replica each start. Two live
    /// replicas must never share a name.
    #[serde(default)]
    pub replica_id: Option<String>,
    /// The secret that keys comment markers (at least 32 characters; use `${VAR}`). Without it,
    /// a random one is made once and kept in the store. Set it to keep recognising comments
    /// already posted if the store is ever rebuilt from scratch.
    #[serde(default)]
    pub marker_key: Option<secrecy::SecretString>,
}

fn default_lease_secs() -> u64 {
    60
}

/// The default lease on claimed work.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// How long a SQLite write waits for the write lock: SQLite's `busy_timeout` (set on every
/// connection) and this process's own queue of writers.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The pragma that sets a SQLite connection's `busy_timeout` to `wait`.
fn busy_timeout(wait: Duration) -> String {
    format!("PRAGMA busy_timeout = {}", wait.as_millis())
}

/// A ticket version waiting to be normalized and decided.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    /// Row id.
    pub id: i64,
    /// Connector instance.
    pub connector: String,
    /// Ticket key.
    pub ticket_key: String,
    /// Ticket version.
    pub version: String,
    /// Human-facing number.
    pub number: String,
    /// Link.
    pub url: String,
    /// ITSM update time (RFC 3339).
    pub updated: String,
    /// Raw ticket JSON.
    pub raw: String,
    /// Failed decision attempts so far.
    pub attempts: i64,
    /// When this version arrived.
    pub received_at: String,
}

impl InboxRow {
    /// Rebuilds the connector's ticket.
    pub fn ticket(&self) -> anyhow::Result<Ticket> {
        Ok(Ticket {
            source: self.connector.clone(),
            key: self.ticket_key.clone(),
            number: self.number.clone(),
            url: self.url.clone(),
            updated: DateTime::parse_from_rfc3339(&self.updated)?.with_timezone(&Utc),
            version: self.version.clone(),
            raw: serde_json::from_str(&self.raw)?,
        })
    }
}

/// A comment waiting to be posted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Connector instance.
    pub connector: String,
    /// Ticket key.
    pub ticket_key: String,
    /// Idempotency marker.
    pub marker: String,
    /// Rendered text.
    pub body: String,
    /// The decision it reports.
    pub decision_id: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// How many times it has been claimed, this claim included. The claim is committed before
    /// any post is sent, so `1` proves no earlier attempt can have reached the ITSM.
    pub claims: i64,
}

impl OutboxRow {
    /// Whether this is the comment's first claim: nothing can have been posted before, so the
    /// lookup for its marker can be skipped.
    pub fn first_claim(&self) -> bool {
        self.claims == 1
    }
}

/// The latest decision on a ticket.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LatestDecision {
    /// Hash of the request it decided.
    pub request_hash: String,
    /// Its id.
    pub decision_id: String,
    /// Its outcome.
    pub outcome: String,
    /// The inbox row (ticket version) it decided.
    pub inbox_id: i64,
}

/// What a shadow decision point said.
#[derive(Debug, Clone)]
pub struct ShadowResult {
    /// Which decision point.
    pub pdp: String,
    /// Its outcome, when it answered.
    pub outcome: Option<String>,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// Whether it agreed with the primary outcome.
    pub agree: bool,
    /// Its raw answer.
    pub raw: Value,
}

/// One stored shadow comparison.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ShadowRow {
    /// Ticket number.
    pub number: String,
    /// Primary outcome.
    pub primary_outcome: String,
    /// Shadow decision point.
    pub shadow_pdp: String,
    /// Shadow outcome.
    pub shadow_outcome: Option<String>,
    /// Shadow error.
    pub shadow_error: Option<String>,
    /// Agreed.
    pub agree: bool,
    /// When.
    pub at: String,
}

// By hand: `agree` is stored as an integer (0/1) on both backends, and the `Any` driver does
// not turn an integer into a bool.
impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for ShadowRow {
    fn from_row(row: &'r sqlx::any::AnyRow) -> sqlx::Result<Self> {
        use sqlx::Row as _;
        Ok(Self {
            number: row.try_get("number")?,
            primary_outcome: row.try_get("primary_outcome")?,
            shadow_pdp: row.try_get("shadow_pdp")?,
            shadow_outcome: row.try_get("shadow_outcome")?,
            shadow_error: row.try_get("shadow_error")?,
            agree: row.try_get::<i64, _>("agree")? != 0,
            at: row.try_get("at")?,
        })
    }
}

/// The latest state of one ticket, for reports.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketState {
    /// Connector.
    pub connector: String,
    /// Ticket key.
    pub ticket_key: String,
    /// Number.
    pub number: String,
    /// Link to the ticket in the ITSM.
    pub url: String,
    /// Inbox status of the latest version.
    pub status: String,
    /// Its normalized JSON.
    pub normalized: String,
    /// When that version arrived.
    pub received_at: String,
    /// Failed decision attempts on it.
    pub attempts: i64,
    /// The latest decision JSON.
    pub decision: Option<String>,
}

impl TicketState {
    /// The normalized JSON and the latest decision JSON, `null` where absent or unreadable.
    pub fn parsed(&self) -> (serde_json::Value, serde_json::Value) {
        let normalized = serde_json::from_str(&self.normalized).unwrap_or(serde_json::Value::Null);
        let decision = self
            .decision
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(serde_json::Value::Null);
        (normalized, decision)
    }
}

/// Counts for progress reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Inbox rows.
    pub inbox: i64,
    /// Decisions.
    pub decisions: i64,
    /// Comments posted.
    pub posted: i64,
    /// Comments queued (not posted yet).
    pub queued: i64,
    /// Requests waiting for a decision retry.
    pub pending: i64,
}

/// Unfinished work, for metrics and `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Backlog {
    /// Ticket versions stored and not yet normalized.
    pub received: i64,
    /// Requests waiting for a decision retry.
    pub pending: i64,
    /// Ticket versions parked until `deskbridge retry`.
    pub parked_tickets: i64,
    /// Comments decided and not yet on their ticket.
    pub queued: i64,
    /// Comments parked until `deskbridge retry`.
    pub parked_comments: i64,
}

/// A time in the store's timestamp format: RFC 3339 in UTC with microseconds, which sorts as
/// time when compared as text.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Now, in the store's timestamp format.
pub fn now() -> String {
    stamp(Utc::now())
}

fn later(delay: Duration) -> String {
    stamp(Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero()))
}

/// The SQLite writer connection's page cache (KiB). Its pages stay valid from one write to the
/// next, so it holds the indexes' pages that writes touch; ticket keys arrive in no order, so a
/// large store's writes touch many. With a 100,000-ticket backlog, two pairs against SQLite's
/// default 2 MiB: CPU per ticket 647 and 622 µs against 690 and 660, the rate 1,674 and
/// 1,760/s against 1,602 and 1,671/s, peak RSS 93.1 and 89.4 MiB against 87.8 and 85.6.
const SQLITE_WRITER_CACHE_KIB: u32 = 8192;

/// A pool of `connections` to one SQLite file, each with a `cache_kib` page cache.
async fn sqlite_pool(options: &AnyConnectOptions, connections: u32, cache_kib: u32) -> anyhow::Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(connections)
        // A file on this host cannot drop a connection the way a server can; sqlx's ping
        // before every acquire was one more round trip to the connection's thread per
        // statement.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                let pragmas = format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; {}; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -{cache_kib}",
                    busy_timeout(SQLITE_BUSY_TIMEOUT)
                );
                conn.execute(pragmas.as_str()).await?;
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await?)
}

/// SHA-256 hex of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Store {
    /// Opens (creating if needed) the SQLite file and applies migrations. Any number of
    /// processes may open a file this way (reports, audit, `retry`); only one may work on it
    /// (claim, decide, post): see [`Store::exclusive`]. Migrations run under a file lock, so
    /// processes starting together on a new file do not race.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        private_file(path).map_err(|e| anyhow::anyhow!("creating the store {}: {e}", path.display()))?;
        for side in [beside(path, "-wal"), beside(path, "-shm")] {
            if side.exists() {
                private_file(&side).map_err(|e| anyhow::anyhow!("{}: {e}", side.display()))?;
            }
        }
        // Built from the file name, not parsed from text: a path holding `?`, `#` or spaces
        // opens as written (sqlx percent-encodes it into the URL and decodes it back).
        let url = SqliteConnectOptions::new().filename(path).create_if_missing(true).to_url_lossy();
        let options = AnyConnectOptions::from_url(&url)?;
        // Readers: a 512 KiB page cache per connection, not SQLite's 2 MB: in WAL mode a
        // connection's cache is dropped whenever another has committed, which during work is
        // nearly always, so the larger cache only held memory (100,000 tickets side by side:
        // peak RSS 101.1 -> 92.9 MiB at the same rate).
        let pool = sqlite_pool(&options, 4, 512).await?;
        {
            let lock = open_lock_file(path, "migrate.lock")?;
            let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock)).await??;
            SQLITE_MIGRATOR.run(&pool).await?;
            drop(lock);
        }
        // The writer: every write of this process takes its turn (`Store::write_turn`) on this
        // one connection. Nothing else in the process writes, so its cache stays valid from one
        // write to the next (the index and table pages a claim, a batch and an audit append
        // touch), instead of each write starting cold on whichever connection it got.
        let writer = sqlite_pool(&options, 1, SQLITE_WRITER_CACHE_KIB).await?;
        let conn = writer.acquire().await?.detach();
        let mut store = Self::new(pool, writer.clone(), Backend::Sqlite).await?;
        store.writers = Some(std::sync::Arc::new(tokio::sync::Mutex::new(WriterSlot {
            conn,
            open: false,
            factory: writer,
        })));
        store.path = Some(std::sync::Arc::new(path.to_owned()));
        Ok(store)
    }

    /// Makes this process the one worker of its SQLite file, or fails naming the process that
    /// is. Two processes claiming work on one file (a cron `sync --once` beside `serve`) would
    /// both claim as this file's one holder and post twice, so the second is refused. The lock
    /// is released when the process ends, however it ends. PostgreSQL needs no lock: its
    /// replicas claim work under their own names.
    pub fn exclusive(mut self) -> anyhow::Result<Self> {
        let Some(path) = self.path.clone() else {
            return Ok(self);
        };
        if self.writer_lock.is_some() {
            return Ok(self);
        }
        let mut file = open_lock_file(&path, "lock")?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                use std::io::Read as _;
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                anyhow::bail!(
                    "the store {} is in use by another deskbridge process ({}); one process works on a SQLite file at a time — stop it first, or use PostgreSQL (`[store] url`) to run replicas",
                    path.display(),
                    if holder.is_empty() { "holder unknown" } else { holder }
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                anyhow::bail!("locking the store {}: {e}", path.display())
            }
        }
        use std::io::{Seek as _, Write as _};
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "this host".into());
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        write!(file, "pid {} on {host}, since {}", std::process::id(), now())?;
        file.flush()?;
        self.writer_lock = Some(std::sync::Arc::new(file));
        Ok(self)
    }

    /// Connects to PostgreSQL (`postgres://…`) and applies migrations. Replicas may share the
    /// database; migrations take sqlx's advisory lock, so concurrent start-ups are safe.
    pub async fn connect_postgres(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let options: AnyConnectOptions = url.parse()?;
        // One direct connection first: the pool reports only "timed out" when the server is
        // unreachable, while the connection says why (refused, no such host, bad password).
        let target = describe_postgres(url);
        match tokio::time::timeout(Duration::from_secs(10), sqlx::AnyConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => anyhow::bail!(
                "cannot connect to PostgreSQL at {target}: {}",
                redact(&deskbridge_connector::urls::error_chain(&e), url)
            ),
            Err(_) => anyhow::bail!(
                "cannot connect to PostgreSQL at {target}: no answer within 10 s (a firewall dropping packets, or the wrong host)"
            ),
        }
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await?;
        POSTGRES_MIGRATOR.run(&pool).await?;
        let store = Self::new(pool.clone(), pool, Backend::Postgres).await?;
        // Records a replica left unsealed when it died between a commit and its sealing.
        if let Err(e) = store.seal_audit().await {
            tracing::warn!(error = %e, "sealing audit records left by an earlier process failed; the next write seals them");
        }
        Ok(store)
    }

    /// Opens the store a config names.
    pub async fn from_config(config: &StoreConfig) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use secrecy::ExposeSecret as _;
        let store = match (&config.path, &config.url) {
            (Some(path), None) => Self::open(path)
                .await
                .with_context(|| format!("opening store {}", path.display()))?,
            // The URL may hold a password: the error names the database, never the URL.
            (None, Some(url)) => Self::connect_postgres(url.expose_secret()).await.map_err(|e| {
                anyhow::anyhow!(
                    "connecting to the PostgreSQL store: {}",
                    redact(&format!("{e:#}"), url.expose_secret())
                )
            })?,
            _ => anyhow::bail!("[store]: set exactly one of `path` (SQLite) or `url` (PostgreSQL)"),
        };
        let mut store = store.with_lease(Duration::from_secs(config.lease_secs.max(1)));
        if let Some(key) = &config.marker_key {
            use secrecy::ExposeSecret as _;
            if key.expose_secret().chars().count() < 32 {
                anyhow::bail!("[store] marker_key: at least 32 characters are needed");
            }
            store.marker_key = std::sync::Arc::new(key.clone());
        }
        Ok(match &config.replica_id {
            Some(id) => store.with_holder(id),
            None => store,
        })
    }

    async fn new(pool: AnyPool, writer: AnyPool, backend: Backend) -> anyhow::Result<Self> {
        // SQLite serves one process, so a restarted process is the same holder and resumes its
        // claims at once. On PostgreSQL each process is a new holder unless a stable
        // `replica_id` is configured; a dead one's work is taken over when its lease ends.
        let holder = match backend {
            Backend::Sqlite => "local".to_owned(),
            Backend::Postgres => {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
                format!("{host}/{}/{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
            }
        };
        let marker_key = installation_secret(&pool, "marker_key").await?;
        Ok(Self {
            pool,
            writer,
            backend,
            path: None,
            writer_lock: None,
            writers: None,
            checkpoints: std::sync::Arc::default(),
            audit_head: AuditHead::default(),
            marker_key: std::sync::Arc::new(marker_key),
            holder: holder.into(),
            lease: DEFAULT_LEASE,
        })
    }

    /// The marker of one comment per (ticket, request version): an HMAC under this
    /// installation's key, so no requester can compute the marker of a later version and plant
    /// it on the ticket.
    pub fn marker(&self, connector: &str, ticket_key: &str, request_hash: &str) -> String {
        use hmac::Mac as _;
        use secrecy::ExposeSecret as _;
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(self.marker_key.expose_secret().as_bytes()).expect("HMAC takes a key of any length");
        mac.update(format!("{connector}\n{ticket_key}\n{request_hash}").as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        format!("{}{}", deskbridge_connector::MARKER_PREFIX, &digest[..32])
    }

    /// Sets how long claims on work last (a replica that dies holds its work this long).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets this process's identity in claims and leases. A replica that restarts under the
    /// same id resumes its own claims at once; two live replicas must never share one.
    pub fn with_holder(mut self, holder: &str) -> Self {
        self.holder = holder.into();
        self
    }

    /// How long claims on work last.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// This process's identity in claims and leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Begins a transaction that writes. Nothing serializes it with other writers on
    /// PostgreSQL: fenced updates (`… AND claimed_by = <holder>`) and unique keys keep
    /// concurrent writes apart, and a write whose checks read other writers' work takes the
    /// locks that make them hold ([`WriteTx::lock_tickets`], [`WriteTx::lock_lifecycles`]).
    /// SQLite has one writer.
    pub async fn begin_write(&self) -> anyhow::Result<WriteTx> {
        let tx = match self.write_turn().await? {
            None => Tx::Pooled(self.writer.begin().await?),
            Some(mut turn) => {
                // Marked open first: a `BEGIN` interrupted after SQLite ran it is still rolled
                // back (a rollback with nothing open is harmless).
                turn.guard.open = true;
                // The write lock up front (waiting `busy_timeout` for it): a transaction that
                // reads first could not take it later once another process wrote.
                turn.conn().execute("BEGIN IMMEDIATE").await?;
                Tx::Turn(turn)
            }
        };
        Ok(WriteTx {
            tx,
            chain: audit::Pending::default(),
            pool: self.pool.clone(),
            backend: self.backend,
            audit_head: self.audit_head.clone(),
        })
    }

    /// Runs one write statement in this process's turn to write: on SQLite on the writer
    /// connection, on PostgreSQL on the pool. The statement is made once the turn is given, so
    /// the times it binds (a claim's expiry, "now") are the write's, not from before the wait.
    pub(crate) async fn write_one<'q>(
        &self,
        query: impl FnOnce() -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> anyhow::Result<sqlx::any::AnyQueryResult> {
        Ok(match self.write_turn().await? {
            Some(mut turn) => query().execute(turn.conn()).await?,
            None => query().execute(&self.writer).await?,
        })
    }

    /// [`Store::write_one`] for a write that answers rows (`RETURNING`).
    pub(crate) async fn write_fetch_all<'q, O>(
        &self,
        query: impl FnOnce() -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    ) -> anyhow::Result<Vec<O>>
    where
        O: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        Ok(match self.write_turn().await? {
            Some(mut turn) => query().fetch_all(turn.conn()).await?,
            None => query().fetch_all(&self.writer).await?,
        })
    }

    /// This process's turn to write (SQLite; PostgreSQL needs none), held until the guard is
    /// dropped. Every write takes it, a transaction ([`Store::begin_write`]) or a single
    /// statement (a claim, a lease, a released or renewed claim): writers wait here in order
    /// and are woken the moment the one before them ends. Left to SQLite, each waiter polls the
    /// lock with sleeps growing to 100 ms, so under a steady stream of small writes (a
    /// webhook's version, a claim, a decision, a posted comment) a write could wait far longer
    /// than the one ahead of it took. Another process on the same file is still kept out by
    /// SQLite's lock and `busy_timeout`, and a turn not given within that timeout fails as
    /// SQLite would. Never taken while holding it: the turn is not reentrant.
    pub(crate) async fn write_turn(&self) -> anyhow::Result<Option<WriteTurn>> {
        let Some(writers) = &self.writers else {
            return Ok(None);
        };
        let mut guard = tokio::time::timeout(SQLITE_BUSY_TIMEOUT, writers.clone().lock_owned())
            .await
            .map_err(|_| anyhow::anyhow!("database is locked: waited {SQLITE_BUSY_TIMEOUT:?} for this process's other writes"))?;
        guard.settle().await?;
        Ok(Some(WriteTurn {
            guard,
            checkpoints: self.checkpoints.clone(),
            pool: self.pool.clone(),
        }))
    }

    /// Seals audit records committed but not yet in the chain (PostgreSQL; a no-op on SQLite,
    /// whose records join the chain as they commit). Every write seals its own records after
    /// its commit; this takes any a replica left when it died between the two. Returns how
    /// many were sealed.
    pub async fn seal_audit(&self) -> anyhow::Result<usize> {
        match self.backend {
            Backend::Postgres => audit::seal(&self.pool).await,
            Backend::Sqlite => Ok(0),
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool (for tests and reports).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Opens (creating) `<store file>.<suffix>` for a file lock.
fn open_lock_file(path: &Path, suffix: &str) -> anyhow::Result<std::fs::File> {
    let name = beside(path, &format!(".{suffix}"));
    private_file(&name).map_err(|e| anyhow::anyhow!("opening the lock file {}: {e}", name.display()))
}

/// `path` with `suffix` appended to its file name (`deskbridge.db` → `deskbridge.db-wal`).
fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Opens (creating if missing) a file only its owner may read and write: the store holds
/// tickets, decisions, the marker key and OAuth tokens. A file found readable by others is
/// tightened to 0600. SQLite creates the `-wal` and `-shm` files with the database file's mode.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let file = options.open(path)?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "the store file was readable by others; tightening it to 0600");
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

/// A per-installation secret, made (random, 256 bits) the first time any process asks; every
/// process and replica then reads the same one.
async fn installation_secret(pool: &AnyPool, name: &str) -> anyhow::Result<secrecy::SecretString> {
    let fresh = hex::encode(rand::random::<[u8; 32]>());
    sqlx::query("INSERT INTO installation (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(&fresh)
        .execute(pool)
        .await?;
    let value: String = sqlx::query_scalar("SELECT value FROM installation WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    Ok(value.into())
}

/// Removes a connection URL (and so its password) from an error message.
/// `host:port, database D, user U` of a PostgreSQL URL, never its password.
fn describe_postgres(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{} (database {:?}, user {:?})",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path().trim_start_matches('/'),
            u.username()
        ),
        Err(_) => "the configured URL".into(),
    }
}

fn redact(message: &str, url: &str) -> String {
    let mut out = message.replace(url, "<store url>");
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(password) = parsed.password() {
            out = out.replace(password, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests;
