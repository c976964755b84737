//! bf16 on the CPU: `precision = "auto"` says what it chose and why, a bf16 run trains like an
//! fp32 run, and a bf16 checkpoint resumes bit-identically under bf16.

use std::path::Path;

use pretune::checkpoint::CheckpointStore;

use crate::util::{assert_same_weights, losses, run_cli, tiny_config};

fn train(cfg: &Path, out: &Path, sets: &[&str], resume: Option<&Path>) -> String {
    let out_set = format!("run.out_dir={}", out.display());
    let mut args: Vec<&str> = vec!["train", cfg.to_str().unwrap(), "--set", &out_set];
    for s in sets {
        args.extend(["--set", s]);
    }
    let from;
    if let Some(r) = resume {
        from = r.display().to_string();
        args.extend(["--resume", &from]);
    }
    let (code, _, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    err
}

/// The held-out MLM loss of the last evaluation in `events.jsonl`.
fn last_eval(out: &Path) -> f64 {
    crate::util::evals(out).into_iter().filter_map(|(_, m)| m.get("mlm_loss")).next_back().expect("an evaluation")
}

fn mean_of_last(l: &std::collections::BTreeMap<u64, f64>, n: usize) -> f64 {
    let v: Vec<f64> = l.values().rev().take(n).copied().collect();
    v.iter().sum::<f64>() / v.len() as f64
}

/// 300 updates of the tiny BERT (MLM + NSP) in fp32 and in bf16 from the same seed and batches.
///
/// The tolerance: bf16 keeps 8 significant bits, so each matmul's inputs carry ~0.4 % relative
/// rounding, and the two runs' weights drift apart step by step; only the statistics of the
/// trajectory should agree. Measured with this test's settings on an AMD EPYC with AVX512-BF16
/// (2 cores), seeds 7 / 8 / 9: bf16 against fp32 differs by at most 0.0038 in the mean of the last
/// five logged training losses and 0.0066 in the held-out MLM loss (around 6.5), while fp32
/// against fp32 with another seed differs by 0.10 to 0.37 and 0.08 to 0.34. 0.05 is seven times
/// the measured bf16 gap and below every seed-to-seed gap, so a bf16 run must train as closely
/// to fp32 as it does today; NaNs fail outright.
#[test]
fn bf16_on_the_cpu_trains_like_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let common = ["train.max_steps=300", "train.log_every=10", "train.eval_every=300", "train.save_checkpoints=false", "data.eval_batches=4"];
    let fp32_out = dir.path().join("fp32");
    let bf16_out = dir.path().join("bf16");
    let with = |p: &'static str| common.iter().copied().chain([p]).collect::<Vec<_>>();
    let log32 = train(&cfg, &fp32_out, &with("train.precision=fp32"), None);
    let log16 = train(&cfg, &bf16_out, &with("train.precision=bf16"), None);
    assert!(log32.contains("fp32 as configured"), "{log32}");
    assert!(log16.contains("bf16 as configured"), "the start-up log names the arithmetic: {log16}");

    let (l32, l16) = (losses(&fp32_out), losses(&bf16_out));
    assert_eq!(l32.len(), 31, "step 1, then every 10th");
    assert_ne!(l32, l16, "bf16 changes the arithmetic (the same numbers mean autocast never ran)");
    let (t32, t16) = (mean_of_last(&l32, 5), mean_of_last(&l16, 5));
    let (e32, e16) = (last_eval(&fp32_out), last_eval(&bf16_out));
    eprintln!("final training loss fp32 {t32:.4} bf16 {t16:.4}; held-out MLM loss fp32 {e32:.4} bf16 {e16:.4}");
    assert!(l16.values().all(|l| l.is_finite()));
    assert!(e32 < 7.0, "fp32 learned something: {e32}");
    assert!((t32 - t16).abs() < 0.05, "training loss: fp32 {t32} bf16 {t16}");
    assert!((e32 - e16).abs() < 0.05, "held-out MLM loss: fp32 {e32} bf16 {e16}");
}

/// A bf16 checkpoint resumes bit-identically under bf16: losses and final weights. Apart from
/// the comparison above: on a CPU without bf16 units libtorch emulates bf16 (about 10x slower
/// than fp32 on the tiny model), so the two run side by side.
#[test]
fn a_bf16_checkpoint_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let sets = ["train.max_steps=40", "train.log_every=5", "train.eval_every=0", "train.checkpoint_every=20", "train.keep_last=0", "data.eval=[]", "train.precision=bf16"];
    let whole = dir.path().join("whole");
    let log = train(&cfg, &whole, &sets, None);
    assert!(log.contains("bf16 as configured"), "the start-up log names the arithmetic: {log}");
    let resumed = dir.path().join("resumed");
    train(&cfg, &resumed, &sets, Some(&whole.join("checkpoints").join(CheckpointStore::dir_name(20))));
    let all = losses(&whole);
    assert!(all.values().all(|l| l.is_finite()) && all.len() == 9, "{all:?}");
    let want: std::collections::BTreeMap<u64, f64> = all.range(21..).map(|(k, v)| (*k, *v)).collect();
    assert_eq!(losses(&resumed), want);
    assert_same_weights(&whole.join("checkpoints/step-00000040"), &resumed.join("checkpoints/step-00000040"));
}

