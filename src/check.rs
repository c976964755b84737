//! `pretune check CONFIG`: everything a run would resolve, without training. The plan already
//! finds files, loads the tokenizer, locates `[init]` and reads the labelled data; this adds
//! what only starting would show: the output folder is writable, the ports are free, and the
//! starting weights load into the model the config builds.

use std::path::Path;

use crate::plan::RunPlan;

/// What a successful check found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// `pretrain` or `finetune`.
    pub phase: crate::workload::Phase,
    /// Training examples (fine-tuning) or training files (pre-training).
    pub train: String,
    /// Updates in the run.
    pub steps: u64,
    /// Updates per epoch, when counting epochs.
    pub epoch_steps: u64,
    /// Trainable parameters of the model.
    pub parameters: i64,
    /// Starting weights: `fresh`, or where they come from and how many tensors load.
    pub init: String,
    /// The arithmetic `train.precision` resolves to on this machine, and why.
    pub precision: String,
    /// Whether libtorch's CUDA half is loaded in this process, and why ([`crate::cuda`]).
    pub cuda: String,
    /// The allocator serving `malloc` (libtorch's CPU tensors included; [`crate::malloc`]).
    pub malloc: String,
    /// The peak MFU is measured against ([`crate::mfu::peak`]).
    pub peak: String,
    /// What reading the data changed, a line each ([`crate::workload::Workload::notes`]).
    pub notes: Vec<String>,
}

impl CheckReport {
    /// One line for humans.
    pub fn line(&self) -> String {
        let epochs = if self.epoch_steps > 0 { format!(" ({} per epoch)", self.epoch_steps) } else { String::new() };
        format!(
            "ok: {} run, {}, {} updates{epochs}, {} parameters, weights {}, {}, MFU peak {}; {}; {}",
            self.phase, self.train, self.steps, self.parameters, self.init, self.precision, self.peak, self.cuda, self.malloc
        )
    }
}

/// What libtorch itself says about CUDA once its CUDA half is loaded: the device count, or,
/// with none, the error of a one-element allocation on `cuda:0`, which tells a registered
/// backend without a usable driver ("Found no NVIDIA driver") from a backend that never
/// registered ("Could not run ... from the 'CUDA' backend").
fn cuda_backend() -> String {
    let devices = tch::Cuda::device_count();
    if devices > 0 {
        return format!("libtorch sees {devices} CUDA device(s)");
    }
    match tch::Tensor::f_zeros([1], (tch::Kind::Float, tch::Device::Cuda(0))) {
        Ok(_) => "libtorch allocated on cuda:0".into(),
        Err(e) => {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default().trim_start_matches("Internal torch error: ");
            format!("libtorch: {}", first.split(". ").next().unwrap_or(first).trim_end_matches('.'))
        }
    }
}

