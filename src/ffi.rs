//! The C ABI of `csrc/pretune_shim.cpp`: c10d process groups and the autocast dtype, which
//! tch does not expose. Safe wrappers live in [`crate::dist`] and [`crate::train::precision`].

use std::ffi::{c_char, c_int, c_void, CStr};

use torch_sys::C_tensor;

extern "C" {
    pub(crate) fn pt_last_error() -> *const c_char;
    pub(crate) fn pt_autocast_set(device_type: c_int, enabled: c_int, dtype: c_int) -> c_int;
    pub(crate) fn pt_autocast_is_enabled(device_type: c_int) -> c_int;
    pub(crate) fn pt_c10d_available() -> c_int;
    pub(crate) fn pt_pg_new(backend: c_int, host: *const c_char, port: c_int, rank: c_int, world: c_int, timeout_ms: c_int) -> *mut c_void;
    pub(crate) fn pt_pg_allreduce_sum(pg: *mut c_void, t: *mut C_tensor) -> c_int;
    pub(crate) fn pt_pg_broadcast(pg: *mut c_void, t: *mut C_tensor, root: c_int) -> c_int;
    pub(crate) fn pt_pg_barrier(pg: *mut c_void) -> c_int;
    pub(crate) fn pt_pg_free(pg: *mut c_void);
}

/// The shim's message for the last failed call on this thread.
pub(crate) fn last_error() -> String {
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string that lives
    // until the next call on this thread; we copy it at once.
    unsafe { CStr::from_ptr(pt_last_error()) }.to_string_lossy().into_owned()
}
