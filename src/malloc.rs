//! Which allocator serves this process's `malloc`, and so libtorch's CPU tensors.
//!
//! The `pretune` binary links jemalloc in place of the C library's malloc (see `src/main.rs`);
//! a program that links the library keeps its own choice, and `LD_PRELOAD` can swap either.
//! Peak memory depends on it (BENCHMARKS.md, "The allocator"), so `pretune check` and every
//! run's start-up log say which one is in use, found the way libtorch finds it: the `malloc`
//! the dynamic linker resolves for the whole process.

use std::ffi::{c_char, c_int, c_void, CStr};

/// `mallctl`, jemalloc's control interface (exported by the `pretune` binary and by any
/// `libjemalloc.so`).
type Mallctl = unsafe extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;

/// One line: the allocator, its settings where it has any, and the file `malloc` comes from.
pub fn describe() -> String {
    let origin = malloc_origin().unwrap_or_else(|| "an unknown object".into());
    match jemalloc() {
        Some(ctl) => {
            let version = read_str(ctl, c"version").map_or("jemalloc".into(), |v| format!("jemalloc {}", v.split('-').next().unwrap_or(&v)));
            let arenas = read::<u32>(ctl, c"opt.narenas").map_or(String::new(), |n| format!("{n} arena{}", if n == 1 { "" } else { "s" }));
            let decay = match read::<isize>(ctl, c"opt.dirty_decay_ms") {
                Some(-1) => "freed pages kept".to_string(),
                Some(ms) => format!("freed pages returned after {ms} ms"),
                None => String::new(),
            };
            let settings: Vec<String> = [arenas, decay].into_iter().filter(|s| !s.is_empty()).collect();
            format!("{version} ({}) from {origin}", settings.join(", "))
        }
        None => format!("malloc from {origin}"),
    }
}

/// Whether jemalloc serves `malloc` in this process.
pub fn is_jemalloc() -> bool {
    jemalloc().is_some()
}

/// The file (executable or shared library) whose `malloc` the process uses.
fn malloc_origin() -> Option<String> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name; dladdr only fills `info`.
    unsafe {
        let malloc = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        let mut info: libc::Dl_info = std::mem::zeroed();
        if malloc.is_null() || libc::dladdr(malloc, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned())
    }
}

fn jemalloc() -> Option<Mallctl> {
    // SAFETY: dlsym with a NUL-terminated name; a non-null result is jemalloc's mallctl, whose
    // signature is `Mallctl`.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"mallctl".as_ptr());
        (!f.is_null()).then(|| std::mem::transmute::<*mut c_void, Mallctl>(f))
    }
}

fn read<T: Copy + Default>(ctl: Mallctl, name: &CStr) -> Option<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: `value` has `len` bytes, the size jemalloc documents for these read-only options.
    let rc = unsafe { ctl(name.as_ptr(), (&mut value as *mut T).cast(), &mut len, std::ptr::null_mut(), 0) };
    (rc == 0 && len == std::mem::size_of::<T>()).then_some(value)
}

fn read_str(ctl: Mallctl, name: &CStr) -> Option<String> {
    let p: *const c_char = read::<usize>(ctl, name)? as *const c_char;
    // SAFETY: jemalloc returns a pointer to a static NUL-terminated string.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_uses_the_c_librarys_malloc() {
        // Unit tests link the library only, not the binary's jemalloc.
        if std::env::var_os("LD_PRELOAD").is_some() {
            return;
        }
        assert!(!is_jemalloc());
        let line = describe();
        assert!(line.starts_with("malloc from ") && line.contains("libc"), "{line}");
    }
}