/// Checks what a run needs beyond the plan; every problem at once. `nproc`: the local ranks
/// of a launch (each needs its own metrics port).
///
/// # Errors
/// One line per problem, each starting with its key path.
pub fn check(plan: &RunPlan, nproc: usize) -> Result<CheckReport, Vec<String>> {
    let mut problems = out_dir_problems(&plan.config.run.out_dir);
    let metrics = plan.metrics_addr.map(|a| (0..nproc.max(1)).filter_map(move |r| a.port().checked_add(r as u16).map(|p| std::net::SocketAddr::new(a.ip(), p)))).into_iter().flatten();
    let control = plan.control_addr.into_iter();
    for (key, a) in metrics.map(|a| ("metrics.listen", a)).chain(control.map(|a| ("control.listen", a))) {
        if let Err(e) = std::net::TcpListener::bind(a) {
            problems.push(format!("{key}: cannot listen on {a}: {e}"));
        }
    }
    let objective = plan.objective();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = objective.build(&vs.root());
    let parameters: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let init = match &plan.init {
        crate::init::InitSource::Fresh => "fresh".to_owned(),
        source => {
            let loaded = crate::init::load_start(&vs, source).and_then(|r| r.check_encoder(source).map(|()| r)).map_err(|e| crate::error_chain(&e));
            match loaded.and_then(|r| objective.check_start(&r.missing).map(|()| r).map_err(|e| e.to_string())) {
                Ok(r) => {
                    let arch = match source {
                        crate::init::InitSource::Hf(dir) => crate::init::hf_architecture(dir).map(|a| format!("{a}; ")).unwrap_or_default(),
                        _ => String::new(),
                    };
                    format!("{} ({arch}{} tensors load, {} fresh, {} unused)", source.describe().unwrap_or_default(), r.loaded, r.missing.len(), r.unused.len())
                }
                Err(e) => {
                    problems.push(format!("init: {e}"));
                    String::new()
                }
            }
        }
    };
    if let Some(free) = free_bytes(&plan.config.run.out_dir) {
        // A checkpoint holds the weights and AdamW's two moments (fp32), and the previous one
        // stays until the new one is complete.
        let need = 2 * 3 * 4 * parameters.max(0) as u64;
        if free < need {
            problems.push(format!("run.out_dir: {} MB free where two checkpoints take {} MB", free >> 20, need >> 20));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let data = plan.workload.describe_data();
    let skipped = plan.workload.skipped();
    let train = match skipped.first() {
        Some(b) => {
            let n = skipped.len();
            let s = if n == 1 { "" } else { "s" };
            format!("{data}, {n} malformed record{s} skipped (first: {}:{}: {})", b.path.display(), b.line, b.detail)
        }
        None => data,
    };
    let choice = crate::train::precision::resolve(plan.config.train.precision, plan.device);
    let bf16 = choice.precision == crate::config::Precision::Bf16;
    let peak = crate::mfu::peak::measure(plan.device, bf16, crate::actors::torch_threads(plan), plan.config.train.peak_tflops).describe();
    let precision = choice.why;
    let cuda = match crate::cuda::load() {
        // What the process really has mapped, not what was attempted.
        crate::cuda::CudaLibrary::Loaded { .. } if !crate::cuda::is_mapped() => "CUDA libraries reported loaded but not mapped".to_string(),
        outcome @ crate::cuda::CudaLibrary::Loaded { .. } => format!("{outcome}, {}", cuda_backend()),
        outcome => outcome.to_string(),
    };
    Ok(CheckReport { phase: plan.phase(), train, steps: plan.config.train.max_steps, epoch_steps: plan.workload.epoch_steps(), parameters, init, precision, cuda, malloc: crate::malloc::describe(), peak, notes: plan.workload.notes().to_vec() })
}

/// What would stop a run at its output folder: not writable, in use by a live run, or a
/// `checkpoints` that is not a folder.
fn out_dir_problems(out: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = writable(out) {
        problems.push(format!("run.out_dir: {} is not writable: {e}", out.display()));
    }
    let ckpt = out.join("checkpoints");
    if ckpt.exists() && !ckpt.is_dir() {
        problems.push(format!("run.out_dir: {} is not a folder (checkpoints go there)", ckpt.display()));
    }
    if out.join(".lock").exists() {
        if let Err(e) = crate::actors::FolderLock::acquire(out) {
            problems.push(format!("run.out_dir: {}", crate::error_chain(&e)));
        }
    }
    problems
}

/// Bytes free to an unprivileged writer on the file system of `dir` (or its nearest existing
/// ancestor).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(existing_ancestor(dir).as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct we own from a NUL-terminated path.
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

/// `dir`, or its nearest ancestor that exists (`.` at the top of a relative path).
fn existing_ancestor(dir: &Path) -> &Path {
    let mut at = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    while !at.exists() {
        at = at.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    }
    at
}

/// Writes and removes a probe file in `dir`, or in its nearest existing ancestor when it does
/// not exist yet (a check creates nothing).
fn writable(dir: &Path) -> std::io::Result<()> {
    let at = existing_ancestor(dir);
    if !at.is_dir() {
        return Err(std::io::Error::other(format!("{} is not a folder", at.display())));
    }
    let probe = at.join(format!(".pretune-check-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}
