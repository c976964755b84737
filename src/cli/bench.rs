//! `pretune bench WORKLOAD [options]`: one JSON line on stdout.

use std::process::ExitCode;

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// `tokenize`, `mask`, `pretrain`, `finetune`, `stream`, `prepare`, `resume` or `generate`.
    #[arg(value_enum)]
    pub workload: pretune::bench::Workload,
    #[command(flatten)]
    args: pretune::bench::BenchArgs,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let line = pretune::bench::run(a.workload, &a.args).map_err(Failure::failed)?;
    pretune::outln!("{line}");
    Ok(ExitCode::SUCCESS)
}
