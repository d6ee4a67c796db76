//! Matching entitlement changes to decisions, and the lifecycle timers.
//!
//! One replica at a time processes changes (the `provisioning` lease), in the order they were
//! stored, so an add and the remove after it are never applied out of order; each change's
//! effects (lifecycle move, membership, findings, audit records, comments) are one transaction
//! that first marks the change processed, so a replica that stalls past its lease writes
//! nothing twice. Timers fire through a fenced update (`… WHERE expiry_fired_at IS NULL`): once,
//! whichever replica gets there, and again after a restart only if they never fired.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::Provisioning;
use crate::catalog::Catalog;
use crate::store::lifecycle::{AccessEventRow, Effects, Grant, LifecycleComment, LifecycleRow, NewFinding, TimerColumn};
use crate::store::{stamp, Event, Store};

/// What one provisioning pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Changes processed.
    pub processed: usize,
    /// Grants matched to a decision.
    pub granted: usize,
    /// Findings recorded.
    pub findings: usize,
    /// Timers fired.
    pub timers: usize,
    /// Whether processing stopped at a change the directory could not resolve.
    pub blocked: Option<String>,
}

/// What a provisioning pass needs from the service that runs it (the pipeline implements it):
/// provisioning sits below the pipeline and never names it.
pub trait Host: Sync {
    /// The store.
    fn store(&self) -> &Store;
    /// The entitlement catalog in force, when one is configured.
    fn catalog(&self) -> Option<Arc<Catalog>>;
    /// Whether the service is stopping (a pass stops at the next change).
    fn stopping(&self) -> bool;
    /// Marks the service alive (a long pass is not a stall).
    fn beat(&self);
    /// The comment markup of connector instance `connector`, when it exists.
    fn markup(&self, connector: &str) -> Option<&dyn deskbridge_connector::Markup>;
}

/// Clock skew allowed between the decision's time and the grant's.
const SKEW_SECS: i64 = 300;

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|d| d.with_timezone(&Utc))
}

/// The lifecycles among `rows` for `group` (any when `None`) in one of `states`.
fn in_states<'r>(rows: &'r [LifecycleRow], group: Option<&'r str>, states: &'r [&str]) -> impl Iterator<Item = &'r LifecycleRow> {
    rows.iter()
        .filter(move |r| group.is_none_or(|g| r.group_name.eq_ignore_ascii_case(g)) && states.contains(&r.state.as_str()))
}

struct Pass<'a> {
    host: &'a dyn Host,
    prov: &'a Provisioning,
    catalog: Option<Arc<Catalog>>,
    report: PassReport,
    /// Group ids named during this pass (a group's name does not change within one).
    group_names: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
}

/// One provisioning pass: reconcile when due, process every stored change, fire due timers.
pub async fn run(host: &dyn Host, prov: &Provisioning) -> anyhow::Result<PassReport> {
    let store = host.store();
    if !store.try_lease("provisioning").await? {
        return Ok(PassReport::default());
    }
    let mut pass = Pass::new(host, prov);
    if prov.reconcile_due() {
        if let Err(e) = super::reconcile::all(store, prov, pass.catalog.as_deref()).await {
            tracing::warn!(error = %e, "reconciling the catalog's groups failed; the next reconciliation tries again");
        }
    }
    pass.process_changes().await?;
    pass.fire_timers().await?;
    Ok(pass.report)
}

/// Fires every due lifecycle timer without taking the `provisioning` lease: each fires once
/// however many replicas call this at the same time (the store's update is fenced). Returns how
/// many this call fired.
pub async fn fire_due_timers(host: &dyn Host, prov: &Provisioning) -> anyhow::Result<usize> {
    let mut pass = Pass::new(host, prov);
    pass.fire_timers().await?;
    Ok(pass.report.timers)
}

impl<'a> Pass<'a> {
    fn new(host: &'a dyn Host, prov: &'a Provisioning) -> Self {
        Self {
            host,
            prov,
            catalog: host.catalog(),
            report: PassReport::default(),
            group_names: Default::default(),
        }
    }

    fn store(&self) -> &Store {
        self.host.store()
    }

