//! Which arithmetic a run uses, and bf16 autocast for the forward and backward passes.
//!
//! `precision = "auto"` (the default) picks bf16 where the hardware computes it natively: a
//! CUDA device of compute capability 8.0 or later, or a CPU whose flags report AMX-BF16 or
//! AVX512-BF16 (oneDNN then runs bf16 GEMMs on those units, several times the fp32 rate with
//! AMX). Everywhere else bf16 is emulated and slower than fp32, so `auto` stays in fp32. The
//! choice and its reason go to the start-up log. The policy is the same on every device: matmuls
//! and attention autocast to bf16, the weights, their gradients, AdamW's moments and the loss
//! reductions stay fp32 (`cross_entropy` and `log_softmax` with an fp32 result are on
//! autocast's fp32 list).
//!
//! tch can only switch CUDA autocast on at libtorch's default dtype (fp16); the shim
//! (`csrc/pretune_shim.cpp`) sets the dtype per device and the enable flag, and clears the
//! cast-weight cache on the way out, as `torch.autocast` does: cached bf16 copies of the weights
//! must not outlive an optimizer update.

use tch::Device;

use crate::config::Precision;
use crate::ffi;

/// Whether a device computes bf16 natively, and what says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bf16Support {
    /// Native bf16 units: `AMX-BF16`, `AVX512-BF16` or `CUDA compute capability 9.0`.
    Native(String),
    /// None, or none that could be found; the text says what was seen.
    Missing(String),
}

/// The arithmetic a run uses (never [`Precision::Auto`]) and why, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// [`Precision::Fp32`] or [`Precision::Bf16`].
    pub precision: Precision,
    /// One line: what was asked and what the hardware has.
    pub why: String,
}

/// What the CPU's flags (the `flags` line of `/proc/cpuinfo`, space-separated) say about bf16.
pub fn cpu_bf16_support(flags: &str) -> Bf16Support {
    let has = |f: &str| flags.split_ascii_whitespace().any(|x| x == f);
    if has("amx_bf16") {
        Bf16Support::Native("the CPU reports AMX-BF16".into())
    } else if has("avx512_bf16") {
        Bf16Support::Native("the CPU reports AVX512-BF16".into())
    } else {
        Bf16Support::Missing("the CPU reports neither AMX-BF16 nor AVX512-BF16".into())
    }
}

/// What a CUDA device's compute capability says about bf16 (8.0, Ampere, brought it to the
/// tensor cores); `None` when it could not be read.
pub fn cuda_bf16_support(capability: Option<(i32, i32)>) -> Bf16Support {
    match capability {
        Some((major, minor)) if major >= 8 => Bf16Support::Native(format!("CUDA compute capability {major}.{minor}")),
        Some((major, minor)) => Bf16Support::Missing(format!("CUDA compute capability {major}.{minor} (bf16 needs 8.0)")),
        None => Bf16Support::Missing("the CUDA compute capability could not be read (NVML)".into()),
    }
}

/// The policy: `auto` follows the hardware, an explicit choice is kept (bf16 without native
/// units runs, emulated, and the reason says it will be slow).
pub fn choose(requested: Precision, support: &Bf16Support) -> Choice {
    let (precision, why) = match (requested, support) {
        (Precision::Fp32, _) => (Precision::Fp32, "fp32 as configured".to_string()),
        (Precision::Bf16, Bf16Support::Native(how)) => (Precision::Bf16, format!("bf16 as configured ({how})")),
        (Precision::Bf16, Bf16Support::Missing(what)) => {
            (Precision::Bf16, format!("bf16 as configured, but {what}: emulated, expect it slower than fp32"))
        }
        (Precision::Auto, Bf16Support::Native(how)) => (Precision::Bf16, format!("auto: bf16, since {how}")),
        (Precision::Auto, Bf16Support::Missing(what)) => (Precision::Fp32, format!("auto: fp32, since {what}")),
    };
    Choice { precision, why }
}

/// The value of `key` in `/proc/cpuinfo`'s first processor (`flags`, `model name`).
///
/// # Errors
/// When the file cannot be read (not Linux); a missing key is an empty string.
pub fn cpuinfo_field(key: &str) -> std::io::Result<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo")?;
    let value = text.lines().filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim() == key).map_or("", |(_, v)| v.trim());
    Ok(value.to_string())
}

/// Reads the hardware behind `device`: `/proc/cpuinfo` for the CPU, NVML for CUDA.
pub fn probe(device: Device) -> Bf16Support {
    match device {
        Device::Cuda(i) => {
            let cc = nvml_wrapper::Nvml::init()
                .ok()
                .and_then(|n| n.device_by_index(i as u32).and_then(|d| d.cuda_compute_capability()).ok())
                .map(|c| (c.major, c.minor));
            cuda_bf16_support(cc)
        }
        _ => match cpuinfo_field("flags") {
            Ok(flags) => cpu_bf16_support(&flags),
            Err(e) => Bf16Support::Missing(format!("the CPU's features could not be read (/proc/cpuinfo: {e})")),
        },
    }
}

