//! `pretune preview CONFIG [-n N] [--json]`: what the Masker makes of the first examples, in
//! either phase.

use std::path::PathBuf;
use std::process::ExitCode;


use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// TOML config file.
    config: PathBuf,
    /// Examples to show.
    #[arg(short = 'n', default_value_t = 3)]
    n: usize,
    /// One JSON object per example instead of text.
    #[arg(long)]
    json: bool,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let plan = pretune::plan::load_and_resolve(&a.config, &a.overrides).map_err(Failure::usage)?;
    let rows = pretune::preview::preview(&plan, a.n).map_err(Failure::failed)?;
    if a.json {
        for r in rows {
            pretune::outln!("{}", serde_json::to_string(&r).expect("rows serialize"));
        }
    } else {
        pretune::out!("{}", pretune::preview::render_text(&rows, &plan));
    }
    Ok(ExitCode::SUCCESS)
}
