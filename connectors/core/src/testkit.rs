//! The connector contract as executable tests (feature `testkit`). Every connector crate runs
//! [`run_contract`] against its own simulator over real HTTP; a connector that passes is one the
//! pipeline can rely on.
//!
//! The checks: paging never skips or repeats a ticket version, even when several tickets share
//! one timestamp and a page ends among them; a saved cursor repeats nothing and sees a later
//! change once; a backfill cursor starts at its date; a single ticket can be read again (for
//! webhooks); comments are found by marker before posting, and a marker typed by someone else
//! (or quoted inside a line) is not mistaken for deskbridge's; a comment write whose answer is
//! lost after the ITSM applied it (a 5xx, a dropped connection, a timeout) is sent once, not
//! retried, and the comment it made is then found by its marker.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use crate::{Comment, Connector, Cursor};

/// How the answer to an applied write is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAnswer {
    /// A proxy or gateway answers with this status (502, 504, 500).
    Status(u16),
    /// The connection drops before the answer is complete.
    Dropped,
    /// No answer before the client's timeout.
    Timeout,
}

/// What a connector crate provides so the contract can drive its simulator.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A connector of the kind under test, reading pages of at most `page_size` tickets.
    async fn connector(&self, page_size: u32) -> Arc<dyn Connector>;
    /// Creates a ticket titled `title` whose last update is `updated` (at the ITSM's own
    /// precision); returns its [`crate::Ticket::key`].
    async fn create(&self, title: &str, updated: DateTime<Utc>) -> String;
    /// Changes the ticket as a user would, so its update time becomes now.
    async fn touch(&self, key: &str);
    /// The text of every comment on the ticket, oldest first, whoever wrote it.
    async fn comments(&self, key: &str) -> Vec<String>;
    /// Adds a comment as a user other than deskbridge's.
    async fn comment_as_someone_else(&self, key: &str, text: &str);
    /// Makes the ITSM apply the next comment write (the request that creates the comment) and
    /// then lose its answer `how`. The connectors of [`Harness::connector`] must time out
    /// within a few seconds.
    async fn lose_next_comment_answer(&self, how: LostAnswer);
}

/// Runs every contract check; panics with the failing check's name.
pub async fn run_contract(h: &dyn Harness) {
    paging_neither_skips_nor_repeats(h).await;
    a_saved_cursor_sees_a_later_change_once(h).await;
    cursor_since_starts_at_its_date(h).await;
    fetch_reads_one_ticket(h).await;
    comments_are_found_by_marker_before_posting(h).await;
    a_quoted_marker_is_not_a_comment(h).await;
    for how in [
        LostAnswer::Status(502),
        LostAnswer::Status(504),
        LostAnswer::Dropped,
        LostAnswer::Timeout,
    ] {
        a_write_whose_answer_is_lost_is_sent_once(h, how).await;
    }
}

/// Drains from `cursor`, returning `(key, version)` of every ticket read and the last cursor.
pub async fn drain(connector: &dyn Connector, mut cursor: Cursor) -> (Vec<(String, String)>, Cursor) {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let page = connector.poll(&cursor).await.expect("contract: poll");
        seen.extend(page.tickets.iter().map(|t| (t.key.clone(), t.version.clone())));
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    (seen, cursor)
}

fn count_of<'a>(seen: &'a [(String, String)], keys: &[String]) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for (key, _) in seen.iter().filter(|(k, _)| keys.contains(k)) {
        *counts.entry(key.as_str()).or_insert(0) += 1;
    }
    counts
}

