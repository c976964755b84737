//! The hardware's peak, the denominator of MFU: `train.peak_tflops` when given; on CUDA the
//! dense tensor-core (bf16) or FP32 rate of the device from its data sheet, by name; on the
//! CPU the rate a short GEMM probe reaches in the run's precision on the run's threads
//! (measured once per machine and cached: a CPU's data-sheet peak depends on clocks and
//! vector units no portable call reports, and the GEMM libtorch reaches is what a model can).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

/// Dense peaks of known CUDA devices in TFLOP/s: (a part of the name NVML reports, bf16, fp32).
/// Data-sheet numbers without sparsity; more specific names first.
pub const CUDA_PEAKS: &[(&str, f64, f64)] = &[
    ("GH200", 989.0, 67.0),
    ("H200", 989.0, 67.0),
    ("H100 PCIe", 756.0, 51.0),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.0, 67.0),
    ("B200", 2250.0, 80.0),
    ("A100", 312.0, 19.5),
    ("A10G", 70.0, 31.2),
    ("A10", 125.0, 31.2),
    ("L40S", 362.0, 91.6),
    ("L40", 181.0, 90.5),
    ("L4", 121.0, 30.3),
    ("RTX 4090", 165.0, 82.6),
    ("V100", 125.0, 15.7),
    ("T4", 65.0, 8.1),
];

/// The peak of a device named `name` (as NVML reports it, e.g. "NVIDIA H100 80GB HBM3") in
/// bf16 or fp32, in TFLOP/s.
pub fn cuda_peak(name: &str, bf16: bool) -> Option<f64> {
    CUDA_PEAKS.iter().find(|(n, _, _)| name.contains(n)).map(|&(_, b, f)| if bf16 { b } else { f })
}

/// Where a peak came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `train.peak_tflops`.
    Config,
    /// The data sheet of this CUDA device.
    Table(String),
    /// A GEMM probe on this CPU (`cached`: read from an earlier run's measurement).
    Measured {
        /// Read from the cache.
        cached: bool,
        /// A bf16 run's peak is the fp32 probe's: this CPU's fp32 GEMM is faster than its
        /// bf16 one (no bf16 units: libtorch emulates bf16, ~180x slower on a 1024 GEMM here).
        fp32_faster: bool,
    },
    /// Not known (an unlisted GPU): no MFU.
    Unknown(String),
}

/// A peak in FLOP/s and where it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Peak {
    /// FLOP/s (0 when unknown).
    pub flops: f64,
    /// Where it came from.
    pub source: Source,
}

impl Peak {
    /// `model_flops / seconds / peak`, `None` without a peak.
    pub fn mfu(&self, model_flops: f64, seconds: f64) -> Option<f64> {
        (self.flops > 0.0 && seconds > 0.0).then(|| model_flops / seconds / self.flops)
    }

    /// One line for logs and `pretune check`.
    pub fn describe(&self) -> String {
        let tf = self.flops / 1e12;
        match &self.source {
            Source::Config => format!("{tf:.3} TFLOP/s (train.peak_tflops)"),
            Source::Table(name) => format!("{tf:.1} TFLOP/s (data sheet of {name})"),
            Source::Measured { cached, fp32_faster } => format!(
                "{tf:.3} TFLOP/s ({}GEMM probe on this CPU{})",
                if *fp32_faster { "fp32 " } else { "" },
                match (cached, fp32_faster) {
                    (_, true) => ", faster than its bf16: no bf16 units",
                    (true, false) => ", cached",
                    (false, false) => "",
                }
            ),
            Source::Unknown(why) => format!("unknown ({why}): set train.peak_tflops for MFU"),
        }
    }
}

/// The peak for a run on `device` in bf16 (`true`) or fp32 with `threads` libtorch threads
/// (on the CPU the cached probe; [`measure`] probes again).
pub fn resolve(device: Device, bf16: bool, threads: usize, configured_tflops: f64) -> Peak {
    resolve_with(device, bf16, threads, configured_tflops, false)
}

/// [`resolve`], probing the CPU again even when a measurement is cached (`pretune check`): the
/// cache keeps the best rate seen, so a probe that ran beside other work is replaced by the
/// next quiet one.
pub fn measure(device: Device, bf16: bool, threads: usize, configured_tflops: f64) -> Peak {
    resolve_with(device, bf16, threads, configured_tflops, true)
}

fn resolve_with(device: Device, bf16: bool, threads: usize, configured_tflops: f64, fresh: bool) -> Peak {
    if configured_tflops > 0.0 {
        return Peak { flops: configured_tflops * 1e12, source: Source::Config };
    }
    match device {
        Device::Cuda(i) => {
            let name = cuda_name(i).unwrap_or_default();
            match cuda_peak(&name, bf16) {
                Some(tf) => Peak { flops: tf * 1e12, source: Source::Table(name) },
                None => Peak { flops: 0.0, source: Source::Unknown(format!("device {name:?} is not in the table")) },
            }
        }
        _ => cpu_peak(bf16, threads, fresh),
    }
}

fn cuda_name(index: usize) -> Option<String> {
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    nvml.device_by_index(index as u32).and_then(|d| d.name()).ok()
}

