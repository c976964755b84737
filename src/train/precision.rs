//! bf16 autocast for the forward and backward passes. tch can only switch CUDA autocast on at
//! libtorch's default dtype (fp16); the shim (`csrc/pretune_shim.cpp`) sets the dtype per device
//! and the enable flag, and clears the cast-weight cache on the way out, as `torch.autocast`
//! does: cached bf16 copies of the weights must not outlive an optimizer update.

use tch::Device;

use crate::config::Precision;
use crate::ffi;

/// Autocast on for as long as it lives (on this thread: libtorch's autocast state is
/// thread-local).
pub struct Autocast {
    device_type: i32,
}

impl Autocast {
    /// bf16 autocast for `device` when `precision` asks for it (CUDA only; `None` otherwise).
    pub fn enter(precision: Precision, device: Device) -> Option<Autocast> {
        Self::enter_on(precision, device, false)
    }

    /// As [`Autocast::enter`], also on the CPU when `cpu` is set (tests; CPU bf16 is slow
    /// without AVX-512 BF16).
    pub fn enter_on(precision: Precision, device: Device, cpu: bool) -> Option<Autocast> {
        if precision != Precision::Bf16 || !(device.is_cuda() || cpu) {
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
    pub fn is_enabled(cuda: bool) -> bool {
        // SAFETY: reads a flag.
        unsafe { ffi::pt_autocast_is_enabled(i32::from(cuda)) != 0 }
    }
}

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
        assert!(Autocast::enter(Precision::Bf16, Device::Cpu).is_none(), "CPU needs opting in");
        assert!(Autocast::enter_on(Precision::Fp32, Device::Cpu, true).is_none());
        {
            let _g = Autocast::enter_on(Precision::Bf16, Device::Cpu, true).expect("the shim sets CPU autocast");
            assert!(Autocast::is_enabled(false));
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
        }
        assert!(!Autocast::is_enabled(false));
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }
}
