//! The `pretune` binary: train, launch, check, preview, export, predict, evaluate, ctl, report,
//! bench, tokenizer train, data prepare. Each command lives in `cli/`, one file per command.
//!
//! Exit codes: 0 success, 1 a run failed, 2 a bad config or bad usage.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc is this process's `malloc`, libtorch's included: its CPU tensors come from
/// `posix_memalign`, and a training step frees and re-allocates hundreds of MB of them in
/// shapes that change from batch to batch. glibc's malloc kept what it freed in fragments it
/// could not reuse: peak RSS grew with every step (BERT-mini fine-tuning 843 MB after 5 steps,
/// 1,634 MB after 80, with the step's live heap flat at ~690 MB). jemalloc reuses its extents.
/// `dirty_decay_ms:-1` keeps freed pages mapped instead of returning them to the OS: returned
/// pages fault back in on the next step, which measured 1.4-1.5x the step time with
/// jemalloc's default 10 s decay. One arena (with per-thread caches) held the least.
/// Numbers: BENCHMARKS.md, "The allocator".
#[used]
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static malloc_conf: Option<&'static std::ffi::c_char> =
    // SAFETY: a pointer to the first byte of a static, NUL-terminated string.
    Some(unsafe { &*c"narenas:1,dirty_decay_ms:-1,muzzy_decay_ms:-1".as_ptr() });

// Linked for its side effect: it defines malloc, free, posix_memalign, ... for the process.
use tikv_jemalloc_sys as _;

fn main() -> ExitCode {
    // Before anything asks libtorch about CUDA (it caches the answer).
    pretune::cuda::load();
    cli::install_panic_hook();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr (a log reader that quit) drops log lines; tracing's own report of
        // the failed write would be an `eprintln!`, which panics there.
        .log_internal_errors(false)
        .init();
    let args = cli::Cli::parse();
    cli::run(args.command).unwrap_or_else(|failure| {
        cli::print_error(&failure);
        failure.exit_code()
    })
}
