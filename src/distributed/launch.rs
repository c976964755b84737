//! `pretune launch --nproc N CONFIG`: N local ranks of `pretune train`, like `torchrun
//! --standalone --nproc-per-node N`; with `--nnodes M --node-rank R --master-addr HOST
//! --master-port P` one launcher per machine, like torchrun's static rendezvous. Each child gets
//! torchrun's variables (`RANK`, `LOCAL_RANK`, `GROUP_RANK` / `NODE_RANK`, `WORLD_SIZE`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`). When one rank fails, the others are
//! stopped (SIGTERM, then SIGKILL after a grace period), so a launch never hangs on a dead
//! rank; SIGINT / SIGTERM to the launcher are passed on to every rank. A rank that dies on
//! another node ends this node's ranks through their next collective, which fails at once.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Seconds the other ranks get to stop after one failed, before SIGKILL.
const GRACE: Duration = Duration::from_secs(20);

static FORWARD: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    FORWARD.store(sig, Ordering::SeqCst);
}

/// A free TCP port on loopback for the rendezvous (bound, read, released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Where this launcher's ranks sit in the run: torchrun's static rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// Machines (launchers) in the run.
    pub nnodes: usize,
    /// This machine's index, 0-based; node 0 hosts global rank 0 and its store.
    pub node_rank: usize,
    /// Ranks on each machine.
    pub nproc: usize,
    /// Rank 0's host, as every node reaches it.
    pub master_addr: String,
    /// Rank 0's store port; `None` picks a free one (one node only).
    pub master_port: Option<u16>,
}

/// Launcher flags that do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A count of zero.
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
    /// A node index past the node count.
    #[error("--node-rank {node_rank} is not below --nnodes {nnodes}")]
    NodeRank {
        /// `--node-rank`.
        node_rank: usize,
        /// `--nnodes`.
        nnodes: usize,
    },
    /// A flag every node of a multi-node run must give.
    #[error("{0} is required with --nnodes > 1: {1}")]
    MultiNode(&'static str, &'static str),
}

impl Rendezvous {
    /// Checks the flags together: a multi-node run needs the master's address and port spelled
    /// out (no node can guess them), and the node's index must be below the node count.
    ///
    /// # Errors
    /// [`FlagError`] naming the flag.
    pub fn validate(&self) -> Result<(), FlagError> {
        if self.nproc == 0 {
            return Err(FlagError::AtLeastOne("--nproc"));
        }
        if self.nnodes == 0 {
            return Err(FlagError::AtLeastOne("--nnodes"));
        }
        if self.node_rank >= self.nnodes {
            return Err(FlagError::NodeRank { node_rank: self.node_rank, nnodes: self.nnodes });
        }
        if self.nnodes > 1 && self.master_port.is_none() {
            return Err(FlagError::MultiNode("--master-port", "every node must name the same port"));
        }
        if self.nnodes > 1 && self.master_addr.trim().is_empty() {
            return Err(FlagError::MultiNode("--master-addr", "the address of node 0 that every node reaches"));
        }
        Ok(())
    }

