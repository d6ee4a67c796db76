//! Wiring: turns the configuration file (plain data) into the running parts — connector
//! instances, the decision point, the catalog and directory, provisioning, the pipeline's
//! settings, the audit signer. The parts own their settings and never read the configuration;
//! only this module and the commands above it know both.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditSigner;
use crate::config::{AuditConfig, Config, DecisionConfig};
use crate::decision::breaker::{Breaker, BreakerConfig};
use crate::decision::rego::{RegoDecisionPoint, RegoSettings};
use crate::decision::DecisionPoint;
use crate::mapping::Mapping;
use crate::pipeline::enrich::{CatalogHandle, Enricher};
use crate::pipeline::{Instance, Settings};
use crate::render::CommentRenderer;

/// Builds the decision point; remote ones get the circuit breaker.
pub fn decision_point(config: &DecisionConfig, breaker: &BreakerConfig) -> anyhow::Result<Arc<dyn DecisionPoint>> {
    Ok(match config {
        DecisionConfig::Rego {
            policies,
            entrypoint,
            timeout_ms,
        } => Arc::new(RegoDecisionPoint::load(&RegoSettings {
            policies: policies.clone(),
            entrypoint: entrypoint.clone(),
            timeout: Duration::from_millis(*timeout_ms),
        })?),
        DecisionConfig::Opa(c) => Arc::new(Breaker::new(crate::decision::opa::OpaDecisionPoint::new(c)?, breaker)),
        DecisionConfig::Authzen(c) => Arc::new(Breaker::new(
            crate::decision::authzen::AuthzenDecisionPoint::new(c.as_ref().clone())?,
            breaker,
        )),
        DecisionConfig::Webhook(c) => Arc::new(Breaker::new(
            crate::decision::webhook::WebhookDecisionPoint::new(c.clone())?,
            breaker,
        )),
    })
}

/// The audit signer, when a key is configured.
pub fn signer(config: &AuditConfig) -> anyhow::Result<Option<AuditSigner>> {
    config.signing_key.as_ref().map(AuditSigner::from_secret).transpose()
}

/// Everything built from a config file.
pub struct Built {
    /// Connector instances with mappings.
    pub instances: Vec<Instance>,
    /// The decision point.
    pub decision_point: Arc<dyn DecisionPoint>,
    /// The shadow decision point.
    pub shadow: Option<Arc<dyn DecisionPoint>>,
    /// The comment renderer.
    pub renderer: CommentRenderer,
    /// Pipeline settings.
    pub settings: Settings,
    /// The catalog and directory, when configured.
    pub enricher: Option<Arc<Enricher>>,
    /// Provisioning evidence, when configured.
    pub provisioning: Option<Arc<crate::provisioning::Provisioning>>,
}

/// Reads a config file: its problems, and everything else wrong with it (what building it
/// finds), in one report naming the file and keys.
pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    let file = path.display().to_string();
    let (config, mut problems) = Config::read(path)?;
    if problems.is_empty() {
        return Ok(config);
    }
    if let Err(more) = assemble(&config, &file) {
        problems.extend(more);
    }
    anyhow::bail!(
        "configuration {file} has {} problem(s):\n  {}",
        problems.len(),
        config.redactor.redact(&problems.join("\n  "))
    )
}

/// The catalog and directory, when `[catalog]` is configured.
pub fn enricher(config: &Config) -> anyhow::Result<Option<Arc<Enricher>>> {
    let Some(catalog) = &config.catalog else {
        if config.directory.is_some() {
            anyhow::bail!("directory: a [catalog] is needed too (it maps directory groups to entitlements)");
        }
        return Ok(None);
    };
    use anyhow::Context as _;
    let catalog = CatalogHandle::load(&catalog.path).context("catalog")?;
    let directory = config.directory.as_ref().map(|d| d.build()).transpose().context("directory")?;
    Ok(Some(Arc::new(Enricher {
        catalog: Arc::new(catalog),
        directory,
    })))
}

