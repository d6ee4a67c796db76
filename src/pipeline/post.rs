//! Post every due comment, once: the marker is looked up on the ticket before every attempt,
//! and the write itself is sent once per attempt (a write whose answer was lost may have
//! landed; the next attempt finds it by its marker instead of posting again).

use std::future::Future;
use std::time::Duration;

use deskbridge_connector::ConnectorError;

use super::{Pipeline, Report};
use crate::store::OutboxRow;

/// Whether a comment found by its marker says what this outbox row posts: a line of the found
/// text is the first line of the row's body (the outcome line of the shipped template).
/// Anything else carrying the marker is not this decision's comment.
pub(crate) fn carries_outcome(found_text: &str, body: &str) -> bool {
    let Some(first) = body.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    found_text.lines().any(|l| l.trim() == first)
}

/// What posting one ticket's comments came to: the comments posted (or found), to be recorded
/// with the batch, and what stopped it, if anything.
#[derive(Default)]
struct TicketPosts {
    report: Report,
    /// Each comment, its id (`None` while the connector reads it back with the batch's
    /// others, [`deskbridge_connector::Connector::posted_comment_ids`]), and whether it was
    /// found on the ticket rather than posted.
    posted: Vec<(OutboxRow, Option<deskbridge_connector::CommentId>, bool)>,
    error: Option<anyhow::Error>,
}

/// What a post attempt came to.
enum Attempt {
    Posted {
        id: Option<deskbridge_connector::CommentId>,
        existing: bool,
    },
    Failed(ConnectorError),
}

impl Pipeline {
    /// Posts the comments due before `due_before`, one batch. Comments on different tickets are
    /// posted concurrently, up to the sum of the connectors' `max_concurrency` (each
    /// connector's HTTP client holds its own requests to its own bound); the comments of one
    /// ticket are posted in the order they were queued. The first post goes alone and each
    /// success widens the window by one, and any failure (a 429, a 5xx, a refused write)
    /// narrows it to one again: a throttled or failing ITSM is not sent a burst, and a refused
    /// write halts the connector before the next one is sent. A batch goes on at the width
    /// the batch before it ended at, so a steady stream of small batches (webhooks) is not
    /// posted one at a time; after a failure the next batch starts alone. Returns whether
    /// another batch may find more due (the claim was full).
    pub(super) async fn post_due(&self, report: &mut Report, due_before: &str) -> anyhow::Result<bool> {
        use futures_util::stream::StreamExt as _;
        let rows = self.store.claim_outbox(self.settings.batch_size, due_before).await?;
        let more = rows.len() as i64 >= self.settings.batch_size;
        let mut tickets: Vec<Vec<OutboxRow>> = Vec::new();
        let mut index: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
        for row in rows {
            let key = (row.connector.clone(), row.ticket_key.clone());
            match index.get(&key) {
                Some(&i) => tickets[i].push(row),
                None => {
                    index.insert(key, tickets.len());
                    tickets.push(vec![row]);
                }
            }
        }
        let halted = std::sync::Mutex::new(std::collections::HashSet::new());
        let claimed_at = std::time::Instant::now();
        let resumed = self.post_window.lock().map_or(1, |w| *w);
        let mut window = super::Window::resume(resumed, self.post_concurrency());
        let mut queue = tickets.into_iter();
        let mut posting = futures_util::stream::FuturesUnordered::new();
        let mut results = Vec::new();
        loop {
            while posting.len() < window.size() {
                let Some(rows) = queue.next() else { break };
                posting.push(self.post_ticket(rows, &halted, claimed_at));
            }
            let Some(done) = posting.next().await else { break };
            window.answered(done.error.is_none() && done.report.failed_posts == 0 && done.report.parked == 0);
            results.push(done);
        }
        drop(posting);
        if let Ok(mut w) = self.post_window.lock() {
            *w = window.size();
        }
        let mut first_error = None;
        let mut posted = Vec::new();
        for done in results {
            report.absorb(done.report);
            posted.extend(done.posted);
            if let Some(e) = done.error {
                first_error.get_or_insert(e);
            }
        }
        let posted = self.read_back_ids(posted).await;
        // What was posted is recorded even when something else failed.
        let records: Vec<(&OutboxRow, &deskbridge_connector::CommentId, bool)> =
            posted.iter().map(|(row, id, existing)| (row, id, *existing)).collect();
        let lost = self.store.comments_posted(&records).await?;
        for (row, id, existing) in &posted {
            if lost.contains(&row.id) {
                tracing::info!(marker = %row.marker, "another replica took this comment over");
                continue;
            }
            crate::metrics::global().comment_post(&row.connector, if *existing { "found_existing" } else { "posted" });
            tracing::info!(connector = %row.connector, ticket = %row.ticket_key, comment = %id, existing, "comment posted");
            report.posted += 1;
        }
        first_error.map_or(Ok(more), Err)
    }

