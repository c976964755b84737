//! The two phases from a program, on the one engine: pre-train the tiny BERT briefly, then
//! fine-tune it on the bundled spam set from the checkpoint it wrote, and print both summaries.
//!
//! ```sh
//! make build && cargo run --example pretrain_then_finetune
//! ```

use std::path::Path;


fn main() -> anyhow::Result<()> {
    let out = "runs/example-pretrain-then-finetune";
    let pre: Vec<String> = ["train.max_steps=60", "train.checkpoint_every=0", &format!("run.out_dir={out}/pretrain"), "metrics.listen="].iter().map(|s| s.to_string()).collect();
    let plan = pretune::plan::load_and_resolve(Path::new("configs/pretrain-mlm-tiny.toml"), &pre)?;
    let s = pretune::actors::run(plan)?;
    println!("pre-training: {} steps, {:.0} tokens/s, final loss {:.4}, checkpoint {:?}", s.steps, s.tokens_per_second, s.final_loss, s.checkpoint);

    let ft: Vec<String> = [
        format!("init.checkpoint={out}/pretrain/checkpoints"),
        format!("run.out_dir={out}/finetune"),
        "train.epochs=2".into(),
        "metrics.listen=".into(),
    ]
    .to_vec();
    let plan = pretune::plan::load_and_resolve(Path::new("configs/finetune-cls-tiny.toml"), &ft)?;
    let f = pretune::actors::run(plan)?;
    println!(
        "fine-tuning: {} steps, {:.0} tokens/s, best {} {:?}, best checkpoint {:?}",
        f.steps, f.tokens_per_second, f.metric, f.best, f.best_checkpoint
    );
    Ok(())
}
