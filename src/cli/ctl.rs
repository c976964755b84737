//! `pretune ctl HOST:PORT COMMAND [VALUE] [--token T]`: one command to a running job's control
//! endpoint; prints its answer.

use std::process::ExitCode;

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// `host:port` of the endpoint.
    addr: String,
    /// `stop`, `evaluate`, `checkpoint`, `pause`, `resume` or `lr`.
    command: String,
    /// The new learning rate, for `lr`.
    value: Option<String>,
    /// The endpoint's token, if it has one.
    #[arg(long)]
    token: Option<String>,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let sent = pretune::actors::control_http::send(&a.addr, &a.command, a.value.as_deref(), a.token.as_deref());
    match sent {
        Ok((200, body)) => {
            pretune::outln!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Ok((code, body)) => Err(Failure::failed(format!("{} answered {code}: {body}", a.addr))),
        Err(e) => Err(Failure::either(e.is_usage(), e)),
    }
}
