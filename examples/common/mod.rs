//! What the load harnesses share: a process's peak memory and percentiles of timings.
//! (A folder without `main.rs`: cargo does not take it for an example of its own.)

use std::time::Duration;

/// The peak resident memory (`VmHWM`) of process `pid` (`"self"` for this one) in MiB; `0.0`
/// once the process is gone.
pub fn peak_rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The `p` quantile (0.0–1.0) of durations sorted ascending.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}
