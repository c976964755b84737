//! A data stage between the Loader and the Masker workers that drops sequences shorter than
//! N tokens (back-pressure is kept: the stage sits between two bounded channels).
//!
//! ```sh
//! make build && cargo run --example custom_stage -- configs/pretrain-mlm-tiny.toml 48
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pretune::actors::stage::DataStage;
use pretune::actors::Pipeline;
use pretune::batch::RawBatch;

struct DropShort {
    min_tokens: usize,
    dropped: Arc<AtomicU64>,
    kept: Arc<AtomicU64>,
}

impl DataStage for DropShort {
    fn name(&self) -> &str {
        "drop-short"
    }
    fn process(&mut self, mut batch: RawBatch) -> RawBatch {
        let before = batch.examples.len();
        batch.examples.retain(|e| e.payload.n_tokens() >= self.min_tokens);
        self.dropped.fetch_add((before - batch.examples.len()) as u64, Ordering::Relaxed);
        self.kept.fetch_add(batch.examples.len() as u64, Ordering::Relaxed);
        batch
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "configs/pretrain-mlm-tiny.toml".into());
    let min_tokens: usize = args.next().map_or(Ok(48), |s| s.parse())?;
    let overrides: Vec<String> = ["train.max_steps=20", "run.out_dir=runs/example-custom-stage", "metrics.listen=", "data.eval=[]"].iter().map(|s| s.to_string()).collect();
    let plan = pretune::plan::load_and_resolve(std::path::Path::new(&path), &overrides)?;
    let (dropped, kept) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stage = DropShort { min_tokens, dropped: dropped.clone(), kept: kept.clone() };
    let summary = Pipeline::new(plan).stage(stage).run()?;
    println!(
        "{} steps on {} sequences; the stage dropped {} sequences shorter than {min_tokens} tokens and kept {}",
        summary.steps,
        summary.samples,
        dropped.load(Ordering::Relaxed),
        kept.load(Ordering::Relaxed)
    );
    Ok(())
}
