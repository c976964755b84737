//! `pretune launch [--nproc N] [--nnodes M --node-rank R --master-addr A --master-port P] CONFIG ...`:
//! the ranks' exit code is the launcher's.

use std::process::ExitCode;

use pretune::distributed::launch::{launch, Rendezvous};

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Ranks to start on this machine.
    #[arg(long, default_value_t = 2)]
    nproc: usize,
    /// Machines in the run, one launcher on each.
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This machine's index (0 hosts global rank 0).
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Node 0's address as every node reaches it (required with --nnodes > 1).
    #[arg(long)]
    master_addr: Option<String>,
    /// Rendezvous port (default: a free one; required with --nnodes > 1).
    #[arg(long)]
    master_port: Option<u16>,
    /// Restart every rank from the last checkpoint (`--resume auto`) up to N times when one
    /// fails (torchrun's `--max-restarts`); 0 ends the run at the first failure.
    #[arg(long, default_value_t = 0)]
    max_restarts: u32,
    /// `train` arguments: the config and its options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    train_args: Vec<String>,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    if a.nnodes > 1 && a.master_addr.is_none() {
        return Err(Failure::usage("--master-addr is required with --nnodes > 1: the address of node 0 that every node reaches"));
    }
    let master_addr = a.master_addr.unwrap_or_else(|| "127.0.0.1".into());
    let rdzv = Rendezvous { nnodes: a.nnodes, node_rank: a.node_rank, nproc: a.nproc, master_addr, master_port: a.master_port };
    rdzv.validate().map_err(Failure::usage)?;
    check_train_args(&a.train_args)?;
    let code = launch(&rdzv, &a.train_args, a.max_restarts).map_err(Failure::failed)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// `train`'s arguments as `train` parses them.
#[derive(clap::Parser)]
#[command(name = "pretune launch [OPTIONS] --", no_binary_name = true)]
struct TrainArgs {
    #[command(flatten)]
    train: super::train::Args,
}

/// Checks the arguments every rank will get, and their config's keys and types, once: a typo
/// is one error and exit 2 before any rank starts, not the same error from each rank and a
/// rank failure. What needs the data or the machine (files, ports, the tokenizer) is each
/// rank's to check, as `train` does.
fn check_train_args(args: &[String]) -> Result<(), Failure> {
    let parsed = <TrainArgs as clap::Parser>::try_parse_from(args).map_err(|e| Failure::usage(format!("the arguments for each rank's `train`: {}", e.render().to_string().trim_start_matches("error: ").trim_end())))?;
    let (config, overrides) = parsed.train.config();
    pretune::plan::load_config(config, overrides).map_err(Failure::usage)?;
    Ok(())
}