/// [`choose`] on [`probe`]d hardware.
pub fn resolve(requested: Precision, device: Device) -> Choice {
    match requested {
        Precision::Fp32 => choose(requested, &Bf16Support::Missing(String::new())),
        _ => choose(requested, &probe(device)),
    }
}

/// Autocast on for as long as it lives (on this thread: libtorch's autocast state is
/// thread-local).
pub struct Autocast {
    device_type: i32,
}

impl Autocast {
    /// bf16 autocast for `device` when `precision` is bf16 (resolve `auto` first with
    /// [`resolve`]; `None` in fp32).
    pub fn enter(precision: Precision, device: Device) -> Option<Autocast> {
        if precision != Precision::Bf16 {
            return None;
        }
        let device_type = i32::from(device.is_cuda());
        // SAFETY: plain flags in libtorch's thread-local state.
        let rc = unsafe { ffi::pt_autocast_set(device_type, 1, 0) };
        if rc != 0 {
            tracing::warn!(error = %ffi::last_error(), "bf16 autocast unavailable: running in fp32");
            return None;
        }
        Some(Autocast { device_type })
    }

    /// Whether autocast is on for the CPU (`false`) or CUDA (`true`) on this thread.
    ///
    /// # Errors
    /// libtorch's exception, when reading the flag threw.
    pub fn is_enabled(cuda: bool) -> Result<bool, LibtorchError> {
        // SAFETY: reads a flag; the shim catches C++ exceptions (-1).
        match unsafe { ffi::pt_autocast_is_enabled(i32::from(cuda)) } {
            -1 => Err(LibtorchError(ffi::last_error())),
            on => Ok(on != 0),
        }
    }
}

/// An exception libtorch threw inside the shim, with its message.
#[derive(Debug, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct LibtorchError(pub String);

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe { ffi::pt_autocast_set(self.device_type, 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn bf16_autocast_casts_matmuls_and_switches_off_again() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        assert!(Autocast::enter(Precision::Fp32, Device::Cpu).is_none());
        assert!(Autocast::enter(Precision::Auto, Device::Cpu).is_none(), "auto must be resolved first");
        {
            let _g = Autocast::enter(Precision::Bf16, Device::Cpu).expect("the shim sets CPU autocast");
            assert!(Autocast::is_enabled(false).unwrap());
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
            // The loss stays fp32: cross-entropy is on autocast's fp32 list.
            let logits = a.matmul(&a);
            let ce = logits.cross_entropy_loss::<Tensor>(&Tensor::from_slice(&[0i64, 1, 2, 3]), None, tch::Reduction::Sum, -100, 0.0);
            assert_eq!(ce.kind(), Kind::Float);
        }
        assert!(!Autocast::is_enabled(false).unwrap());
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }

    #[test]
    fn cpu_flags_name_the_bf16_units() {
        let zen3 = "fpu vme sse sse2 avx avx2 fma";
        let zen4 = "fpu avx2 avx512f avx512_bf16 avx512_vnni";
        let sapphire = "avx512f avx512_bf16 amx_bf16 amx_tile amx_int8";
        assert_eq!(cpu_bf16_support(zen3), Bf16Support::Missing("the CPU reports neither AMX-BF16 nor AVX512-BF16".into()));
        assert_eq!(cpu_bf16_support(zen4), Bf16Support::Native("the CPU reports AVX512-BF16".into()));
        assert_eq!(cpu_bf16_support(sapphire), Bf16Support::Native("the CPU reports AMX-BF16".into()));
        // A flag is a whole word: `avx512_bf16x` is not `avx512_bf16`.
        assert!(matches!(cpu_bf16_support("avx512_bf16x amx_bf16_not"), Bf16Support::Missing(_)));
    }

    #[test]
    fn cuda_needs_ampere_for_bf16() {
        assert!(matches!(cuda_bf16_support(Some((9, 0))), Bf16Support::Native(_)));
        assert!(matches!(cuda_bf16_support(Some((8, 0))), Bf16Support::Native(_)));
        assert!(matches!(cuda_bf16_support(Some((7, 5))), Bf16Support::Missing(_)));
        assert!(matches!(cuda_bf16_support(None), Bf16Support::Missing(_)));
    }

    #[test]
    fn auto_follows_the_hardware_and_an_explicit_choice_is_kept() {
        let native = Bf16Support::Native("the CPU reports AMX-BF16".into());
        let missing = Bf16Support::Missing("the CPU reports neither AMX-BF16 nor AVX512-BF16".into());
        assert_eq!(choose(Precision::Auto, &native).precision, Precision::Bf16);
        assert_eq!(choose(Precision::Auto, &missing).precision, Precision::Fp32);
        assert_eq!(choose(Precision::Fp32, &native).precision, Precision::Fp32);
        let forced = choose(Precision::Bf16, &missing);
        assert_eq!(forced.precision, Precision::Bf16);
        assert!(forced.why.contains("slower than fp32"), "{}", forced.why);
        assert!(choose(Precision::Auto, &native).why.contains("AMX-BF16"));
    }
}
