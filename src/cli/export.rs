//! `pretune export --hf OUT_DIR --checkpoint PATH`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Output folder.
    #[arg(long, value_name = "OUT_DIR")]
    hf: PathBuf,
    /// A checkpoint folder, or a run's `checkpoints/` folder (its best, else its latest).
    #[arg(long)]
    checkpoint: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let dir = pretune::export::export_hf(&a.checkpoint, &a.hf).map_err(Failure::failed)?;
    pretune::outln!("exported {} to {}", dir.display(), a.hf.display());
    Ok(ExitCode::SUCCESS)
}
