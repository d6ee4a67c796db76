//! A circuit breaker around a remote decision point: after `failures` consecutive failures it
//! stops calling for `cooldown`, answering `Unavailable` at once (the request stays pending),
//! then lets one call through to test recovery.
//!
//! The breaker logs its state changes (open, half-open, closed) once each; the requests it holds
//! back while open are counted ([`Breaker::held_back`]) and logged at debug level only.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Opened at least once since the last success (so a success is worth logging).
    tripped: bool,
}

/// The breaker.
pub struct Breaker<D> {
    inner: D,
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
    held_back: AtomicU64,
}

impl<D: DecisionPoint> Breaker<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, config: &BreakerConfig) -> Self {
        Self {
            inner,
            failures: config.failures.max(1),
            cooldown: Duration::from_secs(config.cooldown_secs),
            state: Mutex::new(State::default()),
            held_back: AtomicU64::new(0),
        }
    }

    /// Requests answered `CircuitOpen` without calling the decision point, since start.
    pub fn held_back(&self) -> u64 {
        self.held_back.load(Ordering::Relaxed)
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
                    self.held_back.fetch_add(1, Ordering::Relaxed);
                    return Err(DecisionError::CircuitOpen(format!(
                        "{}: circuit open after repeated failures",
                        self.inner.describe()
                    )));
                }
                // Half-open: this call tests recovery; one more failure reopens at once.
                tracing::info!(pdp = %self.inner.describe(), "circuit half-open: testing the decision point with one call");
                state.open_until = None;
                state.consecutive = self.failures - 1;
            }
        }
        let result = self.inner.decide(request).await;
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(_) => {
                if state.tripped {
                    tracing::info!(pdp = %self.inner.describe(), held_back = self.held_back(), "decision point answers again; circuit closed");
                }
                *state = State::default();
            }
            Err(e) => {
                state.consecutive += 1;
                if state.consecutive >= self.failures {
                    tracing::warn!(pdp = %self.inner.describe(), cooldown_s = self.cooldown.as_secs(), error = %e, "decision point keeps failing; circuit open");
                    state.open_until = Some(Instant::now() + self.cooldown);
                    state.tripped = true;
                }
            }
        }
        result
    }
}
