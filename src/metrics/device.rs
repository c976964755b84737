//! Device memory on CUDA, read through NVML (`libnvidia-ml.so`, loaded at run time: nothing to
//! link, and absent on CPU machines). libtorch's caching-allocator statistics are not exposed
//! by tch, so this is the device's used memory as the driver reports it.

use metrics::gauge;
use nvml_wrapper::Nvml;

use super::names;

/// Samples one CUDA device's memory; a no-op on CPU or without NVML.
pub struct DeviceMemory {
    nvml: Option<(Nvml, u32)>,
    label: String,
}

impl DeviceMemory {
    /// For `device`; warns once when CUDA is used but NVML cannot be loaded.
    pub fn new(device: tch::Device) -> Self {
        let tch::Device::Cuda(i) = device else {
            return DeviceMemory { nvml: None, label: String::new() };
        };
        let nvml = match Nvml::init() {
            Ok(n) => Some((n, i as u32)),
            Err(e) => {
                tracing::warn!(error = %e, "NVML unavailable: no device memory metric");
                None
            }
        };
        DeviceMemory { nvml, label: format!("cuda:{i}") }
    }

    /// Sets `pretune_device_memory_used_bytes{device}` (call on logging steps).
    pub fn record(&self) {
        let Some((nvml, index)) = &self.nvml else { return };
        if let Ok(info) = nvml.device_by_index(*index).and_then(|d| d.memory_info()) {
            gauge!(names::DEVICE_MEMORY, "device" => self.label.clone()).set(info.used as f64);
        }
    }
}
