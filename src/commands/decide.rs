//! `deskbridge policy test`, `deskbridge decide` and `deskbridge report shadow`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::decision::rego::RegoDecisionPoint;
use crate::decision::DecisionPoint;
use crate::schema::AccessRequest;

/// `policy test [FILES]`: runs every `test_*` rule of the `*_test.rego` files against the other
/// files (default: `examples/policies/*.rego`). Returns the report and whether all passed.
pub fn policy_test(files: &[PathBuf]) -> anyhow::Result<(String, bool)> {
    let files = if files.is_empty() {
        let dir = Path::new("examples/policies");
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("no files given and {} is not readable", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rego"))
            .collect();
        found.sort();
        found
    } else {
        files.to_vec()
    };
    let is_test = |p: &&PathBuf| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("_test.rego"));
    let tests: Vec<&Path> = files.iter().filter(is_test).map(PathBuf::as_path).collect();
    let policies: Vec<&Path> = files.iter().filter(|p| !is_test(p)).map(PathBuf::as_path).collect();
    if tests.is_empty() {
        anyhow::bail!("no *_test.rego file among {} file(s)", files.len());
    }
    let results = RegoDecisionPoint::run_tests(&tests, &policies)?;
    let mut out = String::new();
    for (name, passed) in &results {
        out.push_str(&format!("{} {name}\n", if *passed { "PASS" } else { "FAIL" }));
    }
    let failed = results.iter().filter(|(_, p)| !p).count();
    out.push_str(&format!("{} passed, {failed} failed\n", results.len() - failed));
    Ok((out, failed == 0 && !results.is_empty()))
}

/// `decide --request FILE [--config FILE]`: the configured decision point's decision on one
/// normalized request (the shipped embedded policy without a config).
pub async fn decide(request: &Path, config: Option<&Path>) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(request).with_context(|| format!("reading {}", request.display()))?;
    let mut request: AccessRequest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a normalized access request (see `deskbridge schema`)", request.display()))?;
    let (point, enricher): (std::sync::Arc<dyn DecisionPoint>, _) = match config {
        Some(path) => {
            let config = crate::wiring::load(path)?;
            (
                crate::wiring::decision_point(&config.decision, &config.breaker)?,
                crate::wiring::enricher(&config)?,
            )
        }
        None => (std::sync::Arc::new(super::demo::shipped()?.1), Some(super::demo::catalog_only()?)),
    };
    // The facts replace whatever the file says about them, as in a real run.
    let understated = match &enricher {
        Some(e) => e
            .enrich(&mut request)
            .await
            .map_err(|e| anyhow::anyhow!("{e} (a real run keeps the request pending: fail closed)"))?,
        None => Vec::new(),
    };
    let decided = point
        .decide(&request)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (a real run keeps the request pending: fail closed)"))?;
    let understated: Vec<String> = understated
        .iter()
        .map(|u| format!("{} claimed {}; the catalog says {}", u.claim, u.said, u.catalog))
        .collect();
    Ok(serde_json::to_string_pretty(
        &serde_json::json!({"request": request, "understated_claims": understated, "decision": decided.decision, "raw": decided.raw}),
    )? + "\n")
}

/// `report shadow`: agreement between the primary and shadow decision points.
pub async fn shadow_report(store: &crate::store::Store) -> anyhow::Result<String> {
    let rows = store.shadow_results().await?;
    if rows.is_empty() {
        return Ok("no shadow decisions recorded (configure [shadow])\n".into());
    }
    let agreed = rows.iter().filter(|r| r.agree).count();
    let mut out = format!("{} of {} shadow decisions agree with the primary\n", agreed, rows.len());
    let disagreements: Vec<_> = rows.iter().filter(|r| !r.agree).collect();
    if !disagreements.is_empty() {
        out.push_str(&format!(
            "\n{:<14}  {:<12}  {:<30}  {}\n",
            "TICKET", "PRIMARY", "SHADOW", "SHADOW SAID"
        ));
        for r in disagreements {
            let said = r
                .shadow_outcome
                .clone()
                .or_else(|| r.shadow_error.clone().map(|e| format!("error: {e}")))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<14}  {:<12}  {:<30}  {said}\n",
                r.number, r.primary_outcome, r.shadow_pdp
            ));
        }
    }
    Ok(out)
}
