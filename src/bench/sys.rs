//! What a benchmark records about the machine: peak RSS, and how much of the CPU other
//! processes took while it ran (the VMs we measure on are noisy; a contended run must show).
//! The same quantities the baseline's scripts record (peak RSS from `getrusage`, other
//! processes' share of `/proc/stat`), so the two sides compare.

use serde::Serialize;
use std::time::Instant;

/// Peak resident set size of this process, in MB (`ru_maxrss`).
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return f64::NAN;
    }
    round1(ru.ru_maxrss as f64 / 1024.0)
}

/// Current resident set size in MB (`VmRSS` of `/proc/self/status`).
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| round1(kb / 1024.0))
}

/// Current resident memory split in MB: anonymous (heap: what the process holds) and
/// file-backed (mapped files' pages in memory, e.g. a memory-mapped prepared corpus: page
/// cache the kernel can drop and that every rank on the machine shares).
pub fn rss_anon_file_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).map_or(f64::NAN, |kb| round1(kb / 1024.0));
    (field("RssAnon:"), field("RssFile:"))
}

/// The CPU's model name (`/proc/cpuinfo`), or an empty string.
pub fn cpu_model() -> String {
    crate::train::precision::cpuinfo_field("model name").unwrap_or_default()
}

/// Rounds to one decimal (JSON readability).
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to four decimals.
pub fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let vals: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let idle = vals.get(3)? + vals.get(4).copied().unwrap_or(0);
    let total: u64 = vals.iter().take(8).sum();
    Some((total - idle, total))
}

/// CPU seconds used by this process (all threads) and its reaped children.
fn own_cpu_s() -> f64 {
    let t = |who| {
        // SAFETY: as above.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 * 1e-6 + ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 * 1e-6
    };
    t(libc::RUSAGE_SELF) + t(libc::RUSAGE_CHILDREN)
}

/// Measures the share of the machine other processes used during a measurement.
pub struct CpuMonitor {
    t0: Instant,
    busy0: u64,
    own0: f64,
}

/// What [`CpuMonitor::finish`] reports (field names as in the baseline's JSON).
#[derive(Debug, Clone, Serialize)]
pub struct CpuInfo {
    /// Seconds measured.
    pub wall_s: f64,
    /// CPU seconds this process used.
    pub own_cpu_s: f64,
    /// `own_cpu_s / wall_s`: cores this process kept busy.
    pub own_cpu_util: f64,
    /// CPU time of other processes over `wall_s * cores`; ~0 means the machine was ours.
    pub others_busy_frac: f64,
}

impl CpuMonitor {
    /// Starts measuring.
    pub fn start() -> Self {
        CpuMonitor { t0: Instant::now(), busy0: jiffies().map_or(0, |j| j.0), own0: own_cpu_s() }
    }

    /// Stops and reports.
    pub fn finish(self) -> CpuInfo {
        let wall = self.t0.elapsed().as_secs_f64();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = jiffies().map_or(0, |j| j.0).saturating_sub(self.busy0) as f64 / hz;
        let own = own_cpu_s() - self.own0;
        CpuInfo {
            wall_s: round4(wall),
            own_cpu_s: round4(own),
            own_cpu_util: if wall > 0.0 { round4(own / wall) } else { 0.0 },
            others_busy_frac: if wall > 0.0 { round4(((busy - own).max(0.0)) / (wall * ncpu)) } else { 0.0 },
        }
    }
}

/// Median, minimum and maximum of step times.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    /// Median seconds per step.
    pub s_per_step_median: f64,
    /// Fastest step.
    pub s_per_step_min: f64,
    /// Slowest step.
    pub s_per_step_max: f64,
}

impl StepStats {
    /// From step times (seconds); `None` when empty.
    pub fn of(times: &[f64]) -> Option<Self> {
        if times.is_empty() {
            return None;
        }
        let mut t = times.to_vec();
        t.sort_by(f64::total_cmp);
        Some(StepStats { s_per_step_median: round4(t[t.len() / 2]), s_per_step_min: round4(t[0]), s_per_step_max: round4(t[t.len() - 1]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_stats_take_the_upper_median_like_the_baseline() {
        let s = StepStats::of(&[3.0, 1.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.s_per_step_median, s.s_per_step_min, s.s_per_step_max), (3.0, 1.0, 4.0));
        assert!(StepStats::of(&[]).is_none());
    }

    #[test]
    fn a_busy_loop_shows_as_own_cpu_not_as_others() {
        let m = CpuMonitor::start();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let info = m.finish();
        assert!(info.own_cpu_util > 0.5, "{info:?}");
        assert!(peak_rss_mb() > 1.0 && rss_mb() > 1.0);
    }
}
