//! `pretune predict --checkpoint PATH --input FILE [--output FILE]`: JSONL predictions.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Failure, GenerateArgs, InferenceArgs};

#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint folder, or a run's `checkpoints/` folder (its best, else its latest).
    #[arg(long)]
    checkpoint: PathBuf,
    /// JSONL / CSV / TSV texts, or CoNLL / JSONL `tokens` for NER.
    #[arg(long)]
    input: PathBuf,
    /// Output JSONL (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    decoding: GenerateArgs,
    #[command(flatten)]
    run: InferenceArgs,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let p = pretune::finetune::predict::predict(&a.checkpoint, &a.input, a.output.as_deref(), &a.decoding.overrides(), a.run.resolve()?).map_err(|e| Failure::either(e.is_usage(), e))?;
    pretune::errln!("{} predictions from {}", p.lines, p.checkpoint.display());
    for note in &p.notes {
        pretune::errln!("note: {note}");
    }
    if p.throughput.seconds > 0.0 {
        pretune::errln!("generated {} new tokens in {:.2} s ({:.1} tokens/s)", p.throughput.tokens, p.throughput.seconds, p.throughput.per_second());
    }
    Ok(ExitCode::SUCCESS)
}
