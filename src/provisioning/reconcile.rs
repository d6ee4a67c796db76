//! Reconciliation: for directories that do not push events (or lost one), read each group the
//! catalog names from the SCIM directory and diff its members against what deskbridge last
//! knew. The differences are stored as changes observed by reconciliation, bounded in time by
//! the previous read and this one. The first read of a group is a baseline: members with an
//! approved decision waiting are matched as grants; access older than deskbridge's watch is
//! recorded, not judged.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::Provisioning;
use crate::catalog::Catalog;
use crate::directory::scim::{GroupMembers, ScimDirectory};
use crate::store::lifecycle::NewAccessEvent;
use crate::store::Store;

/// The directory groups the catalog names, lower-cased.
pub fn catalog_groups(catalog: &Catalog) -> BTreeSet<String> {
    catalog
        .systems
        .values()
        .flat_map(|s| s.entitlements.iter().filter_map(|e| e.group.as_deref().map(str::to_lowercase)))
        .collect()
}

/// Reconciles every catalog group. Returns the changes found.
pub async fn all(store: &Store, prov: &Provisioning, catalog: Option<&Catalog>) -> anyhow::Result<usize> {
    let dir = prov
        .directory()
        .ok_or_else(|| anyhow::anyhow!("no SCIM [directory] to reconcile against"))?;
    let catalog = catalog.ok_or_else(|| anyhow::anyhow!("no [catalog] names the groups to reconcile"))?;
    let mut found = 0;
    for name in catalog_groups(catalog) {
        match dir
            .group_by_name(&name)
            .await
            .map_err(|e| anyhow::anyhow!("reading group {name}: {e}"))?
        {
            Some(g) => found += group(store, dir, &g, Some(catalog)).await?,
            // A catalog name the directory does not have: never read as "everyone removed".
            None => tracing::warn!(group = %name, "the catalog names a group the directory does not have; not reconciled"),
        }
    }
    Ok(found)
}

/// Reconciles one group read from the directory. Returns the changes found.
pub async fn group(store: &Store, dir: &ScimDirectory, g: &GroupMembers, catalog: Option<&Catalog>) -> anyhow::Result<usize> {
    let name = g.name.to_lowercase();
    if catalog.is_none_or(|c| c.entitlements_of_group(&name).is_empty()) {
        return Ok(0);
    }
    let previous = store.reconciled_at(&name).await?;
    let known: BTreeSet<String> = store.members_of(&name).await?.into_iter().collect();
    let mut current: BTreeMap<String, bool> = BTreeMap::new();
    let mut users = dir
        .users_by_ids(&g.members)
        .await
        .map_err(|e| anyhow::anyhow!("reading the members of {name}: {e}"))?;
    // A member the batched filter did not return is read by itself: a directory that ignores
    // part of an `or` filter must never make a member look removed.
    for id in g.members.iter().filter(|id| !users.contains_key(*id)).cloned().collect::<Vec<_>>() {
        if let Some(user) = dir
            .user_by_id(&id)
            .await
            .map_err(|e| anyhow::anyhow!("reading member {id} of {name}: {e}"))?
        {
            users.insert(id, user);
        }
    }
    for user in users.values() {
        current.insert(user.user_name.to_lowercase(), user.active);
    }
    let now = crate::store::now();
    let change = |kind: &str, user: &str| NewAccessEvent {
        via: "reconcile",
        kind: kind.into(),
        group_name: Some(name.clone()),
        group_id: Some(g.id.clone()),
        user_name: Some(user.to_owned()),
        occurred_at: now.clone(),
        observed_after: previous.clone(),
        raw: json!({"group": name, "group_id": g.id, "user": user, "change": kind, "observed_after": previous, "observed_before": now}),
        ..NewAccessEvent::default()
    };
    let mut events = Vec::new();
    for (user, active) in &current {
        if !known.contains(user) {
            events.push(change(if previous.is_none() { "baseline" } else { "added" }, user));
        }
        if !active && !store.is_disabled(user).await? {
            events.push(change("deactivated", user));
        }
    }
    for user in known.iter().filter(|u| !current.contains_key(*u)) {
        events.push(change("removed", user));
    }
    if !events.is_empty() {
        store
            .record_access_delivery(
                "reconcile",
                &format!("{name}@{now}"),
                &events,
                json!({"via": "reconcile", "group": name, "members": current.len(), "observed_after": previous, "observed_before": now}),
            )
            .await?;
    }
    store.set_reconciled(&name, &now).await?;
    Ok(events.len())
}