/// Builds connectors, mappings, the decision point and the renderer, reporting every
/// problem at once.
pub fn build(config: &Config, file: &str) -> anyhow::Result<Built> {
    assemble(config, file).map_err(|problems| {
        anyhow::anyhow!(
            "configuration {file} has {} problem(s):\n  {}",
            problems.len(),
            config.redactor.redact(&problems.join("\n  "))
        )
    })
}

fn assemble(config: &Config, file: &str) -> Result<Built, Vec<String>> {
    let mut problems = Vec::new();
    let mut instances = Vec::new();
    if config.connectors.is_empty() {
        problems.push(format!("{file}: connectors: at least one [[connectors]] entry is needed"));
    }
    for (i, entry) in config.connectors.iter().enumerate() {
        let key = format!("{file}: connectors[{i}] (id {:?})", entry.id);
        if config.connectors.iter().filter(|c| c.id == entry.id).count() > 1 {
            problems.push(format!("{key}: id is used more than once"));
        }
        let mapping = Mapping::load(&entry.mapping)
            .map_err(|e| problems.push(format!("{key}: mapping: {e}")))
            .ok();
        let connector = crate::registry::build(&entry.kind, &entry.id, entry.settings.clone())
            .map_err(|e| {
                // `base_url: …` names a key: say its line too.
                let line = e
                    .split_once(": ")
                    .and_then(|(path, _)| config.key_lines.get(&format!("connectors[{i}].{path}")));
                problems.push(match line {
                    Some(line) => format!("{file}:{line}: connectors[{i}] (id {:?}): {e}", entry.id),
                    None => format!("{key}: {e}"),
                })
            })
            .ok();
        if let (Some(mapping), Some(connector)) = (mapping, connector) {
            instances.push(Instance {
                connector,
                mapping: Arc::new(mapping),
            });
        }
    }
    problems.extend(config.lease_problems(file));
    problems.extend(config.token_problems(file));
    let decision_point = self::decision_point(&config.decision, &config.breaker)
        .map_err(|e| problems.push(format!("{file}: decision: {e:#}")))
        .ok();
    let shadow = match &config.shadow {
        Some(s) => self::decision_point(s, &config.breaker)
            .map_err(|e| problems.push(format!("{file}: shadow: {e:#}")))
            .ok(),
        None => None,
    };
    let renderer = CommentRenderer::new(config.pipeline.comment_template.as_deref())
        .map_err(|e| problems.push(format!("{file}: pipeline.comment_template: {e:#}")))
        .ok();
    let enricher = enricher(config).map_err(|e| problems.push(format!("{file}: {e:#}"))).ok().flatten();
    let provisioning = match &config.provisioning {
        Some(p) => {
            if config.catalog.is_none() {
                problems.push(format!(
                    "{file}: provisioning: a [catalog] is needed (it names the groups that represent entitlements)"
                ));
            }
            crate::provisioning::Provisioning::build(p, config.directory.as_ref())
                .map_err(|e| problems.extend(format!("{e:#}").lines().map(|l| format!("{file}: {l}"))))
                .ok()
                .map(Arc::new)
        }
        None => None,
    };
    match (decision_point, renderer) {
        (Some(decision_point), Some(renderer)) if problems.is_empty() => Ok(Built {
            instances,
            provisioning,
            decision_point,
            shadow,
            renderer,
            enricher,
            settings: Settings {
                batch_size: config.pipeline.batch_size.max(1),
                decision_retry_base: Duration::from_secs(config.pipeline.decision_retry_base_secs),
                decision_retry_max: Duration::from_secs(config.pipeline.decision_retry_max_secs),
                delayed_comment_after: config.pipeline.decision_delayed_comment_after_secs.map(Duration::from_secs),
                post_retry_base: Duration::from_secs(config.pipeline.post_retry_base_secs),
                post_retry_max: Duration::from_secs(config.pipeline.post_retry_max_secs),
                ..Settings::default()
            },
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level modules a line names through `crate::`, including `use crate::{a, b::c}`.
    fn named(line: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                found.extend(group.split(',').filter_map(|p| p.trim().split("::").next()).map(str::to_owned));
            } else {
                found.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
        found
    }

    /// Every top-level module of the crate, and for each module it uses, the first place it
    /// does (`file:line`). Doc comments may mention any module and are not uses.
    fn imports(root: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for entry in std::fs::read_dir(root).expect("read src").flatten() {
            let path = entry.path();
            let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if path.is_dir() {
                let mut files = Vec::new();
                rust_files(&path, &mut files);
                modules.entry(name).or_default().extend(files);
            } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
                modules.entry(name).or_default().push(path);
            }
        }
        let mut uses: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (module, files) in &modules {
            let edges = uses.entry(module.clone()).or_default();
            for file in files {
                let text = std::fs::read_to_string(file).expect("read");
                for (n, line) in text.lines().enumerate() {
                    if line.trim_start().starts_with("//") {
                        continue;
                    }
                    for used in named(line) {
                        if used != *module && modules.contains_key(&used) {
                            edges.entry(used).or_insert_with(|| format!("{}:{}", file.display(), n + 1));
                        }
                    }
                }
            }
        }
        uses
    }

    /// A circle of imports, when there is one: a line `a uses b at file:line` per hop, back to `a`.
    fn circle(uses: &BTreeMap<String, BTreeMap<String, String>>) -> Option<String> {
        fn visit(
            module: &str,
            uses: &BTreeMap<String, BTreeMap<String, String>>,
            path: &mut Vec<String>,
            done: &mut std::collections::BTreeSet<String>,
        ) -> Option<String> {
            if let Some(at) = path.iter().position(|m| m == module) {
                let mut hops = path[at..].to_vec();
                hops.push(module.to_owned());
                let text: Vec<String> = hops
                    .windows(2)
                    .map(|w| format!("{} uses {} at {}", w[0], w[1], uses[&w[0]][&w[1]]))
                    .collect();
                return Some(text.join("\n"));
            }
            if !done.insert(module.to_owned()) {
                return None;
            }
            path.push(module.to_owned());
            for next in uses.get(module).into_iter().flat_map(BTreeMap::keys) {
                if let Some(found) = visit(next, uses, path, done) {
                    return Some(found);
                }
            }
            path.pop();
            None
        }
        let mut done = std::collections::BTreeSet::new();
        uses.keys().find_map(|m| visit(m, uses, &mut Vec::new(), &mut done))
    }

    #[test]
    fn no_two_modules_of_the_crate_import_each_other_even_through_others() {
        let uses = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
        // The scan sees the modules and their uses (it would pass vacuously on an empty map).
        assert!(uses["pipeline"].contains_key("store"), "{uses:?}");
        assert!(uses["wiring"].contains_key("pipeline"), "{uses:?}");
        if let Some(found) = circle(&uses) {
            panic!("modules import each other in a circle:\n{found}");
        }
        assert_eq!(named("use crate::{store::Store, audit};"), ["store", "audit"]);
    }

    #[test]
    fn the_circle_check_finds_a_circle_through_a_third_module() {
        let edge = |to: &str| (to.to_owned(), format!("src/{to}.rs:1"));
        let uses = BTreeMap::from([
            ("a".to_owned(), BTreeMap::from([edge("b")])),
            ("b".to_owned(), BTreeMap::from([edge("c")])),
            ("c".to_owned(), BTreeMap::from([edge("a")])),
        ]);
        let found = circle(&uses).expect("a circle");
        assert!(found.contains("c uses a at src/a.rs:1"), "{found}");
        let without: BTreeMap<_, _> = uses.into_iter().filter(|(m, _)| m != "c").collect();
        assert_eq!(circle(&without), None);
    }
}
