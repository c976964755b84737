//! `pretune generate --checkpoint DIR --input FILE [--output FILE] [--set generate.KEY=V]
//! [--no-kv-cache]`: GLM generation (see [`pretune::generate`]).

use std::path::PathBuf;
use std::process::ExitCode;

use pretune::generate::generate;

use super::{Failure, GenerateArgs, InferenceArgs};

#[derive(clap::Args)]
pub struct Args {
    /// A GLM pre-training checkpoint (fills blanks) or a generation checkpoint (a folder, or a
    /// run's `checkpoints/`: its best, else its latest).
    #[arg(long)]
    checkpoint: PathBuf,
    /// JSONL: `text` with blanks, or `source` for a generation checkpoint.
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
    let report = generate(&a.checkpoint, &a.input, a.output.as_deref(), &a.decoding.overrides(), a.run.resolve()?).map_err(|e| Failure::either(e.is_usage(), e))?;
    for note in &report.notes {
        pretune::errln!("note: {note}");
    }
    let t = report.throughput;
    pretune::errln!("{} lines from {}: {} new tokens in {:.2} s ({:.1} tokens/s)", report.lines, report.checkpoint.display(), t.tokens, t.seconds, t.per_second());
    Ok(ExitCode::SUCCESS)
}
