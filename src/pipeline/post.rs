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

/// What a post attempt came to.
enum Attempt {
    Posted {
        id: deskbridge_connector::CommentId,
        existing: bool,
    },
    Failed(ConnectorError),
}

impl Pipeline {
    pub(super) async fn post_due(&self, report: &mut Report, due_before: &str) -> anyhow::Result<()> {
        let mut halted = std::collections::HashSet::new();
        for row in self.store.claim_outbox(self.settings.batch_size, due_before).await? {
            // A post in flight finishes; none starts after a stop. Unposted claims are
            // released by `release_all` on shutdown.
            if self.stopping() {
                break;
            }
            self.beat();
            // A connector halted during this batch posts nothing more; its rows wait unclaimed.
            if halted.contains(&row.connector) {
                self.store.release_comment(&row).await?;
                continue;
            }
            let before = report.connector_errors.len();
            match self.post_row(&row, report).await {
                Ok(()) => {}
                Err(e) if super::contended(&e) => {
                    tracing::info!(marker = %row.marker, reason = %e, "another replica took this comment over")
                }
                Err(e) => return Err(e),
            }
            if report.connector_errors.len() > before {
                halted.insert(row.connector.clone());
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

    async fn attempt(&self, connector: &dyn deskbridge_connector::Connector, row: &OutboxRow) -> anyhow::Result<Attempt> {
        // Checked before every attempt: an earlier attempt may have posted and lost its answer.
        match connector.find_comment(&row.ticket_key, &row.marker).await {
            Ok(Some(found)) if carries_outcome(&found.text, &row.body) => {
                return Ok(Attempt::Posted {
                    id: found.id,
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
        // looked, it posts, not us.
        self.store.renew_outbox_claim(row).await?;
        let comment = deskbridge_connector::Comment {
            marker: row.marker.clone(),
            body: row.body.clone(),
        };
        Ok(match connector.post_comment(&row.ticket_key, &comment).await {
            Ok(id) => Attempt::Posted { id, existing: false },
            Err(e) => Attempt::Failed(e),
        })
    }

    #[tracing::instrument(skip_all, fields(connector = %row.connector, ticket = %row.ticket_key))]
    async fn post_row(&self, row: &OutboxRow, report: &mut Report) -> anyhow::Result<()> {
        let Some(instance) = self.instances.get(&row.connector) else {
            let why = format!("connector {:?} is not in the configuration", row.connector);
            tracing::warn!(%why, "comment parked");
            self.store.park_comment(row, &why).await?;
            report.parked += 1;
            return Ok(());
        };
        let connector = instance.connector.clone();
        match self.with_heartbeat(row, self.attempt(connector.as_ref(), row)).await?? {
            Attempt::Posted { id, existing } => {
                self.store.comment_posted(row, &id, existing).await?;
                crate::metrics::global().comment_post(&row.connector, if existing { "found_existing" } else { "posted" });
                tracing::info!(comment = %id, existing, "comment posted");
                report.posted += 1;
            }
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
        Ok(())
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
