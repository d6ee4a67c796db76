//! What the load harnesses share: a process's peak memory, how busy the machine was, and
//! percentiles of timings.
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

/// The machine's CPU time so far from `/proc/stat`, in clock ticks: `(busy, all)`, where busy is
/// everything but idle and waiting for I/O, over every core and every process (deskbridge, the
/// simulators, PostgreSQL, the harness itself).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let all: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((all - idle, all))
}

/// The share of the machine's CPU (0.0–1.0, all cores) that was busy between two
/// [`machine_ticks`] readings; `None` when `/proc/stat` could not be read.
pub fn busy_between(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((busy0, all0), (busy1, all1)) = (before?, after?);
    (all1 > all0).then(|| (busy1 - busy0) as f64 / (all1 - all0) as f64)
}
