//! Failpoints: named places where a test makes the process die as a `kill -9` would, so a
//! crash lands exactly where the test needs it instead of wherever a timed signal happens to
//! land. Set `PRETUNE_FAILPOINT=NAME`; nothing else reads it, and unset it costs one
//! environment lookup per point reached (each is on a cold path).

/// Dies by `SIGKILL` here when `PRETUNE_FAILPOINT` names `name`.
pub fn hit(name: &str) {
    if std::env::var_os("PRETUNE_FAILPOINT").is_some_and(|v| v == name) {
        // SAFETY: raise(3) on this process; SIGKILL cannot be caught, as in a real kill.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}