/// Whole seconds, a few minutes ago: every ITSM can store it exactly.
fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    let t = Utc::now() - Duration::minutes(minutes);
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Three tickets share one timestamp and pages of two end among them.
pub async fn paging_neither_skips_nor_repeats(h: &dyn Harness) {
    let t = minutes_ago(20);
    let mut keys = Vec::new();
    keys.push(h.create("contract paging before", t - Duration::seconds(1)).await);
    for n in 0..3 {
        keys.push(h.create(&format!("contract paging shared {n}"), t).await);
    }
    keys.push(h.create("contract paging after", t + Duration::seconds(1)).await);
    let connector = h.connector(2).await;
    let (seen, _) = drain(connector.as_ref(), Cursor::start()).await;
    let counts = count_of(&seen, &keys);
    assert_eq!(counts.len(), keys.len(), "contract paging: every ticket is read: {counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "contract paging: no ticket is read twice: {counts:?}"
    );
    let order: Vec<&String> = seen.iter().map(|(k, _)| k).filter(|k| keys.contains(k)).collect();
    assert_eq!(order.first(), Some(&&keys[0]), "contract paging: oldest first");
    assert_eq!(order.last(), Some(&&keys[4]), "contract paging: newest last");
}

/// A re-poll from a saved cursor repeats nothing; a later change is read once, as a new version.
pub async fn a_saved_cursor_sees_a_later_change_once(h: &dyn Harness) {
    let key = h.create("contract later change", minutes_ago(15)).await;
    let connector = h.connector(50).await;
    let (first, cursor) = drain(connector.as_ref(), Cursor::start()).await;
    let before: Vec<&(String, String)> = first.iter().filter(|(k, _)| *k == key).collect();
    assert_eq!(before.len(), 1, "contract later change: read once: {before:?}");
    let (again, cursor) = drain(connector.as_ref(), cursor).await;
    assert!(
        again.iter().all(|(k, _)| *k != key),
        "contract later change: a saved cursor repeats nothing: {again:?}"
    );
    h.touch(&key).await;
    // Give second-precision ITSMs a new second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (after, cursor) = drain(connector.as_ref(), cursor).await;
    let changed: Vec<&(String, String)> = after.iter().filter(|(k, _)| *k == key).collect();
    assert_eq!(changed.len(), 1, "contract later change: the change is read once: {after:?}");
    assert_ne!(changed[0].1, before[0].1, "contract later change: as a new version");
    let (last, _) = drain(connector.as_ref(), cursor).await;
    assert!(
        last.iter().all(|(k, _)| *k != key),
        "contract later change: and not again: {last:?}"
    );
}

/// A backfill cursor reads tickets updated at or after its date and none before.
pub async fn cursor_since_starts_at_its_date(h: &dyn Harness) {
    let old = h.create("contract backfill old", minutes_ago(60 * 24 * 40)).await;
    let new = h.create("contract backfill new", minutes_ago(60 * 24 * 10)).await;
    let connector = h.connector(50).await;
    let cursor = connector
        .cursor_since(Utc::now() - Duration::days(20))
        .expect("contract backfill: a connector can start at a date");
    let (seen, _) = drain(connector.as_ref(), cursor).await;
    assert!(seen.iter().any(|(k, _)| *k == new), "contract backfill: newer ticket read");
    assert!(seen.iter().all(|(k, _)| *k != old), "contract backfill: older ticket not read");
}

/// A webhook names a ticket; the connector reads its current version.
pub async fn fetch_reads_one_ticket(h: &dyn Harness) {
    let key = h.create("contract fetch", minutes_ago(5)).await;
    let connector = h.connector(50).await;
    let ticket = connector
        .fetch(&key)
        .await
        .expect("contract fetch: reads")
        .expect("contract fetch: found");
    assert_eq!(ticket.key, key);
    assert_eq!(ticket.source, connector.id());
    let (seen, _) = drain(connector.as_ref(), Cursor::start()).await;
    let polled = seen.iter().find(|(k, _)| *k == key).expect("contract fetch: polled too");
    assert_eq!(polled.1, ticket.version, "contract fetch: the same version as a poll reads");
}

