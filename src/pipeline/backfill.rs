//! Backfill: every ticket updated since a date, page by page, resumable.

use chrono::{DateTime, Utc};

use super::{is_fatal, PageReader, Pipeline, Report};

/// Where a backfill stands, reported after every page.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The connector instance being read.
    pub connector: String,
    /// Ticket versions read from it so far in this run.
    pub read: usize,
    /// Whether this run resumed an interrupted backfill.
    pub resumed: bool,
}

impl Pipeline {
    /// Reads every ticket updated at or after `since` from every connector, deciding and
    /// posting as it goes. Memory stays flat whatever the backlog: two pages are held at a time
    /// (the one being stored, decided and posted, and the next, fetched meanwhile on a task of
    /// its own), and decisions and comments run in batches from the store. Each page is stored
    /// with the backfill's own cursor, only after the page before it, so running the same
    /// backfill again after an interruption resumes after the last stored page; a page fetched
    /// ahead and not stored is dropped and read again. The live poll cursor is not touched.
    pub async fn backfill(&self, since: DateTime<Utc>, mut progress: impl FnMut(&Progress, &Report)) -> anyhow::Result<Report> {
        let since_key = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut report = Report::default();
        for id in &self.order {
            let Some(instance) = self.instances.get(id) else { continue };
            let stored = self.store.backfill_cursor(id, &since_key).await?;
            let mut state = Progress {
                connector: id.clone(),
                read: 0,
                resumed: stored.is_some(),
            };
            let mut cursor = match stored {
                Some(cursor) => cursor,
                None => instance.connector.cursor_since(since)?,
            };
            progress(&state, &report);
            let mut pages = PageReader::new(&instance.connector);
            while !self.stopping() {
                let page = pages.page(&cursor).await?.map_err(|e| {
                    let hint = if is_fatal(&e) {
                        ""
                    } else {
                        "; run the same command again to resume"
                    };
                    anyhow::anyhow!("backfill of {id} stopped after {} tickets: {e}{hint}", state.read)
                })?;
                if page.more && !self.stopping() {
                    pages.fetch_ahead(&page.next);
                }
                report.ingested += self
                    .store
                    .ingest_backfill_page(id, &since_key, &page.tickets, instance.connector.volatile_fields(), &page.next)
                    .await?;
                state.read += page.tickets.len();
                cursor = page.next;
                self.decide_all(&mut report).await?;
                self.post_all(&mut report).await?;
                progress(&state, &report);
                if !page.more {
                    break;
                }
            }
        }
        Ok(report)
    }
}
