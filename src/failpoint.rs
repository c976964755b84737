//! Failpoints: named places where a test makes the process die as a `kill -9` would, so a
//! crash lands exactly where the test needs it instead of wherever a timed signal happens to
//! land. Set `PRETUNE_FAILPOINT=NAME`, or `NAME=VALUE` for a point with a value (the
//! Trainer's `trainer.step=4` dies right after update 4), optionally followed by `rank=R`
//! (only global rank R dies) and `attempt=A` (only in the launcher's A-th restart, 0 being the
//! first start: a fault that does not come back). Nothing else reads the variable, and unset
//! it costs one environment lookup per point reached (each is on a cold path or once a step).

/// Dies by `SIGKILL` here when `PRETUNE_FAILPOINT` names `name` (with no value).
pub fn hit(name: &str) {
    hit_with(name, None);
}

/// Dies by `SIGKILL` here when `PRETUNE_FAILPOINT` names `name=value`.
pub fn hit_at(name: &str, value: u64) {
    hit_with(name, Some(value));
}

fn hit_with(name: &str, value: Option<u64>) {
    let Some(spec) = std::env::var_os("PRETUNE_FAILPOINT") else { return };
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<u64>().ok());
    let here = Here { name, value, rank: var("RANK").unwrap_or(0), attempt: var(crate::distributed::launch::RESTART_COUNT_VAR).unwrap_or(0) };
    if fires(&spec.to_string_lossy(), &here) {
        // SAFETY: raise(3) on this process; SIGKILL cannot be caught, as in a real kill.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

/// Where a process is when it reaches a point.
struct Here<'a> {
    name: &'a str,
    value: Option<u64>,
    rank: u64,
    attempt: u64,
}

/// Whether `spec` (the variable's value) fires at `here`.
fn fires(spec: &str, here: &Here<'_>) -> bool {
    let mut words = spec.split_whitespace();
    let Some(point) = words.next() else { return false };
    let (name, value) = match point.split_once('=') {
        Some((n, v)) => (n, v.parse::<u64>().ok()),
        None => (point, None),
    };
    if name != here.name || value != here.value {
        return false;
    }
    words.all(|w| match w.split_once('=') {
        Some(("rank", r)) => r.parse() == Ok(here.rank),
        Some(("attempt", a)) => a.parse() == Ok(here.attempt),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_the_point_its_value_and_optionally_the_rank_and_attempt() {
        let at = |name, value, rank, attempt| Here { name, value, rank, attempt };
        assert!(fires("prepare.split_created", &at("prepare.split_created", None, 0, 0)));
        assert!(!fires("prepare.split_created", &at("trainer.step", Some(4), 0, 0)));
        assert!(fires("trainer.step=4", &at("trainer.step", Some(4), 1, 2)));
        assert!(!fires("trainer.step=4", &at("trainer.step", Some(3), 0, 0)));
        assert!(!fires("trainer.step", &at("trainer.step", Some(4), 0, 0)), "a point with a value needs one");
        assert!(fires("trainer.step=4 rank=1 attempt=0", &at("trainer.step", Some(4), 1, 0)));
        assert!(!fires("trainer.step=4 rank=1 attempt=0", &at("trainer.step", Some(4), 0, 0)));
        assert!(!fires("trainer.step=4 rank=1 attempt=0", &at("trainer.step", Some(4), 1, 1)), "a fault that does not come back after a restart");
        assert!(!fires("trainer.step=4 ranks=1", &at("trainer.step", Some(4), 1, 0)), "an unknown qualifier never fires");
        assert!(!fires("", &at("trainer.step", Some(4), 0, 0)));
    }
}