/// Comments: absent before posting, found by marker after, posted once; the same marker typed
/// by someone else on another ticket does not count.
pub async fn comments_are_found_by_marker_before_posting(h: &dyn Harness) {
    let key = h.create("contract comment", minutes_ago(5)).await;
    let other = h.create("contract comment other", minutes_ago(5)).await;
    let connector = h.connector(50).await;
    let marker = format!("deskbridge-id:{:016x}", rand::random::<u64>());
    let comment = Comment {
        marker: marker.clone(),
        body: format!("deskbridge decision: contract\n[{marker}]"),
    };
    assert_eq!(connector.find_comment(&key, &marker).await.expect("contract comment: find"), None);
    let id = connector.post_comment(&key, &comment).await.expect("contract comment: post");
    let found = connector
        .find_comment(&key, &marker)
        .await
        .expect("contract comment: find")
        .expect("contract comment: found by its marker");
    assert_eq!(found.id, id, "contract comment: found by its marker");
    assert!(
        found.text.contains("deskbridge decision: contract"),
        "contract comment: the text found is the text posted: {:?}",
        found.text
    );
    let texts = h.comments(&key).await;
    assert_eq!(
        texts.iter().filter(|t| t.contains(&marker)).count(),
        1,
        "contract comment: posted once: {texts:?}"
    );
    h.comment_as_someone_else(&other, &format!("[{marker}]")).await;
    assert_eq!(
        connector.find_comment(&other, &marker).await.expect("contract comment: find"),
        None,
        "contract comment: someone else's text is not deskbridge's comment"
    );
}

fn new_marker() -> String {
    format!("deskbridge-id:{:032x}", rand::random::<u128>())
}

/// A marker quoted inside a line of deskbridge's own comment, or written as a line of its own
/// by someone else on the same ticket, does not make the comment found.
pub async fn a_quoted_marker_is_not_a_comment(h: &dyn Harness) {
    let key = h.create("contract quoted marker", minutes_ago(5)).await;
    let connector = h.connector(50).await;
    let (quoted, own) = (new_marker(), new_marker());
    let comment = Comment {
        marker: own.clone(),
        body: format!("deskbridge decision: contract\nthe requester wrote: [{quoted}]\n[{own}]"),
    };
    connector.post_comment(&key, &comment).await.expect("contract quoted: post");
    assert_eq!(
        connector.find_comment(&key, &quoted).await.expect("contract quoted: find"),
        None,
        "contract quoted: a marker inside a line is not a marker line"
    );
    let typed = new_marker();
    h.comment_as_someone_else(&key, &format!("[{typed}]")).await;
    assert_eq!(
        connector.find_comment(&key, &typed).await.expect("contract quoted: find"),
        None,
        "contract quoted: someone else's marker line on the same ticket is not deskbridge's"
    );
    assert!(connector.find_comment(&key, &own).await.expect("contract quoted: find").is_some());
}

/// The ITSM applies a comment write and loses the answer: the connector reports a retryable
/// failure, has written exactly one comment, and finds it by its marker, so the outbox's next
/// attempt records it instead of posting again.
pub async fn a_write_whose_answer_is_lost_is_sent_once(h: &dyn Harness, how: LostAnswer) {
    let key = h.create(&format!("contract lost answer {how:?}"), minutes_ago(5)).await;
    let connector = h.connector(50).await;
    let marker = new_marker();
    let comment = Comment {
        marker: marker.clone(),
        body: format!("deskbridge decision: contract\n[{marker}]"),
    };
    h.lose_next_comment_answer(how).await;
    let result = connector.post_comment(&key, &comment).await;
    let err = result.expect_err(&format!("contract lost answer {how:?}: the lost answer is reported"));
    assert!(
        err.is_retryable(),
        "contract lost answer {how:?}: retryable, so the outbox tries again: {err}"
    );
    let texts = h.comments(&key).await;
    assert_eq!(
        texts.iter().filter(|t| t.contains(&marker)).count(),
        1,
        "contract lost answer {how:?}: the write was sent once, not retried: {texts:?}"
    );
    let found = connector.find_comment(&key, &marker).await.expect("contract lost answer: find");
    assert!(
        found.is_some(),
        "contract lost answer {how:?}: the applied comment is found by its marker"
    );
}
