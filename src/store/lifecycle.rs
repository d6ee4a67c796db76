//! Provisioning evidence in the store: the entitlement changes taken in (`access_events`), the
//! lifecycle of every approving decision (`access_lifecycle`), what deskbridge last knew of each
//! catalog group's members, and the provisioning findings. The decisions about them are made in
//! `crate::provisioning`; every write here is one transaction with its audit records.

use serde_json::{json, Value};

use super::{audit, now, sha256_hex, stamp, Event, InboxRow, Store};

/// An entitlement change to take in.
#[derive(Debug, Clone, Default)]
pub struct NewAccessEvent {
    /// `set`, `webhook` or `reconcile`.
    pub via: &'static str,
    /// `added`, `removed`, `deactivated`, `deleted`, `reread` or `ignored`.
    pub kind: String,
    /// The group's display name, when known.
    pub group_name: Option<String>,
    /// The group's directory id, when known.
    pub group_id: Option<String>,
    /// The identity's user name, when known.
    pub user_name: Option<String>,
    /// The identity's directory id, when known.
    pub user_id: Option<String>,
    /// When it happened (or, for reconciliation, when it was seen; RFC 3339).
    pub occurred_at: String,
    /// For reconciliation: the earlier read it happened after.
    pub observed_after: Option<String>,
    /// The decision the sender says it fulfils.
    pub decision_ref: Option<String>,
    /// The ticket the sender says it fulfils.
    pub ticket_ref: Option<String>,
    /// The end the sender gave the access (RFC 3339).
    pub expires_at: Option<String>,
    /// What it was taken from (the event payload).
    pub raw: Value,
}

/// A stored entitlement change.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessEventRow {
    /// Row id.
    pub id: i64,
    /// The source id.
    pub source: String,
    /// How it came in.
    pub via: String,
    /// What changed.
    pub kind: String,
    /// Group display name.
    pub group_name: Option<String>,
    /// Group id.
    pub group_id: Option<String>,
    /// User name.
    pub user_name: Option<String>,
    /// User id.
    pub user_id: Option<String>,
    /// When.
    pub occurred_at: String,
    /// Lower time bound (reconciliation).
    pub observed_after: Option<String>,
    /// Named decision.
    pub decision_ref: Option<String>,
    /// Named ticket.
    pub ticket_ref: Option<String>,
    /// Given end.
    pub expires_at: Option<String>,
    /// Failed attempts to process it.
    pub attempts: i64,
}

/// The lifecycle of one approving decision.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct LifecycleRow {
    /// The decision.
    pub decision_id: String,
    /// Connector of its ticket.
    pub connector: String,
    /// Its ticket's key.
    pub ticket_key: String,
    /// Its ticket's number.
    pub number: String,
    /// The request version it decided.
    pub request_hash: String,
    /// Who gets the access (the directory's user name when known).
    pub beneficiary: String,
    /// Catalog system.
    pub system_id: String,
    /// Catalog entitlement.
    pub entitlement: String,
    /// The directory group that represents it.
    pub group_name: String,
    /// The control owner.
    pub owner: String,
    /// When it was approved.
    pub approved_at: String,
    /// Longest it may be held, in days.
    pub max_days: Option<i64>,
    /// The end date the request asked for.
    pub end_date: Option<String>,
    /// approved, granted, revoked, expired (not revoked after expiry), superseded (replaced
    /// before it was granted) or extended (a later approval continues the access).
    pub state: String,
    /// When the grant was observed.
    pub granted_at: Option<String>,
    /// When it expires.
    pub expires_at: Option<String>,
    /// When the expiry timer fired.
    pub expiry_fired_at: Option<String>,
    /// When the revocation was observed.
    pub revoked_at: Option<String>,
}

const LIFECYCLE_COLUMNS: &str = "decision_id, connector, ticket_key, number, request_hash, beneficiary, system_id, entitlement, group_name, owner, approved_at, max_days, end_date, state, granted_at, expires_at, expiry_fired_at, revoked_at";

