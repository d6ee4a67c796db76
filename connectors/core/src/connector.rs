use async_trait::async_trait;

use crate::webhook::{WebhookEvent, WebhookVerifier};
use crate::{Comment, CommentId, ConnectorError, Cursor, FoundComment, Page, Ticket};

/// How the comment field of an ITSM renders text, so untrusted ticket text quoted in a comment
/// can be made inert.
pub trait Markup: Send + Sync {
    /// Returns `text` escaped so that it renders as the same plain text in the target field.
    fn escape(&self, text: &str) -> String;
}

/// One configured ITSM instance.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The instance id from configuration (`[[connectors]] id`).
    fn id(&self) -> &str;

    /// The connector kind (`servicenow`, `jira`).
    fn kind(&self) -> &'static str;

    /// Reads the next page of tickets changed after `cursor`. Pages never skip or repeat a
    /// ticket version at timestamp boundaries.
    async fn poll(&self, cursor: &Cursor) -> Result<Page, ConnectorError>;

    /// Writes `comment` to the ticket `key`. Callers check [`Connector::find_comment`] first.
    ///
    /// **Writes are sent once.** A comment create is not idempotent: the ITSM may apply it and
    /// then lose the answer (a 5xx from a proxy, a dropped connection, a timeout). So the
    /// request that creates the comment is never retried inside the connector or its HTTP
    /// client (use [`crate::http::HttpClient::send_write`], not `send`); a failure is returned,
    /// and the caller's next attempt first looks for the marker with
    /// [`Connector::find_comment`]. Reads may be retried freely. Follow-up writes that are
    /// idempotent (setting a comment property to a fixed value) may be retried.
    async fn post_comment(&self, key: &str, comment: &Comment) -> Result<CommentId, ConnectorError>;

    /// Writes `comment` as [`Connector::post_comment`] does (sent once, the same guarantees),
    /// for a caller that posts many comments and records them together. A connector whose
    /// write does not answer the new comment's id may leave reading it back for later:
    /// `Ok(None)`, and [`Connector::posted_comment_ids`] then reads the ids of many such
    /// comments in a few requests instead of one request each.
    async fn post_comment_in_batch(&self, key: &str, comment: &Comment) -> Result<Option<CommentId>, ConnectorError> {
        self.post_comment(key, comment).await.map(Some)
    }

    /// The ids of comments that [`Connector::post_comment_in_batch`] posted without one, given
    /// as `(ticket key, marker)`, in the same order. Only reads. Never fails: a comment it
    /// cannot read back gets a stable reference instead (by default [`CommentId::by_marker`]).
    async fn posted_comment_ids(&self, posted: &[(&str, &str)]) -> Vec<CommentId> {
        posted.iter().map(|(key, marker)| CommentId::by_marker(key, marker)).collect()
    }

    /// Looks for a comment this connector posted earlier carrying `marker`. Only a comment
    /// authored by the integration user that carries the marker as a whole line of its own
    /// ([`crate::has_marker_line`]) counts: text quoting a marker, or a comment by anyone else,
    /// is never taken for deskbridge's.
    async fn find_comment(&self, key: &str, marker: &str) -> Result<Option<FoundComment>, ConnectorError>;

    /// JSON pointers into [`Ticket::raw`] of the fields every write to a ticket changes (its
    /// version counter and update time). A new version that differs from the last one only in
    /// these changed nothing deskbridge reads (typically it is deskbridge's own comment), and is
    /// not stored or decided again.
    fn volatile_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// Requests this connector sends to its ITSM at once (`max_concurrency`); the pipeline
    /// posts this many comments concurrently.
    fn max_concurrency(&self) -> usize {
        1
    }

    /// The markup of the field comments are written to.
    fn markup(&self) -> &dyn Markup;

    /// The credentials in use, so the service can share a rotating token chain between
    /// replicas ([`crate::auth::Auth::share_tokens`]).
    fn auth(&self) -> Option<&crate::auth::Auth> {
        None
    }

    /// A cursor from which [`Connector::poll`] reads every ticket updated at or after `since`
    /// (for backfills). Connectors that cannot start at a time say so.
    fn cursor_since(&self, since: chrono::DateTime<chrono::Utc>) -> Result<Cursor, ConnectorError> {
        let _ = since;
        Err(ConnectorError::Config {
            connector: self.id().to_owned(),
            message: format!("the {} connector cannot backfill from a date", self.kind()),
        })
    }

    /// Start-up check: the credentials work and carry every permission the connector needs. The
    /// error lists everything missing at once.
    async fn check(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Reads the current version of one ticket (after a webhook named it); `None` when it is
    /// gone or outside what this connector reads.
    async fn fetch(&self, key: &str) -> Result<Option<Ticket>, ConnectorError> {
        let _ = key;
        Err(ConnectorError::Config {
            connector: self.id().to_owned(),
            message: format!("the {} connector cannot read a single ticket", self.kind()),
        })
    }

    /// How webhook deliveries to this instance are verified; `None` when webhooks are off.
    fn webhook(&self) -> Option<&WebhookVerifier> {
        None
    }

    /// Reads which tickets a delivery names. Called only after [`WebhookVerifier::verify`]
    /// accepted the body.
    fn webhook_event(&self, headers: &reqwest::header::HeaderMap, body: &[u8]) -> Result<WebhookEvent, ConnectorError> {
        let _ = (headers, body);
        Err(ConnectorError::Config {
            connector: self.id().to_owned(),
            message: "webhooks are not configured".into(),
        })
    }
}
