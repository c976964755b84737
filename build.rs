//! Link-time fixes for libtorch from the PyPI wheel (see `../shared/design/ENV.md` §4).
//!
//! * An rpath to torch's `lib/`, so binaries and tests run without `LD_LIBRARY_PATH`.
//! * `libtorch_cuda.so` force-linked with `--no-as-needed`: nothing references its symbols
//!   directly, so the default `--as-needed` drops it and libtorch never registers CUDA.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