/// A provisioning finding to record.
#[derive(Debug, Clone)]
pub struct NewFinding {
    /// Its kind (`granted_without_approval`, …).
    pub kind: &'static str,
    /// What it is about, unique per kind (`user|group` or a decision id).
    pub subject: String,
    /// The ticket it concerns ("" when none).
    pub connector: String,
    /// Ticket key ("" when none).
    pub ticket_key: String,
    /// Ticket number ("" when none).
    pub number: String,
    /// The identity.
    pub user_name: String,
    /// The group.
    pub group_name: String,
    /// Why.
    pub detail: String,
}

/// A stored, unresolved provisioning finding.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FindingRow {
    /// Kind.
    pub kind: String,
    /// Connector.
    pub connector: String,
    /// Ticket number.
    pub number: String,
    /// Why.
    pub detail: String,
}

/// A lifecycle comment to queue on the decision's ticket, once.
#[derive(Debug, Clone)]
pub struct LifecycleComment {
    /// Outbox key: the request hash with the step (`…:granted`, `…:expired`).
    pub key: String,
    /// Its marker.
    pub marker: String,
    /// Its text.
    pub body: String,
}

/// What processing one entitlement change does, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// How it came out (`granted`, `revoked`, `unmatched`, `not_in_catalog`, …).
    pub outcome: String,
    /// Names resolved from directory ids.
    pub group_name: Option<String>,
    /// The user name resolved from a directory id.
    pub user_name: Option<String>,
    /// `(group, user, present)` memberships now known.
    pub memberships: Vec<(String, String, bool)>,
    /// An identity the directory disabled.
    pub disabled: Option<String>,
    /// The decision whose grant this is.
    pub grant: Option<Grant>,
    /// Decisions whose access this removed, with when.
    pub revoke: Vec<(String, String)>,
    /// Findings.
    pub findings: Vec<NewFinding>,
    /// `(kind, subject)` of findings the change closes.
    pub resolve: Vec<(&'static str, String)>,
    /// Comments, with the decision's `(connector, ticket key, decision id)`.
    pub comments: Vec<(String, String, String, LifecycleComment)>,
    /// Audit records: `(connector, ticket key, event, payload)`.
    pub audit: Vec<(String, String, Event, Value)>,
}

/// A grant matched to its decision.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The decision.
    pub decision_id: String,
    /// When the grant happened (or was observed).
    pub granted_at: String,
    /// When the access ends, when it does.
    pub expires_at: Option<String>,
}

/// The store writes a change conflicted with (another replica moved the lifecycle first).
#[derive(Debug, thiserror::Error)]
#[error("the access lifecycle changed meanwhile; the change is processed again")]
pub struct LifecycleMoved;

/// When access granted at `granted_at` ends: after the decision's maximum duration in days, or
/// at the end of the requested end date, whichever comes first (`None`: no end was set).
pub fn expiry(
    max_days: Option<i64>,
    end_date: Option<&str>,
    granted_at: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let by_days = max_days.map(|d| granted_at + chrono::Duration::days(d));
    let by_date = end_date
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .and_then(|d| d.succ_opt())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc());
    [by_days, by_date].into_iter().flatten().min()
}

/// Whether `user` is known to be in `group`, on the pool or inside a transaction.
async fn is_present<'e>(db: impl sqlx::Executor<'e, Database = sqlx::Any>, group: &str, user: &str) -> sqlx::Result<bool> {
    let present: Option<i64> = sqlx::query_scalar("SELECT present FROM memberships WHERE group_name = $1 AND user_name = $2")
        .bind(group.to_lowercase())
        .bind(user.to_lowercase())
        .fetch_optional(db)
        .await?;
    Ok(present == Some(1))
}

/// What a decision starts a lifecycle for (see [`on_decision`]).
struct Started<'a> {
    system: &'a str,
    entitlement: &'a str,
    /// Lowercased.
    group: String,
    /// Lowercased.
    beneficiary: String,
}

