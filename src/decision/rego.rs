//! The embedded decision point: Rego evaluated in-process by `regorus` (pinned exactly; it is
//! pre-1.0). The policy returns the whole decision object; this module adds the policy id and
//! version, a decision id and the time, and fails closed on anything else.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Engine;
use sha2::{Digest, Sha256};

use super::{Decided, DecisionError, DecisionPoint, PolicyOutput};
use crate::schema::{AccessRequest, Decision};

/// Rego policy settings (`[decision]` with `kind = "rego"`).
#[derive(Debug, Clone)]
pub struct RegoSettings {
    /// Policy files (`.rego`); `*_test.rego` files are not loaded for decisions.
    pub policies: Vec<std::path::PathBuf>,
    /// The rule that returns the decision object.
    pub entrypoint: String,
    /// Evaluation time limit.
    pub timeout: Duration,
}

/// An embedded Rego policy.
pub struct RegoDecisionPoint {
    template: Engine,
    idle: Mutex<Vec<Engine>>,
    entrypoint: String,
    policy_id: String,
    policy_version: String,
    timeout: Duration,
}

impl RegoDecisionPoint {
    /// Loads the policies; a syntax error names the file and line.
    pub fn load(settings: &RegoSettings) -> anyhow::Result<Self> {
        let mut sources = Vec::new();
        for path in &settings.policies {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading policy {}: {e}", path.display()))?;
            sources.push((path.display().to_string(), text));
        }
        Self::from_sources(sources, &settings.entrypoint, settings.timeout)
    }

    /// Builds from `(name, rego text)` pairs.
    pub fn from_sources(sources: Vec<(String, String)>, entrypoint: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut engine = Engine::new();
        let mut hasher = Sha256::new();
        for (name, text) in &sources {
            hasher.update(name.as_bytes());
            hasher.update(text.as_bytes());
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| anyhow::anyhow!("loading policy {name}: {e}"))?;
        }
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: timeout,
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        });
        let entrypoint = entrypoint.trim().to_owned();
        let package = entrypoint.rsplit_once('.').map(|(p, _)| p).unwrap_or(&entrypoint).to_owned();
        let policy_id = package.strip_prefix("data.").unwrap_or(&package).to_owned();
        let digest = hex::encode(hasher.finalize());
        // A policy may declare `policy_version := "…"`; the content hash is kept either way.
        let declared = engine
            .clone()
            .eval_rule(format!("{package}.policy_version"))
            .ok()
            .and_then(|v| v.as_string().ok().map(|s| s.to_string()));
        let policy_version = match declared {
            Some(v) => format!("{v} (sha256:{})", &digest[..12]),
            None => format!("sha256:{}", &digest[..12]),
        };
        Ok(Self {
            template: engine,
            idle: Mutex::new(Vec::new()),
            entrypoint,
            policy_id,
            policy_version,
            timeout,
        })
    }

    /// `deskbridge.access`.
    pub fn policy_id(&self) -> &str {
        &self.policy_id
    }

    /// The declared version and content hash.
    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }

    /// Evaluates the entrypoint for one input; the raw answer as JSON.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<serde_json::Value, DecisionError> {
        let mut engine = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .unwrap_or_else(|| self.template.clone());
        let input = regorus::Value::from_json_str(&input.to_string()).map_err(|e| DecisionError::Engine(format!("input: {e}")))?;
        engine.set_input(input);
        let started = Instant::now();
        let result = engine.eval_rule(self.entrypoint.clone());
        let elapsed = started.elapsed();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(engine);
        }
        let value = result.map_err(|e| {
            let text = e.to_string();
            if elapsed >= self.timeout || text.to_lowercase().contains("time limit") {
                DecisionError::Timeout(format!("{} after {elapsed:?}", self.entrypoint))
            } else {
                DecisionError::Engine(text)
            }
        })?;
        if value == regorus::Value::Undefined {
            return Err(DecisionError::Undefined(self.entrypoint.clone()));
        }
        let json = value.to_json_str().map_err(|e| DecisionError::Malformed(e.to_string()))?;
        serde_json::from_str(&json).map_err(|e| DecisionError::Malformed(e.to_string()))
    }

    /// Decides synchronously (the evaluation takes microseconds; no thread hop needed).
    pub fn decide_now(&self, request: &AccessRequest) -> Result<Decided, DecisionError> {
        let input = serde_json::to_value(request).map_err(|e| DecisionError::Engine(format!("input: {e}")))?;
        let raw = self.evaluate(&input)?;
        let output = PolicyOutput::from_json(&raw)?;
        let decision = Decision {
            outcome: output.outcome,
            reasons: output.reasons,
            route_to: output.route_to,
            missing: output.missing,
            obligations: output.obligations,
            policy_id: self.policy_id.clone(),
            policy_version: self.policy_version.clone(),
            decision_id: uuid::Uuid::new_v4().to_string(),
            decided_at: Utc::now(),
        };
        Ok(Decided { decision, raw })
    }

    /// Runs every `test_*` rule of the loaded test packages; returns `(name, passed)` pairs.
    pub fn run_tests(test_files: &[&Path], policies: &[&Path]) -> anyhow::Result<Vec<(String, bool)>> {
        let mut engine = Engine::new();
        for path in policies.iter().chain(test_files) {
            engine
                .add_policy_from_file(path)
                .map_err(|e| anyhow::anyhow!("loading {}: {e}", path.display()))?;
        }
        let test_rule = regex::Regex::new(r"(?m)^(test_[A-Za-z0-9_]+)\s+if\b").map_err(anyhow::Error::from)?;
        let package = regex::Regex::new(r"(?m)^package\s+([A-Za-z0-9_.]+)").map_err(anyhow::Error::from)?;
        let mut results = Vec::new();
        for path in test_files {
            let text = std::fs::read_to_string(path)?;
            let pkg = package
                .captures(&text)
                .and_then(|c| c.get(1))
                .ok_or_else(|| anyhow::anyhow!("{}: no package line", path.display()))?
                .as_str()
                .to_owned();
            for name in test_rule
                .captures_iter(&text)
                .filter_map(|c| c.get(1))
                .map(|m| m.as_str().to_owned())
            {
                let mut e = engine.clone();
                let passed = matches!(e.eval_rule(format!("data.{pkg}.{name}")), Ok(v) if v == regorus::Value::from(true));
                if !results.iter().any(|(n, _): &(String, bool)| n == &name) {
                    results.push((name, passed));
                }
            }
        }
        Ok(results)
    }
}

