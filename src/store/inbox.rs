//! Cursors, the inbox of ticket versions, and decisions.

use std::time::Duration;

use deskbridge_connector::{Cursor, Ticket};
use serde_json::{json, Value};

use super::{audit, later, now, placeholders, sha256_hex, still_claimed, ChangedMeanwhile, Event, InboxRow, LatestDecision, Store};

impl Store {
    /// The stored cursor of a connector instance.
    pub async fn cursor(&self, connector: &str) -> anyhow::Result<Cursor> {
        Ok(Cursor(self.stored_cursor(connector).await?.flatten()))
    }

    /// The cursors-table row under `key`: `None` when there is none, `Some(None)` for a stored
    /// start position.
    async fn stored_cursor(&self, key: &str) -> anyhow::Result<Option<Option<String>>> {
        Ok(sqlx::query_scalar("SELECT cursor FROM cursors WHERE connector = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Stores one polled page and the cursor after it, atomically. Returns how many ticket
    /// versions were new. `volatile` names (as JSON pointers) the fields every write to a ticket
    /// bumps: a version that differs from the ticket's latest stored one only there is not
    /// stored again.
    pub async fn ingest_page(&self, connector: &str, tickets: &[Ticket], volatile: &[&str], next: &Cursor) -> anyhow::Result<usize> {
        self.ingest(connector, connector, tickets, volatile, next).await
    }

    /// The stored cursor of a backfill (see [`Store::ingest_backfill_page`]).
    pub async fn backfill_cursor(&self, connector: &str, since: &str) -> anyhow::Result<Option<Cursor>> {
        Ok(self.stored_cursor(&backfill_key(connector, since)).await?.map(Cursor))
    }

    /// Stores one page of a backfill from `since` and the backfill's own cursor, atomically: an
    /// interrupted backfill resumes after the last stored page. The connector's live cursor is
    /// left alone.
    pub async fn ingest_backfill_page(
        &self,
        connector: &str,
        since: &str,
        tickets: &[Ticket],
        volatile: &[&str],
        next: &Cursor,
    ) -> anyhow::Result<usize> {
        self.ingest(&backfill_key(connector, since), connector, tickets, volatile, next)
            .await
    }

    async fn ingest(
        &self,
        cursor_key: &str,
        connector: &str,
        tickets: &[Ticket],
        volatile: &[&str],
        next: &Cursor,
    ) -> anyhow::Result<usize> {
        let incoming = incoming(tickets, volatile);
        let mut tx = self.begin_write().await?;
        let inserted = insert_tickets(&mut tx, connector, &incoming, "poll").await?;
        sqlx::query("INSERT INTO cursors (connector, cursor, updated_at) VALUES ($1, $2, $3) ON CONFLICT (connector) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at")
            .bind(cursor_key)
            .bind(&next.0)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Whether a webhook delivery with this id was already taken in.
    pub async fn delivery_seen(&self, connector: &str, delivery_id: &str) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT 1 FROM webhook_deliveries WHERE connector = $1 AND delivery_id = $2")
            .bind(connector)
            .bind(delivery_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Stores the tickets a verified webhook delivery led to (read again from the ITSM) and its
    /// delivery id, atomically; the poll cursor is untouched. `None` when the same delivery was
    /// taken in meanwhile (nothing is stored).
    pub async fn ingest_webhook(
        &self,
        connector: &str,
        delivery_id: Option<&str>,
        tickets: &[Ticket],
        volatile: &[&str],
    ) -> anyhow::Result<Option<usize>> {
        let incoming = incoming(tickets, volatile);
        let mut tx = self.begin_write().await?;
        if let Some(id) = delivery_id {
            let fresh = sqlx::query(
                "INSERT INTO webhook_deliveries (connector, delivery_id, received_at) VALUES ($1, $2, $3) ON CONFLICT (connector, delivery_id) DO NOTHING",
            )
            .bind(connector)
            .bind(id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            if fresh.rows_affected() == 0 {
                return Ok(None);
            }
        }
        let inserted = insert_tickets(&mut tx, connector, &incoming, "webhook").await?;
        tx.commit().await?;
        Ok(Some(inserted))
    }

    /// Claims ticket versions ready for normalization and decision: new ones, and pending ones
    /// whose retry time is before `due_before` (a pass passes its start time, so a request that
    /// fails during the pass is not retried within it). A row claimed by a live replica is
    /// skipped, and so is any version of a ticket that has one; a claim whose lease expired is
    /// taken over.
    pub async fn claim_inbox(&self, limit: i64, due_before: &str) -> anyhow::Result<Vec<InboxRow>> {
        self.claim(limit, due_before, false).await
    }

    /// [`Store::claim_inbox`] while this process is still writing a batch it claimed: no row of
    /// a ticket this process holds a live claim on is claimed, so no version is decided on what
    /// was read before the batch of an earlier version is written. (A claim this process left
    /// behind, say after a failed pass, is taken again by the next plain claim.)
    pub async fn claim_inbox_beside_own(&self, limit: i64, due_before: &str) -> anyhow::Result<Vec<InboxRow>> {
        self.claim(limit, due_before, true).await
    }

    /// Claims up to `limit` rows, oldest first: due retries first (few), then new versions in
    /// arrival order, in one statement (see [`Store::claim_inbox`] and
    /// [`Store::claim_inbox_beside_own`]). Each part is one status, so it walks an index in id
    /// order and stops at the limit: a large backlog of received versions is not sorted (nor
    /// checked for claims) in full on every claim.
    async fn claim(&self, limit: i64, due_before: &str, beside_own: bool) -> anyhow::Result<Vec<InboxRow>> {
        let now = now();
        // Which live claims on another version of the ticket (or, beside this process's own
        // batch, on any version including this one) keep a row from being claimed.
        let holders = if beside_own {
            ""
        } else {
            "AND j.id != i.id AND j.claimed_by != $1"
        };
        let part = |rank: u8, status: &str| {
            format!(
                "SELECT * FROM (SELECT i.id AS id, {rank} AS due FROM inbox i
                    WHERE {status}
                      AND (i.claimed_until IS NULL OR i.claimed_until < $3 OR i.claimed_by = $1)
                      AND NOT EXISTS (SELECT 1 FROM inbox j WHERE j.connector = i.connector AND j.ticket_key = i.ticket_key
                                      {holders} AND j.claimed_until >= $3
                                      AND j.status IN ('received', 'pending'))
                    ORDER BY i.id LIMIT $4{}) p{rank}",
                self.backend.skip_locked()
            )
        };
        let sql = format!(
            "UPDATE inbox SET claimed_by = $1, claimed_until = $2 WHERE id IN (
                SELECT id FROM ({} UNION ALL {}) c ORDER BY due, id LIMIT $4)
             RETURNING id, connector, ticket_key, version, number, url, updated, raw, attempts, received_at",
            part(0, "i.status = 'pending' AND i.next_attempt_at < $5"),
            part(1, "i.status = 'received'"),
        );
        let mut rows: Vec<InboxRow> = self
            .write_fetch_all(|| {
                sqlx::query_as(&sql)
                    .bind(&*self.holder)
                    .bind(later(self.lease))
                    .bind(&now)
                    .bind(limit)
                    .bind(due_before)
            })
            .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// What deciding a claimed batch needs to know from earlier work: which rows have a newer
    /// version, each ticket's latest earlier normalized form, and each ticket's latest decision,
    /// read in one statement per connector and chunk of ticket keys (one for a webhook's batch):
    /// each statement is a round trip to a database connection, and a webhook's batch is small.
    pub async fn prior(&self, rows: &[InboxRow]) -> anyhow::Result<Prior> {
        let mut prior = Prior::default();
        for (connector, keys) in by_connector(rows.iter().map(|r| (r.connector.as_str(), r.ticket_key.as_str()))) {
            for chunk in keys.chunks(CHUNK) {
                let ids: Vec<i64> = rows
                    .iter()
                    .filter(|r| r.connector == connector && chunk.binary_search(&r.ticket_key.as_str()).is_ok())
                    .map(|r| r.id)
                    .collect();
                let (keys_at, ids_at) = (placeholders(2, chunk.len()), placeholders(2 + chunk.len(), ids.len()));
                // Three parts, told apart by the first column; texts a part does not have are
                // empty. The previous form is the latest earlier version that was read (not a
                // stale one, not one of this batch: a batch's older versions of a ticket are
                // settled stale). The connector and the keys select through the
                // (connector, ticket_key) indexes.
                let sql = format!(
                    "SELECT 'newer' AS part, i.id AS id, i.ticket_key AS ticket_key, '' AS a, '' AS b, '' AS c FROM inbox i \
                     WHERE i.id IN ({ids_at}) AND EXISTS \
                     (SELECT 1 FROM inbox j WHERE j.connector = i.connector AND j.ticket_key = i.ticket_key AND j.id > i.id) \
                     UNION ALL \
                     SELECT 'previous', id, ticket_key, normalized, '', '' FROM inbox WHERE id IN \
                     (SELECT MAX(id) FROM inbox WHERE connector = $1 AND ticket_key IN ({keys_at}) AND normalized IS NOT NULL \
                      AND status != 'stale' AND id NOT IN ({ids_at}) GROUP BY connector, ticket_key) \
                     UNION ALL \
                     SELECT 'latest', inbox_id, ticket_key, request_hash, decision_id, outcome FROM decisions WHERE id IN ({})",
                    latest_decision_ids(&keys_at)
                );
                let mut query = sqlx::query_as::<_, (String, i64, String, String, String, String)>(&sql).bind(connector);
                for key in chunk {
                    query = query.bind(*key);
                }
                for id in &ids {
                    query = query.bind(*id);
                }
                for (part, id, key, a, b, c) in query.fetch_all(&self.pool).await? {
                    match part.as_str() {
                        "newer" => {
                            prior.newer.insert(id);
                        }
                        "previous" => {
                            if let Ok(value) = serde_json::from_str(&a) {
                                prior.previous.insert((connector.to_owned(), key), value);
                            }
                        }
                        _ => {
                            prior.latest.insert(
                                (connector.to_owned(), key),
                                LatestDecision {
                                    request_hash: a,
                                    decision_id: b,
                                    outcome: c,
                                    inbox_id: id,
                                },
                            );
                        }
                    }
                }
            }
        }
        Ok(prior)
    }

    /// Records a ticket that is not an access request, or a version that changes nothing, with
    /// any further evidence (`extra`) in the same transaction.
    pub async fn settle(
        &self,
        row: &InboxRow,
        status: &'static str,
        normalized: &Value,
        request_hash: Option<&str>,
        extra: &[(Event, Value)],
    ) -> anyhow::Result<()> {
        let unwritten = self
            .finish(&[Finished::Settled {
                row,
                status,
                normalized: normalized.clone(),
                request_hash: request_hash.map(str::to_owned),
                evidence: extra.to_vec(),
            }])
            .await?;
        unwritten.single()
    }

    /// Stores a decision and queues its comment in one transaction. `read_latest` is the
    /// ticket's latest decision id as read before deciding: if another replica decided this
    /// ticket since, nothing is written and [`ChangedMeanwhile`] says to decide again.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_decision(
        &self,
        row: &InboxRow,
        normalized: &Value,
        request_hash: &str,
        decision: &crate::schema::Decision,
        raw: &Value,
        marker: &str,
        body: &str,
        extra: &[(Event, Value)],
        read_latest: Option<&str>,
    ) -> anyhow::Result<()> {
        let unwritten = self
            .finish(&[Finished::Decided(Box::new(DecidedRow {
                row,
                normalized: normalized.clone(),
                request_hash: request_hash.to_owned(),
                decision: decision.clone(),
                raw: raw.clone(),
                marker: marker.to_owned(),
                body: body.to_owned(),
                evidence: extra.to_vec(),
                read_latest: read_latest.map(str::to_owned),
            }))])
            .await?;
        unwritten.single()
    }

    /// Writes what deciding a claimed batch came to, in one transaction: each row's status and
    /// normalized form, its decision and queued comment, and their audit records. Each row is
    /// written whole or not at all: a row another replica took over (its claim lapsed) or
    /// whose ticket another replica decided since it was read is left out, and named in the
    /// answer.
    pub async fn finish(&self, items: &[Finished<'_>]) -> anyhow::Result<Unwritten> {
        let mut unwritten = Unwritten::default();
        if items.is_empty() {
            return Ok(unwritten);
        }
        // Every text and audit record the rows may write, made before the write turn: on SQLite
        // every other write of this process waits while a transaction runs.
        let (texts, mut records): (Vec<Texts>, Vec<ReadyRecords>) = items
            .iter()
            .map(|item| ready(self.backend, item))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let mut tx = self.begin_write().await?;
        let decided: Vec<&DecidedRow> = items
            .iter()
            .filter_map(|i| match i {
                Finished::Decided(d) => Some(&**d),
                Finished::Settled { .. } => None,
            })
            .collect();
        // Locked first, so the read below sees every decision on these tickets committed before
        // ours, and no other replica writes one until we commit.
        let subjects: Vec<String> = decided
            .iter()
            .flat_map(|d| super::lifecycle::decision_subjects(d.row, &d.normalized, &d.decision))
            .collect();
        tx.lock_tickets(&subjects).await?;
        let rows: Vec<&InboxRow> = decided.iter().map(|d| d.row).collect();
        let mut latest = latest_decisions(&mut tx, &rows).await?;
        let mut facts = super::lifecycle::BatchFacts::read(&mut tx, &decided).await?;
        // Which rows to write: a decision is left out when another replica decided its ticket
        // after this one read it (a batch decides each ticket once).
        let mut marks = Vec::with_capacity(items.len());
        for (index, (item, texts)) in items.iter().zip(&texts).enumerate() {
            let mark = match item {
                Finished::Settled {
                    row, status, request_hash, ..
                } => Mark {
                    index,
                    row,
                    status,
                    normalized: &texts.normalized,
                    request_hash: request_hash.as_deref(),
                    decided: None,
                },
                Finished::Decided(d) => {
                    let row = d.row;
                    let ticket = (row.connector.clone(), row.ticket_key.clone());
                    let current = latest.get(&ticket);
                    if current.map(|l| l.decision_id.as_str()) != d.read_latest.as_deref() || current.is_some_and(|l| l.inbox_id > row.id) {
                        unwritten.changed.push(row.id);
                        continue;
                    }
                    let earlier = current.is_some();
                    latest.insert(
                        ticket,
                        LatestDecision {
                            request_hash: d.request_hash.clone(),
                            decision_id: d.decision.decision_id.clone(),
                            outcome: d.decision.outcome.as_str().to_owned(),
                            inbox_id: row.id,
                        },
                    );
                    Mark {
                        index,
                        row,
                        status: "decided",
                        normalized: &texts.normalized,
                        request_hash: Some(&d.request_hash),
                        decided: Some((d, earlier)),
                    }
                }
            };
            marks.push(mark);
        }
        // Every row's status in a few fenced statements; a row whose claim lapsed is left out.
        let held = mark_normalized(&mut tx, &self.holder, &marks).await?;
        marks.retain(|m| {
            let kept = held.contains(&m.row.id);
            if !kept {
                unwritten.lost.push(m.row.id);
            }
            kept
        });
        let written: Vec<(&DecidedRow, &DecisionTexts)> = marks
            .iter()
            .filter_map(|m| Some((m.decided?.0, texts[m.index].decision.as_ref()?)))
            .collect();
        insert_decisions(&mut tx, &written).await?;
        let queued: Vec<super::outbox::Queued<'_>> = written
            .iter()
            .map(|(d, _)| super::outbox::Queued {
                connector: &d.row.connector,
                ticket_key: &d.row.ticket_key,
                request_hash: &d.request_hash,
                decision_id: &d.decision.decision_id,
                marker: &d.marker,
                body: &d.body,
            })
            .collect();
        let fresh = super::outbox::queue_comments(&mut tx, &queued).await?;
        // The audit records, row by row in batch order, as if each row were written alone.
        let mut approvals = Vec::new();
        for m in &marks {
            let records = &mut records[m.index];
            tx.chain.records.append(&mut records.written);
            let Some((d, earlier)) = m.decided else { continue };
            if fresh.contains(&d.marker) {
                tx.chain.records.extend(records.queued.take());
            }
            super::lifecycle::on_decision(
                &mut tx,
                m.row,
                &d.normalized,
                &d.request_hash,
                &d.decision,
                earlier,
                &mut facts,
                &mut approvals,
            )
            .await?;
        }
        super::lifecycle::insert_approvals(&mut tx, &approvals).await?;
        tx.commit().await?;
        Ok(unwritten)
    }

    /// Gives up this replica's claim on a row without changing it, so it is taken again.
    pub async fn release(&self, row: &InboxRow) -> anyhow::Result<()> {
        self.write_one(|| {
            sqlx::query("UPDATE inbox SET claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND claimed_by = $2")
                .bind(row.id)
                .bind(&*self.holder)
        })
        .await?;
        Ok(())
    }

    /// Keeps a request pending after a failed decision, to be retried after `delay`.
    pub async fn decision_failed(&self, row: &InboxRow, normalized: &Value, error: &str, delay: Duration) -> anyhow::Result<()> {
        let mut tx = self.begin_write().await?;
        still_claimed(
            sqlx::query(
                "UPDATE inbox SET status = 'pending', normalized = $1, attempts = attempts + 1, next_attempt_at = $2, last_error = $3,
                    claimed_by = NULL, claimed_until = NULL
             WHERE id = $4 AND claimed_by = $5",
            )
            .bind(normalized.to_string())
            .bind(later(delay))
            .bind(error)
            .bind(row.id)
            .bind(&*self.holder)
            .execute(&mut *tx)
            .await?,
        )?;
        audit::append(
            &mut tx,
            &row.connector,
            &row.ticket_key,
            Event::DecisionFailed,
            json!({"version": row.version, "error": error, "attempt": row.attempts + 1}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The cursors-table key of a backfill: one per (connector, start), so a backfill from another
/// date starts afresh while the same command resumes.
fn backfill_key(connector: &str, since: &str) -> String {
    format!("backfill:{connector}:{since}")
}

/// One row of a batch as `finish` writes it.
struct Mark<'a> {
    /// Its place in the batch (and in what was made ready for it).
    index: usize,
    row: &'a InboxRow,
    status: &'a str,
    /// Its normalized form, as text.
    normalized: &'a str,
    request_hash: Option<&'a str>,
    /// The decision, and whether the ticket had an earlier one.
    decided: Option<(&'a DecidedRow<'a>, bool)>,
}

/// The texts of the columns `finish` may write for one row.
struct Texts {
    normalized: String,
    decision: Option<DecisionTexts>,
}

/// A decision's columns as text.
struct DecisionTexts {
    decision: String,
    raw: String,
}

/// A row's audit records, in the order it appends them.
struct ReadyRecords {
    /// Written with the row: `normalized`, its further evidence, then `decided`.
    written: Vec<super::audit::Ready>,
    /// `comment_queued`, written when the decision's comment is queued now.
    queued: Option<super::audit::Ready>,
}

/// What `finish` may write for one row, made before the write turn: the texts of its columns
/// and its audit records, ready to join the chain.
fn ready(backend: super::Backend, item: &Finished<'_>) -> anyhow::Result<(Texts, ReadyRecords)> {
    let (row, status, normalized, request_hash, evidence, decided) = match item {
        Finished::Settled {
            row,
            status,
            normalized,
            request_hash,
            evidence,
        } => (*row, *status, normalized, request_hash.as_deref(), evidence, None),
        Finished::Decided(d) => (
            d.row,
            "access_request",
            &d.normalized,
            Some(d.request_hash.as_str()),
            &d.evidence,
            Some(&**d),
        ),
    };
    let record = |event, payload: &Value| audit::ready(backend, &row.connector, &row.ticket_key, event, payload);
    let mut written = Vec::with_capacity(evidence.len() + 2);
    // The normalized form (most of a version's evidence) is written out once: its canonical
    // text is both the inbox column and, spliced in, the `normalized` record's payload, whose
    // members are in canonical order (`normalized` < `request_hash` < `status` < `version`).
    let normalized_text = audit::canonical_text(normalized)?;
    let payload = format!(
        "{{\"normalized\":{normalized_text},\"request_hash\":{},\"status\":{},\"version\":{}}}",
        audit::canonical_text(&json!(request_hash))?,
        audit::canonical_text(&json!(status))?,
        audit::canonical_text(&json!(row.version))?,
    );
    written.push(audit::ready_canonical(
        backend,
        &row.connector,
        &row.ticket_key,
        Event::Normalized,
        payload,
    )?);
    for (event, payload) in evidence {
        written.push(record(*event, payload)?);
    }
    let (decision, queued) = match decided {
        None => (None, None),
        Some(d) => {
            let json = serde_json::to_value(&d.decision)?;
            written.push(record(Event::Decided, &json!({"decision": json, "pdp_raw": d.raw}))?);
            let queued = record(
                Event::CommentQueued,
                &super::outbox::queued_payload(&d.marker, &d.body, &d.decision.decision_id),
            )?;
            let texts = DecisionTexts {
                decision: json.to_string(),
                raw: d.raw.to_string(),
            };
            (Some(texts), Some(queued))
        }
    };
    Ok((
        Texts {
            normalized: normalized_text,
            decision,
        },
        ReadyRecords { written, queued },
    ))
}

/// Sets the rows' status and normalized form and gives up their claims, fenced: only rows this
/// replica still holds are written. Returns their ids.
async fn mark_normalized(tx: &mut super::WriteTx, holder: &str, marks: &[Mark<'_>]) -> anyhow::Result<std::collections::HashSet<i64>> {
    let mut held = std::collections::HashSet::with_capacity(marks.len());
    for chunk in marks.chunks(super::ROWS_PER_STATEMENT) {
        let mut sql = String::from("WITH v (id, status, normalized, request_hash) AS (VALUES ");
        super::push_placeholders(&mut sql, chunk.len(), 4, tx.backend);
        sql.push_str(&format!(
            ") UPDATE{} inbox SET status = v.status, normalized = v.normalized, request_hash = v.request_hash, last_error = NULL,
                claimed_by = NULL, claimed_until = NULL
             FROM v WHERE inbox.id = v.id AND inbox.claimed_by = ",
            tx.backend.or_fail()
        ));
        sql.push_str(&super::next_placeholder(tx.backend, chunk.len() * 4 + 1));
        sql.push_str(" RETURNING inbox.id");
        let mut query = sqlx::query_scalar::<_, i64>(&sql);
        for m in chunk {
            query = query.bind(m.row.id).bind(m.status).bind(m.normalized).bind(m.request_hash);
        }
        held.extend(query.bind(holder).fetch_all(&mut **tx).await?);
    }
    Ok(held)
}

/// Inserts decisions, with each one's JSON, in multi-row inserts.
async fn insert_decisions(tx: &mut super::WriteTx, written: &[(&DecidedRow<'_>, &DecisionTexts)]) -> anyhow::Result<()> {
    for chunk in written.chunks(super::ROWS_PER_STATEMENT) {
        let mut sql =
            String::from("INSERT INTO decisions (decision_id, inbox_id, connector, ticket_key, request_hash, outcome, decision, raw, decided_at) VALUES ");
        super::push_placeholders(&mut sql, chunk.len(), 9, tx.backend);
        let mut query = sqlx::query(&sql);
        for (d, texts) in chunk {
            let decision = &d.decision;
            query = query
                .bind(&decision.decision_id)
                .bind(d.row.id)
                .bind(&d.row.connector)
                .bind(&d.row.ticket_key)
                .bind(&d.request_hash)
                .bind(decision.outcome.as_str())
                .bind(&texts.decision)
                .bind(&texts.raw)
                .bind(decision.decided_at.to_rfc3339());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Keys per `IN (…)` list: far inside both databases' parameter limits.
const CHUNK: usize = 500;

/// Each connector's ticket keys, each once and sorted: a batch's lookups go connector by
/// connector, so each selects through the (connector, ticket_key) indexes instead of scanning.
fn by_connector<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut grouped: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (connector, key) in pairs {
        grouped.entry(connector).or_default().push(key);
    }
    grouped
        .into_iter()
        .map(|(connector, keys)| (connector, distinct(keys.into_iter())))
        .collect()
}

/// Each ticket key once, sorted: the keys a batch's `IN (…)` lists name.
fn distinct<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut keys: Vec<&str> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The ids of the latest decision on each ticket of connector `$1` whose key is among
/// `keys_at` (placeholders): what [`Store::prior`] and [`latest_decisions`] both read.
fn latest_decision_ids(keys_at: &str) -> String {
    format!("SELECT MAX(id) FROM decisions WHERE connector = $1 AND ticket_key IN ({keys_at}) GROUP BY connector, ticket_key")
}

/// The latest decision on each ticket of `rows`, one query per connector and chunk of keys.
async fn latest_decisions(
    conn: &mut sqlx::AnyConnection,
    rows: &[&InboxRow],
) -> anyhow::Result<std::collections::HashMap<(String, String), LatestDecision>> {
    let mut latest = std::collections::HashMap::new();
    for (connector, keys) in by_connector(rows.iter().map(|r| (r.connector.as_str(), r.ticket_key.as_str()))) {
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT connector, ticket_key, request_hash, decision_id, outcome, inbox_id FROM decisions WHERE id IN ({})",
                latest_decision_ids(&placeholders(2, chunk.len()))
            );
            let mut query = sqlx::query_as::<_, (String, String, String, String, String, i64)>(&sql).bind(connector);
            for key in chunk {
                query = query.bind(*key);
            }
            for (connector, key, request_hash, decision_id, outcome, inbox_id) in query.fetch_all(&mut *conn).await? {
                latest.insert(
                    (connector, key),
                    LatestDecision {
                        request_hash,
                        decision_id,
                        outcome,
                        inbox_id,
                    },
                );
            }
        }
    }
    Ok(latest)
}

/// What deciding a batch reads from earlier work (see [`Store::prior`]).
#[derive(Debug, Default)]
pub struct Prior {
    newer: std::collections::HashSet<i64>,
    previous: std::collections::HashMap<(String, String), Value>,
    latest: std::collections::HashMap<(String, String), LatestDecision>,
}

impl Prior {
    /// Whether a later version of the row's ticket is already in the inbox.
    pub fn has_newer(&self, row: &InboxRow) -> bool {
        self.newer.contains(&row.id)
    }

    /// The normalized form of the ticket's latest earlier version that was read, if any.
    pub fn previous(&self, row: &InboxRow) -> Option<&Value> {
        self.previous.get(&(row.connector.clone(), row.ticket_key.clone()))
    }

    /// The ticket's latest decision.
    pub fn latest(&self, row: &InboxRow) -> Option<&LatestDecision> {
        self.latest.get(&(row.connector.clone(), row.ticket_key.clone()))
    }
}

/// How deciding one claimed ticket version came out, written with the rest of its batch by
/// [`Store::finish`].
pub enum Finished<'a> {
    /// Not an access request, a stale version, or a version that changes nothing.
    Settled {
        /// The row.
        row: &'a InboxRow,
        /// `not_access`, `stale` or `unchanged`.
        status: &'static str,
        /// Its normalized form.
        normalized: Value,
        /// The request hash, when it is an access request.
        request_hash: Option<String>,
        /// Further audit records.
        evidence: Vec<(Event, Value)>,
    },
    /// A decision and its comment.
    Decided(Box<DecidedRow<'a>>),
}

/// A decision to record (see [`Finished::Decided`]).
pub struct DecidedRow<'a> {
    /// The row.
    pub row: &'a InboxRow,
    /// Its normalized (and enriched) form.
    pub normalized: Value,
    /// The request hash.
    pub request_hash: String,
    /// The decision.
    pub decision: crate::schema::Decision,
    /// The decision point's answer.
    pub raw: Value,
    /// The comment's marker.
    pub marker: String,
    /// The comment.
    pub body: String,
    /// Further audit records.
    pub evidence: Vec<(Event, Value)>,
    /// The ticket's latest decision id as read before deciding.
    pub read_latest: Option<String>,
}

/// The rows of a batch [`Store::finish`] left unwritten.
#[derive(Debug, Default)]
pub struct Unwritten {
    /// Rows another replica took over (their claim lapsed).
    pub lost: Vec<i64>,
    /// Rows whose ticket another replica decided since it was read: to be decided again.
    pub changed: Vec<i64>,
}

impl Unwritten {
    /// The answer for a batch of one row, as an error when it was not written.
    fn single(self) -> anyhow::Result<()> {
        if !self.changed.is_empty() {
            return Err(ChangedMeanwhile.into());
        }
        if !self.lost.is_empty() {
            return Err(super::LostClaim.into());
        }
        Ok(())
    }
}

/// The digest of a ticket version's content without the fields at the JSON pointers
/// `volatile` (those every write bumps): equal digests mean nothing deskbridge reads changed.
pub fn content_digest(raw: &Value, volatile: &[&str]) -> String {
    if volatile.is_empty() {
        return sha256_hex(raw.to_string().as_bytes());
    }
    let mut content = raw.clone();
    for pointer in volatile {
        if let Some((parent, field)) = pointer.rsplit_once('/') {
            if let Some(Value::Object(map)) = content.pointer_mut(parent) {
                map.remove(field);
            }
        }
    }
    sha256_hex(content.to_string().as_bytes())
}

/// A ticket version to store, with its texts: made before the write that stores it
/// ([`incoming`]), so no writer waits while a page is serialized and hashed.
struct Incoming<'a> {
    ticket: &'a Ticket,
    /// The version as stored.
    raw: String,
    /// SHA-256 of `raw`.
    digest: String,
    /// [`content_digest`] of the version.
    content: String,
}

/// The texts of a page's ticket versions (see [`Incoming`]).
fn incoming<'a>(tickets: &'a [Ticket], volatile: &[&str]) -> Vec<Incoming<'a>> {
    tickets
        .iter()
        .map(|ticket| {
            let raw = ticket.raw.to_string();
            let digest = sha256_hex(raw.as_bytes());
            // Without volatile fields the content digest is the stored text's (as
            // `content_digest` computes it), so the text is not serialized twice.
            let content = if volatile.is_empty() {
                digest.clone()
            } else {
                content_digest(&ticket.raw, volatile)
            };
            Incoming {
                ticket,
                raw,
                digest,
                content,
            }
        })
        .collect()
}

/// Inserts new ticket versions with a `ticket_seen` audit record each, in one multi-row insert.
/// Known versions are skipped, and so is a version whose content (without the `volatile`
/// fields) equals the ticket's latest stored version: only fields every write bumps changed
/// (deskbridge's own comment bumps them), so there is nothing to read, store or decide again.
async fn insert_tickets(tx: &mut super::WriteTx, connector: &str, incoming: &[Incoming<'_>], via: &str) -> anyhow::Result<usize> {
    if incoming.is_empty() {
        return Ok(0);
    }
    let mut latest = latest_content(tx, connector, incoming).await?;
    let received_at = now();
    let mut rows = Vec::with_capacity(incoming.len());
    for new in incoming {
        if latest.get(&new.ticket.key).is_some_and(|c| c.as_ref() == Some(&new.content)) {
            continue;
        }
        latest.insert(new.ticket.key.clone(), Some(new.content.clone()));
        rows.push(new);
    }
    let mut inserted = std::collections::HashSet::new();
    for chunk in rows.chunks(super::ROWS_PER_STATEMENT) {
        let mut sql = format!(
            "INSERT{} INTO inbox (connector, ticket_key, version, number, url, updated, raw, raw_sha256, content_sha256, received_at) VALUES ",
            tx.backend.or_fail()
        );
        super::push_placeholders(&mut sql, chunk.len(), 10, tx.backend);
        sql.push_str(" ON CONFLICT (connector, ticket_key, version) DO NOTHING RETURNING ticket_key, version");
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for Incoming {
            ticket: t,
            raw,
            digest,
            content,
        } in chunk.iter().copied()
        {
            query = query
                .bind(connector)
                .bind(&t.key)
                .bind(&t.version)
                .bind(&t.number)
                .bind(&t.url)
                .bind(t.updated.to_rfc3339())
                .bind(raw)
                .bind(digest)
                .bind(content)
                .bind(&received_at);
        }
        inserted.extend(query.fetch_all(&mut **tx).await?);
    }
    let mut count = 0;
    for Incoming { ticket: t, digest, .. } in rows {
        // In page order, once per new version.
        if inserted.remove(&(t.key.clone(), t.version.clone())) {
            count += 1;
            audit::append(
                tx,
                connector,
                &t.key,
                Event::TicketSeen,
                json!({"number": t.number, "version": t.version, "raw_sha256": digest, "via": via}),
            )
            .await?;
        }
    }
    Ok(count)
}

/// The content digest of each ticket's latest stored version (`None` for a version stored
/// before digests were kept), for the tickets of a page, in one query per chunk.
async fn latest_content(
    tx: &mut super::WriteTx,
    connector: &str,
    incoming: &[Incoming<'_>],
) -> anyhow::Result<std::collections::HashMap<String, Option<String>>> {
    let mut latest = std::collections::HashMap::new();
    for chunk in distinct(incoming.iter().map(|new| new.ticket.key.as_str())).chunks(CHUNK) {
        let sql = format!(
            "SELECT i.ticket_key, i.content_sha256 FROM inbox i WHERE i.connector = $1 AND i.id = \
             (SELECT MAX(j.id) FROM inbox j WHERE j.connector = i.connector AND j.ticket_key = i.ticket_key) AND i.ticket_key IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query_as::<_, (String, Option<String>)>(&sql).bind(connector);
        for key in chunk {
            query = query.bind(*key);
        }
        latest.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(latest)
}
