//! How much memory this process may still take: the kernel's estimate of what can be allocated
//! without swapping (`MemAvailable`), lowered to what the process's control group leaves
//! (cgroup v2 `memory.max - memory.current`, or v1's `limit_in_bytes - usage_in_bytes`), as a
//! container's limit is what the OOM killer enforces. Work whose size a setting multiplies (a
//! beam search's beams) is sized against it before it starts, so a large setting is an error
//! or a smaller batch instead of a process the kernel kills without a word.

use std::path::{Path, PathBuf};

/// Bytes this process can still allocate, or `None` where the kernel does not say (not Linux).
pub fn available_bytes() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| mem_available(&s))?;
    let group = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|s| cgroup_room(&s, Path::new("/sys/fs/cgroup")));
    Some(group.map_or(machine, |g| g.min(machine)))
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// The room the process's control group leaves (limit minus usage), from `/proc/self/cgroup`'s
/// text and the cgroup mount `root`; `None` without a limit. The group's own files first, the
/// root's where the group's are not visible (a container sees its group as the root).
fn cgroup_room(self_cgroup: &str, root: &Path) -> Option<u64> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let room = |limit: Option<String>, usage: Option<String>| -> Option<u64> {
        // "max" (v2) or a page-rounded i64::MAX (v1): no limit.
        let limit: u64 = limit?.parse().ok().filter(|&l| l < 1 << 60)?;
        let usage: u64 = usage.and_then(|u| u.parse().ok()).unwrap_or(0);
        Some(limit.saturating_sub(usage))
    };
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let rel = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            for dir in [root.join(rel), root.to_owned()] {
                if dir.join("memory.max").exists() {
                    return room(read(dir.join("memory.max")), read(dir.join("memory.current")));
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            for dir in [root.join("memory").join(rel), root.join("memory")] {
                if dir.join("memory.limit_in_bytes").exists() {
                    return room(read(dir.join("memory.limit_in_bytes")), read(dir.join("memory.usage_in_bytes")));
                }
            }
        }
    }
    None
}

/// `bytes` for a message: `1.5 GiB`, `320 MiB`.
pub fn human(bytes: u64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 { format!("{gib:.1} GiB") } else { format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_says_what_is_available_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:        100 kB\nMemAvailable:   23059244 kB\n";
        assert_eq!(mem_available(text), Some(23_059_244 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn a_cgroup_limit_leaves_its_limit_minus_usage_and_no_limit_is_none() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        // v2, the group's own folder.
        write("job/memory.max", "1073741824\n");
        write("job/memory.current", "73741824\n");
        assert_eq!(cgroup_room("0::/job\n", root.path()), Some(1_000_000_000));
        // v2 without a limit.
        write("free/memory.max", "max\n");
        assert_eq!(cgroup_room("0::/free\n", root.path()), None);
        // v1: the memory controller's folder; its "unlimited" is a page-rounded i64::MAX.
        write("memory/v1job/memory.limit_in_bytes", "2000\n");
        write("memory/v1job/memory.usage_in_bytes", "500\n");
        assert_eq!(cgroup_room("4:memory:/v1job\n0::/\n", root.path()), Some(1500));
        write("memory/big/memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(cgroup_room("4:memory:/big\n", root.path()), None);
        // Usage over the limit leaves nothing, not a wrapped number.
        write("over/memory.max", "100\n");
        write("over/memory.current", "150\n");
        assert_eq!(cgroup_room("0::/over\n", root.path()), Some(0));
        // This machine: whatever it is, a number below the machine's total.
        let total = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kb: u64 = total.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(available_bytes().is_some_and(|b| b > 0 && b <= total_kb * 1024));
    }

    #[test]
    fn sizes_read_as_gib_or_mib() {
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(320 << 20), "320 MiB");
    }
}
