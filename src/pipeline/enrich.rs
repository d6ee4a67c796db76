//! Enrichment, between normalize and decide: the ticket contributes the *ask* (who, which
//! system, which entitlement, what kind); the facts the policy decides on come from the
//! admin-owned catalog and the identity directory. What the ticket claimed about those facts is
//! kept as evidence, and a claim that understates the catalog is a finding.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde_json::json;

use crate::catalog::{Catalog, Tier};
use crate::directory::{Directory, Identity};
use crate::schema::{
    AccessRequest, CatalogConflict, CatalogEntitlement, CatalogFacts, CatalogSystem, Claims, DirectoryFacts, Environment, IdentityFacts,
    RequestKind,
};

/// The catalog in use, reloadable while `serve` runs.
pub struct CatalogHandle {
    path: Option<PathBuf>,
    current: RwLock<(Arc<Catalog>, Option<SystemTime>)>,
}

impl CatalogHandle {
    /// A catalog read from `path`, watched for changes by [`CatalogHandle::reload_if_changed`].
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let catalog = Catalog::load(path)?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(Self {
            path: Some(path.to_owned()),
            current: RwLock::new((Arc::new(catalog), modified)),
        })
    }

    /// A fixed catalog (tests, the demo).
    pub fn fixed(catalog: Catalog) -> Self {
        Self {
            path: None,
            current: RwLock::new((Arc::new(catalog), None)),
        }
    }

    /// The catalog decisions use now.
    pub fn get(&self) -> Arc<Catalog> {
        self.current
            .read()
            .map(|c| c.0.clone())
            .unwrap_or_else(|p| p.into_inner().0.clone())
    }

    /// Reads the file again when it changed (or when `force`, on SIGHUP). A broken edit keeps
    /// the catalog in use and returns why; `Ok(Some(label))` names the catalog now in use.
    pub fn reload_if_changed(&self, force: bool) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.path else { return Ok(None) };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let seen = self.current.read().map(|c| c.1).unwrap_or(None);
        if !force && modified == seen {
            return Ok(None);
        }
        let loaded = Catalog::load(path);
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Remember the edit either way, so a broken file is reported once, not every pass.
        current.1 = modified;
        let catalog = loaded?;
        let label = catalog.label();
        if catalog != *current.0 {
            current.0 = Arc::new(catalog);
        }
        Ok(Some(label))
    }
}

/// The catalog and the directory, applied to each request.
pub struct Enricher {
    /// The catalog.
    pub catalog: Arc<CatalogHandle>,
    /// The directory; without one, identities are unverified (the policy reviews).
    pub directory: Option<Arc<dyn Directory>>,
}

/// A claim on the ticket that understates what the catalog says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Understated {
    /// `privileged` or `environment`.
    pub claim: &'static str,
    /// What the ticket said.
    pub said: String,
    /// What the catalog says.
    pub catalog: String,
}

fn environment(text: &str) -> Option<Environment> {
    serde_json::from_value(json!(text)).ok()
}

fn facts(identity: Option<&Option<Identity>>, catalog: &Catalog) -> Option<IdentityFacts> {
    let identity = identity?.as_ref()?;
    let mut entitlements: Vec<String> = identity.groups.iter().flat_map(|g| catalog.entitlements_of_group(g)).collect();
    entitlements.sort();
    entitlements.dedup();
    Some(IdentityFacts {
        user_name: identity.user_name.clone(),
        active: identity.active,
        user_type: identity.user_type.clone(),
        department: identity.department.clone(),
        manager: identity.manager.clone(),
        employee_number: identity.employee_number.clone(),
        groups: identity.groups.clone(),
        entitlements,
    })
}

