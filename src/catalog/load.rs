//! Parsing and validating a catalog file: every problem at once, each as `file:line: key: …`.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{Catalog, Conflict, EntitlementEntry, SystemEntry, Tier};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    version: Spanned<String>,
    default_owner: Spanned<String>,
    #[serde(default = "default_max")]
    default_max_duration_days: u32,
    #[serde(default)]
    systems: Vec<RawSystem>,
}

fn default_max() -> u32 {
    90
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    id: Spanned<String>,
    #[serde(default)]
    aliases: Vec<Spanned<String>>,
    environment: Spanned<String>,
    owner: Spanned<String>,
    #[serde(default)]
    default_tier: Option<Tier>,
    #[serde(default)]
    entitlements: Vec<RawEntitlement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntitlement {
    id: Spanned<String>,
    #[serde(default)]
    aliases: Vec<Spanned<String>>,
    #[serde(default)]
    tier: Option<Tier>,
    #[serde(default)]
    max_duration_days: Option<Spanned<u32>>,
    #[serde(default)]
    nhi_allowed: bool,
    #[serde(default)]
    conflicts: Vec<RawConflict>,
    #[serde(default)]
    group: Option<Spanned<String>>,
}

// Spans do not survive serde's buffering of untagged enums, so a conflict's problems are
// reported at its entitlement's id.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawConflict {
    Plain(String),
    Detailed {
        with: String,
        #[serde(default)]
        mitigable: bool,
    },
}

const ENVIRONMENTS: &[&str] = &["prod", "staging", "test", "dev"];

struct Problems<'a> {
    file: &'a str,
    text: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn line(&self, at: usize) -> usize {
        self.text[..at.min(self.text.len())].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn at<T>(&mut self, spanned: &Spanned<T>, key: &str, problem: impl std::fmt::Display) {
        let line = self.line(spanned.span().start);
        self.list.push(format!("{}:{line}: {key}: {problem}", self.file));
    }
}

fn norm(text: &str) -> String {
    super::norm(text)
}

