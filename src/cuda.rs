//! libtorch's CUDA half (`libtorch_cuda.so` and the CUDA libraries it pulls in), loaded only
//! on machines that have an NVIDIA GPU.
//!
//! Linked the usual way it is mapped and relocated at start-up whether or not a GPU exists:
//! ~390 MB of resident memory before the first step (`pretune --help` peaked at 510 MB linked,
//! 117 MB without it), a quarter of a BERT-mini pre-training's peak on the CPU. So the binary
//! links libtorch's CPU half only, and [`load`] `dlopen`s the CUDA half (`RTLD_GLOBAL`, so its
//! kernels and hooks register as if linked) where a GPU can be used. It must run before
//! anything asks libtorch about CUDA: libtorch caches its CUDA hooks on the first question, so
//! a late load would go unseen. `main` calls it first; device resolution calls it too, for
//! library users.
//!
//! `PRETUNE_CUDA=1` loads it on any machine, `PRETUNE_CUDA=0` never; otherwise it is loaded
//! when an NVIDIA device node (`/dev/nvidia0`, ...) or a GPU under `/proc/driver/nvidia/gpus`
//! exists. A build whose shim has the NCCL backend links the CUDA half as before (the shim
//! references it), and [`load`] then finds it already there.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::sync::OnceLock;

/// The CUDA half's file name, found through the binary's rpath to torch's `lib/`.
const LIBRARY: &str = "libtorch_cuda.so";

/// What [`load`] did, for the start-up log and `pretune check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaLibrary {
    /// Mapped into the process (loaded here, or linked by a build with NCCL); `why` says which.
    Loaded {
        /// Why it was loaded.
        why: String,
    },
    /// Not loaded: CPU only, and `why`.
    NotLoaded {
        /// Why not (no GPU found, or `PRETUNE_CUDA=0`).
        why: String,
    },
    /// Wanted but `dlopen` failed (a CPU-only torch wheel, a missing CUDA library): CPU only.
    Failed {
        /// `dlopen`'s message.
        error: String,
    },
}

impl std::fmt::Display for CudaLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CudaLibrary::Loaded { why } => write!(f, "CUDA libraries loaded ({why})"),
            CudaLibrary::NotLoaded { why } => write!(f, "CUDA libraries not loaded ({why})"),
            CudaLibrary::Failed { error } => write!(f, "CUDA libraries failed to load, CPU only ({error})"),
        }
    }
}

/// Loads the CUDA half once per process where [`wanted`] says so; later calls return the
/// first outcome.
pub fn load() -> &'static CudaLibrary {
    static OUTCOME: OnceLock<CudaLibrary> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        if is_mapped() {
            return CudaLibrary::Loaded { why: "linked into this build".into() };
        }
        match wanted(std::env::var("PRETUNE_CUDA").ok().as_deref(), Path::new("/")) {
            Wanted::No(why) => CudaLibrary::NotLoaded { why },
            Wanted::Yes(why) => match dlopen_global(LIBRARY).or_else(|e| option_env!("PRETUNE_TORCH_LIB").map_or(Err(e), |dir| dlopen_global(&format!("{dir}/{LIBRARY}")))) {
                Ok(()) => CudaLibrary::Loaded { why },
                Err(error) => CudaLibrary::Failed { error: error.to_string() },
            },
        }
    })
}

/// Whether to load the CUDA half, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Load it.
    Yes(String),
    /// Do not.
    No(String),
}

/// Whether to load the CUDA half. `root` is `/` except in tests.
pub fn wanted(env: Option<&str>, root: &Path) -> Wanted {
    match env.map(str::trim) {
        Some("1") => return Wanted::Yes("PRETUNE_CUDA=1".into()),
        Some("0") => return Wanted::No("PRETUNE_CUDA=0".into()),
        _ => {}
    }
    let dev_node = std::fs::read_dir(root.join("dev")).into_iter().flatten().flatten().find(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.strip_prefix("nvidia").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if let Some(node) = dev_node {
        return Wanted::Yes(format!("found /dev/{}", node.file_name().to_string_lossy()));
    }
    let gpus = root.join("proc/driver/nvidia/gpus");
    if std::fs::read_dir(&gpus).is_ok_and(|mut d| d.next().is_some()) {
        return Wanted::Yes("found a GPU under /proc/driver/nvidia/gpus".into());
    }
    Wanted::No("no NVIDIA GPU found; PRETUNE_CUDA=1 loads them anyway".into())
}

/// `dlopen`'s message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DlopenError(String);

/// Whether `libtorch_cuda.so` is mapped into this process (`/proc/self/maps`).
pub fn is_mapped() -> bool {
    let needle = format!("/{LIBRARY}");
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.lines().any(|l| l.ends_with(&needle)))
}

fn dlopen_global(name: &str) -> Result<(), DlopenError> {
    let c = CString::new(name).map_err(|e| DlopenError(e.to_string()))?;
    // SAFETY: a NUL-terminated path; the handle is deliberately never closed (the library
    // stays for the life of the process, as a linked one would).
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a NUL-terminated message or null.
        let msg = unsafe { libc::dlerror() };
        let msg = if msg.is_null() { "dlopen failed".to_string() } else { unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned() };
        return Err(DlopenError(msg));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_and_device_nodes_decide() {
        let root = std::env::temp_dir().join(format!("pretune-cuda-{}", std::process::id()));
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev/nvidiactl"), b"").unwrap();
        std::fs::write(root.join("dev/nvidia-uvm"), b"").unwrap();
        // Control nodes alone are not a GPU.
        assert!(matches!(wanted(None, &root), Wanted::No(_)));
        assert_eq!(wanted(Some("1"), &root), Wanted::Yes("PRETUNE_CUDA=1".into()));
        std::fs::write(root.join("dev/nvidia3"), b"").unwrap();
        assert_eq!(wanted(None, &root), Wanted::Yes("found /dev/nvidia3".into()));
        assert_eq!(wanted(Some("0"), &root), Wanted::No("PRETUNE_CUDA=0".into()));
        std::fs::remove_file(root.join("dev/nvidia3")).unwrap();
        std::fs::create_dir_all(root.join("proc/driver/nvidia/gpus/0000:17:00.0")).unwrap();
        assert!(matches!(wanted(None, &root), Wanted::Yes(_)));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
