//! Normalize and decide every due inbox row.

use futures_util::stream::StreamExt as _;
use serde_json::json;

use super::{Pipeline, Report};
use crate::decision::{Decided, DecisionPoint};
use crate::mapping::Mapping;
use crate::render::CommentInput;
use crate::schema::{AccessRequest, Decision, FieldProblem, Normalized, Obligations, Outcome};
use crate::store::{sha256_hex, DecidedRow, Event, Finished, InboxRow, Prior};

/// Rows of a batch decided at once.
const DECIDE_AT_ONCE: usize = 4;

/// What identifies a request version: what a decision may depend on. The source version, the
/// ITSM's approval context, urgency, extra attributes and the wording of the justification are
/// left out (its presence counts), so a status change, an edited justification or our own
/// comment (which bumps the ticket's version) does not re-decide.
pub fn request_hash(request: &AccessRequest) -> String {
    let material = json!({
        "kind": request.kind,
        "requester": request.requester.id,
        "beneficiary": request.beneficiary,
        "target": request.target,
        "entitlement": request.entitlement,
        "justification_present": request.justification.as_deref().is_some_and(|j| !j.trim().is_empty()),
        "duration_days": request.duration_days,
        "expires_at": request.expires_at,
        "nhi": request.nhi,
    });
    sha256_hex(material.to_string().as_bytes())
}

fn problems_hash(problems: &[FieldProblem]) -> String {
    sha256_hex(json!({"incomplete": problems}).to_string().as_bytes())
}

/// A needs-info decision made by deskbridge itself when the mapping finds required fields
/// missing. It decides nothing about access; it asks for what the policy needs.
pub(crate) fn incomplete_decision(mapping: &Mapping, problems: &[FieldProblem]) -> Decided {
    let decision = Decision {
        outcome: Outcome::NeedsInfo,
        reasons: problems.iter().map(|p| format!("{}: {}", p.field, p.reason)).collect(),
        route_to: None,
        missing: problems.iter().map(|p| p.field.clone()).collect(),
        obligations: Obligations::default(),
        policy_id: format!("deskbridge.mapping/{}", mapping.name),
        policy_version: mapping.version.clone(),
        decision_id: crate::decision::new_decision_id(),
        decided_at: chrono::Utc::now(),
    };
    Decided {
        raw: json!({"incomplete": problems}),
        decision,
    }
}

/// A claimed row, read before its batch is decided.
enum Prepared<'p> {
    /// Its connector is not in the configuration: the row is parked.
    Unconfigured,
    /// A newer version of the ticket was read meanwhile: this one is settled as stale.
    Stale,
    /// The ticket, normalized by its connector instance's mapping, with what identifies the
    /// request version (none when it is not an access request).
    Read {
        instance: &'p super::Instance,
        normalized: Normalized,
        hash: Option<String>,
    },
}

/// A claimed batch, decided, to be written by [`Pipeline::write_batch`].
pub(super) struct Batch<'r> {
    /// What each row decided came to, in row order (rows whose failure was written already,
    /// or that another replica holds, are not here).
    finished: Vec<Finished<'r>>,
    /// Beside each finished row, the request a shadow decision point is asked about it.
    asks: Vec<Option<AccessRequest>>,
    /// The first failure that is not another replica's claim: the pass fails once the rest
    /// of the batch is written.
    failure: Option<anyhow::Error>,
}

