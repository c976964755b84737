//! The `pretune` command line: one file per command, each a thin adapter from parsed arguments
//! to the library and from its result to output. Every command returns
//! `Result<ExitCode, Failure>`; [`Failure`] is printed in one place ([`print_error`]) and maps
//! to one exit code: 0 success, 1 a run failed, 2 a bad config or bad usage.

mod bench;
mod check;
mod ctl;
mod data;
mod evaluate;
mod export;
mod generate;
mod launch;
mod predict;
mod preview;
mod report;
mod sweep;
mod tokenizer;
mod train;

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pretune", version, about = "Pre-train and fine-tune transformer language models on libtorch")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run training as CONFIG says.
    Train(train::Args),
    /// Run N local ranks of `train` (data-parallel, like `torchrun --nproc-per-node N`):
    /// `pretune launch --nproc 2 CONFIG [--set K=V] [--resume auto]`; on several machines one
    /// launcher each: `--nnodes M --node-rank R --master-addr NODE0 --master-port P`.
    Launch(launch::Args),
    /// Resolve everything a run would (files, tokenizer, labels, starting weights, ports, the
    /// output folder) without training; exit 2 listing every problem.
    Check(check::Args),
    /// Print what the Masker produces for the first N examples.
    Preview(preview::Args),
    /// Export a checkpoint as a Hugging Face `transformers` folder.
    Export(export::Args),
    /// Predict with a fine-tuned checkpoint: JSONL out.
    Predict(predict::Args),
    /// GLM generation, JSONL in and out: a pre-trained GLM fills each `text`'s blanks
    /// ([MASK], [sMASK], [gMASK]); a task.kind = "generation" checkpoint answers each `source`.
    Generate(generate::Args),
    /// A fine-tuned checkpoint's task metrics on a labelled file (the format the task trained
    /// on: JSONL / CSV / TSV, CoNLL, SQuAD JSON or JSONL).
    Evaluate(evaluate::Args),
    /// Send a command to a running job's control endpoint (`control.listen`).
    Ctl(ctl::Args),
    /// A run's report from its events.jsonl and config: RUN_DIR/report/index.html (tables and
    /// SVG charts); several runs overlay their curves (into --out, default ./pretune-report).
    Report(report::Args),
    /// A grid of runs over config keys (learning rates, seeds, starting points, ...), each in
    /// its own folder, resumable, `--jobs N` at a time, and the table of every metric's mean ±
    /// standard deviation over seeds (Markdown, JSON, plots): `pretune sweep SPEC.toml`.
    Sweep(sweep::Args),
    /// Benchmarks: the workloads of the PyTorch + transformers baseline through pretune, one
    /// JSON line on stdout. See BENCHMARKS.md and scripts/bench-side-by-side.sh.
    Bench(bench::Args),
    /// Tokenizer tools.
    Tokenizer {
        #[command(subcommand)]
        command: tokenizer::Command,
    },
    /// Corpus tools.
    Data {
        #[command(subcommand)]
        command: data::Command,
    },
}

/// Runs one command.
pub fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Train(a) => train::run(a),
        Command::Launch(a) => launch::run(a),
        Command::Check(a) => check::run(a),
        Command::Preview(a) => preview::run(a),
        Command::Export(a) => export::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Ctl(a) => ctl::run(a),
        Command::Report(a) => report::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Tokenizer { command } => tokenizer::run(command),
        Command::Data { command } => data::run(command),
    }
}

/// Settings a trained checkpoint takes: `--set generate.KEY=VALUE` over its `[generate]`,
/// `--set task.KEY=VALUE` for its task's post-processing keys, and `--no-kv-cache`.
#[derive(clap::Args, Debug, Default)]
pub struct GenerateArgs {
    /// `generate.KEY=VALUE` over the run's `[generate]` (num_beams, max_new_tokens, do_sample,
    /// seed, ...), or `task.KEY=VALUE` for a task's post-processing (question answering:
    /// null_score_diff_threshold, n_best_size, max_answer_length); repeatable.
    #[arg(long = "set", value_name = "generate.KEY=VALUE | task.KEY=VALUE")]
    pub set: Vec<String>,
    /// Decode by full recomputation instead of the key / value cache (the same outputs,
    /// slower: for checking).
    #[arg(long)]
    pub no_kv_cache: bool,
}

impl GenerateArgs {
    /// The overrides, `--no-kv-cache` last.
    pub fn overrides(&self) -> Vec<String> {
        let mut v = self.set.clone();
        if self.no_kv_cache {
            v.push("generate.kv_cache=false".into());
        }
        v
    }
}

/// `--device` and `--batch-size`: where and how wide `predict`, `evaluate` and `generate` run
/// the model.
#[derive(clap::Args)]
pub struct InferenceArgs {
    /// Where the model runs: `auto` (the first GPU when there is one, as a `transformers`
    /// pipeline picks), `cpu`, `cuda`, `cuda:N`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Examples per forward pass (generation: texts decoded together, fewer when their beams
    /// would not fit the memory left).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
}

impl InferenceArgs {
    /// The device, checked against the machine (a usage error naming `--device` otherwise),
    /// and the batch size.
    pub fn resolve(&self) -> Result<pretune::finetune::drive::Inference, Failure> {
        let device = pretune::plan::parse_device(&self.device).map_err(|e| {
            Failure::usage(match e {
                pretune::plan::DeviceError::Unavailable(d) => format!("--device {d}: not available on this machine"),
                pretune::plan::DeviceError::Unknown(d) => format!("--device {d}: not one of auto, cpu, cuda, cuda:N"),
            })
        })?;
        Ok(pretune::finetune::drive::Inference { device, batch_size: self.batch_size as usize })
    }
}

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// A bad config or bad usage, found before anything ran: exit 2.
    Usage(Box<dyn Error + Send + Sync>),
    /// The command ran and failed: exit 1.
    Failed(Box<dyn Error + Send + Sync>),
}

impl Failure {
    /// A usage failure from anything that converts to an error (a `String` does).
    pub fn usage(e: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Failure::Usage(e.into())
    }

    /// A run failure from anything that converts to an error.
    pub fn failed(e: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Failure::Failed(e.into())
    }

    /// A usage failure when `usage` holds (what the error's own `is_usage` says), else a run
    /// failure: `.map_err(|e| Failure::either(e.is_usage(), e))`.
    pub fn either(usage: bool, e: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        if usage {
            Failure::usage(e)
        } else {
            Failure::failed(e)
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Failed(_) => ExitCode::FAILURE,
        }
    }

    fn error(&self) -> &(dyn Error + 'static) {
        match self {
            Failure::Usage(e) | Failure::Failed(e) => e.as_ref(),
        }
    }
}

/// The one error printer: `error: outer` and a `caused by:` line per cause.
pub fn print_error(f: &Failure) {
    let mut chain = pretune::causes(f.error());
    if let Some(top) = chain.next() {
        pretune::errln!("error: {top}");
    }
    for cause in chain {
        pretune::errln!("  caused by: {cause}");
    }
}

/// The output folder of the run in progress, for the panic message.
static OUT_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A panic is a bug, never the user's input: one line naming it and where the run's files are,
/// exit 1, and the backtrace only when `RUST_BACKTRACE` asks for it.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A guarded libtorch call (the training step) turns its panic into a typed error.
        if pretune::guard::in_guarded() {
            return;
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        }
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let what = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
        let out = OUT_DIR.get().map(|d| format!("; the run's files are in {}", d.display())).unwrap_or_default();
        pretune::errln!("error: internal error (a bug in pretune, please report it): {what}{place}{out}");
        pretune::exit_now(1)
    }));
}
