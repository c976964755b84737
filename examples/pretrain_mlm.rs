//! Pre-training from a program instead of the CLI: load a config, override a few values,
//! validate, run, and read the summary.
//!
//! ```sh
//! make build && cargo run --example pretrain_mlm -- configs/pretrain-mlm-tiny.toml
//! ```

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let path = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "configs/pretrain-mlm-tiny.toml".into()));
    let overrides = vec![
        "train.max_steps=40".to_string(),
        "run.out_dir=runs/example-pretrain-mlm".to_string(),
        "metrics.listen=".to_string(),
    ];
    let config = pretune::config::load(&path, &overrides)?;
    let plan = pretune::config::resolve(&path, config)?;
    println!("objective: {:?}, vocabulary {}", plan.names, plan.model.vocab_size());
    let summary = pretune::actors::run(plan)?;
    println!(
        "{} steps, {} tokens, {:.0} tokens/s, final loss {:.4}, data wait {:.1} %",
        summary.steps,
        summary.tokens,
        summary.tokens_per_second,
        summary.final_loss,
        100.0 * summary.data_wait_share
    );
    if let Some(dir) = summary.checkpoint {
        println!("checkpoint: {}", dir.display());
    }
    Ok(())
}