    /// Fills in the ids of the batch's comments posted without one: each connector reads its
    /// comments back together, a few requests for the batch instead of one per comment. Only
    /// reads (the comments are on their tickets already), and never fails: a comment its
    /// connector cannot read back is recorded with a stable reference.
    async fn read_back_ids(
        &self,
        posted: Vec<(OutboxRow, Option<deskbridge_connector::CommentId>, bool)>,
    ) -> Vec<(OutboxRow, deskbridge_connector::CommentId, bool)> {
        let mut ids: Vec<Option<deskbridge_connector::CommentId>> = posted.iter().map(|(_, id, _)| id.clone()).collect();
        let mut waiting: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, (row, id, _)) in posted.iter().enumerate() {
            if id.is_none() {
                waiting.entry(row.connector.as_str()).or_default().push(i);
            }
        }
        for (connector, at) in waiting {
            let asked: Vec<(&str, &str)> = at
                .iter()
                .map(|&i| (posted[i].0.ticket_key.as_str(), posted[i].0.marker.as_str()))
                .collect();
            // Posted through this instance moments ago, so it is there.
            let Some(instance) = self.instances.get(connector) else { continue };
            for (&i, id) in at.iter().zip(instance.connector.posted_comment_ids(&asked).await) {
                ids[i] = Some(id);
            }
        }
        posted
            .into_iter()
            .zip(ids)
            .map(|((row, _, existing), id)| {
                // Not reached (see above); the contract's default reference.
                let id = id.unwrap_or_else(|| deskbridge_connector::CommentId::by_marker(&row.ticket_key, &row.marker));
                (row, id, existing)
            })
            .collect()
    }

    /// How many comments are posted at once: the connectors' `max_concurrency`, summed.
    fn post_concurrency(&self) -> usize {
        self.instances.values().map(|i| i.connector.max_concurrency()).sum::<usize>().max(1)
    }

    /// Posts one ticket's claimed comments in order. A connector halted meanwhile (the ITSM
    /// refused deskbridge's write) posts nothing more; its rows wait unclaimed.
    async fn post_ticket(
        &self,
        rows: Vec<OutboxRow>,
        halted: &std::sync::Mutex<std::collections::HashSet<String>>,
        claimed_at: std::time::Instant,
    ) -> TicketPosts {
        let mut done = TicketPosts::default();
        if let Err(e) = self.post_rows(rows, halted, claimed_at, &mut done).await {
            done.error = Some(e);
        }
        done
    }

    async fn post_rows(
        &self,
        rows: Vec<OutboxRow>,
        halted: &std::sync::Mutex<std::collections::HashSet<String>>,
        claimed_at: std::time::Instant,
        done: &mut TicketPosts,
    ) -> anyhow::Result<()> {
        for row in rows {
            // A post in flight finishes; none starts after a stop. Unposted claims are
            // released by `release_all` on shutdown.
            if self.stopping() {
                break;
            }
            self.beat();
            if halted.lock().is_ok_and(|h| h.contains(&row.connector)) {
                self.store.release_comment(&row).await?;
                continue;
            }
            let before = done.report.connector_errors.len();
            let outcome = self.post_row(&row, &mut done.report, claimed_at).await;
            if done.report.connector_errors.len() > before {
                if let Ok(mut h) = halted.lock() {
                    h.insert(row.connector.clone());
                }
            }
            match outcome {
                Ok(Some((id, existing))) => done.posted.push((row, id, existing)),
                Ok(None) => {}
                Err(e) if super::contended(&e) => {
                    tracing::info!(marker = %row.marker, reason = %e, "another replica took this comment over")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Runs `work` while renewing this replica's claim on `row` every third of the lease, so a
    /// slow post (a find, a write near its timeout, the read-back) never outlives the claim and
    /// no other replica takes the comment over mid-post.
    async fn with_heartbeat<T>(&self, row: &OutboxRow, work: impl Future<Output = T>) -> anyhow::Result<T> {
        let every = (self.store.lease() / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = tick.tick() => {
                    if let Err(e) = self.store.renew_outbox_claim(row).await {
                        // The request may be on the wire: let it finish; the fenced write after it
                        // refuses to record, and the other replica finds the marker.
                        tracing::warn!(marker = %row.marker, error = %format!("{e:#}"), "could not renew the claim during a post");
                    }
                }
            }
        }
    }

    async fn attempt(
        &self,
        connector: &dyn deskbridge_connector::Connector,
        row: &OutboxRow,
        claimed_at: std::time::Instant,
    ) -> anyhow::Result<Attempt> {
        // Checked before every attempt but the first: an earlier attempt may have posted and
        // lost its answer. A comment on its first claim was never handed to a poster before
        // (the claim is committed before anything is sent), so nothing of it can be on the
        // ticket.
        let earlier = if row.first_claim() {
            Ok(None)
        } else {
            connector.find_comment(&row.ticket_key, &row.marker).await
        };
        match earlier {
            Ok(Some(found)) if carries_outcome(&found.text, &row.body) => {
                return Ok(Attempt::Posted {
                    id: Some(found.id),
                    existing: true,
                })
            }
            Ok(Some(found)) => {
                tracing::warn!(comment = %found.id, "a comment carries this marker but not this decision; it is not ours, posting ours");
            }
            Ok(None) => {}
            Err(e) => return Ok(Attempt::Failed(e)),
        }
        // The lease must cover the post: if another replica took the comment over while we
        // looked (or while the comment waited its turn), it posts, not us. A first claim made
        // moments ago is still ours: at most a third of the lease has passed.
        if !row.first_claim() || claimed_at.elapsed() >= self.store.lease() / 3 {
            self.store.renew_outbox_claim(row).await?;
        }
        let comment = deskbridge_connector::Comment {
            marker: row.marker.clone(),
            body: row.body.clone(),
        };
        Ok(match connector.post_comment_in_batch(&row.ticket_key, &comment).await {
            Ok(id) => Attempt::Posted { id, existing: false },
            Err(e) => Attempt::Failed(e),
        })
    }

    /// One attempt at one comment. A posted (or found) comment is returned, to be recorded
    /// with its batch; a failure is recorded here.
    #[tracing::instrument(skip_all, fields(connector = %row.connector, ticket = %row.ticket_key))]
    async fn post_row(
        &self,
        row: &OutboxRow,
        report: &mut Report,
        claimed_at: std::time::Instant,
    ) -> anyhow::Result<Option<(Option<deskbridge_connector::CommentId>, bool)>> {
        let Some(instance) = self.instances.get(&row.connector) else {
            let why = format!("connector {:?} is not in the configuration", row.connector);
            tracing::warn!(%why, "comment parked");
            self.store.park_comment(row, &why).await?;
            report.parked += 1;
            return Ok(None);
        };
        let connector = instance.connector.clone();
        match self
            .with_heartbeat(row, self.attempt(connector.as_ref(), row, claimed_at))
            .await??
        {
            Attempt::Posted { id, existing } => return Ok(Some((id, existing))),
            Attempt::Failed(e) if e.is_retryable() => {
                let backoff = crate::backoff::delay(row.attempts, self.settings.post_retry_base, self.settings.post_retry_max);
                let retry_in = e.retry_after().map_or(backoff, |after| after.max(backoff));
                tracing::warn!(error = %e, retry_in_s = retry_in.as_secs(), "posting the comment failed; the next attempt looks for it first");
                self.store.comment_failed(row, &e.to_string(), retry_in).await?;
                crate::metrics::global().comment_post(&row.connector, "failed");
                report.failed_posts += 1;
            }
            Attempt::Failed(e) => {
                if matches!(e, ConnectorError::Unauthorized { .. }) {
                    tracing::error!(error = %e, "the ITSM refused deskbridge's write; this connector posts nothing until an admin fixes it and runs `deskbridge retry --connector {}`", row.connector);
                    self.store.halt_connector(&row.connector, &e.to_string()).await?;
                    report.connector_errors.push(e.to_string());
                } else {
                    tracing::error!(error = %e, "posting the comment failed for a reason a retry will not fix; parked");
                }
                self.store.park_comment(row, &e.to_string()).await?;
                crate::metrics::global().comment_post(&row.connector, "parked");
                report.failed_posts += 1;
                report.parked += 1;
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::carries_outcome;

    #[test]
    fn a_found_comment_must_say_what_is_posted() {
        let body = "deskbridge decision: REVIEW required\nReasons:\n[deskbridge-id:x]";
        assert!(carries_outcome(
            "deskbridge decision: REVIEW required\nReasons:\n[deskbridge-id:x]",
            body
        ));
        assert!(!carries_outcome("deskbridge decision: APPROVED by policy\n[deskbridge-id:x]", body));
        assert!(!carries_outcome("anything", ""));
    }
}