/// The lifecycle a decision starts, if any: an approve of a grant, modify or extend whose
/// catalog entitlement a directory group represents.
fn starts_lifecycle<'a>(normalized: &'a Value, decision: &crate::schema::Decision) -> Option<Started<'a>> {
    let request = &normalized["request"];
    if decision.outcome != crate::schema::Outcome::Approve || !matches!(request["kind"].as_str(), Some("grant" | "modify" | "extend")) {
        return None;
    }
    let catalog = &request["catalog"];
    let (Some(system), Some(entitlement), Some(group)) = (
        catalog["system"]["id"].as_str(),
        catalog["entitlement"]["id"].as_str(),
        catalog["entitlement"]["group"].as_str(),
    ) else {
        return None;
    };
    // The directory's name for the beneficiary when the directory knew them; the ticket's
    // words only otherwise.
    let beneficiary = request["context"]["beneficiary"]["user_name"]
        .as_str()
        .or(request["beneficiary"]["id"].as_str())
        .unwrap_or_default()
        .to_lowercase();
    Some(Started {
        system,
        entitlement,
        group: group.to_lowercase(),
        beneficiary,
    })
}

/// The lock subjects (see [`super::WriteTx::lock_tickets`]) of recording a decision: its
/// ticket, and the beneficiary whose lifecycles it may start or extend.
pub(super) fn decision_subjects(row: &InboxRow, normalized: &Value, decision: &crate::schema::Decision) -> Vec<String> {
    let mut subjects = vec![format!("ticket\n{}\n{}", row.connector, row.ticket_key)];
    if let Some(started) = starts_lifecycle(normalized, decision) {
        subjects.push(format!("beneficiary\n{}", started.beneficiary));
    }
    subjects
}

/// What the lifecycles a decided batch starts rest on, read for the whole batch in two
/// statements per 50 pairs instead of two per approval: for each (beneficiary, group), the
/// decisions whose access the beneficiary holds (`granted` or `expired`) and whether the
/// directory shows them in the group. Recording a decision keeps it current for the next
/// decision of the batch on the same pair ([`BatchFacts::granted`]): nothing else in the batch's
/// transaction changes either.
#[derive(Debug, Default)]
pub(super) struct BatchFacts {
    /// Held decision ids (ordered by decision id) by pair; every read pair has an entry.
    held: std::collections::HashMap<(String, String), Vec<String>>,
    /// The read pairs whose beneficiary is in the group.
    present: std::collections::HashSet<(String, String)>,
}

impl BatchFacts {
    /// Reads the facts of every (beneficiary, group) pair the decisions of `decided` start
    /// lifecycles for. Inside the write transaction, after the batch's subjects are locked.
    pub(super) async fn read(tx: &mut super::WriteTx, decided: &[&super::inbox::DecidedRow<'_>]) -> anyhow::Result<Self> {
        let pairs: Vec<(String, String)> = decided
            .iter()
            .filter_map(|d| starts_lifecycle(&d.normalized, &d.decision))
            .map(|started| (started.beneficiary, started.group))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut facts = Self::default();
        for chunk in pairs.chunks(super::ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "SELECT beneficiary, group_name, decision_id FROM access_lifecycle WHERE state IN ('granted', 'expired') AND (beneficiary, group_name) IN (VALUES ",
            );
            super::push_placeholders(&mut sql, chunk.len(), 2, tx.backend);
            sql.push_str(") ORDER BY decision_id");
            let mut query = sqlx::query_as::<_, (String, String, String)>(&sql);
            for (beneficiary, group) in chunk {
                query = query.bind(beneficiary).bind(group);
            }
            for pair in chunk {
                facts.held.insert(pair.clone(), Vec::new());
            }
            for (beneficiary, group, decision_id) in query.fetch_all(&mut **tx).await? {
                facts.held.entry((beneficiary, group)).or_default().push(decision_id);
            }
            let mut sql =
                String::from("SELECT user_name, group_name FROM memberships WHERE present = 1 AND (user_name, group_name) IN (VALUES ");
            super::push_placeholders(&mut sql, chunk.len(), 2, tx.backend);
            sql.push(')');
            let mut query = sqlx::query_as::<_, (String, String)>(&sql);
            for (beneficiary, group) in chunk {
                query = query.bind(beneficiary).bind(group);
            }
            facts.present.extend(query.fetch_all(&mut **tx).await?);
        }
        Ok(facts)
    }

