//! libtorch errors on the training path as typed errors. tch's tensor methods panic when
//! libtorch throws (an allocation that fails, a device error); a panic is otherwise a bug
//! ("internal error"). Inside [`guarded`], the panic hook stays silent and the panic becomes an
//! `Err` with libtorch's message (its C++ frames cut), which the caller turns into an error
//! that says what ran out and what to change.

use std::cell::Cell;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside [`guarded`] (the panic hook asks, to stay silent).
pub fn in_guarded() -> bool {
    GUARDED.with(Cell::get)
}

/// A panic inside a guarded call: libtorch's message (its C++ frames cut).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// What libtorch (or the wrapper) said.
    pub message: String,
}

impl Failed {
    /// Whether libtorch's message says an allocation failed (CPU or CUDA).
    pub fn is_out_of_memory(&self) -> bool {
        is_out_of_memory(&self.message)
    }
}

/// Runs `f`; a panic inside it comes back as [`Failed`].
///
/// # Errors
/// [`Failed`] with the panic's message, libtorch's C++ frames cut.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Failed> {
    let outer = GUARDED.with(|g| g.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    r.map_err(|payload| {
        let message = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default();
        // tch's `Result::unwrap` message: `called ... on an Err value: Torch("...")`.
        let inner = message.split_once("Torch(\"").map_or(message.as_str(), |(_, rest)| rest.trim_end_matches("\")"));
        let inner = inner.replace("\\n", "\n");
        Failed { message: crate::ffi::without_cpp_frames(&inner) }
    })
}

/// Whether libtorch's message says an allocation failed (CPU or CUDA).
fn is_out_of_memory(message: &str) -> bool {
    ["can't allocate memory", "CUDA out of memory", "out of memory", "OutOfMemoryError"].iter().any(|p| message.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_an_error_and_outside_nothing_changes() {
        let e = guarded(|| -> () { panic!("called `Result::unwrap()` on an `Err` value: Torch(\"[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 272448000 bytes.\\nframe #0: c10::ThrowEnforceNotMet\")") }).unwrap_err();
        assert_eq!(e.message, "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 272448000 bytes.");
        assert!(e.is_out_of_memory());
        assert!(!in_guarded());
        assert_eq!(guarded(|| 7), Ok(7));
    }
}
