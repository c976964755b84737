//! A custom actor that writes every event of a run as a JSON line (to stdout, or a file).
//!
//! ```sh
//! make build && cargo run --example custom_logger -- configs/pretrain-mlm-tiny.toml
//! ```

use std::io::Write;

use actix::{Actor, Context, Handler};
use pretune::actors::events::Event;
use pretune::actors::Pipeline;
use serde_json::json;

/// Writes each event as one JSON object per line.
struct JsonLogger {
    out: Box<dyn Write>,
}

impl Actor for JsonLogger {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        // Events beyond this many queued are dropped for this subscriber (never slowing training).
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Event> for JsonLogger {
    type Result = ();
    fn handle(&mut self, e: Event, _: &mut Context<Self>) {
        let line = match e {
            Event::StepDone(s) => json!({"event": "step", "phase": s.phase, "step": s.step, "lr": s.lr, "tokens": s.tokens, "loss": s.loss}),
            Event::Eval { phase, step, metrics } => json!({"event": "eval", "phase": phase, "step": step, "metrics": metrics.pairs()}),
            Event::Saved { step, path, write_s, stall_s } => json!({"event": "checkpoint", "step": step, "path": path, "write_s": write_s, "stall_s": stall_s}),
            Event::Paused { phase, step } => json!({"event": "paused", "phase": phase, "step": step}),
            Event::Resumed { phase, step } => json!({"event": "resumed", "phase": phase, "step": step}),
            Event::TrainerDone(t) => json!({"event": "phase_done", "steps": t.steps, "tokens": t.tokens}),
            Event::Failed { stage, error } => json!({"event": "failed", "stage": stage, "error": error.to_string()}),
            Event::Step(_) => return,
        };
        let _ = writeln!(self.out, "{line}");
    }
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "configs/pretrain-mlm-tiny.toml".into());
    let overrides: Vec<String> = ["train.max_steps=20", "train.log_every=5", "train.eval_every=10", "run.out_dir=runs/example-custom-logger", "metrics.listen="]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let plan = pretune::plan::load_and_resolve(std::path::Path::new(&path), &overrides)?;
    let summary = Pipeline::new(plan).subscribe(|_| JsonLogger { out: Box::new(std::io::stdout()) }.start().recipient()).run()?;
    eprintln!("{} steps, final loss {:.4}", summary.steps, summary.final_loss);
    Ok(())
}
