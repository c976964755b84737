//! `pretune train CONFIG [--set K=V] [--resume auto|PATH]`.

use std::path::PathBuf;
use std::process::ExitCode;

use pretune::actors::{EndedBy, RunSummary};

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// TOML config file.
    config: PathBuf,
    /// Override a config value, e.g. `--set train.max_steps=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue from a checkpoint: `auto` (the newest valid one in OUT/checkpoints) or a
    /// checkpoint folder.
    #[arg(long, value_name = "auto|PATH")]
    resume: Option<pretune::checkpoint::resume::ResumeFrom>,
}

impl Args {
    /// The config file and its `--set` overrides.
    pub fn config(&self) -> (&std::path::Path, &[String]) {
        (&self.config, &self.overrides)
    }
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let mut plan = pretune::plan::load_and_resolve(&a.config, &a.overrides).map_err(Failure::usage)?;
    plan.resume = a.resume;
    let _ = super::OUT_DIR.set(plan.config.run.out_dir.clone());
    match pretune::actors::run(plan) {
        Ok(s) => {
            print_summary(&s);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            super::print_error(&Failure::failed(e));
            // An Evaluator may still be inside a forward pass: leave without running atexit
            // handlers, which would tear libtorch's globals down under it. Everything that
            // matters is on disk (checkpoints are fsynced, events flushed).
            pretune::exit_now(1)
        }
    }
}

fn print_summary(s: &RunSummary) {
    let status = match s.ended_by {
        EndedBy::EarlyStopping => "stopped early (patience)".to_owned(),
        EndedBy::Interrupted => "interrupted (checkpoint written)".to_owned(),
        limit @ (EndedBy::MaxSteps | EndedBy::Epochs) => format!("done ({limit} reached)"),
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
        ("MFU", s.mfu.map_or("unknown (no peak: set train.peak_tflops)".into(), |m| format!("{:.2} % ({:.3e} model FLOPs, 3 x forward, dense-equivalent)", 100.0 * m, s.model_flops))),
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
    pretune::outln!("\n{} summary", if s.phase == pretune::workload::Phase::Finetune { "fine-tuning" } else { "run" });
    for (k, v) in rows {
        pretune::outln!("  {k:<17} {v}");
    }
}