    /// The environment of local rank `local` on this node, at store port `port`.
    pub fn rank_vars(&self, local: usize, port: u16) -> Vec<(&'static str, String)> {
        let rank = self.node_rank * self.nproc + local;
        vec![
            ("RANK", rank.to_string()),
            ("LOCAL_RANK", local.to_string()),
            ("GROUP_RANK", self.node_rank.to_string()),
            ("NODE_RANK", self.node_rank.to_string()),
            ("ROLE_RANK", rank.to_string()),
            ("WORLD_SIZE", (self.nnodes * self.nproc).to_string()),
            ("ROLE_WORLD_SIZE", (self.nnodes * self.nproc).to_string()),
            ("LOCAL_WORLD_SIZE", self.nproc.to_string()),
            ("GROUP_WORLD_SIZE", self.nnodes.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", port.to_string()),
        ]
    }
}

/// Runs this node's ranks of `pretune train <train_args>`; returns the exit code for the
/// launcher: 0 when every rank succeeded, else the first failing rank's code (1 when it had
/// none).
///
/// # Errors
/// When the executable cannot be found or a rank cannot start.
pub fn launch(rdzv: &Rendezvous, train_args: &[String]) -> std::io::Result<i32> {
    let exe = std::env::current_exe()?;
    let port = match rdzv.master_port {
        Some(p) => p,
        None => free_port()?,
    };
    let nproc = rdzv.nproc;
    // SAFETY: installing a handler that only stores an integer.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as usize);
        libc::signal(libc::SIGTERM, on_signal as *const () as usize);
    }
    tracing::info!(nproc, nnodes = rdzv.nnodes, node_rank = rdzv.node_rank, master = %format!("{}:{port}", rdzv.master_addr), "launching ranks");
    let mut children: Vec<Option<Child>> = Vec::new();
    for local in 0..nproc {
        let child = Command::new(&exe)
            .arg("train")
            .args(train_args)
            .envs(rdzv.rank_vars(local, port))
            // Their own process group: a terminal's Ctrl-C reaches the launcher only, which
            // passes it on once (a rank treats a second signal as "exit now").
            .process_group(0)
            .spawn();
        match child {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                for c in children.iter().flatten() {
                    signal(c, libc::SIGKILL);
                }
                return Err(e);
            }
        }
    }
    let mut codes: Vec<Option<ExitStatus>> = vec![None; nproc];
    let mut failed_at: Option<(usize, Instant)> = None;
    let mut forwarded = 0;
    loop {
        let sig = FORWARD.swap(0, Ordering::SeqCst);
        if sig != 0 {
            forwarded += 1;
            let s = if forwarded > 1 { libc::SIGKILL } else { sig };
            for c in children.iter().flatten() {
                signal(c, s);
            }
        }
        for (local, slot) in children.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            if let Some(status) = c.try_wait()? {
                codes[local] = Some(status);
                *slot = None;
                if !status.success() && failed_at.is_none() {
                    tracing::error!(rank = rdzv.node_rank * nproc + local, %status, "a rank failed: stopping the others");
                    failed_at = Some((local, Instant::now()));
                    for c in children.iter().flatten() {
                        signal(c, libc::SIGTERM);
                    }
                    break;
                }
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        if let Some((_, t)) = failed_at {
            if t.elapsed() > GRACE {
                for c in children.iter().flatten() {
                    signal(c, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some((rank, _)) = failed_at {
        let code = codes[rank].and_then(|s| s.code()).unwrap_or(1);
        return Ok(if code == 0 { 1 } else { code });
    }
    Ok(codes.iter().flatten().find(|s| !s.success()).map_or(0, |s| s.code().unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdzv(nnodes: usize, node_rank: usize, nproc: usize, port: Option<u16>) -> Rendezvous {
        Rendezvous { nnodes, node_rank, nproc, master_addr: "10.0.0.1".into(), master_port: port }
    }

    #[test]
    fn ranks_are_numbered_across_nodes_like_torchrun() {
        let r = rdzv(2, 1, 4, Some(29500));
        let vars: std::collections::HashMap<_, _> = r.rank_vars(3, 29500).into_iter().collect();
        assert_eq!(vars["RANK"], "7");
        assert_eq!(vars["LOCAL_RANK"], "3");
        assert_eq!((vars["GROUP_RANK"].as_str(), vars["NODE_RANK"].as_str()), ("1", "1"));
        assert_eq!((vars["WORLD_SIZE"].as_str(), vars["LOCAL_WORLD_SIZE"].as_str(), vars["GROUP_WORLD_SIZE"].as_str()), ("8", "4", "2"));
        assert_eq!((vars["MASTER_ADDR"].as_str(), vars["MASTER_PORT"].as_str()), ("10.0.0.1", "29500"));
        // Every global rank exactly once over the nodes.
        let mut all: Vec<usize> = (0..2).flat_map(|n| (0..4).map(move |l| rdzv(2, n, 4, Some(1)).rank_vars(l, 1)[0].1.parse().unwrap())).collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn multi_node_flags_are_checked_together() {
        assert!(rdzv(1, 0, 2, None).validate().is_ok());
        assert!(rdzv(2, 1, 1, Some(29500)).validate().is_ok());
        for (r, needle) in [
            (rdzv(2, 0, 1, None), "--master-port"),
            (rdzv(2, 2, 1, Some(1)), "--node-rank 2"),
            (rdzv(1, 0, 0, None), "--nproc"),
            (rdzv(0, 0, 1, None), "--nnodes"),
            (Rendezvous { master_addr: " ".into(), ..rdzv(2, 0, 1, Some(1)) }, "--master-addr"),
        ] {
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
