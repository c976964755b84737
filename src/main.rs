//! The `pretune` command line: train, launch, check, preview, export, predict, evaluate, ctl,
//! report, bench, tokenizer train, data prepare.
//!
//! Exit codes: 0 success, 1 a run failed, 2 a bad config or bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pretune::config::ConfigError;
use pretune::plan;

#[derive(Parser)]
#[command(name = "pretune", version, about = "Pre-train and fine-tune transformer language models on libtorch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run training as CONFIG says.
    Train {
        /// TOML config file.
        config: PathBuf,
        /// Override a config value, e.g. `--set train.max_steps=100` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue from a checkpoint: `auto` (the newest valid one in OUT/checkpoints) or a
        /// checkpoint folder.
        #[arg(long, value_name = "auto|PATH")]
        resume: Option<pretune::checkpoint::resume::ResumeFrom>,
    },
    /// Run N local ranks of `train` (data-parallel, like `torchrun --nproc-per-node N`):
    /// `pretune launch --nproc 2 CONFIG [--set K=V] [--resume auto]`; on several machines one
    /// launcher each: `--nnodes M --node-rank R --master-addr NODE0 --master-port P`.
    Launch {
        /// Ranks to start on this machine.
        #[arg(long, default_value_t = 2)]
        nproc: usize,
        /// Machines in the run, one launcher on each.
        #[arg(long, default_value_t = 1)]
        nnodes: usize,
        /// This machine's index (0 hosts global rank 0).
        #[arg(long, default_value_t = 0)]
        node_rank: usize,
        /// Node 0's address as every node reaches it (required with --nnodes > 1).
        #[arg(long)]
        master_addr: Option<String>,
        /// Rendezvous port (default: a free one; required with --nnodes > 1).
        #[arg(long)]
        master_port: Option<u16>,
        /// `train` arguments: the config and its options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        train_args: Vec<String>,
    },
    /// Resolve everything a run would (files, tokenizer, labels, starting weights, ports, the
    /// output folder) without training; exit 2 listing every problem.
    Check {
        /// TOML config file.
        config: PathBuf,
        /// Override a config value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Print what the Masker produces for the first N examples.
    Preview {
        /// TOML config file.
        config: PathBuf,
        /// Examples to show.
        #[arg(short = 'n', default_value_t = 3)]
        n: usize,
        /// One JSON object per example instead of text.
        #[arg(long)]
        json: bool,
        /// Override a config value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Export a checkpoint as a Hugging Face `transformers` folder.
    Export {
        /// Output folder.
        #[arg(long, value_name = "OUT_DIR")]
        hf: PathBuf,
        /// A checkpoint folder, or a run's `checkpoints/` folder (its best, else its latest).
        #[arg(long)]
        checkpoint: PathBuf,
    },
    /// Predict with a fine-tuned checkpoint: JSONL out.
    Predict {
        /// A checkpoint folder, or a run's `checkpoints/` folder (its best, else its latest).
        #[arg(long)]
        checkpoint: PathBuf,
        /// JSONL / CSV / TSV texts, or CoNLL / JSONL `tokens` for NER.
        #[arg(long)]
        input: PathBuf,
        /// Output JSONL (default: stdout).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// A fine-tuned checkpoint's task metrics on a labelled file (the format the task trained
    /// on: JSONL / CSV / TSV, CoNLL, SQuAD JSON or JSONL).
    Evaluate {
        /// A checkpoint folder, or a run's `checkpoints/` folder (its best, else its latest).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The labelled file.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a command to a running job's control endpoint (`control.listen`).
    Ctl {
        /// `host:port` of the endpoint.
        addr: String,
        /// `stop`, `evaluate`, `checkpoint`, `pause`, `resume` or `lr`.
        command: String,
        /// The new learning rate, for `lr`.
        value: Option<String>,
        /// The endpoint's token, if it has one.
        #[arg(long)]
        token: Option<String>,
    },
    /// A run's report from its events.jsonl and config: RUN_DIR/report/index.html (tables and
    /// SVG charts); several runs overlay their curves (into --out, default ./pretune-report).
    Report {
        /// Run output folders.
        #[arg(required = true)]
        run_dirs: Vec<PathBuf>,
        /// Where to write the report (default: RUN_DIR/report for one run).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Benchmarks: the workloads of `../shared/bench` (PyTorch + transformers) through
    /// pretune, one JSON line on stdout. See BENCHMARKS.md and scripts/bench-side-by-side.sh.
    Bench {
        /// `tokenize`, `mask`, `pretrain`, `finetune` or `stream`.
        #[arg(value_enum)]
        workload: pretune::bench::Workload,
        #[command(flatten)]
        args: pretune::bench::BenchArgs,
    },
    /// Tokenizer tools.
    Tokenizer {
        #[command(subcommand)]
        command: TokenizerCommand,
    },
    /// Corpus tools.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Tokenize a pre-training config's `data.train` / `data.eval` once, on all cores, into a
    /// prepared dataset that runs memory-map (`data.train = ["DIR"]`).
    Prepare {
        /// TOML config file.
        config: PathBuf,
        /// Output folder (default: `prepared/<config name>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Tokenizing threads (default: every core).
        #[arg(long)]
        workers: Option<usize>,
        /// Override a config value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train a BERT-style WordPiece tokenizer.
    Train {
        /// Vocabulary size.
        #[arg(long, default_value_t = 8000)]
        vocab_size: usize,
        /// Output `tokenizer.json`.
        #[arg(long)]
        out: PathBuf,
        /// Keep case (default: lower-case, like uncased BERT).
        #[arg(long)]
        cased: bool,
        /// Text files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Prints an error with its cause chain (`error: x\n  caused by: y`).
fn report(e: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {e}");
    let mut cur = e.source();
    while let Some(c) = cur {
        eprintln!("  caused by: {c}");
        cur = c.source();
    }
}

fn load_plan(path: &PathBuf, overrides: &[String]) -> Result<plan::RunPlan, ConfigError> {
    let p = plan::load_and_resolve(path, overrides)?;
    if p.task.is_some() {
        return Err(ConfigError::Invalid { file: path.clone(), problems: vec!["task.kind: preview shows pre-training data; this is a fine-tuning config".into()] });
    }
    Ok(p)
}

/// The output folder of the run in progress, for the panic message.
static OUT_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A panic is a bug, never the user's input: one line naming it and where the run's files are,
/// exit 1, and the backtrace only when `RUST_BACKTRACE` asks for it.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        }
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let what = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
        let out = OUT_DIR.get().map(|d| format!("; the run's files are in {}", d.display())).unwrap_or_default();
        eprintln!("error: internal error (a bug in pretune, please report it): {what}{place}{out}");
        // SAFETY: _exit only ends the process (other threads may hold libtorch state).
        unsafe { libc::_exit(1) }
    }));
}

/// `pretune evaluate`'s output: a table of the task's headline metrics (per-class details
/// after), or with `--json` one object of every metric plus the checkpoint, task and counts.
fn print_evaluation(ev: &pretune::finetune::evaluate::Evaluation, json: bool) {
    let m = &ev.metrics.values;
    if json {
        let mut obj: serde_json::Map<String, serde_json::Value> = m.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
        obj.insert("checkpoint".into(), serde_json::json!(ev.checkpoint));
        obj.insert("task".into(), serde_json::json!(ev.kind));
        obj.insert("records".into(), serde_json::json!(ev.records));
        obj.insert("skipped".into(), serde_json::json!(ev.skipped.len()));
        println!("{}", serde_json::Value::Object(obj));
        return;
    }
    println!("{} on {} records ({} skipped)", ev.checkpoint.display(), ev.records, ev.skipped.len());
    let head = pretune::finetune::evaluate::headline(ev.kind);
    let rest = m.keys().filter(|k| !head.contains(&k.as_str()));
    for k in head.iter().map(|k| k.to_string()).chain(rest.cloned()) {
        if let Some(v) = m.get(&k) {
            println!("  {k:<24} {v:>12.4}");
        }
    }
}

fn main() -> ExitCode {
    // Before anything asks libtorch about CUDA (it caches the answer).
    pretune::cuda::load();
    install_panic_hook();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // Two malloc arenas: glibc gives every thread that allocates its own (up to 8 per core), and
    // the pipeline's threads (Loader, Maskers, Trainer, Evaluator) each held one, which measured
    // +150-220 MB peak RSS for a BERT-mini fine-tune at the same speed (BENCHMARKS.md). Not for
    // `data prepare`: its tokenizing threads allocate and free across threads all the time, and
    // with two arenas two workers spent half their CPU time waiting on arena locks (twice
    // the CPU time per token, slower than one worker; measured in BENCHMARKS.md).
    let prepares = matches!(cli.command, Command::Data { .. } | Command::Bench { workload: pretune::bench::Workload::Prepare, .. });
    if !prepares {
        // SAFETY: mallopt only sets an allocator parameter; no thread of ours runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    match cli.command {
        Command::Train { config, overrides, resume } => {
            let mut plan = match plan::load_and_resolve(&config, &overrides) {
                Ok(p) => p,
                Err(e) => {
                    report(&e);
                    return ExitCode::from(2);
                }
            };
            plan.resume = resume;
            let _ = OUT_DIR.set(plan.config.run.out_dir.clone());
            match pretune::actors::run(plan) {
                Ok(s) => {
                    print_summary(&s);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    report(&e);
                    // An Evaluator may still be inside a forward pass: leave without running
                    // atexit handlers, which would tear libtorch's globals down under it.
                    // Everything that matters is on disk (checkpoints are fsynced, events flushed).
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                    // SAFETY: _exit only ends the process.
                    unsafe { libc::_exit(1) }
                }
            }
        }
        Command::Check { config, overrides } => {
            let plan = match plan::load_and_resolve(&config, &overrides) {
                Ok(p) => p,
                Err(e) => {
                    report(&e);
                    return ExitCode::from(2);
                }
            };
            match pretune::check::check(&plan) {
                Ok(r) => {
                    print!("{}", toml::to_string(&plan.config).unwrap_or_default());
                    println!("\n# {}", r.line());
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    eprintln!("error: {}: the run would fail:\n  - {}", config.display(), problems.join("\n  - "));
                    ExitCode::from(2)
                }
            }
        }
        Command::Preview { config, n, json, overrides } => {
            let plan = match load_plan(&config, &overrides) {
                Ok(p) => p,
                Err(e) => {
                    report(&e);
                    return ExitCode::from(2);
                }
            };
            match pretune::preview::preview(&plan, n) {
                Ok(rows) if json => {
                    for r in rows {
                        println!("{}", serde_json::to_string(&r).expect("rows serialize"));
                    }
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    print!("{}", pretune::preview::render_text(&rows, &plan));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    report(&e);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Export { hf, checkpoint } => match pretune::finetune::export::export_hf(&checkpoint, &hf) {
            Ok(dir) => {
                println!("exported {} to {}", dir.display(), hf.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                report(&e);
                ExitCode::FAILURE
            }
        },
        Command::Predict { checkpoint, input, output } => match pretune::finetune::predict::predict(&checkpoint, &input, output.as_deref()) {
            Ok((dir, n)) => {
                eprintln!("{n} predictions from {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Evaluate { checkpoint, data, json } => match pretune::finetune::evaluate::evaluate(&checkpoint, &data) {
            Ok(ev) => {
                print_evaluation(&ev, json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Ctl { addr, command, value, token } => match pretune::actors::control_http::send(&addr, &command, value.as_deref(), token.as_deref()) {
            Ok((200, body)) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Ok((code, body)) => {
                eprintln!("error: {addr} answered {code}: {body}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: cannot reach {addr}: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Report { run_dirs, out } => match pretune::report::report(&run_dirs, out.as_deref()) {
            Ok(index) => {
                println!("wrote {}", index.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                report(&e);
                ExitCode::FAILURE
            }
        },
        Command::Launch { nproc, nnodes, node_rank, master_addr, master_port, train_args } => {
            if nnodes > 1 && master_addr.is_none() {
                eprintln!("error: --master-addr is required with --nnodes > 1: the address of node 0 that every node reaches");
                return ExitCode::from(2);
            }
            let master_addr = master_addr.unwrap_or_else(|| "127.0.0.1".into());
            let rdzv = pretune::dist::launch::Rendezvous { nnodes, node_rank, nproc, master_addr, master_port };
            if let Err(e) = rdzv.validate() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            match pretune::dist::launch::launch(&rdzv, &train_args) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    report(&e);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench { workload, args } => match pretune::bench::run(workload, &args) {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                report(&e);
                ExitCode::FAILURE
            }
        },
        Command::Data { command: DataCommand::Prepare { config, out, workers, overrides } } => prepare_data(&config, out, workers, &overrides),
        Command::Tokenizer { command: TokenizerCommand::Train { vocab_size, out, cased, files } } => {
            match pretune::data::train_tokenizer::train_wordpiece(&files, vocab_size, !cased, &out) {
                Ok(t) => {
                    println!("wrote {} ({} tokens)", out.display(), t.get_vocab_size(true));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    report(&e);
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `pretune data prepare`: prints what it wrote (or that the folder is already up to date) and
/// the bad records it skipped.
fn prepare_data(config: &std::path::Path, out: Option<PathBuf>, workers: Option<usize>, overrides: &[String]) -> ExitCode {
    let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
    let input = match plan::prepare_input(config, overrides, workers) {
        Ok(i) => i,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let out = out.unwrap_or_else(|| PathBuf::from("prepared").join(config.file_stem().unwrap_or_default()));
    let started = std::time::Instant::now();
    let mut last = started;
    let progress = |split: &str, docs: u64, _bytes: u64| {
        if last.elapsed().as_secs() >= 5 {
            last = std::time::Instant::now();
            eprintln!("{split}: {docs} documents of this file ({:.0} s)", started.elapsed().as_secs_f64());
        }
    };
    match pretune::data::prepared::prepare(&out, &input, progress) {
        Ok(r) => {
            let secs = started.elapsed().as_secs_f64();
            if r.up_to_date {
                println!("{} is up to date (same tokenizer and sources): nothing to do", out.display());
            }
            for (name, s) in &r.manifest.splits {
                let skipped: u64 = s.files.iter().map(|f| f.skipped).sum();
                println!("{name}: {} files, {} documents, {} sentences, {} tokens, {skipped} records skipped", s.files.len(), s.docs, s.sentences, s.tokens);
            }
            for b in &r.bad_records {
                eprintln!("skipped {}:{}: {} ({})", b.path.display(), b.line, b.detail, b.reason);
            }
            if !r.up_to_date {
                let tokens: u64 = r.manifest.splits.values().map(|s| s.tokens).sum();
                println!("wrote {} in {secs:.1} s ({:.0} tokens/s, {workers} workers); train on it with --set 'data.train=[\"{}\"]'", out.display(), tokens as f64 / secs.max(1e-9), out.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

fn print_summary(s: &pretune::actors::RunSummary) {
    let status = match s.ended_by {
        "early stopping" => "stopped early (patience)".to_owned(),
        "signal or stop command" => "interrupted (checkpoint written)".to_owned(),
        limit => format!("done ({limit} reached)"),
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("status", status),
        ("steps", match s.epochs {
            Some(e) => format!("{} ({e:.2} epochs)", s.steps),
            None => s.steps.to_string(),
        }),
        ("tokens", s.tokens.to_string()),
        ("time", format!("{:.1} s", s.elapsed_s)),
        ("throughput", format!("{:.0} tokens/s", s.tokens_per_second)),
        ("data wait", format!("{:.1} % of training time", 100.0 * s.data_wait_share)),
        ("final loss", format!("{:.4}", s.final_loss)),
        ("eval", s.eval.as_ref().map_or("none".into(), |(step, m)| format!("step {step}: {}", m.summary()))),
        ("best", s.best.map_or("no evaluation".into(), |(step, v)| format!("{} {v:.4} at step {step}", s.metric))),
        ("checkpoint", s.checkpoint.as_ref().map_or("none".into(), |p| p.display().to_string())),
        ("best checkpoint", s.best_checkpoint.as_ref().map_or("none".into(), |p| p.display().to_string())),
        ("checkpoint stall", format!("{:.3} s max", s.max_checkpoint_stall_s)),
        ("output", s.out_dir.display().to_string()),
    ];
    if let Some(r) = &s.init {
        rows.insert(rows.len() - 1, ("weights", format!("{} loaded, {} fresh, {} unused", r.loaded, r.missing.len(), r.unused.len())));
    }
    println!("\n{} summary", if s.phase == pretune::plan::FINETUNE { "fine-tuning" } else { "run" });
    for (k, v) in rows {
        println!("  {k:<17} {v}");
    }
}
