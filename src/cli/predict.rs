//! `pretune predict --checkpoint PATH --input FILE [--output FILE]`: JSONL predictions.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;

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
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let (dir, n) = pretune::finetune::predict::predict(&a.checkpoint, &a.input, a.output.as_deref()).map_err(Failure::failed)?;
    eprintln!("{n} predictions from {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
