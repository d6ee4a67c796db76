//! The embedded decision point: Rego evaluated in-process by `regorus` (pinned exactly; it is
//! pre-1.0). The policy returns the whole decision object; this module adds the policy id and
//! version, a decision id and the time, and fails closed on anything else.
//!
//! Evaluations run on a small pool of dedicated threads, never on the async runtime's workers,
//! and the caller waits at most the time limit by the wall clock. regorus's own execution timer
//! stops the interpreter's loops near the limit, but a single builtin call (`numbers.range` of
//! a hundred million numbers) cannot be interrupted: the caller then answers `Timeout` at the
//! limit, the thread is left to finish and is replaced, and at most [`MAX_OVERRUNS`] such
//! threads exist at once; beyond that decisions fail closed as unavailable until they finish.
//! An answer that arrives after the limit is never used.
//!
//! The recorded version is the SHA-256 of the policy texts, in load order, not of their paths.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::RegoVM;
use regorus::rvm::Program;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Engine;
use sha2::{Digest, Sha256};

use super::{Decided, DecisionError, DecisionPoint, PolicyOutput};
use crate::schema::AccessRequest;

/// Instruction budget of one RVM evaluation, far above any real decision policy.
pub const MAX_INSTRUCTIONS: usize = 50_000_000;

/// Evaluation threads that may still be running past their limit at one time.
pub const MAX_OVERRUNS: usize = 4;

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
    program: Option<Arc<Program>>,
    timer: ExecutionTimerConfig,
    entrypoint: String,
    policy_id: String,
    policy_version: String,
    timeout: Duration,
    pool: OnceLock<Pool>,
}

type Evaluated = (Result<regorus::Value, String>, Duration);

/// Where a job is: its caller and its worker agree through this.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const GAVE_UP_QUEUED: u8 = 2;
const GAVE_UP_RUNNING: u8 = 3;
const DONE: u8 = 4;

struct Job {
    input: regorus::Value,
    reply: flume::Sender<Evaluated>,
    state: Arc<AtomicU8>,
}

/// One evaluator per worker thread: the interpreter or the compiled program.
enum Evaluator {
    Interpreter(Box<Engine>, String),
    Vm(Box<RegoVM>),
}

impl Evaluator {
    fn run(&mut self, input: regorus::Value) -> Result<regorus::Value, String> {
        match self {
            Evaluator::Interpreter(engine, entrypoint) => {
                engine.set_input(input);
                engine.eval_rule(entrypoint.clone()).map_err(|e| e.to_string())
            }
            Evaluator::Vm(vm) => {
                vm.set_input(input);
                vm.execute().map_err(|e| e.to_string())
            }
        }
    }
}

/// The evaluation threads of one policy.
struct Pool {
    jobs: flume::Sender<Job>,
    queue: flume::Receiver<Job>,
    overrunning: Arc<AtomicUsize>,
    make: Arc<dyn Fn() -> Evaluator + Send + Sync>,
}

impl Pool {
    fn new(workers: usize, make: Arc<dyn Fn() -> Evaluator + Send + Sync>) -> Self {
        let (jobs, queue) = flume::unbounded();
        let pool = Self {
            jobs,
            queue,
            overrunning: Arc::new(AtomicUsize::new(0)),
            make,
        };
        for _ in 0..workers {
            pool.spawn_worker();
        }
        pool
    }