    /// The held decisions and membership of a pair read for the batch.
    fn get(&self, beneficiary: &str, group: &str) -> Option<(Vec<String>, bool)> {
        let pair = (beneficiary.to_owned(), group.to_owned());
        let held = self.held.get(&pair)?;
        Some((held.clone(), self.present.contains(&pair)))
    }

    /// `decision_id` was recorded as granted on the pair and every access held before it
    /// became `extended`: it is now the one decision held.
    fn granted(&mut self, beneficiary: &str, group: &str, decision_id: &str) {
        if let Some(held) = self.held.get_mut(&(beneficiary.to_owned(), group.to_owned())) {
            *held = vec![decision_id.to_owned()];
        }
    }
}

/// At decision time: an approve of a grant, modify or extend whose catalog entitlement a
/// directory group represents starts a lifecycle; any decision on the ticket supersedes the
/// approvals not yet granted. When the beneficiary already holds the access under an earlier
/// decision (an extension), no new grant will be seen: the new decision continues the access
/// from now, the earlier lifecycle becomes `extended`, and its expiry finding closes.
#[allow(clippy::too_many_arguments)]
pub(super) async fn on_decision(
    tx: &mut super::WriteTx,
    row: &InboxRow,
    normalized: &Value,
    request_hash: &str,
    decision: &crate::schema::Decision,
    earlier_decision: bool,
    facts: &mut BatchFacts,
    approvals: &mut Vec<Approval>,
) -> anyhow::Result<()> {
    // Only an earlier decision on the ticket can have started a lifecycle to supersede.
    if earlier_decision {
        sqlx::query("UPDATE access_lifecycle SET state = 'superseded' WHERE connector = $1 AND ticket_key = $2 AND state = 'approved'")
            .bind(&row.connector)
            .bind(&row.ticket_key)
            .execute(&mut **tx)
            .await?;
    }
    let request = &normalized["request"];
    let Some(Started {
        system,
        entitlement,
        group,
        beneficiary,
    }) = starts_lifecycle(normalized, decision)
    else {
        return Ok(());
    };
    let catalog = &request["catalog"];
    let days = [
        decision.obligations.max_duration_days,
        request["duration_days"].as_u64().map(|d| d as u32),
    ]
    .into_iter()
    .flatten()
    .min();
    // Already a member (seen by an event or reconciliation), with no lifecycle of its own: the
    // approval is fulfilled as it is made.
    // The batch read every pair its approvals start (`BatchFacts::read`, by the same rule).
    let Some((held, present)) = facts.get(&beneficiary, &group) else {
        anyhow::bail!("the lifecycle facts of {beneficiary} in {group} were not read with the batch");
    };
    let already = !held.is_empty() || present;
    let approved_at = stamp(decision.decided_at);
    let expires_at = expiry(days.map(i64::from), request["expires_at"].as_str(), decision.decided_at).map(stamp);
    let approval = Approval {
        decision_id: decision.decision_id.clone(),
        connector: row.connector.clone(),
        ticket_key: row.ticket_key.clone(),
        number: row.number.clone(),
        request_hash: request_hash.to_owned(),
        beneficiary: beneficiary.clone(),
        system: system.to_owned(),
        entitlement: entitlement.to_owned(),
        group: group.clone(),
        owner: catalog["owner"].as_str().unwrap_or_default().to_owned(),
        approved_at: approved_at.clone(),
        max_days: days.map(i64::from),
        end_date: request["expires_at"].as_str().map(str::to_owned),
        granted: already,
        expires_at: expires_at.clone().filter(|_| already),
    };
    if !already {
        // Waits for its grant: nothing later in the batch reads it (the facts are of access
        // held), so it is inserted with the batch's others, in one statement per chunk.
        approvals.push(approval);
        return Ok(());
    }
    let inserted = insert_approvals(tx, std::slice::from_ref(&approval)).await?;
    if inserted == 0 {
        return Ok(());
    }
    facts.granted(&beneficiary, &group, &decision.decision_id);
    for earlier in &held {
        sqlx::query("UPDATE access_lifecycle SET state = 'extended' WHERE decision_id = $1")
            .bind(earlier)
            .execute(&mut **tx)
            .await?;
        let payload = json!({"kind": "not_revoked_after_expiry", "subject": earlier, "by_decision": decision.decision_id});
        resolve(tx, "not_revoked_after_expiry", earlier, &approved_at, payload).await?;
    }
    audit::append(
        tx,
        &row.connector,
        &row.ticket_key,
        Event::AccessGranted,
        json!({
            "decision_id": decision.decision_id, "user": beneficiary, "group": group,
            "entitlement": format!("{system}/{entitlement}"), "granted_at": approved_at,
            "via": if held.is_empty() { "already_member" } else { "extension" },
            "source": "decision", "extends": held, "expires_at": expires_at,
        }),
    )
    .await?;
    Ok(())
}

