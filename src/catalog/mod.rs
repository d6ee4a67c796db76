//! The entitlement catalog: admin-owned data saying, per system, where it runs and who owns it,
//! and per entitlement, how sensitive it is, how long it may be held, whether non-human
//! identities may hold it, what it conflicts with and which directory group represents it.
//!
//! The policy decides on these facts, never on what a requester typed about them. The catalog is
//! a TOML file (`examples/catalog.toml`), validated at load with every problem reported at once
//! as `file:line: key: problem`; its content hash and version are recorded with every decision.

mod load;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

pub use load::parse;

/// How sensitive an entitlement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Everyday access.
    Standard,
    /// Sensitive data or actions: reviewed by the owner.
    Sensitive,
    /// Administrative power: reviewed by the owner, with step-up.
    Privileged,
}

/// A conflict (separation of duties) with another entitlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// `system/entitlement` of the conflicting entitlement.
    pub with: String,
    /// Whether a control owner may accept the conflict (review) rather than it being refused.
    pub mitigable: bool,
}

/// One entitlement of a system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntitlementEntry {
    /// Canonical id, unique within its system.
    pub id: String,
    /// What requesters type for it.
    pub aliases: Vec<String>,
    /// Its tier.
    pub tier: Tier,
    /// The longest it may be held, in days.
    pub max_duration_days: u32,
    /// Whether service accounts, workloads and API keys may hold it.
    pub nhi_allowed: bool,
    /// Entitlements it must not be combined with.
    pub conflicts: Vec<Conflict>,
    /// The directory group that represents it.
    pub group: Option<String>,
}

/// One system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemEntry {
    /// Canonical id.
    pub id: String,
    /// What requesters type for it ("SAP ERP", "sap").
    pub aliases: Vec<String>,
    /// Where it runs: prod, staging, test or dev.
    pub environment: String,
    /// The named control-owner group that approves access to it.
    pub owner: String,
    /// The tier of entitlements that do not set one.
    pub default_tier: Tier,
    /// Its entitlements.
    pub entitlements: Vec<EntitlementEntry>,
}

/// The loaded catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalog {
    /// The version the admin declared.
    pub version: String,
    /// `sha256:<first 12 hex>` of the file's bytes.
    pub hash: String,
    /// Who reviews what the catalog does not know.
    pub default_owner: String,
    /// Longest grant for an entitlement without `max_duration_days`.
    pub default_max_duration_days: u32,
    /// Systems by canonical id.
    pub systems: BTreeMap<String, SystemEntry>,
}

/// What the catalog says about one request's ask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    /// `version (hash)` of the catalog used.
    pub catalog: String,
    /// The system, when known.
    pub system: Option<SystemEntry>,
    /// The entitlement, when known (within `system`).
    pub entitlement: Option<EntitlementEntry>,
    /// Who approves: the system's owner, or the catalog's default owner.
    pub owner: String,
}

fn norm(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

impl Catalog {
    /// Reads and validates a catalog file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading catalog {}: {e}", path.display()))?;
        parse(&text, &path.display().to_string())
    }

    /// `version (sha256:…)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.version, self.hash)
    }

    /// The system a requester's text names (id or alias, case and spacing ignored).
    pub fn system(&self, text: &str) -> Option<&SystemEntry> {
        let wanted = norm(text);
        self.systems
            .values()
            .find(|s| norm(&s.id) == wanted || s.aliases.iter().any(|a| norm(a) == wanted))
    }

    /// Resolves `system` and `entitlement` as a requester named them.
    pub fn resolve(&self, system: &str, entitlement: &str) -> Resolved {
        let system = self.system(system).cloned();
        let wanted = norm(entitlement);
        let entitlement = system.as_ref().and_then(|s| {
            s.entitlements
                .iter()
                .find(|e| norm(&e.id) == wanted || e.aliases.iter().any(|a| norm(a) == wanted))
                .cloned()
        });
        Resolved {
            catalog: self.label(),
            owner: system.as_ref().map_or_else(|| self.default_owner.clone(), |s| s.owner.clone()),
            system,
            entitlement,
        }
    }

    /// `system/entitlement` of every entitlement represented by `group`.
    pub fn entitlements_of_group(&self, group: &str) -> Vec<String> {
        self.systems
            .values()
            .flat_map(|s| {
                s.entitlements
                    .iter()
                    .filter(|e| e.group.as_deref().is_some_and(|g| g.eq_ignore_ascii_case(group)))
                    .map(move |e| format!("{}/{}", s.id, e.id))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