    async fn process_changes(&mut self) -> anyhow::Result<()> {
        loop {
            let due = self.store().access_events_due(200).await?;
            // The lease is renewed every batch: a replica that lost it stops, so two never
            // process changes side by side (which could apply a remove before its add).
            if due.is_empty() || self.host.stopping() || !self.store().try_lease("provisioning").await? {
                return Ok(());
            }
            for event in due {
                self.host.beat();
                match self.effects(&event).await {
                    Ok(fx) => {
                        let findings = fx.findings.len();
                        let granted = fx.grant.is_some();
                        match self.store().apply_access_event(event.id, &fx).await {
                            Ok(true) => {
                                crate::metrics::global().access_change(&fx.outcome);
                                self.report.processed += 1;
                                self.report.findings += findings;
                                self.report.granted += usize::from(granted);
                            }
                            Ok(false) => {}
                            Err(e) if e.downcast_ref::<crate::store::lifecycle::LifecycleMoved>().is_some() => return Ok(()),
                            Err(e) => return Err(e),
                        }
                    }
                    Err(why) => {
                        // Later changes wait: applying them before this one could reorder an add
                        // and its remove. The directory is asked again next pass.
                        tracing::warn!(event = event.id, error = %why, "an entitlement change could not be resolved; processing waits for the directory");
                        self.store().access_event_failed(event.id, &why).await?;
                        self.report.blocked = Some(why);
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Names for a change's directory ids. An error is the directory failing to answer.
    async fn names(&self, e: &AccessEventRow) -> Result<(Option<String>, Option<String>), String> {
        let dir = self.prov.directory();
        let group = match (&e.group_name, &e.group_id, dir) {
            (Some(g), _, _) => Some(g.clone()),
            (None, Some(id), Some(d)) => {
                let cached = self.group_names.lock().ok().and_then(|c| c.get(id).cloned());
                match cached {
                    Some(name) => name,
                    None => {
                        let name = d.group_name_by_id(id).await?.map(|n| n.to_lowercase());
                        if let Ok(mut c) = self.group_names.lock() {
                            c.insert(id.clone(), name.clone());
                        }
                        name
                    }
                }
            }
            _ => None,
        };
        let user = match (&e.user_name, &e.user_id, dir) {
            (Some(u), _, _) => Some(u.clone()),
            (None, Some(id), Some(d)) => d.user_by_id(id).await?.map(|u| u.user_name.to_lowercase()),
            _ => None,
        };
        Ok((group, user))
    }

    fn catalog_entitlements(&self, group: &str) -> Vec<String> {
        self.catalog.as_ref().map(|c| c.entitlements_of_group(group)).unwrap_or_default()
    }

    async fn effects(&self, e: &AccessEventRow) -> Result<Effects, String> {
        let (group, user) = self.names(e).await?;
        let mut fx = Effects {
            group_name: group.clone(),
            user_name: user.clone(),
            ..Effects::default()
        };
        let internal = |err: anyhow::Error| format!("{err:#}");
        match (e.kind.as_str(), group, user) {
            ("reread", _, _) => {
                let group_id = e.group_id.clone().unwrap_or_default();
                if let Some(dir) = self.prov.directory() {
                    if let Some(g) = dir.group_by_id(&group_id).await? {
                        super::reconcile::group(self.store(), dir, &g, self.catalog.as_deref())
                            .await
                            .map_err(internal)?;
                    }
                    fx.outcome = "reread".into();
                } else {
                    fx.outcome = "unresolved".into();
                }
            }
            ("added" | "baseline", Some(group), Some(user)) => self.added(e, &group, &user, &mut fx).await.map_err(internal)?,
            ("removed", Some(group), Some(user)) => self.removed(e, &group, &user, &mut fx).await.map_err(internal)?,
            ("deactivated", _, Some(user)) => self.deactivated(e, &user, &mut fx).await.map_err(internal)?,
            ("deleted", _, Some(user)) => {
                for group in self.store().groups_of_member(&user).await.map_err(internal)? {
                    self.removed(e, &group, &user, &mut fx).await.map_err(internal)?;
                }
                fx.outcome = "deleted".into();
            }
            ("ignored", _, _) => fx.outcome = "ignored".into(),
            // An id the directory no longer knows: kept as evidence, nothing to match.
            _ => fx.outcome = "unresolved".into(),
        }
        Ok(fx)
    }

    async fn added(&self, e: &AccessEventRow, group: &str, user: &str, fx: &mut Effects) -> anyhow::Result<()> {
        let store = self.store();
        let entitlements = self.catalog_entitlements(group);
        if entitlements.is_empty() {
            fx.outcome = "not_in_catalog".into();
            return Ok(());
        }
        fx.memberships.push((group.to_owned(), user.to_owned(), true));
        let at = parse(&e.occurred_at).unwrap_or_else(Utc::now);
        if store.is_disabled(user).await? {
            fx.findings.push(finding(
                "identity_disabled_with_access",
                &format!("{user}|{group}"),
                None,
                user,
                group,
                format!(
                    "{user} is disabled in the directory and was added to {group} ({})",
                    entitlements.join(", ")
                ),
            ));
        }
        // The user's lifecycles, read once for every question below.
        let rows = store.lifecycles_of(user).await?;
        if in_states(&rows, Some(group), &["granted", "expired"]).next().is_some() {
            fx.outcome = "already_granted".into();
            return Ok(());
        }
        let candidates: Vec<&LifecycleRow> = in_states(&rows, Some(group), &["approved"])
            .filter(|r| parse(&r.approved_at).is_some_and(|a| a <= at + chrono::Duration::seconds(SKEW_SECS)))
            .collect();
        // The decision the sender names, else its ticket, else the latest approved before the
        // grant.
        let by_decision = e
            .decision_ref
            .as_ref()
            .and_then(|id| candidates.iter().copied().find(|r| &r.decision_id == id));
        let by_ticket = e.ticket_ref.as_ref().and_then(|t| {
            candidates
                .iter()
                .copied()
                .find(|r| r.number.eq_ignore_ascii_case(t) || r.ticket_key == *t)
        });
        let chosen = by_decision.or(by_ticket).or(candidates.first().copied());
        if let Some(row) = chosen {
            self.grant(e, row, at, group, user, fx);
            return Ok(());
        }
        if e.kind == "baseline" {
            // Access held before deskbridge first read this group: recorded, not judged.
            fx.outcome = "baseline".into();
            return Ok(());
        }
        // Approved for something else on the same system: the grant went beyond the decision.
        let systems: Vec<&str> = entitlements.iter().filter_map(|e| e.split('/').next()).collect();
        let other = in_states(&rows, None, &["approved", "granted"]).find(|r| systems.contains(&r.system_id.as_str()));
        fx.outcome = "unmatched".into();
        if let Some(other) = other {
            fx.findings.push(finding(
                "granted_beyond_decision",
                &format!("{user}|{group}|{}", e.id),
                Some(other),
                user,
                group,
                format!(
                    "{user} was added to {group} ({}), but decision {} approved {}/{} ({})",
                    entitlements.join(", "),
                    other.decision_id,
                    other.system_id,
                    other.entitlement,
                    other.group_name
                ),
            ));
            return Ok(());
        }
        let itsm = self.itsm_only_approval(user, group).await?;
        let detail = match &itsm {
            Some((_, _, number, outcome)) => format!(
                "{user} was added to {group} ({}) with no approving policy decision; ticket {number} was approved in the ITSM only (policy outcome: {outcome})",
                entitlements.join(", ")
            ),
            None => format!("{user} was added to {group} ({}) with no approving policy decision", entitlements.join(", ")),
        };
        let mut f = finding(
            "granted_without_approval",
            &format!("{user}|{group}|{}", e.id),
            None,
            user,
            group,
            detail,
        );
        if let Some((connector, key, number, _)) = itsm {
            (f.connector, f.ticket_key, f.number) = (connector, key, number);
        }
        fx.findings.push(f);
        Ok(())
    }

    fn grant(&self, e: &AccessEventRow, row: &LifecycleRow, at: DateTime<Utc>, group: &str, user: &str, fx: &mut Effects) {
        let expires = crate::store::lifecycle::expiry(row.max_days, row.end_date.as_deref(), at);
        fx.outcome = "granted".into();
        fx.grant = Some(Grant {
            decision_id: row.decision_id.clone(),
            granted_at: stamp(at),
            expires_at: expires.map(stamp),
        });
        fx.resolve.push(("approved_not_fulfilled", row.decision_id.clone()));
        if let (Some(given), Some(allowed)) = (e.expires_at.as_deref().and_then(parse), expires) {
            if given > allowed + chrono::Duration::seconds(SKEW_SECS) {
                fx.findings.push(finding(
                    "granted_beyond_decision",
                    &format!("{}|{}", row.decision_id, e.id),
                    Some(row),
                    user,
                    group,
                    format!(
                        "{user} was granted {group} until {}, longer than decision {} allows (until {})",
                        stamp(given),
                        row.decision_id,
                        stamp(allowed)
                    ),
                ));
            }
        }
        fx.audit.push((
            row.connector.clone(),
            row.ticket_key.clone(),
            Event::AccessGranted,
            json!({
                "decision_id": row.decision_id, "user": user, "group": group,
                "entitlement": format!("{}/{}", row.system_id, row.entitlement),
                "granted_at": stamp(at), "observed_after": e.observed_after, "via": e.via, "source": e.source,
                "expires_at": expires.map(stamp),
            }),
        ));
        let expiry_line = match expires {
            Some(x) => format!(
                "Expires {} (from the decision's maximum duration); revocation is expected by then.",
                stamp_short(x)
            ),
            None => "The decision set no expiry.".to_owned(),
        };
        let observed = if e.via == "reconcile" {
            format!(
                "observed by reconciliation between {} and {}",
                e.observed_after.as_deref().unwrap_or("the first read"),
                e.occurred_at
            )
        } else {
            format!("reported by {} ({})", e.source, e.via)
        };
        self.comment(
            row,
            "granted",
            &[
                format!("Access granted — matches decision {}.", row.decision_id),
                format!(
                    "{user} was added to {group} ({}/{}) at {}, {observed}.",
                    row.system_id,
                    row.entitlement,
                    stamp_short(at)
                ),
                expiry_line,
                "deskbridge records this evidence; it does not grant or revoke access.".into(),
            ],
            fx,
        );
    }

    async fn removed(&self, e: &AccessEventRow, group: &str, user: &str, fx: &mut Effects) -> anyhow::Result<()> {
        if self.catalog_entitlements(group).is_empty() {
            fx.outcome = "not_in_catalog".into();
            return Ok(());
        }
        fx.memberships.push((group.to_owned(), user.to_owned(), false));
        fx.resolve.push(("identity_disabled_with_access", format!("{user}|{group}")));
        let at = parse(&e.occurred_at).unwrap_or_else(Utc::now);
        let rows = self.store().lifecycles_of(user).await?;
        let granted: Vec<&LifecycleRow> = in_states(&rows, Some(group), &["granted", "expired"]).collect();
        fx.outcome = if granted.is_empty() { "removed" } else { "revoked" }.into();
        for row in granted {
            fx.revoke.push((row.decision_id.clone(), stamp(at)));
            fx.resolve.push(("not_revoked_after_expiry", row.decision_id.clone()));
            fx.audit.push((
                row.connector.clone(),
                row.ticket_key.clone(),
                Event::AccessRevoked,
                json!({
                    "decision_id": row.decision_id, "user": user, "group": group, "revoked_at": stamp(at),
                    "expires_at": row.expires_at, "after_expiry": row.state == "expired",
                    "observed_after": e.observed_after, "via": e.via, "source": e.source,
                }),
            ));
        }
        Ok(())
    }

    async fn deactivated(&self, e: &AccessEventRow, user: &str, fx: &mut Effects) -> anyhow::Result<()> {
        fx.outcome = "deactivated".into();
        fx.disabled = Some(user.to_owned());
        let rows = self.store().lifecycles_of(user).await?;
        for group in self.store().groups_of_member(user).await? {
            let entitlements = self.catalog_entitlements(&group);
            if entitlements.is_empty() {
                continue;
            }
            let row = in_states(&rows, Some(&group), &["granted", "expired"]).next();
            fx.findings.push(finding(
                "identity_disabled_with_access",
                &format!("{user}|{group}"),
                row,
                user,
                &group,
                format!(
                    "{user} was disabled in the directory at {} and is still in {group} ({})",
                    e.occurred_at,
                    entitlements.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// A ticket for this beneficiary and group that the ITSM approved while the policy did not.
    async fn itsm_only_approval(&self, user: &str, group: &str) -> anyhow::Result<Option<(String, String, String, String)>> {
        // Only tickets whose request mentions the user are read (the search runs in SQL).
        for t in self.store().ticket_page(user, 500, 0).await? {
            let (normalized, decision) = t.parsed();
            let r = &normalized["request"];
            let who = r["context"]["beneficiary"]["user_name"]
                .as_str()
                .or(r["beneficiary"]["id"].as_str())
                .unwrap_or_default();
            // The latest version may be an unchanged re-read stored without its facts: the
            // catalog names the group of what was asked.
            let g = match r["catalog"]["entitlement"]["group"].as_str() {
                Some(g) => g.to_owned(),
                None => self
                    .catalog
                    .as_ref()
                    .and_then(|c| {
                        c.resolve(r["target"]["system"].as_str()?, r["entitlement"]["id"].as_str()?)
                            .entitlement?
                            .group
                    })
                    .unwrap_or_default(),
            };
            let ctx = &r["approver_context"];
            let approved = ctx["itsm_approval"].as_str().is_some_and(|a| a.eq_ignore_ascii_case("approved"))
                || ctx["itsm_state"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("closed_complete"));
            let outcome = decision["outcome"].as_str().unwrap_or("none");
            if who.eq_ignore_ascii_case(user) && g.eq_ignore_ascii_case(group) && approved && outcome != "approve" {
                return Ok(Some((t.connector, t.ticket_key, t.number, outcome.to_owned())));
            }
        }
        Ok(None)
    }

    /// Queues a lifecycle comment on the decision's ticket (once: the outbox keys it by the
    /// request version and the step).
    fn comment(&self, row: &LifecycleRow, step: &str, lines: &[String], fx: &mut Effects) {
        if !self.prov.settings.comments {
            return;
        }
        let Some(markup) = self.host.markup(&row.connector) else {
            return;
        };
        let body: Vec<String> = lines.iter().map(|l| crate::render::inert(l, markup)).collect();
        let key = format!("{}:{step}", row.request_hash);
        let marker = self.store().marker(&row.connector, &row.ticket_key, &key);
        fx.comments.push((
            row.connector.clone(),
            row.ticket_key.clone(),
            row.decision_id.clone(),
            LifecycleComment {
                body: format!("{}\n[{marker}]", body.join("\n")),
                key,
                marker,
            },
        ));
    }

    async fn fire_timers(&mut self) -> anyhow::Result<()> {
        let now = Utc::now();
        let grace = chrono::Duration::from_std(self.prov.settings.grace).unwrap_or_default();
        for row in self.store().expiries_due(&stamp(now - grace), 500).await? {
            self.host.beat();
            if fire_expiry(self, &row).await? {
                self.report.timers += 1;
            }
        }
        let fulfil = chrono::Duration::from_std(self.prov.settings.fulfil_within).unwrap_or_default();
        for row in self.store().unfulfilled_due(&stamp(now - fulfil), 500).await? {
            let mut fx = Effects::default();
            fx.findings.push(finding(
                "approved_not_fulfilled",
                &row.decision_id,
                Some(&row),
                &row.beneficiary,
                &row.group_name,
                format!(
                    "decision {} approved {}/{} for {} at {}; no grant seen within {} h",
                    row.decision_id,
                    row.system_id,
                    row.entitlement,
                    row.beneficiary,
                    row.approved_at,
                    fulfil.num_hours()
                ),
            ));
            if self
                .store()
                .fire_timer(&row.decision_id, TimerColumn::Unfulfilled, false, &fx)
                .await?
            {
                self.report.timers += 1;
                self.report.findings += 1;
            }
        }
        Ok(())
    }
}

/// Fires one expiry timer: still in the group → `not_revoked_after_expiry` and the "expired"
/// comment; gone → the expiry is recorded. `false` when another replica fired it first.
async fn fire_expiry(pass: &Pass<'_>, row: &LifecycleRow) -> anyhow::Result<bool> {
    let store = pass.store();
    let present = store.is_member(&row.group_name, &row.beneficiary).await?;
    let mut fx = Effects::default();
    let expires = row.expires_at.clone().unwrap_or_default();
    fx.audit.push((
        row.connector.clone(),
        row.ticket_key.clone(),
        Event::AccessExpired,
        json!({"decision_id": row.decision_id, "user": row.beneficiary, "group": row.group_name, "expires_at": expires, "still_present": present}),
    ));
    if present {
        fx.findings.push(finding(
            "not_revoked_after_expiry",
            &row.decision_id,
            Some(row),
            &row.beneficiary,
            &row.group_name,
            format!(
                "{} is still in {} after decision {}'s access expired at {} (grace {} h); owner {}",
                row.beneficiary,
                row.group_name,
                row.decision_id,
                expires,
                pass.prov.settings.grace.as_secs() / 3600,
                row.owner
            ),
        ));
        pass.comment(
            row,
            "expired",
            &[
                format!(
                    "Access expired — still present: revocation required (decision {}).",
                    row.decision_id
                ),
                format!(
                    "{} was allowed {}/{} ({}) until {}; the directory still shows the membership.",
                    row.beneficiary,
                    row.system_id,
                    row.entitlement,
                    row.group_name,
                    parse(&expires).map(stamp_short).unwrap_or(expires.clone())
                ),
                format!(
                    "Owner: {}. deskbridge records the revocation when the directory reports it.",
                    row.owner
                ),
            ],
            &mut fx,
        );
    }
    store.fire_timer(&row.decision_id, TimerColumn::Expiry, present, &fx).await
}

fn stamp_short(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn finding(kind: &'static str, subject: &str, row: Option<&LifecycleRow>, user: &str, group: &str, detail: String) -> NewFinding {
    NewFinding {
        kind,
        subject: subject.to_owned(),
        connector: row.map(|r| r.connector.clone()).unwrap_or_default(),
        ticket_key: row.map(|r| r.ticket_key.clone()).unwrap_or_default(),
        number: row.map(|r| r.number.clone()).unwrap_or_default(),
        user_name: user.to_owned(),
        group_name: group.to_owned(),
        detail,
    }
}
