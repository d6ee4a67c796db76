//! A circuit breaker around a remote decision point: after `failures` consecutive failures it
//! stops calling for `cooldown`, answering `Unavailable` at once (the request stays pending),
//! then lets one call through to test recovery.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use super::{Decided, DecisionError, DecisionPoint};
use crate::schema::AccessRequest;

/// `[decision.breaker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// Seconds the circuit stays open.
    pub cooldown_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown_secs: 30,
        }
    }
}

#[derive(Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
}

/// The breaker.
pub struct Breaker<D> {
    inner: D,
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl<D: DecisionPoint> Breaker<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, config: &BreakerConfig) -> Self {
        Self {
            inner,
            failures: config.failures.max(1),
            cooldown: Duration::from_secs(config.cooldown_secs),
            state: Mutex::new(State::default()),
        }
    }
}

#[async_trait]
impl<D: DecisionPoint> DecisionPoint for Breaker<D> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn decide(&self, request: &AccessRequest) -> Result<Decided, DecisionError> {
        {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(until) = state.open_until {
                if Instant::now() < until {
                    return Err(DecisionError::Unavailable(format!(
                        "{}: circuit open after repeated failures",
                        self.inner.describe()
                    )));
                }
                // Half-open: this call tests recovery; one more failure reopens at once.
                state.open_until = None;
                state.consecutive = self.failures - 1;
            }
        }
        let result = self.inner.decide(request).await;
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(_) => *state = State::default(),
            Err(_) => {
                state.consecutive += 1;
                if state.consecutive >= self.failures {
                    tracing::warn!(pdp = %self.inner.describe(), cooldown_s = self.cooldown.as_secs(), "decision point keeps failing; circuit open");
                    state.open_until = Some(Instant::now() + self.cooldown);
                }
            }
        }
        result
    }
}
