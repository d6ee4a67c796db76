//! Post every due comment, once: the marker is looked up on the ticket first.

use std::time::Duration;

use super::{is_fatal, Pipeline, Report};
use crate::store::OutboxRow;

/// How long a comment waits after credentials were refused before it is tried again.
const AFTER_UNAUTHORIZED: Duration = Duration::from_secs(300);

impl Pipeline {
    pub(super) async fn post_due(&self, report: &mut Report, due_before: &str) -> anyhow::Result<()> {
        for row in self.store.claim_outbox(self.settings.batch_size, due_before).await? {
            // A post in flight finishes; none starts after a stop. Unposted claims are
            // released by `release_all` on shutdown.
            if self.stopping() {
                break;
            }
            match self.post_row(&row, report).await {
                Ok(()) => {}
                Err(e) if super::contended(&e) => {
                    tracing::info!(marker = %row.marker, reason = %e, "another replica took this comment over")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(connector = %row.connector, ticket = %row.ticket_key))]
    async fn post_row(&self, row: &OutboxRow, report: &mut Report) -> anyhow::Result<()> {
        let Some(instance) = self.instances.get(&row.connector) else {
            return Ok(());
        };
        let connector = &instance.connector;
        let comment = deskbridge_connector::Comment {
            marker: row.marker.clone(),
            body: row.body.clone(),
        };
        // Checked before every attempt: an earlier attempt may have posted and then timed out.
        let result = match connector.find_comment(&row.ticket_key, &row.marker).await {
            Ok(Some(id)) => Ok((id, true)),
            Ok(None) => {
                // The lease must cover the post: if another replica took the comment over
                // while we looked, it posts, not us.
                self.store.renew_outbox_claim(row).await?;
                connector.post_comment(&row.ticket_key, &comment).await.map(|id| (id, false))
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((id, existing)) => {
                self.store.comment_posted(row, &id, existing).await?;
                tracing::info!(comment = %id, existing, "comment posted");
                report.posted += 1;
            }
            Err(e) => {
                let retry_in = if e.is_retryable() {
                    let backoff = crate::backoff::delay(row.attempts, Duration::from_secs(2), Duration::from_secs(600));
                    Some(e.retry_after().map_or(backoff, |after| after.max(backoff)))
                } else if is_fatal(&e) {
                    Some(AFTER_UNAUTHORIZED)
                } else {
                    None
                };
                tracing::warn!(error = %e, retry = retry_in.is_some(), "posting the comment failed");
                self.store.comment_failed(row, &e.to_string(), retry_in).await?;
                report.failed_posts += 1;
                if is_fatal(&e) {
                    report.connector_errors.push(e.to_string());
                }
            }
        }
        Ok(())
    }
}
