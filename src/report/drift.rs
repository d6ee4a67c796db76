//! `deskbridge report drift`: where the service desk and the policy disagree, and what a
//! governance reviewer should look at.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::store::Store;

/// Report options.
#[derive(Debug, Clone)]
pub struct Options {
    /// A request without a decision (or a decision not yet on the ticket) longer than this is late.
    pub sla: Duration,
    /// The same beneficiary asking for the same entitlement this often is a role-design signal.
    pub repeat_threshold: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sla: Duration::from_secs(24 * 3600),
            repeat_threshold: 3,
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// What kind of drift.
    pub kind: &'static str,
    /// Connector instance.
    pub connector: String,
    /// Ticket number(s).
    pub ticket: String,
    /// Why.
    pub detail: String,
}

/// The kinds of finding, in report order.
pub const KINDS: &[&str] = &[
    "approved_in_itsm_without_policy_approve",
    "itsm_approval_disagrees_with_decision",
    "requester_is_approver",
    "pending_beyond_sla",
    "repeated_request",
    "nhi_without_owner_or_expiry",
    "approved_without_expiry",
    "claim_understates_catalog",
    "granted_without_approval",
    "granted_beyond_decision",
    "not_revoked_after_expiry",
    "approved_not_fulfilled",
    "identity_disabled_with_access",
];

fn text(v: &Value) -> Option<String> {
    v.as_str().map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty())
}

fn itsm_says_approved(ctx: &Value) -> bool {
    text(&ctx["itsm_approval"]).as_deref() == Some("approved") || text(&ctx["itsm_state"]).as_deref() == Some("closed_complete")
}

/// Every finding, sorted by kind then ticket. The tickets' states are streamed from the store
/// and looked at one at a time, so memory does not grow with the number of tickets (serve
/// counts the findings for its metrics every few minutes).
pub async fn drift(store: &Store, options: &Options) -> anyhow::Result<Vec<Finding>> {
    drift_each(store, options, |_| {}).await
}

/// [`drift`], showing `each` every ticket's state as it is looked at (the admin API charts
/// them), without holding them.
pub async fn drift_each(
    store: &Store,
    options: &Options,
    mut each: impl FnMut(&crate::store::TicketState),
) -> anyhow::Result<Vec<Finding>> {
    use futures_util::TryStreamExt as _;
    let mut scan = Scan::new(options);
    let mut states = store.ticket_states_streamed();
    while let Some(state) = states.try_next().await? {
        scan.ticket(&state);
        each(&state);
    }
    drop(states);
    scan.finish(store).await
}

/// [`drift`] over ticket states the caller already read ([`Store::ticket_states`]).
pub async fn drift_of(store: &Store, states: &[crate::store::TicketState], options: &Options) -> anyhow::Result<Vec<Finding>> {
    let mut scan = Scan::new(options);
    for state in states {
        scan.ticket(state);
    }
    scan.finish(store).await
}

/// The findings so far, ticket by ticket.
struct Scan<'o> {
    options: &'o Options,
    findings: Vec<Finding>,
    repeats: BTreeMap<(String, String, String, String), Vec<String>>,
    now: chrono::DateTime<chrono::Utc>,
    sla: chrono::Duration,
}

impl<'o> Scan<'o> {
    fn new(options: &'o Options) -> Self {
        Self {
            options,
            findings: Vec::new(),
            repeats: BTreeMap::new(),
            now: chrono::Utc::now(),
            sla: chrono::Duration::from_std(options.sla).unwrap_or(chrono::Duration::MAX),
        }
    }