impl Pipeline {
    /// Parses and normalizes one claimed row's ticket.
    fn prepare(&self, row: &InboxRow, prior: &Prior) -> anyhow::Result<Prepared<'_>> {
        let Some(instance) = self.instances.get(&row.connector) else {
            return Ok(Prepared::Unconfigured);
        };
        if prior.has_newer(row) {
            return Ok(Prepared::Stale);
        }
        let normalized = instance.mapping.normalize(&row.ticket()?);
        let hash = match &normalized {
            Normalized::AccessRequest { request } => Some(request_hash(request)),
            Normalized::Incomplete { problems, .. } => Some(problems_hash(problems)),
            Normalized::NotAnAccessRequest { .. } => None,
        };
        Ok(Prepared::Read {
            instance,
            normalized,
            hash,
        })
    }

    /// Claims the next batch of due rows: beside the batches in flight when there are any (see
    /// [`crate::store::Store::claim_inbox_beside_own`]), so no version is decided on what was
    /// read before the batch holding an earlier version of its ticket is written.
    pub(super) async fn claim_batch(&self, beside_own: bool, due_before: &str) -> anyhow::Result<Vec<InboxRow>> {
        if beside_own {
            self.store.claim_inbox_beside_own(self.settings.batch_size, due_before).await
        } else {
            self.store.claim_inbox(self.settings.batch_size, due_before).await
        }
    }

    /// Decides a claimed batch and writes it on a task of its own, so a batch is written while
    /// the next is decided on the runtime's other thread. It writes only once the batch before
    /// it (`after`) is written, then says so (`written`): batches are written in the order they
    /// were claimed. Answers the task's report and whether a row was given back to be decided
    /// again (or the batch's first failure once the rest is written).
    pub(super) fn spawn_batch(
        &self,
        rows: Vec<InboxRow>,
        after: Option<tokio::sync::oneshot::Receiver<()>>,
        written: tokio::sync::oneshot::Sender<()>,
    ) -> super::BatchTask {
        let this = self.handle();
        super::StageTask::spawn(async move {
            let mut report = Report::default();
            let batch = match this.decide_batch(&rows, &mut report).await {
                Ok(batch) => batch,
                Err(e) => return (report, Err(e)),
            };
            if let Some(after) = after {
                // Sent when the batch before is written, or dropped when its task ended
                // without writing: either way it no longer writes.
                let _ = after.await;
            }
            let again = this.write_batch(batch, &mut report).await;
            let _ = written.send(());
            (report, again)
        })
    }

    /// Normalizes and decides one claimed batch, to be written by [`Pipeline::write_batch`].
    /// What the batch needs from earlier work is read in one query each
    /// ([`crate::store::Store::prior`]). Failures (a decision point or source of facts that
    /// cannot answer, a template that fails) are written as they happen.
    async fn decide_batch<'r>(&self, rows: &'r [InboxRow], report: &mut Report) -> anyhow::Result<Batch<'r>> {
        let prior = self.store.prior(rows).await?;
        // Each ticket is parsed and normalized once, for the prefetch and for its decision.
        let prepared: Vec<anyhow::Result<Prepared<'_>>> = rows.iter().map(|row| self.prepare(row, &prior)).collect();
        if let Some(enricher) = &self.enricher {
            // The identities of the requests that will be decided; an unchanged request is not.
            let asks = rows.iter().zip(&prepared).filter_map(|(row, prepared)| match prepared {
                Ok(Prepared::Read {
                    normalized: Normalized::AccessRequest { request },
                    hash: Some(hash),
                    ..
                }) if prior.latest(row).is_none_or(|l| l.request_hash != *hash) => Some(request.as_ref()),
                _ => None,
            });
            enricher.prefetch(asks).await;
        }
        let mut batch = Batch {
            finished: Vec::with_capacity(rows.len()),
            asks: Vec::with_capacity(rows.len()),
            failure: None,
        };
        // Rows are decided a few at once (the decision point and the sources of facts answer
        // in parallel), their results kept in row order; after a failure, one at a time again.
        let mut queue = rows.iter().zip(prepared);
        let mut deciding = futures_util::stream::FuturesOrdered::new();
        let mut window = super::Window::new(DECIDE_AT_ONCE);
        loop {
            while deciding.len() < window.size() {
                // Nothing new starts after a stop; unhandled claims are released by
                // `release_all` on shutdown.
                let Some((row, prepared)) = queue.next().filter(|_| !self.stopping()) else {
                    break;
                };
                deciding.push_back(self.decide_one(row, prepared, &prior));
            }
            let Some((row, done, result)) = deciding.next().await else { break };
            window.answered(result.is_ok() && done.failed_decisions == 0);
            report.absorb(done);
            match result {
                Ok(Some((done, ask))) => {
                    batch.finished.push(done);
                    batch.asks.push(ask);
                }
                Ok(None) => {}
                Err(e) if super::contended(&e) => {
                    tracing::info!(ticket = %row.number, reason = %e, "left to the replica that holds it");
                }
                Err(e) => {
                    batch.failure.get_or_insert(e);
                }
            }
        }
        Ok(batch)
    }

    /// Writes what a decided batch came to, in one transaction for the whole batch
    /// ([`crate::store::Store::finish`]), then asks the shadow decision point. Returns whether a
    /// row was given back to be decided again, or the batch's first failure once the rest is
    /// written.
    async fn write_batch(&self, batch: Batch<'_>, report: &mut Report) -> anyhow::Result<bool> {
        let Batch { finished, asks, failure } = batch;
        let mut again = false;
        // What was decided is written even when another row failed.
        let unwritten = self.store.finish(&finished).await?;
        if finished.iter().any(|f| matches!(f, Finished::Decided(_))) {
            self.decisions_recorded();
        }
        for done in &finished {
            let (row, decided) = match done {
                Finished::Settled { row, .. } => (*row, None),
                Finished::Decided(d) => (d.row, Some(&d.decision)),
            };
            if unwritten.changed.contains(&row.id) {
                tracing::info!(ticket = %row.number, "another replica decided this ticket meanwhile; decided again next batch");
                self.store.release(row).await?;
                report.contended += 1;
                again = true;
            } else if unwritten.lost.contains(&row.id) {
                tracing::info!(ticket = %row.number, "left to the replica that took it over");
            } else if let Some(decision) = decided {
                tracing::info!(connector = %row.connector, ticket = %row.number, outcome = decision.outcome.as_str(), decision = %decision.decision_id, "decided");
                report.decided += 1;
            } else {
                report.settled += 1;
            }
        }
        if let Some(shadow) = &self.shadow {
            for (done, ask) in finished.iter().zip(&asks) {
                let (Finished::Decided(d), Some(request)) = (done, ask) else {
                    continue;
                };
                if unwritten.changed.contains(&d.row.id) || unwritten.lost.contains(&d.row.id) {
                    continue;
                }
                self.shadow_decide(shadow.as_ref(), d.row, request, &d.request_hash, &d.decision)
                    .await?;
            }
        }
        failure.map_or(Ok(again), Err)
    }

    /// Decides one row of a batch, with what it adds to the pass's report.
    async fn decide_one<'r>(
        &self,
        row: &'r InboxRow,
        prepared: anyhow::Result<Prepared<'_>>,
        prior: &Prior,
    ) -> (&'r InboxRow, Report, anyhow::Result<Option<(Finished<'r>, Option<AccessRequest>)>>) {
        self.beat();
        let mut done = Report::default();
        let result = match prepared {
            Ok(prepared) => self.decide_row(row, prepared, prior, &mut done).await,
            Err(e) => Err(e),
        };
        (row, done, result)
    }

    /// Asks the decision point, counting the answer and its latency.
    async fn timed_decision(&self, request: &AccessRequest) -> Result<Decided, crate::decision::DecisionError> {
        let started = std::time::Instant::now();
        let result = self.decision_point.decide(request).await;
        let outcome = result.as_ref().map(|d| d.decision.outcome.as_str()).map_err(|_| ());
        crate::metrics::global().decision(&self.decision_point_name, outcome, started.elapsed());
        self.note_decision(result.as_ref().err().map(ToString::to_string));
        result
    }

    /// Queues one "decision delayed" comment once a request has waited past the configured time.
    async fn maybe_delayed_comment(&self, row: &InboxRow, hash: &str) -> anyhow::Result<()> {
        let Some(after) = self.settings.delayed_comment_after else {
            return Ok(());
        };
        let arrived = chrono::DateTime::parse_from_rfc3339(&row.received_at)?.with_timezone(&chrono::Utc);
        if chrono::Utc::now() - arrived < chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX) {
            return Ok(());
        }
        let marker = self.store.marker(&row.connector, &row.ticket_key, &format!("{hash}:delayed"));
        let body = format!(
            "deskbridge: the decision on this request is delayed. The identity decision point is not answering, so the request \
             stays pending and will be decided as soon as it does. Nothing is approved in the meantime, and this ticket does not \
             grant access by itself.\n[{marker}]"
        );
        if self.store.queue_delayed_comment(row, hash, &marker, &body).await? {
            tracing::info!("decision delayed comment queued");
        }
        Ok(())
    }

    /// Asks the shadow decision point and records whether it agrees. Its answer, or its
    /// failure, never changes the primary outcome.
    async fn shadow_decide(
        &self,
        shadow: &dyn DecisionPoint,
        row: &InboxRow,
        request: &AccessRequest,
        hash: &str,
        primary: &Decision,
    ) -> anyhow::Result<()> {
        let result = match shadow.decide(request).await {
            Ok(d) => crate::store::ShadowResult {
                pdp: shadow.describe(),
                agree: d.decision.outcome == primary.outcome,
                outcome: Some(d.decision.outcome.as_str().to_owned()),
                error: None,
                raw: d.raw,
            },
            Err(e) => crate::store::ShadowResult {
                pdp: shadow.describe(),
                outcome: None,
                error: Some(e.to_string()),
                agree: false,
                raw: json!(null),
            },
        };
        if !result.agree {
            tracing::info!(primary = primary.outcome.as_str(), shadow = ?result.outcome, error = ?result.error, "shadow decision point disagrees");
        }
        self.store.record_shadow(row, hash, primary, &result).await
    }

    /// A ticket-side approval event when the ITSM's approval or state differs from the previous
    /// version's. Recorded as evidence only: it never changes a decision.
    fn itsm_change(
        row: &InboxRow,
        previous: Option<&serde_json::Value>,
        normalized: &serde_json::Value,
    ) -> Vec<(Event, serde_json::Value)> {
        let side = |n: &serde_json::Value| {
            let ctx = &n["request"]["approver_context"];
            (ctx["itsm_approval"].clone(), ctx["itsm_state"].clone())
        };
        let now = side(normalized);
        if now == (serde_json::Value::Null, serde_json::Value::Null) {
            return Vec::new();
        }
        let before = previous.map(side);
        if before.as_ref() == Some(&now) {
            return Vec::new();
        }
        let (from_approval, from_state) = before.unwrap_or((serde_json::Value::Null, serde_json::Value::Null));
        vec![(
            Event::ItsmApproval,
            json!({"version": row.version, "approval": now.0, "state": now.1, "previous_approval": from_approval, "previous_state": from_state}),
        )]
    }

    /// Normalizes, enriches and decides one row. What it comes to is returned, to be written
    /// with its batch (and, when a shadow decision point is configured, what the shadow is
    /// asked); `None` when a failure was written already.
    #[tracing::instrument(skip_all, fields(connector = %row.connector, ticket = %row.number))]
    async fn decide_row<'r>(
        &self,
        row: &'r InboxRow,
        prepared: Prepared<'_>,
        prior: &Prior,
        report: &mut Report,
    ) -> anyhow::Result<Option<(Finished<'r>, Option<AccessRequest>)>> {
        let settled = |status, normalized, request_hash, evidence| {
            Ok(Some((
                Finished::Settled {
                    row,
                    status,
                    normalized,
                    request_hash,
                    evidence,
                },
                None,
            )))
        };
        let (instance, normalized, hash) = match prepared {
            Prepared::Unconfigured => {
                let why = format!("connector {:?} is not in the configuration", row.connector);
                tracing::warn!(%why, "ticket version parked");
                self.store.park_ticket(row, &why).await?;
                report.parked += 1;
                return Ok(None);
            }
            Prepared::Stale => return settled("stale", json!({"status": "stale"}), None, Vec::new()),
            Prepared::Read {
                instance,
                normalized,
                hash,
            } => (instance, normalized, hash),
        };
        let mut normalized_json = serde_json::to_value(&normalized)?;
        // The request is taken out of what the mapping made (not copied): enrichment adds the
        // facts to it in place.
        let (hash, mut ask) = match (normalized, hash) {
            (Normalized::AccessRequest { request }, Some(hash)) => (hash, Ok(request)),
            // Required fields are missing: deskbridge asks for them without consulting the policy.
            (Normalized::Incomplete { problems, .. }, Some(hash)) => (hash, Err(problems)),
            (normalized, _) => {
                if let Normalized::NotAnAccessRequest { reason, .. } = normalized {
                    tracing::debug!(%reason, "not an access request");
                }
                return settled("not_access", normalized_json, None, Vec::new());
            }
        };
        let mut evidence = Self::itsm_change(row, prior.previous(row), &normalized_json);
        let latest = prior.latest(row);
        if latest.is_some_and(|l| l.request_hash == hash) {
            return settled("unchanged", normalized_json, Some(hash), evidence);
        }
        // The ask is the ticket's; the facts come from the catalog and the directory.
        if let (Ok(request), Some(enricher)) = (&mut ask, &self.enricher) {
            let enriched_now = enricher.enrich(request).await;
            self.note_facts(enriched_now.as_ref().err().cloned());
            match enriched_now {
                Ok(understated) => {
                    let found: Vec<serde_json::Value> = understated
                        .iter()
                        .map(|u| json!({"claim": u.claim, "ticket_said": u.said, "catalog_says": u.catalog}))
                        .collect();
                    evidence.push((
                        Event::Enriched,
                        json!({"catalog": request.catalog, "context": request.context, "claims": request.claims, "understated": found}),
                    ));
                    normalized_json = Normalized::access_request_json(request)?;
                }
                Err(e) => {
                    // Fail closed: a source of facts that cannot answer leaves the request pending.
                    let delay = crate::backoff::delay(row.attempts, self.settings.decision_retry_base, self.settings.decision_retry_max);
                    tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "enrichment failed; request stays pending");
                    self.store.decision_failed(row, &normalized_json, &e, delay).await?;
                    self.maybe_delayed_comment(row, &hash).await?;
                    report.failed_decisions += 1;
                    return Ok(None);
                }
            }
        }
        let request = ask.as_deref().map_err(Vec::as_slice);
        let decided = match request {
            Err(problems) => {
                let decided = incomplete_decision(&instance.mapping, problems);
                crate::metrics::global().own_decision("deskbridge.mapping", decided.decision.outcome.as_str());
                decided
            }
            Ok(request) => match self.timed_decision(request).await {
                Ok(decided) => decided,
                Err(e) => {
                    let delay = crate::backoff::delay(row.attempts, self.settings.decision_retry_base, self.settings.decision_retry_max);
                    if matches!(e, crate::decision::DecisionError::CircuitOpen(_)) {
                        // The breaker logged when it opened; each row it holds back is counted.
                        tracing::debug!(error = %e, retry_in_s = delay.as_secs(), "decision point not called; request stays pending");
                        report.held_back += 1;
                    } else {
                        tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "decision failed; request stays pending");
                    }
                    self.store.decision_failed(row, &normalized_json, &e.to_string(), delay).await?;
                    self.maybe_delayed_comment(row, &hash).await?;
                    report.failed_decisions += 1;
                    return Ok(None);
                }
            },
        };
        let request = request.ok();
        let marker = self.store.marker(&row.connector, &row.ticket_key, &hash);
        let supersedes = latest.as_ref().map(|l| l.decision_id.as_str());
        if let Some(earlier) = &latest {
            evidence.push((
                Event::Superseded,
                json!({"superseded_decision_id": earlier.decision_id, "superseded_outcome": earlier.outcome, "by_decision_id": decided.decision.decision_id}),
            ));
        }
        let input = CommentInput {
            number: &row.number,
            request,
            decision: &decided.decision,
            supersedes,
        };
        let body = match self.renderer.render(&input, &marker, instance.connector.markup()) {
            Ok(body) => body,
            Err(e) => {
                // Nothing is decided without its comment; the rest of the queue flows.
                let why = format!("the comment template failed: {e:#}");
                tracing::error!(%why, "ticket version parked");
                self.store.park_ticket(row, &why).await?;
                report.parked += 1;
                return Ok(None);
            }
        };
        let ask = request.filter(|_| self.shadow.is_some()).cloned();
        let done = Finished::Decided(Box::new(DecidedRow {
            row,
            normalized: normalized_json,
            request_hash: hash,
            decision: decided.decision,
            raw: decided.raw,
            marker,
            body,
            evidence,
            read_latest: latest.map(|l| l.decision_id.clone()),
        }));
        Ok(Some((done, ask)))
    }
}
