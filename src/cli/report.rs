//! `pretune report RUN_DIR... [--out DIR]`: an HTML report of one or several runs.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Run output folders.
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
    /// Where to write the report (default: RUN_DIR/report for one run).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let index = pretune::report::report(&a.run_dirs, a.out.as_deref()).map_err(|e| Failure::either(matches!(e, pretune::report::ReportError::NotARun(_)), e))?;
    pretune::outln!("wrote {}", index.display());
    Ok(ExitCode::SUCCESS)
}