    /// One ticket's findings.
    fn ticket(&mut self, t: &crate::store::TicketState) {
        let (now, sla) = (self.now, self.sla);
        let findings = &mut self.findings;
        let repeats = &mut self.repeats;
        let mut add = |kind: &'static str, detail: String| {
            findings.push(Finding {
                kind,
                connector: t.connector.clone(),
                ticket: t.number.clone(),
                detail,
            })
        };
        let (normalized, decision) = t.parsed();
        let outcome = decision["outcome"].as_str().unwrap_or("none");
        if t.status == "pending" {
            let since = chrono::DateTime::parse_from_rfc3339(&t.received_at)
                .map(|d| d.with_timezone(&chrono::Utc))
                .unwrap_or(now);
            if now - since > sla {
                add(
                    "pending_beyond_sla",
                    format!("no decision since {} ({} attempts failed)", t.received_at, t.attempts),
                );
            }
        }
        let request = &normalized["request"];
        if request.is_null() {
            return;
        }
        let ctx = &request["approver_context"];
        let approved_in_itsm = itsm_says_approved(ctx);
        if approved_in_itsm && !matches!(outcome, "approve" | "deny") {
            add(
                "approved_in_itsm_without_policy_approve",
                format!(
                    "ITSM approval {}, state {}; policy outcome {outcome}",
                    text(&ctx["itsm_approval"]).unwrap_or_default(),
                    text(&ctx["itsm_state"]).unwrap_or_default()
                ),
            );
        }
        let rejected_in_itsm = text(&ctx["itsm_approval"]).as_deref() == Some("rejected");
        if (approved_in_itsm && outcome == "deny") || (rejected_in_itsm && outcome == "approve") {
            add(
                "itsm_approval_disagrees_with_decision",
                format!(
                    "ITSM approval {}; policy outcome {outcome}",
                    text(&ctx["itsm_approval"]).unwrap_or_default()
                ),
            );
        }
        // What the requester typed about the facts, against the catalog.
        let (claims, catalog) = (&request["claims"], &request["catalog"]);
        if !claims.is_null() && request["kind"] != "revoke" {
            let mut understated = Vec::new();
            if claims["privileged"] == Value::Bool(false) && catalog["entitlement"]["tier"] == "privileged" {
                understated.push("the ticket said not privileged; the catalog says privileged".to_owned());
            }
            if claims["environment"] != "prod" && catalog["system"]["environment"] == "prod" {
                understated.push(format!(
                    "the ticket said {}; the catalog says the system runs in prod",
                    text(&claims["environment"]).unwrap_or_default()
                ));
            }
            if !understated.is_empty() {
                add("claim_understates_catalog", understated.join("; "));
            }
        }
        let requester = text(&request["requester"]["id"]).unwrap_or_default();
        let named = text(&ctx["named_approver"]);
        let self_approved = ctx["recorded"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| text(&a["approver"]).as_deref() == Some(requester.as_str()) && text(&a["state"]).as_deref() == Some("approved"));
        if named.as_deref() == Some(requester.as_str()) || self_approved {
            add(
                "requester_is_approver",
                format!(
                    "{requester} requested and is {}",
                    if self_approved {
                        "recorded as approver"
                    } else {
                        "the named approver"
                    }
                ),
            );
        }
        let nhi = text(&request["beneficiary"]["type"]).is_some_and(|k| k != "person");
        if nhi && request["kind"] != "revoke" {
            let missing: Vec<&str> = [("owner", &request["nhi"]["owner"]), ("expiry", &request["nhi"]["expires_at"])]
                .into_iter()
                .filter(|(_, v)| text(v).is_none())
                .map(|(n, _)| n)
                .collect();
            if !missing.is_empty() {
                add(
                    "nhi_without_owner_or_expiry",
                    format!(
                        "{} {} has no {}",
                        request["beneficiary"]["type"].as_str().unwrap_or(""),
                        request["beneficiary"]["id"].as_str().unwrap_or(""),
                        missing.join(" or ")
                    ),
                );
            }
        }
        if outcome == "approve"
            && request["kind"] != "revoke"
            && decision["obligations"]["max_duration_days"].is_null()
            && request["duration_days"].is_null()
            && request["expires_at"].is_null()
        {
            add(
                "approved_without_expiry",
                "approved with no requested duration, no end date and no maximum duration".into(),
            );
        }
        if matches!(request["kind"].as_str(), Some("grant" | "extend" | "modify")) {
            let group = (
                t.connector.clone(),
                text(&request["beneficiary"]["id"]).unwrap_or_default(),
                text(&request["target"]["system"]).unwrap_or_default(),
                text(&request["entitlement"]["id"]).unwrap_or_default(),
            );
            repeats.entry(group).or_default().push(t.number.clone());
        }
    }

    /// The findings across tickets (repeated requests), those of the outbox and the access
    /// lifecycles, all sorted.
    async fn finish(self, store: &Store) -> anyhow::Result<Vec<Finding>> {
        let Self {
            options,
            mut findings,
            repeats,
            now,
            sla,
        } = self;
        for ((connector, beneficiary, system, entitlement), tickets) in repeats {
            if tickets.len() >= options.repeat_threshold.max(2) {
                findings.push(Finding {
                    kind: "repeated_request",
                    connector,
                    ticket: tickets.join(" "),
                    detail: format!(
                        "{beneficiary} asked for {entitlement} on {system} {} times: consider a role or a standing entitlement",
                        tickets.len()
                    ),
                });
            }
        }
        for (connector, number, created_at) in store.undelivered_comments().await? {
            let since = chrono::DateTime::parse_from_rfc3339(&created_at)
                .map(|d| d.with_timezone(&chrono::Utc))
                .unwrap_or(now);
            if now - since > sla {
                findings.push(Finding {
                    kind: "pending_beyond_sla",
                    connector,
                    ticket: number,
                    detail: format!("decision made {created_at} but not yet on the ticket"),
                });
            }
        }
        // Provisioning findings, recorded once each by the lifecycle and open until later evidence
        // closes them (see `crate::provisioning`).
        for f in store.open_access_findings().await? {
            let Some(kind) = KINDS.iter().find(|k| **k == f.kind) else {
                continue;
            };
            findings.push(Finding {
                kind,
                connector: f.connector,
                ticket: if f.number.is_empty() { "-".into() } else { f.number },
                detail: f.detail,
            });
        }
        findings.sort_by(|a, b| {
            let rank = |k: &str| KINDS.iter().position(|x| *x == k).unwrap_or(usize::MAX);
            (rank(a.kind), &a.ticket).cmp(&(rank(b.kind), &b.ticket))
        });
        Ok(findings)
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// A JSON array.
    Json,
    /// CSV with a header.
    Csv,
}

/// Renders findings.
pub fn render(findings: &[Finding], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(findings)? + "\n",
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            writer.write_record(["kind", "connector", "ticket", "detail"])?;
            for f in findings {
                writer.write_record([f.kind, &f.connector, &f.ticket, &f.detail])?;
            }
            String::from_utf8(writer.into_inner()?)?
        }
        Format::Table if findings.is_empty() => "no drift found\n".into(),
        Format::Table => {
            let mut out = format!("{:<40}  {:<14}  {}\n", "FINDING", "TICKET", "DETAIL");
            for f in findings {
                out.push_str(&format!("{:<40}  {:<14}  {}\n", f.kind, f.ticket, f.detail));
            }
            out.push_str(&format!("\n{} finding(s)\n", findings.len()));
            out
        }
    })
}