    fn spawn_worker(&self) {
        let (queue, overrunning, make) = (self.queue.clone(), self.overrunning.clone(), self.make.clone());
        let spawned = std::thread::Builder::new().name("rego-eval".into()).spawn(move || {
            let mut evaluator = make();
            for job in queue.iter() {
                if job
                    .state
                    .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue; // its caller gave up while it waited
                }
                let started = Instant::now();
                let result = evaluator.run(job.input);
                let _ = job.reply.send((result, started.elapsed()));
                if job.state.swap(DONE, Ordering::AcqRel) == GAVE_UP_RUNNING {
                    // A replacement took this thread's place when its caller gave up.
                    overrunning.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a policy evaluation thread");
        }
    }

    /// Queues one evaluation; `Err` when too many earlier ones are still overrunning.
    fn submit(&self, input: regorus::Value) -> Result<(flume::Receiver<Evaluated>, Arc<AtomicU8>), DecisionError> {
        let overrunning = self.overrunning.load(Ordering::Acquire);
        if overrunning >= MAX_OVERRUNS {
            return Err(DecisionError::Unavailable(format!(
                "{overrunning} policy evaluations are still running past their time limit"
            )));
        }
        let (reply, answer) = flume::bounded(1);
        let state = Arc::new(AtomicU8::new(QUEUED));
        self.jobs
            .send(Job {
                input,
                reply,
                state: state.clone(),
            })
            .map_err(|_| DecisionError::Engine("the policy evaluation threads stopped".into()))?;
        Ok((answer, state))
    }

    /// The caller's time is up: a queued job is dropped, a running one is abandoned to its
    /// thread, which a new thread replaces. `None` if the answer arrived meanwhile.
    fn give_up(&self, state: &AtomicU8) -> Option<&'static str> {
        if state
            .compare_exchange(QUEUED, GAVE_UP_QUEUED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Some("waiting for a free evaluator");
        }
        if state
            .compare_exchange(RUNNING, GAVE_UP_RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.overrunning.fetch_add(1, Ordering::AcqRel);
            self.spawn_worker();
            return Some("evaluating");
        }
        None
    }
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
            // The text only: the same policy records the same version wherever it is loaded from.
            // Each text's length first, so that splitting one text across files changes the hash.
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| anyhow::anyhow!("loading policy {name}: {e}"))?;
        }
        let timer = ExecutionTimerConfig {
            limit: timeout,
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        };
        engine.set_execution_timer_config(timer);
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
        // Decisions run in regorus's interpreter, which follows OPA's semantics. The register VM
        // (regorus 0.14.1) answers differently for a common pattern — a rule with an `else`
        // default whose body looks a key up in a map (`owner := o if { o := m[k] } else := "x"`)
        // comes out undefined when the key is absent — so the shipped policy's review of an
        // unlisted system became a deny. The compiled program is opt-in (`with_vm`) for
        // benchmarks and differential tests only.
        Ok(Self {
            template: engine,
            program: None,
            timer,
            entrypoint,
            policy_id,
            policy_version,
            timeout,
            pool: OnceLock::new(),
        })
    }

    /// Evaluates with the interpreter only (the default).
    pub fn interpreter_only(mut self) -> Self {
        self.program = None;
        self.pool = OnceLock::new();
        self
    }

    /// Evaluates on regorus's register VM instead of the interpreter, when the policy compiles
    /// for it. Not used for decisions: see [`RegoDecisionPoint::from_sources`].
    pub fn with_vm(mut self) -> Self {
        let entrypoint = self.entrypoint.clone();
        self.program = self
            .template
            .clone()
            .compile_with_entrypoint(&regorus::Rc::from(entrypoint.as_str()))
            .map_err(|e| e.to_string())
            .and_then(|compiled| Compiler::compile_from_policy(&compiled, &[entrypoint.as_str()]).map_err(|e| e.to_string()))
            .map_err(|e| tracing::info!(error = %e, "the RVM compiler declined the policy"))
            .ok();
        self.pool = OnceLock::new();
        self
    }

    /// Whether decisions run on the compiled RVM program.
    pub fn compiled(&self) -> bool {
        self.program.is_some()
    }

    fn pool(&self) -> &Pool {
        self.pool.get_or_init(|| {
            let (template, program, timer, entrypoint) = (self.template.clone(), self.program.clone(), self.timer, self.entrypoint.clone());
            let make: Arc<dyn Fn() -> Evaluator + Send + Sync> = Arc::new(move || match &program {
                Some(program) => {
                    let mut vm = RegoVM::new();
                    vm.load_program(program.clone());
                    vm.set_execution_timer_config(Some(timer));
                    // The time limit bounds evaluation; the VM's default budget of 25,000
                    // instructions would refuse a large but legitimate policy.
                    vm.set_max_instructions(MAX_INSTRUCTIONS);
                    Evaluator::Vm(Box::new(vm))
                }
                None => Evaluator::Interpreter(Box::new(template.clone()), entrypoint.clone()),
            });
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
            Pool::new(workers, make)
        })
    }

    /// The evaluation's answer, or why there is none; `waited` is the caller's wall time.
    fn conclude(&self, answer: Option<Evaluated>, waited: Duration, state: &AtomicU8) -> Result<regorus::Value, DecisionError> {
        let Some((result, elapsed)) = answer else {
            let stage = self.pool().give_up(state).unwrap_or("answering");
            return Err(DecisionError::Timeout(format!(
                "{} after {waited:?} ({stage}); limit {:?}",
                self.entrypoint, self.timeout
            )));
        };
        if elapsed > self.timeout {
            // Finished, but too late: an over-time answer is never used.
            return Err(DecisionError::Timeout(format!(
                "{} took {elapsed:?}; limit {:?}",
                self.entrypoint, self.timeout
            )));
        }
        result.map_err(|text| {
            let lower = text.to_lowercase();
            if lower.contains("time limit") || lower.contains("instruction limit") {
                DecisionError::Timeout(format!("{} after {elapsed:?}", self.entrypoint))
            } else {
                DecisionError::Engine(text)
            }
        })
    }

    fn finish(&self, value: regorus::Value) -> Result<serde_json::Value, DecisionError> {
        if value == regorus::Value::Undefined {
            return Err(DecisionError::Undefined(self.entrypoint.clone()));
        }
        serde_json::to_value(&value).map_err(|e| DecisionError::Malformed(e.to_string()))
    }

    /// `deskbridge.access`.
    pub fn policy_id(&self) -> &str {
        &self.policy_id
    }

    /// The declared version and content hash.
    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }

    /// Evaluates the entrypoint for one input, blocking this thread up to the time limit; the
    /// raw answer as JSON. For CLI tools and benches; the pipeline uses [`DecisionPoint::decide`].
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<serde_json::Value, DecisionError> {
        self.evaluate_blocking(regorus::Value::from(input.clone()))
    }

    fn evaluate_blocking(&self, input: regorus::Value) -> Result<serde_json::Value, DecisionError> {
        let started = Instant::now();
        let (answer, state) = self.pool().submit(input)?;
        let answer = answer.recv_timeout(self.timeout).ok();
        let value = self.conclude(answer, started.elapsed(), &state)?;
        self.finish(value)
    }

    /// The same, awaiting the answer without holding the runtime's thread.
    async fn evaluate_awaiting(&self, input: regorus::Value) -> Result<serde_json::Value, DecisionError> {
        let started = Instant::now();
        let (answer, state) = self.pool().submit(input)?;
        let answer = tokio::time::timeout(self.timeout, answer.recv_async())
            .await
            .ok()
            .and_then(Result::ok);
        let value = self.conclude(answer, started.elapsed(), &state)?;
        self.finish(value)
    }

    fn decided(&self, raw: serde_json::Value) -> Result<Decided, DecisionError> {
        let output = PolicyOutput::from_json(&raw)?;
        let decision = output.into_decision(self.policy_id.clone(), self.policy_version.clone(), super::new_decision_id());
        Ok(Decided { decision, raw })
    }

    /// Decides, blocking this thread up to the time limit (CLI tools, benches, tests).
    pub fn decide_now(&self, request: &AccessRequest) -> Result<Decided, DecisionError> {
        self.decided(self.evaluate_blocking(policy_input(request)?)?)
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

/// The policy's `input` for a request, converted once (no intermediate copy).
fn policy_input(request: &AccessRequest) -> Result<regorus::Value, DecisionError> {
    serde_json::to_value(request)
        .map(regorus::Value::from)
        .map_err(|e| DecisionError::Engine(format!("input: {e}")))
}

#[async_trait]
impl DecisionPoint for RegoDecisionPoint {
    fn describe(&self) -> String {
        format!("rego:{}", self.policy_id)
    }

    async fn decide(&self, request: &AccessRequest) -> Result<Decided, DecisionError> {
        self.decided(self.evaluate_awaiting(policy_input(request)?).await?)
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
    fn the_compiled_policy_answers_as_the_interpreter_does() {
        let settings = RegoSettings {
            policies: vec![policy_dir().join("access.rego")],
            entrypoint: "data.deskbridge.access.decision".into(),
            timeout: Duration::from_millis(100),
        };
        let compiled = RegoDecisionPoint::load(&settings).expect("loads").with_vm();
        assert!(compiled.compiled(), "the shipped policy compiles for the RVM");
        let interpreted = RegoDecisionPoint::load(&settings).expect("loads").interpreter_only();
        let base = serde_json::json!({
            "source": {"connector": "c", "key": "k", "number": "N", "url": "u", "version": "1"},
            "kind": "grant", "requester": {"id": "ann", "display_name": null, "email": null},
            "beneficiary": {"type": "person", "id": "ann", "display_name": null},
            "target": {"system": "sap-erp", "environment": "prod"},
            "entitlement": {"id": "x", "name": null, "privileged": false},
            "justification": "because", "duration_days": 30, "expires_at": null, "urgency": null,
            "approver_context": {"assignment_group": null, "named_approver": "bob", "itsm_approval": null, "itsm_state": null, "recorded": []},
            "nhi": null, "attributes": {}
        });
        let variations: Vec<(&str, serde_json::Value)> = vec![
            ("kind", "revoke".into()),
            ("kind", "borrow".into()),
            ("justification", serde_json::Value::Null),
            ("justification", "  ".into()),
            ("duration_days", 400.into()),
            ("duration_days", serde_json::Value::Null),
            ("target", serde_json::json!({"system": "jira-software", "environment": "staging"})),
            ("target", serde_json::json!({"system": "mainframe", "environment": "dev"})),
            ("entitlement", serde_json::json!({"id": "x", "name": null, "privileged": true})),
            (
                "approver_context",
                serde_json::json!({"assignment_group": null, "named_approver": "ANN", "itsm_approval": null, "itsm_state": null, "recorded": []}),
            ),
            (
                "beneficiary",
                serde_json::json!({"type": "service_account", "id": "svc", "display_name": null}),
            ),
            (
                "nhi",
                serde_json::json!({"owner": "ann", "purpose": "p", "expires_at": "2027-01-01"}),
            ),
        ];
        let mut inputs = vec![base.clone()];
        for (key, value) in variations {
            let mut input = base.clone();
            input[key] = value;
            inputs.push(input.clone());
            input["beneficiary"] = serde_json::json!({"type": "workload", "id": "w", "display_name": null});
            inputs.push(input);
        }
        for input in &inputs {
            assert_eq!(
                compiled.evaluate(input).expect("rvm"),
                interpreted.evaluate(input).expect("interpreter"),
                "{input}"
            );
        }
    }

    #[test]
    fn decisions_follow_opa_semantics_for_an_unlisted_system() {
        // Found by the fault soak: the register VM answered the default deny here.
        let dp = RegoDecisionPoint::load(&RegoSettings {
            policies: vec![policy_dir().join("access.rego")],
            entrypoint: "data.deskbridge.access.decision".into(),
            timeout: Duration::from_millis(100),
        })
        .expect("loads");
        assert!(!dp.compiled(), "decisions run in the interpreter");
        let input = serde_json::json!({
            "approver_context": {"assignment_group": null, "itsm_approval": "requested", "itsm_state": "open", "named_approver": "david.loo@example.com", "recorded": []},
            "attributes": {}, "beneficiary": {"display_name": "David Loo", "id": "david.loo@example.com", "type": "person"},
            "duration_days": 30, "entitlement": {"id": "role-3", "name": "role-3", "privileged": false}, "expires_at": null,
            "justification": "Generated for a load test.", "kind": "grant", "nhi": null,
            "requester": {"display_name": "David Loo", "email": "david.loo@example.com", "id": "david.loo@example.com"},
            "source": {"connector": "jsm", "key": "10011", "number": "ACC-11", "url": "u", "version": "1"},
            "target": {"environment": "staging", "system": "confluence"}, "urgency": null
        });
        let answer = dp.evaluate(&input).expect("decides");
        assert_eq!(answer["outcome"], "review", "{answer}");
        assert_eq!(answer["route_to"], "IAM Governance", "{answer}");
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
        assert!(dp.policy_version().starts_with("2026.12.1 (sha256:"), "{}", dp.policy_version());
    }
}
