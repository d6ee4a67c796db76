//! Retry delays for the pipeline's own retries (decisions, comments).

use std::time::Duration;

/// `base * 2^attempts`, capped at `max`, with up to 20 % jitter so replicas do not retry in step.
pub fn delay(attempts: i64, base: Duration, max: Duration) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    let plain = base.saturating_mul(2u32.saturating_pow(exp)).min(max);
    let jitter = plain.mul_f64(rand::random::<f64>() * 0.2);
    plain.saturating_sub(jitter)
}
