//! The `pretune` binary: train, launch, check, preview, export, predict, evaluate, ctl, report,
//! bench, tokenizer train, data prepare. Each command lives in `cli/`, one file per command.
//!
//! Exit codes: 0 success, 1 a run failed, 2 a bad config or bad usage.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything asks libtorch about CUDA (it caches the answer).
    pretune::cuda::load();
    cli::install_panic_hook();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = cli::Cli::parse();
    // Two malloc arenas: glibc gives every thread that allocates its own (up to 8 per core), and
    // the pipeline's threads (Loader, Maskers, Trainer, Evaluator) each held one, which measured
    // +150-220 MB peak RSS for a BERT-mini fine-tune at the same speed (BENCHMARKS.md). Not for
    // `data prepare`: with two arenas two tokenizing workers spent half their CPU time waiting
    // on arena locks (slower than one worker; measured in BENCHMARKS.md).
    if !args.command.tokenizes_in_parallel() {
        // SAFETY: mallopt only sets an allocator parameter; no thread of ours runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    cli::run(args.command).unwrap_or_else(|failure| {
        cli::print_error(&failure);
        failure.exit_code()
    })
}
