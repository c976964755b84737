//! `pretune check CONFIG [--set K=V]`: the resolved config, then one line of what the run would
//! be, or every problem at once (exit 2).

use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// TOML config file.
    config: PathBuf,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Check for a launch of N local ranks: the per-rank metrics ports (`metrics.listen`'s
    /// port + local rank) must all be free.
    #[arg(long, default_value_t = 1)]
    nproc: usize,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let plan = pretune::plan::load_and_resolve(&a.config, &a.overrides).map_err(Failure::usage)?;
    let report = pretune::check::check(&plan, a.nproc)
        .map_err(|problems| Failure::usage(format!("{}: the run would fail:\n  - {}", a.config.display(), problems.join("\n  - "))))?;
    pretune::out!("{}", toml::to_string(&plan.config).unwrap_or_default());
    pretune::outln!("\n# {}", report.line());
    for note in &report.notes {
        pretune::outln!("# note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}