/// Parses catalog `text` read from `file`.
pub fn parse(text: &str, file: &str) -> anyhow::Result<Catalog> {
    let raw: RawCatalog = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        anyhow::anyhow!(
            "catalog {file} is invalid:\n  {file}:{}: {}",
            line.map_or_else(|| "?".into(), |l| l.to_string()),
            e.message()
        )
    })?;
    let mut p = Problems {
        file,
        text,
        list: Vec::new(),
    };
    if raw.version.get_ref().trim().is_empty() {
        p.at(&raw.version, "version", "must not be empty");
    }
    if raw.default_owner.get_ref().trim().is_empty() {
        p.at(
            &raw.default_owner,
            "default_owner",
            "must name the group that reviews what the catalog does not know",
        );
    }
    // Names requesters type must lead to one system, and within a system to one entitlement.
    let mut system_names: HashMap<String, String> = HashMap::new();
    for (i, s) in raw.systems.iter().enumerate() {
        let key = format!("systems[{i}] ({})", s.id.get_ref());
        for name in std::iter::once(&s.id).chain(s.aliases.iter()) {
            if name.get_ref().trim().is_empty() {
                p.at(name, &key, "an empty id or alias");
            } else if let Some(other) = system_names
                .insert(norm(name.get_ref()), s.id.get_ref().clone())
                .filter(|o| o != s.id.get_ref())
            {
                p.at(name, &key, format!("{:?} already names system {other:?}", name.get_ref()));
            }
        }
        if !ENVIRONMENTS.contains(&s.environment.get_ref().as_str()) {
            p.at(
                &s.environment,
                &format!("{key}.environment"),
                format!("{:?} is not one of {}", s.environment.get_ref(), ENVIRONMENTS.join(", ")),
            );
        }
        if s.owner.get_ref().trim().is_empty() {
            p.at(&s.owner, &format!("{key}.owner"), "must name a control-owner group");
        }
        let mut names: HashMap<String, String> = HashMap::new();
        for (j, e) in s.entitlements.iter().enumerate() {
            let ekey = format!("{key}.entitlements[{j}] ({})", e.id.get_ref());
            for name in std::iter::once(&e.id).chain(e.aliases.iter()) {
                if name.get_ref().trim().is_empty() {
                    p.at(name, &ekey, "an empty id or alias");
                } else if let Some(other) = names
                    .insert(norm(name.get_ref()), e.id.get_ref().clone())
                    .filter(|o| o != e.id.get_ref())
                {
                    p.at(name, &ekey, format!("{:?} already names entitlement {other:?}", name.get_ref()));
                }
            }
            if let Some(days) = &e.max_duration_days {
                if *days.get_ref() == 0 {
                    p.at(days, &format!("{ekey}.max_duration_days"), "must be at least 1");
                }
            }
        }
    }
    // Conflicts name `system/entitlement` of an entitlement the catalog holds.
    let known: Vec<String> = raw
        .systems
        .iter()
        .flat_map(|s| s.entitlements.iter().map(move |e| format!("{}/{}", s.id.get_ref(), e.id.get_ref())))
        .collect();
    let mut groups: HashMap<String, String> = HashMap::new();
    for (i, s) in raw.systems.iter().enumerate() {
        for (j, e) in s.entitlements.iter().enumerate() {
            let ekey = format!("systems[{i}] ({}).entitlements[{j}] ({})", s.id.get_ref(), e.id.get_ref());
            for c in &e.conflicts {
                let with = match c {
                    RawConflict::Plain(w) | RawConflict::Detailed { with: w, .. } => w,
                };
                if !known.contains(with) {
                    p.at(
                        &e.id,
                        &format!("{ekey}.conflicts"),
                        format!("{with:?} is not `system/entitlement` of an entitlement in this catalog"),
                    );
                }
            }
            if let Some(group) = &e.group {
                let here = format!("{}/{}", s.id.get_ref(), e.id.get_ref());
                if let Some(other) = groups.insert(group.get_ref().to_lowercase(), here) {
                    p.at(
                        group,
                        &format!("{ekey}.group"),
                        format!("{:?} already represents {other}", group.get_ref()),
                    );
                }
            }
        }
    }
    if !p.list.is_empty() {
        anyhow::bail!("catalog {file} has {} problem(s):\n  {}", p.list.len(), p.list.join("\n  "));
    }
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    let mut systems = BTreeMap::new();
    for s in raw.systems {
        let default_tier = s.default_tier.unwrap_or(Tier::Standard);
        let id = s.id.into_inner();
        let entitlements = s
            .entitlements
            .into_iter()
            .map(|e| {
                let eid = e.id.into_inner();
                // A conflict is symmetric: declared on either side, it binds both.
                EntitlementEntry {
                    aliases: e.aliases.into_iter().map(Spanned::into_inner).collect(),
                    tier: e.tier.unwrap_or(default_tier),
                    max_duration_days: e.max_duration_days.map_or(raw.default_max_duration_days, Spanned::into_inner),
                    nhi_allowed: e.nhi_allowed,
                    conflicts: e
                        .conflicts
                        .into_iter()
                        .map(|c| match c {
                            RawConflict::Plain(with) => Conflict { with, mitigable: false },
                            RawConflict::Detailed { with, mitigable } => Conflict { with, mitigable },
                        })
                        .collect(),
                    group: e.group.map(Spanned::into_inner),
                    id: eid,
                }
            })
            .collect();
        systems.insert(
            id.clone(),
            SystemEntry {
                id,
                aliases: s.aliases.into_iter().map(Spanned::into_inner).collect(),
                environment: s.environment.into_inner(),
                owner: s.owner.into_inner(),
                default_tier,
                entitlements,
            },
        );
    }
    let mut catalog = Catalog {
        version: raw.version.into_inner(),
        hash: format!("sha256:{}", &digest[..12]),
        default_owner: raw.default_owner.into_inner(),
        default_max_duration_days: raw.default_max_duration_days,
        systems,
    };
    symmetric_conflicts(&mut catalog);
    Ok(catalog)
}

/// Adds the reverse of every declared conflict, so `a` conflicting with `b` also makes `b`
/// conflict with `a`.
fn symmetric_conflicts(catalog: &mut Catalog) {
    let mut reverse: Vec<(String, Conflict)> = Vec::new();
    for s in catalog.systems.values() {
        for e in &s.entitlements {
            for c in &e.conflicts {
                reverse.push((
                    c.with.clone(),
                    Conflict {
                        with: format!("{}/{}", s.id, e.id),
                        mitigable: c.mitigable,
                    },
                ));
            }
        }
    }
    for (target, conflict) in reverse {
        let Some((system, entitlement)) = target.split_once('/') else {
            continue;
        };
        if let Some(e) = catalog
            .systems
            .get_mut(system)
            .and_then(|s| s.entitlements.iter_mut().find(|e| e.id == entitlement))
        {
            if !e.conflicts.iter().any(|c| c.with == conflict.with) {
                e.conflicts.push(conflict);
            }
        }
    }
}