impl Enricher {
    /// Looks up everyone a page of requests names in one go (the directory batches the keys
    /// and caches the answers), so deciding the page asks the directory nothing more. A failure
    /// here is not final: each request's own lookup fails closed.
    pub async fn prefetch<'a>(&self, requests: impl IntoIterator<Item = &'a AccessRequest>) {
        let Some(directory) = &self.directory else { return };
        let mut keys: Vec<String> = Vec::new();
        for r in requests {
            keys.push(r.requester.id.clone());
            keys.push(r.beneficiary.id.clone());
            keys.extend(r.approver_context.named_approver.clone());
            keys.extend(r.nhi.as_ref().and_then(|n| n.owner.clone()));
        }
        keys.retain(|k| !k.trim().is_empty());
        if let Err(e) = directory.lookup(&keys).await {
            tracing::debug!(error = %e, "prefetching the page's identities failed; each request looks up its own");
        }
    }

    /// Sets the request's catalog facts, directory facts and claims; the catalog's privilege
    /// and environment replace what the ticket said. Returns the claims that understated the
    /// catalog. Fails (and the request stays pending) when the directory cannot answer.
    pub async fn enrich(&self, request: &mut AccessRequest) -> Result<Vec<Understated>, String> {
        let catalog = self.catalog.get();
        let claims = Claims {
            system: request.target.system.clone(),
            entitlement: request.entitlement.id.clone(),
            privileged: request.entitlement.privileged,
            environment: request.target.environment,
        };
        let resolved = catalog.resolve(&request.target.system, &request.entitlement.id);
        let mut understated = Vec::new();
        if let Some(system) = &resolved.system {
            request.target.system = system.id.clone();
            if let Some(env) = environment(&system.environment) {
                if env == Environment::Prod && claims.environment != Environment::Prod {
                    understated.push(Understated {
                        claim: "environment",
                        said: format!("{:?}", claims.environment).to_lowercase(),
                        catalog: system.environment.clone(),
                    });
                }
                request.target.environment = env;
            }
        }
        // Privilege is the catalog's to say; an entitlement it does not know is not trusted
        // to be unprivileged either (the policy reviews it).
        request.entitlement.privileged = match &resolved.entitlement {
            Some(e) => {
                request.entitlement.id = e.id.clone();
                if e.tier == Tier::Privileged && !claims.privileged {
                    understated.push(Understated {
                        claim: "privileged",
                        said: "false".into(),
                        catalog: "privileged".into(),
                    });
                }
                e.tier == Tier::Privileged
            }
            None => true,
        };
        request.catalog = Some(CatalogFacts {
            version: resolved.catalog.clone(),
            owner: resolved.owner.clone(),
            system: resolved.system.as_ref().map(|s| CatalogSystem {
                id: s.id.clone(),
                environment: s.environment.clone(),
                owner: s.owner.clone(),
            }),
            entitlement: resolved.entitlement.as_ref().map(|e| CatalogEntitlement {
                id: e.id.clone(),
                tier: serde_json::to_value(e.tier)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                max_duration_days: e.max_duration_days,
                nhi_allowed: e.nhi_allowed,
                conflicts: e
                    .conflicts
                    .iter()
                    .map(|c| CatalogConflict {
                        with: c.with.clone(),
                        mitigable: c.mitigable,
                    })
                    .collect(),
                group: e.group.clone(),
            }),
        });
        request.claims = Some(claims);
        request.context = match &self.directory {
            None => None,
            Some(directory) => {
                let approver = request.approver_context.named_approver.clone().filter(|a| !a.trim().is_empty());
                let owner = request.nhi.as_ref().and_then(|n| n.owner.clone()).filter(|o| !o.trim().is_empty());
                let mut keys = vec![request.requester.id.clone(), request.beneficiary.id.clone()];
                keys.extend(approver.clone());
                keys.extend(owner.clone());
                let found = directory
                    .lookup(&keys)
                    .await
                    .map_err(|e| format!("identity directory ({}): {e}", directory.describe()))?;
                Some(DirectoryFacts {
                    source: directory.describe(),
                    requester: facts(found.get(&request.requester.id), &catalog),
                    beneficiary: facts(found.get(&request.beneficiary.id), &catalog),
                    approver: approver.and_then(|a| facts(found.get(&a), &catalog)),
                    nhi_owner: owner.and_then(|o| facts(found.get(&o), &catalog)),
                })
            }
        };
        if request.kind == RequestKind::Revoke {
            // Removing access never understates risk.
            understated.clear();
        }
        Ok(understated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version = \"1\"\ndefault_owner = \"IAM\"\n[[systems]]\nid = \"a\"\nenvironment = \"prod\"\nowner = \"A Owners\"\n";

    #[test]
    fn a_broken_edit_keeps_the_catalog_in_use_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("catalog.toml");
        std::fs::write(&path, GOOD).expect("write");
        let handle = CatalogHandle::load(&path).expect("loads");
        assert_eq!(handle.get().version, "1");
        assert!(
            handle.reload_if_changed(false).expect("unchanged").is_none(),
            "nothing to do when unchanged"
        );
        std::fs::write(
            &path,
            "version = \"2\"\ndefault_owner = \"IAM\"\n[[systems]]\nid = \"a\"\nenvironment = \"nowhere\"\nowner = \"A\"\n",
        )
        .expect("write");
        let err = handle.reload_if_changed(true).expect_err("invalid").to_string();
        assert!(err.contains("catalog.toml:5: systems[0] (a).environment"), "{err}");
        assert_eq!(handle.get().version, "1", "the previous catalog stays in use");
        std::fs::write(&path, GOOD.replace("\"1\"", "\"3\"")).expect("write");
        let label = handle.reload_if_changed(true).expect("valid").expect("reloaded");
        assert!(label.starts_with("3 (sha256:"), "{label}");
        assert_eq!(handle.get().version, "3");
    }
}
