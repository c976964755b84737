//! Link-time fixes for libtorch from the PyPI wheel (tch's `LIBTORCH_USE_PYTORCH=1`), and the
//! C++ shim (`csrc/pretune_shim.cpp`).
//!
//! * An rpath to torch's `lib/`, so binaries and tests run without `LD_LIBRARY_PATH`.
//! * `libtorch_cuda.so` is *not* linked unless the shim has the NCCL backend (which
//!   references it): mapping it costs ~390 MB of resident memory on every run, GPU or not, so
//!   `src/cuda.rs` `dlopen`s it at start-up on machines with a GPU. Its folder is passed to the
//!   crate as `PRETUNE_TORCH_LIB` for that. (Linked, it needs `--no-as-needed`: nothing
//!   references its symbols directly, so `--as-needed` would drop it and libtorch would never
//!   register CUDA.)
//! * The shim: c10d process groups (Gloo when Debian's `libgloo-dev` headers are present, NCCL
//!   too when CUDA and NCCL headers are found) and the autocast dtype, which tch lacks.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/pretune_shim.cpp");
    println!("cargo:rerun-if-env-changed=PRETUNE_CUDA_INCLUDE");
    println!("cargo:rerun-if-changed=/usr/include/gloo/algorithm.h");
    check_tch_version();
    // The binary links jemalloc as its malloc (src/main.rs); export its control function too,
    // so `pretune::malloc` can name the allocator and its settings from inside the process.
    println!("cargo:rustc-link-arg-bin=pretune=-Wl,--export-dynamic-symbol=mallctl");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-env=PRETUNE_TORCH_LIB={lib}");
    let lib = PathBuf::from(lib);
    let nccl = shim(&lib);
    if nccl && lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Compiles the shim; whether it has the NCCL backend.
fn shim(lib: &Path) -> bool {
    let include = lib.join("../include");
    let mut b = cc::Build::new();
    let mut nccl = false;
    // libtorch's headers as system headers: their warnings are theirs; the shim's own code
    // compiles with -Wall -Wextra and warnings fail nothing but show in the build output.
    b.cpp(true)
        .file("csrc/pretune_shim.cpp")
        .flag("-isystem")
        .flag(include.to_str().expect("UTF-8 libtorch path"))
        .flag("-isystem")
        .flag(include.join("torch/csrc/api/include").to_str().expect("UTF-8 libtorch path"))
        .flag("-std=c++17")
        .warnings(true)
        .extra_warnings(true)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None);
    if Path::new("/usr/include/gloo/algorithm.h").exists() {
        b.define("PRETUNE_C10D", None).define("USE_C10D_GLOO", None).include("/usr/include");
        if let Some(cuda) = cuda_includes(lib) {
            nccl = true;
            b.define("PRETUNE_NCCL", None).define("USE_C10D_NCCL", None).define("USE_CUDA", None);
            for dir in cuda {
                b.include(dir);
            }
        }
    } else {
        println!("cargo:warning=no Gloo headers (/usr/include/gloo): distributed training is disabled in this build; install libgloo-dev");
    }
    b.compile("pretune_shim");
    nccl
}

/// CUDA runtime, CRT and NCCL headers for the NCCL backend: `PRETUNE_CUDA_INCLUDE` (a
/// colon-separated list), else the wheel's `nvidia/*/include` folders when they hold
/// `cuda_runtime_api.h`, `crt/host_config.h` and `nccl.h` (the `nvidia-*` wheels torch
/// depends on ship them on Linux).
fn cuda_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    if let Ok(v) = std::env::var("PRETUNE_CUDA_INCLUDE") {
        return Some(std::env::split_paths(&v).collect());
    }
    let nvidia = lib.join("../../nvidia");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&nvidia).ok()?.filter_map(|e| Some(e.ok()?.path().join("include"))).filter(|p| p.is_dir()).collect();
    // `nvidia-cuda-cccl` puts <nv/target> and <cuda/std/...> under include/cccl.
    let cccl: Vec<PathBuf> = dirs.iter().map(|d| d.join("cccl")).filter(|d| d.is_dir()).collect();
    dirs.extend(cccl);
    let has = |f: &str| dirs.iter().any(|d| d.join(f).exists());
    (has("cuda_runtime_api.h") && has("crt/host_config.h") && has("nccl.h")).then_some(dirs)
}

/// The shim passes tch's `C_tensor` pointers to C++ as `at::Tensor*`, which is what tch 0.26's
/// torch-sys makes them (`tensor` in its `torch_api.h` is `at::Tensor*`); another tch version
/// may change that and every call would read garbage. So the build stops on any other version
/// (Cargo.toml pins `=0.26.0`; this catches a lock file edited by hand or a patched tch).
fn check_tch_version() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let Ok(lock) = std::fs::read_to_string("Cargo.lock") else { return };
    for krate in ["tch", "torch-sys"] {
        let needle = format!("name = \"{krate}\"\nversion = \"");
        if let Some(at) = lock.find(&needle) {
            let version = lock[at + needle.len()..].split('"').next().unwrap_or("");
            assert!(
                version.starts_with("0.26."),
                "{krate} {version}: csrc/pretune_shim.cpp assumes tch 0.26's C_tensor (an at::Tensor*); check torch-sys's torch_api.h before moving to another version"
            );
        }
    }
}
