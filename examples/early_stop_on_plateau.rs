//! An actor with its own stopping rule: stop when the logged training loss has not improved by
//! at least `min_delta` for `patience` logged steps. It sends `Command::Stop`, so the run
//! finishes its step, writes a checkpoint and ends normally.
//!
//! ```sh
//! make build && cargo run --example early_stop_on_plateau -- configs/pretrain-mlm-tiny.toml
//! ```

use actix::{Actor, Context, Handler};
use pretune::actors::events::{Command, Event};
use pretune::actors::{Controller, Pipeline};

struct PlateauStop {
    ctl: Controller,
    patience: u32,
    min_delta: f64,
    best: f64,
    stale: u32,
    sent: bool,
}

impl Actor for PlateauStop {
    type Context = Context<Self>;
}

impl Handler<Event> for PlateauStop {
    type Result = ();
    fn handle(&mut self, e: Event, _: &mut Context<Self>) {
        let Event::StepDone(s) = e else { return };
        let Some(loss) = s.loss else { return };
        if loss < self.best - self.min_delta {
            self.best = loss;
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        if self.stale >= self.patience && !self.sent {
            println!("plateau at step {}: best loss {:.4}, {} logged steps without improvement; stopping", s.step, self.best, self.stale);
            self.ctl.send(Command::Stop);
            self.sent = true;
        }
    }
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "configs/pretrain-mlm-tiny.toml".into());
    // A constant, tiny learning rate makes the loss plateau quickly.
    let overrides: Vec<String> = ["train.max_steps=2000", "train.log_every=2", "train.lr=1e-6", "train.warmup_steps=0", "train.decay=\"constant\"", "run.out_dir=runs/example-early-stop", "metrics.listen=", "data.eval=[]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let plan = pretune::plan::load_and_resolve(std::path::Path::new(&path), &overrides)?;
    let summary = Pipeline::new(plan)
        .subscribe(|ctl| PlateauStop { ctl, patience: 5, min_delta: 0.05, best: f64::INFINITY, stale: 0, sent: false }.start().recipient())
        .run()?;
    println!("stopped: {} after {} steps; checkpoint {:?}", summary.interrupted, summary.steps, summary.checkpoint);
    Ok(())
}