/// The CPU's GEMM peak: cached per CPU model, thread count and precision (the best rate
/// measured; `fresh` probes again and keeps the better of the two). For bf16 the better of the
/// bf16 and the fp32 rates: the hardware's peak is what its fastest units do, and a CPU without
/// bf16 units emulates bf16 far below its fp32 rate (a bf16 run's MFU against that would read
/// over 100 %).
pub fn cpu_peak(bf16: bool, threads: usize, fresh: bool) -> Peak {
    let own = cpu_probe(bf16, threads, fresh);
    if bf16 {
        let fp32 = cpu_probe(false, threads, fresh);
        if fp32.flops > own.flops {
            let cached = matches!(fp32.source, Source::Measured { cached: true, .. });
            return Peak { flops: fp32.flops, source: Source::Measured { cached, fp32_faster: true } };
        }
    }
    own
}

/// [`cpu_peak`] of one precision's GEMM.
fn cpu_probe(bf16: bool, threads: usize, fresh: bool) -> Peak {
    let key = format!("{} | {threads} threads | {}", cpu_model(), if bf16 { "bf16" } else { "fp32" });
    let file = cache_file();
    let mut cache: std::collections::BTreeMap<String, f64> = file.as_ref().and_then(|f| std::fs::read(f).ok()).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let cached = cache.get(&key).copied().filter(|f| *f > 0.0);
    if let (Some(flops), false) = (cached, fresh) {
        return Peak { flops, source: Source::Measured { cached: true, fp32_faster: false } };
    }
    let flops = gemm_probe(if bf16 { Kind::BFloat16 } else { Kind::Float }, threads).max(cached.unwrap_or(0.0));
    if let Some(file) = file {
        cache.insert(key, flops);
        // Written whole or not at all (concurrent runs may measure at once).
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        let ok = file.parent().is_some_and(|d| std::fs::create_dir_all(d).is_ok()) && serde_json::to_vec_pretty(&cache).is_ok_and(|b| std::fs::write(&tmp, b).is_ok());
        if ok {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
    Peak { flops, source: Source::Measured { cached: false, fp32_faster: false } }
}

/// `$XDG_CACHE_HOME/pretune/peak.json` (or under `~/.cache`): the best rate measured per key.
pub fn cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("pretune/peak.json"))
}

/// The CPU's model name from `/proc/cpuinfo` (`unknown` elsewhere).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned())).unwrap_or_else(|| "unknown".into())
}

/// FLOP/s of square 1024 GEMMs in `kind` on `threads` threads: the best of a few timed
/// batches after a warm-up (about a quarter of a second in all).
pub fn gemm_probe(kind: Kind, threads: usize) -> f64 {
    let before = tch::get_num_threads();
    tch::set_num_threads(threads.max(1) as i32);
    let n = 1024i64;
    let _guard = tch::no_grad_guard();
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu)).to_kind(kind);
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu)).to_kind(kind);
    let _ = a.matmul(&b);
    let flops_each = 2.0 * (n * n * n) as f64;
    let mut best = 0.0f64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(250) || best == 0.0 {
        let t0 = Instant::now();
        for _ in 0..2 {
            let _ = a.matmul(&b);
        }
        best = best.max(2.0 * flops_each / t0.elapsed().as_secs_f64());
    }
    tch::set_num_threads(before);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_by_name_most_specific_first() {
        assert_eq!(cuda_peak("NVIDIA H100 80GB HBM3", true), Some(989.0));
        assert_eq!(cuda_peak("NVIDIA H100 PCIe", true), Some(756.0));
        assert_eq!(cuda_peak("NVIDIA H200", false), Some(67.0));
        assert_eq!(cuda_peak("NVIDIA A100-SXM4-80GB", true), Some(312.0));
        assert_eq!(cuda_peak("NVIDIA A10G", true), Some(70.0));
        assert_eq!(cuda_peak("NVIDIA L40S", true), Some(362.0));
        assert_eq!(cuda_peak("NVIDIA L4", true), Some(121.0));
        assert_eq!(cuda_peak("Some Accelerator", true), None);
        // Every row is reachable: no earlier name is part of a later one.
        for (i, (name, _, _)) in CUDA_PEAKS.iter().enumerate() {
            assert_eq!(CUDA_PEAKS.iter().position(|(n, _, _)| name.contains(n)), Some(i), "{name} is shadowed");
        }
    }

    #[test]
    fn mfu_is_model_flops_over_time_over_peak() {
        let p = Peak { flops: 2e12, source: Source::Config };
        assert_eq!(p.mfu(1e12, 1.0), Some(0.5));
        assert_eq!(Peak { flops: 0.0, source: Source::Unknown(String::new()) }.mfu(1e12, 1.0), None);
        assert_eq!(resolve(Device::Cpu, false, 1, 3.5).flops, 3.5e12);
    }

    #[test]
    fn a_bf16_peak_is_never_below_the_fp32_one() {
        let (bf16, fp32) = (cpu_peak(true, 1, false), cpu_peak(false, 1, false));
        assert!(bf16.flops >= fp32.flops, "{bf16:?} < {fp32:?}");
        let native = matches!(crate::train::precision::probe(Device::Cpu), crate::train::precision::Bf16Support::Native(_));
        if !native {
            assert!(matches!(bf16.source, Source::Measured { fp32_faster: true, .. }) && bf16.describe().contains("no bf16 units"), "{}", bf16.describe());
        }
    }

    #[test]
    fn the_gemm_probe_measures_a_plausible_rate() {
        let f = gemm_probe(Kind::Float, 1);
        // Any CPU that runs libtorch does more than 1 GFLOP/s and less than 10 TFLOP/s on
        // one thread.
        assert!(f > 1e9 && f < 1e13, "{f}");
    }
}
