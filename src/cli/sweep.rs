//! `pretune sweep SPEC.toml [--jobs N] [--table-only] [--smoke] [--out DIR]`: a grid of runs and
//! its table (see [`pretune::sweep`]).

use std::path::PathBuf;
use std::process::ExitCode;

use pretune::sweep::{Options, Spec, SweepError};

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The sweep spec (TOML): base config, axes, seeds, metrics.
    spec: PathBuf,
    /// Runs at a time; each gets the cores divided among them unless the spec sets
    /// `run.threads`.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Re-render the table from the runs on disk; run nothing.
    #[arg(long)]
    table_only: bool,
    /// The first cell only, one seed, with the spec's `[smoke]` settings, into OUT-smoke (what
    /// the tests run so a spec cannot rot).
    #[arg(long)]
    smoke: bool,
    /// The sweep's folder instead of the spec's `out_dir`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Leave the spec's `doc` alone.
    #[arg(long)]
    no_doc: bool,
    /// Print the cells and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let mut spec = Spec::read(&a.spec, a.smoke).map_err(Failure::usage)?;
    if let Some(out) = a.out {
        spec.out_dir = out;
    }
    if a.list {
        for c in spec.cells() {
            pretune::outln!("{}", spec.cell_dir(&c).display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let opts = Options { jobs: a.jobs, table_only: a.table_only, write_doc: !a.no_doc, exe: None };
    let report = pretune::sweep::run(&spec, &opts).map_err(|e| match e {
        SweepError::Spec(_) | SweepError::Cells { .. } | SweepError::Lock(_) => Failure::usage(e),
        e => Failure::failed(e),
    })?;
    pretune::outln!("{}", report.markdown.trim_end());
    pretune::outln!("\nwrote {} ({} of {} cells finished)", report.results.display(), report.finished.0, report.finished.1);
    if !report.failed.is_empty() || report.not_started > 0 {
        for (job, why) in &report.failed {
            pretune::outln!("failed: {job}: {why}");
        }
        if report.not_started > 0 {
            pretune::outln!("{} cell(s) not started (stopped); run the same command again to continue", report.not_started);
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
