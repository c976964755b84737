//! The C ABI of `csrc/pretune_shim.cpp`: c10d process groups, the autocast dtype, libtorch's
//! profiler and the fused AdamW kernel, which tch does not expose. Safe wrappers live in
//! [`crate::distributed`], [`crate::train::precision`], [`crate::train::profile`] and
//! [`crate::train::adamw`].

use std::ffi::{c_char, c_int, CStr};
use std::marker::{PhantomData, PhantomPinned};

use torch_sys::C_tensor;

/// Declares an opaque C++ object owned by the shim: a distinct pointer type per kind of
/// handle, so a process group cannot be passed where a reducer is expected (the nomicon's
/// opaque-struct pattern: not constructible, not `Send`, `Sync` or `Unpin` by itself).
macro_rules! opaque {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[repr(C)]
        pub(crate) struct $name {
            _data: [u8; 0],
            _marker: PhantomData<(*mut u8, PhantomPinned)>,
        }
    )*};
}

opaque! {
    /// A `c10d::ProcessGroup` (Gloo or NCCL) behind `pt_pg_*`.
    ProcessGroupHandle;
    /// A `c10d::Reducer` with its comm hook, behind `pt_reducer_*`.
    ReducerHandle;
    /// An open `RecordFunction` scope of libtorch's profiler.
    ScopeHandle;
}

extern "C" {
    pub(crate) fn pt_last_error() -> *const c_char;
    pub(crate) fn pt_autocast_set(device_type: c_int, enabled: c_int, dtype: c_int) -> c_int;
    pub(crate) fn pt_autocast_is_enabled(device_type: c_int) -> c_int;
    pub(crate) fn pt_profiler_start() -> c_int;
    pub(crate) fn pt_profiler_stop(path: *const c_char) -> c_int;
    pub(crate) fn pt_scope_enter(name: *const c_char) -> *mut ScopeHandle;
    pub(crate) fn pt_scope_exit(scope: *mut ScopeHandle) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pt_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        n: c_int,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> c_int;
    pub(crate) fn pt_c10d_available() -> c_int;
    pub(crate) fn pt_pg_new(backend: c_int, host: *const c_char, port: c_int, rank: c_int, world: c_int, timeout_ms: c_int, gloo_local: *const c_char, gloo_ifnames: *const c_char) -> *mut ProcessGroupHandle;
    pub(crate) fn pt_pg_allreduce_sum(pg: *mut ProcessGroupHandle, t: *mut C_tensor) -> c_int;
    pub(crate) fn pt_pg_broadcast(pg: *mut ProcessGroupHandle, t: *mut C_tensor, root: c_int) -> c_int;
    pub(crate) fn pt_pg_barrier(pg: *mut ProcessGroupHandle) -> c_int;
    pub(crate) fn pt_pg_free(pg: *mut ProcessGroupHandle);
    pub(crate) fn pt_reducer_new(pg: *mut ProcessGroupHandle, params: *const *mut C_tensor, n: c_int, bucket_bytes: i64, first_bucket_bytes: i64, find_unused: c_int) -> *mut ReducerHandle;
    pub(crate) fn pt_reducer_prepare(r: *mut ReducerHandle, outputs: *const *mut C_tensor, n: c_int) -> c_int;
    pub(crate) fn pt_reducer_times(r: *mut ReducerHandle, launched: *mut i64, done: *mut i64, cap: c_int) -> c_int;
    pub(crate) fn pt_reducer_free(r: *mut ReducerHandle);
    pub(crate) fn pt_now_ns() -> i64;
}

/// The shim's message for the last failed call on this thread.
pub(crate) fn last_error() -> String {
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string that lives
    // until the next call on this thread; we copy it at once.
    let message = unsafe { CStr::from_ptr(pt_last_error()) }.to_string_lossy().into_owned();
    if std::env::var_os("TORCH_SHOW_CPP_STACKTRACES").is_some_and(|v| v == "1") {
        message
    } else {
        without_cpp_frames(&message)
    }
}

/// libtorch's message without the C++ stack it appends (`Exception raised from ...` and a
/// `frame #N` line per frame): what PyTorch shows unless `TORCH_SHOW_CPP_STACKTRACES=1`.
pub(crate) fn without_cpp_frames(message: &str) -> String {
    let kept: Vec<&str> = message.lines().take_while(|l| !l.trim_start().starts_with("Exception raised from")).filter(|l| !l.trim_start().starts_with("frame #")).collect();
    kept.join("\n").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpp_frames_are_cut_from_messages() {
        let m = "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500\nException raised from run at /pytorch/torch/csrc/distributed/c10d/ProcessGroupGloo.cpp:123 (most recent call first):\nframe #0: c10::Error::Error(...) + 0x98 (0x7f in libc10.so)\nframe #1: ... \n";
        assert_eq!(super::without_cpp_frames(m), "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500");
        assert_eq!(super::without_cpp_frames("plain"), "plain");
    }
}