/// `auto` picks bf16 exactly where the CPU reports bf16 units, and says so.
#[test]
fn auto_precision_follows_the_cpu_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let log = train(&cfg, &dir.path().join("auto"), &["train.precision=auto", "train.max_steps=2", "data.eval=[]"], None);
    let native = matches!(pretune::train::precision::probe(tch::Device::Cpu), pretune::train::precision::Bf16Support::Native(_));
    let want = if native { "auto: bf16, since the CPU reports" } else { "auto: fp32, since the CPU reports neither" };
    assert!(log.contains(want), "want `{want}` in:\n{log}");
    // `check` says the same before anything trains.
    let (code, out, err) = run_cli(&["check", cfg.to_str().unwrap(), "--set", "train.precision=auto"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(want), "{out}");
}

/// `pretune check CFG`'s stdout with `env` set or removed; it must succeed.
fn check_with(cfg: &Path, env: &[(&str, Option<&str>)]) -> String {
    let (code, out, err) = crate::util::run_cli_env(&["check", cfg.to_str().unwrap()], env);
    assert_eq!(code, 0, "{err}");
    out
}

/// libtorch's CUDA half is mapped only where a GPU can use it (it costs ~390 MB of resident
/// memory on every run otherwise), and `PRETUNE_CUDA` overrides the decision both ways. `check`
/// reports what the process really has mapped (`/proc/self/maps`), not what was attempted.
#[test]
fn cuda_libraries_load_only_where_a_gpu_is() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let check = |value: Option<&str>| check_with(&cfg, &[("PRETUNE_CUDA", value)]);
    let has_gpu = matches!(pretune::cuda::wanted(None, Path::new("/")), pretune::cuda::Wanted::Yes(_));
    let default = check(None);
    if has_gpu {
        assert!(default.contains("; CUDA libraries loaded (found "), "{default}");
    } else {
        assert!(default.contains("; CUDA libraries not loaded (no NVIDIA GPU found"), "{default}");
    }
    assert!(check(Some("0")).contains("; CUDA libraries not loaded (PRETUNE_CUDA=0)"));
    // Forced on a machine without a GPU: the wheel's CUDA libraries still load (no driver is
    // needed to map them), and the process has them mapped.
    let forced = check(Some("1"));
    assert!(forced.contains("; CUDA libraries loaded (PRETUNE_CUDA=1), "), "{forced}");
    // libtorch's CUDA backend registered when the library was dlopened: without a GPU its error
    // is the missing driver, not a missing backend ("Could not run ... 'CUDA' backend").
    if !has_gpu {
        assert!(forced.contains(", libtorch: Found no NVIDIA driver on your system;"), "{forced}");
    } else {
        assert!(default.contains(", libtorch sees "), "{default}");
    }
    // This test binary links the same way as `pretune`: the CPU half only.
    assert!(!pretune::cuda::is_mapped() || has_gpu, "the test binary has libtorch_cuda.so mapped without a GPU");
}

/// The binary's malloc is jemalloc for the whole process (libtorch resolves `malloc` through
/// the same global scope `pretune check` inspects), with freed pages kept; `MALLOC_CONF`
/// still tunes it at run time; the test binary, which links only the library, keeps glibc's.
#[test]
fn the_binary_allocates_through_jemalloc() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let check = |conf: Option<&str>| check_with(&cfg, &[("MALLOC_CONF", conf), ("LD_PRELOAD", None)]).lines().last().unwrap_or_default().to_owned();
    let line = check(None);
    let bin = crate::util::bin();
    let exe = bin.file_name().unwrap().to_str().unwrap();
    assert!(line.contains("; jemalloc 5.") && line.contains("(1 arena, freed pages kept) from ") && line.ends_with(exe), "{line}");
    let tuned = check(Some("dirty_decay_ms:2000"));
    assert!(tuned.contains("freed pages returned after 2000 ms"), "{tuned}");
    assert!(std::env::var_os("LD_PRELOAD").is_some() || !pretune::malloc::is_jemalloc(), "the test binary should use the C library's malloc: {}", pretune::malloc::describe());
}