#[async_trait]
impl DecisionPoint for RegoDecisionPoint {
    fn describe(&self) -> String {
        format!("rego:{}", self.policy_id)
    }

    async fn decide(&self, request: &AccessRequest) -> Result<Decided, DecisionError> {
        self.decide_now(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
    }

    #[test]
    fn every_rego_test_of_the_shipped_policy_passes() {
        let dir = policy_dir();
        let (policy, tests) = (dir.join("access.rego"), dir.join("access_test.rego"));
        let results = RegoDecisionPoint::run_tests(&[tests.as_path()], &[policy.as_path()]).expect("policies load");
        assert!(results.len() >= 10, "{results:?}");
        let failed: Vec<&String> = results.iter().filter(|(_, ok)| !ok).map(|(n, _)| n).collect();
        assert!(failed.is_empty(), "failing Rego tests: {failed:?}");
    }

    #[test]
    fn undefined_errors_and_malformed_results_fail_closed() {
        let timeout = Duration::from_millis(200);
        let undefined = RegoDecisionPoint::from_sources(
            vec![(
                "p.rego".into(),
                "package p\ndecision := {\"outcome\": \"approve\", \"reasons\": [\"x\"]} if input.never\n".into(),
            )],
            "data.p.decision",
            timeout,
        )
        .expect("loads");
        assert!(matches!(
            undefined.evaluate(&serde_json::json!({})),
            Err(DecisionError::Undefined(_))
        ));

        let malformed = RegoDecisionPoint::from_sources(
            vec![("p.rego".into(), "package p\ndecision := {\"outcome\": \"approve\"}\n".into())],
            "data.p.decision",
            timeout,
        )
        .expect("loads");
        let raw = malformed.evaluate(&serde_json::json!({})).expect("evaluates");
        assert!(matches!(PolicyOutput::from_json(&raw), Err(DecisionError::Malformed(_))));

        let missing_rule =
            RegoDecisionPoint::from_sources(vec![("p.rego".into(), "package p\nx := 1\n".into())], "data.p.decision", timeout)
                .expect("loads");
        assert!(missing_rule.evaluate(&serde_json::json!({})).is_err());
    }

    #[test]
    fn a_runaway_policy_hits_the_time_limit() {
        let slow = RegoDecisionPoint::from_sources(
            vec![(
                "slow.rego".into(),
                "package p\ndecision := {\"outcome\": \"deny\", \"reasons\": [sprintf(\"%d\", [count([x | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); x := i * j])])]}\n".into(),
            )],
            "data.p.decision",
            Duration::from_millis(50),
        )
        .expect("loads");
        let started = Instant::now();
        let result = slow.evaluate(&serde_json::json!({}));
        assert!(matches!(result, Err(DecisionError::Timeout(_))), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stopped near the limit: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_syntax_error_names_the_policy_file() {
        let err = RegoDecisionPoint::from_sources(
            vec![("broken.rego".into(), "package p\ndecision := {\n".into())],
            "data.p.decision",
            Duration::from_millis(50),
        )
        .err()
        .expect("fails");
        assert!(err.to_string().contains("broken.rego"), "{err}");
    }

    #[test]
    fn the_shipped_policy_reports_its_version() {
        let dp = RegoDecisionPoint::load(&RegoSettings {
            policies: vec![policy_dir().join("access.rego")],
            entrypoint: "data.deskbridge.access.decision".into(),
            timeout: Duration::from_millis(100),
        })
        .expect("loads");
        assert_eq!(dp.policy_id(), "deskbridge.access");
        assert!(dp.policy_version().starts_with("2026.11.1 (sha256:"), "{}", dp.policy_version());
    }
}