/// A lifecycle an approval starts (see [`on_decision`]).
pub(super) struct Approval {
    decision_id: String,
    connector: String,
    ticket_key: String,
    number: String,
    request_hash: String,
    beneficiary: String,
    system: String,
    entitlement: String,
    group: String,
    owner: String,
    approved_at: String,
    max_days: Option<i64>,
    end_date: Option<String>,
    /// Whether the beneficiary holds the access already: granted now, at `approved_at`.
    granted: bool,
    /// The access's expiry, set when it is granted now (an approval waiting for its grant
    /// gets its expiry from the grant).
    expires_at: Option<String>,
}

/// Inserts lifecycles in multi-row inserts, each unless its decision has one. Returns how many
/// were inserted.
pub(super) async fn insert_approvals(tx: &mut super::WriteTx, approvals: &[Approval]) -> anyhow::Result<u64> {
    let mut inserted = 0;
    for chunk in approvals.chunks(super::ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO access_lifecycle (decision_id, connector, ticket_key, number, request_hash, beneficiary, system_id, entitlement, group_name, owner, approved_at, max_days, end_date, state, granted_at, expires_at) VALUES ",
        );
        super::push_placeholders(&mut sql, chunk.len(), 16, tx.backend);
        sql.push_str(" ON CONFLICT DO NOTHING");
        let mut query = sqlx::query(&sql);
        for a in chunk {
            query = query
                .bind(&a.decision_id)
                .bind(&a.connector)
                .bind(&a.ticket_key)
                .bind(&a.number)
                .bind(&a.request_hash)
                .bind(&a.beneficiary)
                .bind(&a.system)
                .bind(&a.entitlement)
                .bind(&a.group)
                .bind(&a.owner)
                .bind(&a.approved_at)
                .bind(a.max_days)
                .bind(&a.end_date)
                .bind(if a.granted { "granted" } else { "approved" })
                .bind(a.granted.then_some(&a.approved_at))
                .bind(&a.expires_at);
        }
        inserted += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

impl Store {
    /// Stores one verified delivery's changes, with an audit record of the delivery. A delivery
    /// id already taken in stores nothing and returns `None` (a replay).
    pub async fn record_access_delivery(
        &self,
        source: &str,
        delivery: &str,
        events: &[NewAccessEvent],
        evidence: Value,
    ) -> anyhow::Result<Option<usize>> {
        let mut tx = self.begin_write().await?;
        let fresh =
            sqlx::query("INSERT INTO webhook_deliveries (connector, delivery_id, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(format!("events:{source}"))
                .bind(delivery)
                .bind(now())
                .execute(&mut *tx)
                .await?;
        if fresh.rows_affected() == 0 {
            return Ok(None);
        }
        let mut ids = Vec::new();
        for (n, e) in events.iter().enumerate() {
            let raw = e.raw.to_string();
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO access_events (source, dedupe_key, via, kind, group_name, group_id, user_name, user_id, occurred_at, observed_after, received_at, decision_ref, ticket_ref, expires_at, raw, raw_sha256)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id",
            )
            .bind(source)
            .bind(format!("{delivery}#{n}"))
            .bind(e.via)
            .bind(&e.kind)
            .bind(e.group_name.as_deref().map(str::to_lowercase))
            .bind(&e.group_id)
            .bind(e.user_name.as_deref().map(str::to_lowercase))
            .bind(&e.user_id)
            .bind(&e.occurred_at)
            .bind(&e.observed_after)
            .bind(now())
            .bind(&e.decision_ref)
            .bind(&e.ticket_ref)
            .bind(&e.expires_at)
            .bind(&raw)
            .bind(sha256_hex(raw.as_bytes()))
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        let mut payload = evidence;
        payload["delivery"] = json!(delivery);
        payload["event_ids"] = json!(ids);
        audit::append(&mut tx, source, "", Event::AccessEventReceived, payload).await?;
        tx.commit().await?;
        Ok(Some(events.len()))
    }

    /// Changes not processed yet, oldest first.
    pub async fn access_events_due(&self, limit: i64) -> anyhow::Result<Vec<AccessEventRow>> {
        Ok(sqlx::query_as(
            "SELECT id, source, via, kind, group_name, group_id, user_name, user_id, occurred_at, observed_after, decision_ref, ticket_ref, expires_at, attempts
             FROM access_events WHERE processed_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many stored changes are not processed yet.
    pub async fn access_events_waiting(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM access_events WHERE processed_at IS NULL")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Notes that processing a change failed (the directory could not answer); it is tried
    /// again next pass, before any later change.
    pub async fn access_event_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
        self.write_one(|| {
            sqlx::query("UPDATE access_events SET attempts = attempts + 1, last_error = $1 WHERE id = $2")
                .bind(crate::text::cap(error, 500))
                .bind(id)
        })
        .await?;
        Ok(())
    }

    /// Every lifecycle of `user`, newest approval first.
    pub async fn lifecycles_of(&self, user: &str) -> anyhow::Result<Vec<LifecycleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {LIFECYCLE_COLUMNS} FROM access_lifecycle WHERE beneficiary = $1 ORDER BY approved_at DESC"
        ))
        .bind(user.to_lowercase())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every lifecycle, newest approval first (`report access`).
    pub async fn lifecycles(&self) -> anyhow::Result<Vec<LifecycleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {LIFECYCLE_COLUMNS} FROM access_lifecycle ORDER BY approved_at DESC, decision_id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Groups `user` is known to be in.
    pub async fn groups_of_member(&self, user: &str) -> anyhow::Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT group_name FROM memberships WHERE user_name = $1 AND present = 1 ORDER BY group_name")
                .bind(user.to_lowercase())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Members known to be in `group`.
    pub async fn members_of(&self, group: &str) -> anyhow::Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT user_name FROM memberships WHERE group_name = $1 AND present = 1 ORDER BY user_name")
                .bind(group.to_lowercase())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Whether `user` is known to be in `group`.
    pub async fn is_member(&self, group: &str, user: &str) -> anyhow::Result<bool> {
        Ok(is_present(&self.pool, group, user).await?)
    }

    /// Whether the directory reported `user` disabled.
    pub async fn is_disabled(&self, user: &str) -> anyhow::Result<bool> {
        let found: Option<String> = sqlx::query_scalar("SELECT since FROM disabled_identities WHERE user_name = $1")
            .bind(user.to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// When `group` was last reconciled.
    pub async fn reconciled_at(&self, group: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT read_at FROM reconciliations WHERE group_name = $1")
            .bind(group.to_lowercase())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records that `group` was read at `at`.
    pub async fn set_reconciled(&self, group: &str, at: &str) -> anyhow::Result<()> {
        self.write_one(|| sqlx::query("INSERT INTO reconciliations (group_name, read_at) VALUES ($1, $2) ON CONFLICT (group_name) DO UPDATE SET read_at = excluded.read_at")
            .bind(group.to_lowercase())
            .bind(at)
            )
            .await?;
        Ok(())
    }

    /// Applies what processing change `event` does, in one transaction; `Ok(false)` when another
    /// replica processed it first (nothing written).
    pub async fn apply_access_event(&self, event: i64, fx: &Effects) -> anyhow::Result<bool> {
        let mut tx = self.begin_write().await?;
        tx.lock_lifecycles().await?;
        let at = now();
        let taken = sqlx::query(
            "UPDATE access_events SET processed_at = $1, outcome = $2, group_name = COALESCE($3, group_name), user_name = COALESCE($4, user_name), last_error = NULL
             WHERE id = $5 AND processed_at IS NULL",
        )
        .bind(&at)
        .bind(&fx.outcome)
        .bind(fx.group_name.as_deref().map(str::to_lowercase))
        .bind(fx.user_name.as_deref().map(str::to_lowercase))
        .bind(event)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() == 0 {
            return Ok(false);
        }
        write_effects(&mut tx, Some(event), fx, &at).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Granted lifecycles that expired at or before `cutoff` (now minus the grace) and whose
    /// timer has not fired.
    pub async fn expiries_due(&self, cutoff: &str, limit: i64) -> anyhow::Result<Vec<LifecycleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {LIFECYCLE_COLUMNS} FROM access_lifecycle WHERE state = 'granted' AND expiry_fired_at IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
        ))
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Approvals still not granted that were made before `cutoff` and not yet reported.
    pub async fn unfulfilled_due(&self, cutoff: &str, limit: i64) -> anyhow::Result<Vec<LifecycleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {LIFECYCLE_COLUMNS} FROM access_lifecycle WHERE state = 'approved' AND unfulfilled_at IS NULL AND approved_at <= $1 ORDER BY approved_at LIMIT $2"
        ))
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Fires one lifecycle timer: `column` (`expiry_fired_at` or `unfulfilled_at`) is set only if
    /// no replica set it first, so the timer's effects happen once however many replicas run
    /// it. `expired` also moves a still-granted lifecycle to `expired`.
    pub async fn fire_timer(&self, decision_id: &str, column: TimerColumn, expired: bool, fx: &Effects) -> anyhow::Result<bool> {
        let mut tx = self.begin_write().await?;
        tx.lock_lifecycles().await?;
        let at = now();
        let (column, state) = match column {
            TimerColumn::Expiry => ("expiry_fired_at", "granted"),
            TimerColumn::Unfulfilled => ("unfulfilled_at", "approved"),
        };
        let new_state = if expired { "expired" } else { state };
        let taken = sqlx::query(&format!(
            "UPDATE access_lifecycle SET {column} = $1, state = $2 WHERE decision_id = $3 AND {column} IS NULL AND state = $4"
        ))
        .bind(&at)
        .bind(new_state)
        .bind(decision_id)
        .bind(state)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() == 0 {
            return Ok(false);
        }
        write_effects(&mut tx, None, fx, &at).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Provisioning findings not resolved since.
    pub async fn open_access_findings(&self) -> anyhow::Result<Vec<FindingRow>> {
        Ok(
            sqlx::query_as("SELECT kind, connector, number, detail FROM access_findings WHERE resolved_at IS NULL ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// Which lifecycle timer.
#[derive(Debug, Clone, Copy)]
pub enum TimerColumn {
    /// Expiry plus grace passed.
    Expiry,
    /// No grant within the fulfilment window.
    Unfulfilled,
}

/// Closes an open finding, with an audit record on its ticket (when it has one).
async fn resolve(tx: &mut super::WriteTx, kind: &str, subject: &str, at: &str, payload: Value) -> anyhow::Result<()> {
    let closed: Vec<(String, String)> = sqlx::query_as(
        "UPDATE access_findings SET resolved_at = $1 WHERE kind = $2 AND subject = $3 AND resolved_at IS NULL RETURNING connector, ticket_key",
    )
    .bind(at)
    .bind(kind)
    .bind(subject)
    .fetch_all(&mut **tx)
    .await?;
    for (connector, ticket_key) in closed {
        audit::append(tx, &connector, &ticket_key, Event::AccessFindingResolved, payload.clone()).await?;
    }
    Ok(())
}

async fn write_effects(tx: &mut super::WriteTx, event: Option<i64>, fx: &Effects, at: &str) -> anyhow::Result<()> {
    for (group, user, present) in &fx.memberships {
        sqlx::query(
            "INSERT INTO memberships (group_name, user_name, present, since, via, event_id) VALUES ($1, $2, $3, $4, 'event', $5)
             ON CONFLICT (group_name, user_name) DO UPDATE SET present = excluded.present, since = excluded.since, event_id = excluded.event_id",
        )
        .bind(group.to_lowercase())
        .bind(user.to_lowercase())
        .bind(i64::from(*present))
        .bind(at)
        .bind(event)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(user) = &fx.disabled {
        sqlx::query("INSERT INTO disabled_identities (user_name, since, event_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(user.to_lowercase())
            .bind(at)
            .bind(event)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(g) = &fx.grant {
        let moved = sqlx::query(
            "UPDATE access_lifecycle SET state = 'granted', granted_at = $1, grant_event = $2, expires_at = $3
             WHERE decision_id = $4 AND state = 'approved'",
        )
        .bind(&g.granted_at)
        .bind(event)
        .bind(&g.expires_at)
        .bind(&g.decision_id)
        .execute(&mut **tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(LifecycleMoved.into());
        }
    }
    for (decision, revoked_at) in &fx.revoke {
        sqlx::query("UPDATE access_lifecycle SET state = 'revoked', revoked_at = $1, revoke_event = $2 WHERE decision_id = $3 AND state IN ('granted', 'expired')")
            .bind(revoked_at)
            .bind(event)
            .bind(decision)
            .execute(&mut **tx)
            .await?;
    }
    for (kind, subject) in &fx.resolve {
        resolve(tx, kind, subject, at, json!({"kind": kind, "subject": subject, "event_id": event})).await?;
    }
    for f in &fx.findings {
        let fresh = sqlx::query(
            "INSERT INTO access_findings (kind, subject, connector, ticket_key, number, user_name, group_name, detail, found_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (kind, subject) DO NOTHING",
        )
        .bind(f.kind)
        .bind(&f.subject)
        .bind(&f.connector)
        .bind(&f.ticket_key)
        .bind(&f.number)
        .bind(&f.user_name)
        .bind(&f.group_name)
        .bind(&f.detail)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        if fresh.rows_affected() > 0 {
            audit::append(
                tx,
                &f.connector,
                &f.ticket_key,
                Event::AccessFinding,
                json!({"kind": f.kind, "subject": f.subject, "user": f.user_name, "group": f.group_name, "detail": f.detail, "event_id": event}),
            )
            .await?;
        }
    }
    for (connector, ticket_key, event_kind, payload) in &fx.audit {
        let mut payload = payload.clone();
        payload["event_id"] = json!(event);
        payload["recorded_at"] = json!(at);
        audit::append(tx, connector, ticket_key, *event_kind, payload).await?;
    }
    for (connector, ticket_key, decision_id, c) in &fx.comments {
        super::outbox::queue_comment(tx, connector, ticket_key, &c.key, decision_id, &c.marker, &c.body).await?;
    }
    Ok(())
}
