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

/// torchrun's variables for restarts: how many times the group was restarted, and the limit.
pub const RESTART_COUNT_VAR: &str = "TORCHELASTIC_RESTART_COUNT";
/// See [`RESTART_COUNT_VAR`].
pub const MAX_RESTARTS_VAR: &str = "TORCHELASTIC_MAX_RESTARTS";

/// `(restart, max_restarts)` when this process was started by a launcher's restart (the
/// restart's number, from 1), from torchrun's variables.
pub fn restarted() -> Option<(u32, u32)> {
    let num = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<u32>().ok());
    let restart = num(RESTART_COUNT_VAR).filter(|&r| r > 0)?;
    Some((restart, num(MAX_RESTARTS_VAR).unwrap_or(restart)))
}

/// How one start of the group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupEnd {
    /// Every rank exited 0.
    Succeeded,
    /// The launcher was asked to stop (SIGINT / SIGTERM): the ranks' code, never restarted.
    Interrupted(i32),
    /// A rank failed first (its global rank and the launcher's exit code for it).
    Failed {
        /// Global rank.
        rank: usize,
        /// Exit code (1 for a rank killed by a signal).
        code: i32,
    },
}

/// What the launcher does after a group's end: a pure policy (torchrun's `--max-restarts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterGroup {
    /// Exit with this code.
    Exit(i32),
    /// Start the whole group again from the last checkpoint.
    Restart,
}

/// Exit code of a usage error (a bad config or flag): the same error at every restart.
const USAGE: i32 = 2;

fn after_group(end: GroupEnd, restarts_done: u32, max_restarts: u32) -> AfterGroup {
    match end {
        GroupEnd::Succeeded => AfterGroup::Exit(0),
        GroupEnd::Interrupted(code) => AfterGroup::Exit(code),
        GroupEnd::Failed { code, .. } if code == USAGE || restarts_done >= max_restarts => AfterGroup::Exit(code),
        GroupEnd::Failed { .. } => AfterGroup::Restart,
    }
}

/// The train arguments of a restart: `--resume auto` in place of any `--resume` given (the
/// newest valid checkpoint; none yet means the beginning).
fn resume_args(train_args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(train_args.len() + 2);
    let mut it = train_args.iter();
    while let Some(a) = it.next() {
        if a == "--resume" {
            it.next();
        } else if !a.starts_with("--resume=") {
            out.push(a.clone());
        }
    }
    out.extend(["--resume".to_owned(), "auto".to_owned()]);
    out
}

/// Runs this node's ranks of `pretune train <train_args>`, restarting the whole group from its
/// last checkpoint (`--resume auto`) up to `max_restarts` times when a rank fails (torchrun's
/// `--max-restarts`; a usage error, exit code 2, is never restarted, nor is a group the
/// launcher was asked to stop). Returns the exit code for the launcher: 0 when every rank
/// succeeded, else the first failing rank's code (1 when it had none).
///
/// # Errors
/// When the executable cannot be found or a rank cannot start.
pub fn launch(rdzv: &Rendezvous, train_args: &[String], max_restarts: u32) -> std::io::Result<i32> {
    // SAFETY: installing a handler that only stores an integer.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as usize);
        libc::signal(libc::SIGTERM, on_signal as *const () as usize);
    }
    let mut restarts = 0;
    loop {
        let args = if restarts == 0 { train_args.to_vec() } else { resume_args(train_args) };
        // A fresh port per start on one machine (the old store's socket may linger); the
        // port every node names otherwise (c10d's store binds it with SO_REUSEADDR).
        let port = match rdzv.master_port {
            Some(p) => p,
            None => free_port()?,
        };
        let end = run_group(rdzv, &args, port, restarts, max_restarts)?;
        match (after_group(end, restarts, max_restarts), end) {
            (AfterGroup::Exit(code), GroupEnd::Failed { rank, .. }) => {
                if code == USAGE && max_restarts > 0 {
                    tracing::error!(rank, "not restarting: a usage error (exit code 2) fails the same way every time");
                } else if max_restarts > 0 {
                    tracing::error!(rank, restarts, "giving up: the group failed again after {restarts} restart(s) (--max-restarts {max_restarts}); the last error is above");
                }
                return Ok(code);
            }
            (AfterGroup::Exit(code), _) => return Ok(code),
            (AfterGroup::Restart, _) => {
                restarts += 1;
                tracing::warn!(restart = restarts, max_restarts, "restarting every rank from the last checkpoint (--resume auto)");
            }
        }
    }
}

/// The state letter of a live process (`R`, `S`, `T` stopped, `D`, ...), from `/proc`.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Starts this node's ranks once and waits for them: the first failure stops the others
/// (SIGTERM with SIGCONT, so a stopped rank can act on it; SIGKILL after the grace period).
fn run_group(rdzv: &Rendezvous, train_args: &[String], port: u16, restart: u32, max_restarts: u32) -> std::io::Result<GroupEnd> {
    let exe = std::env::current_exe()?;
    let nproc = rdzv.nproc;
    tracing::info!(nproc, nnodes = rdzv.nnodes, node_rank = rdzv.node_rank, master = %format!("{}:{port}", rdzv.master_addr), restart, "launching ranks");
    let parent = std::process::id() as libc::pid_t;
    let mut children: Vec<Option<Child>> = Vec::new();
    for local in 0..nproc {
        let mut cmd = Command::new(&exe);
        cmd.arg("train")
            .args(train_args)
            .envs(rdzv.rank_vars(local, port))
            .env(RESTART_COUNT_VAR, restart.to_string())
            .env(MAX_RESTARTS_VAR, max_restarts.to_string())
            // Their own process group: a terminal's Ctrl-C reaches the launcher only, which
            // passes it on once (a rank treats a second signal as "exit now").
            .process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe. A launcher that dies (even by
        // SIGKILL) sends its ranks SIGTERM: they stop at the same step with a checkpoint
        // instead of training on as orphans; one that died before prctl ran is caught by
        // the parent check.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 || libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                for c in children.iter().flatten() {
                    signal(c, libc::SIGKILL);
                }
                for c in children.iter_mut().flatten() {
                    let _ = c.wait();
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
        let mut failed_now: Vec<(usize, ExitStatus)> = Vec::new();
        for (local, slot) in children.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            if let Some(status) = c.try_wait()? {
                codes[local] = Some(status);
                *slot = None;
                if !status.success() {
                    failed_now.push((local, status));
                }
            }
        }
        if failed_at.is_none() && !failed_now.is_empty() {
            // Of ranks found dead in the same poll, one killed by a signal died first: the
            // others failed on their next collective with it.
            let (local, status) = failed_now.iter().copied().find(|(_, s)| s.code().is_none()).unwrap_or(failed_now[0]);
            let rank = rdzv.node_rank * nproc + local;
            let stuck: Vec<String> = children
                .iter()
                .enumerate()
                .filter_map(|(l, c)| c.as_ref().and_then(|c| proc_state(c.id())).filter(|s| matches!(s, 'T' | 't')).map(|_| (rdzv.node_rank * nproc + l).to_string()))
                .collect();
            if stuck.is_empty() {
                tracing::error!(rank, %status, "a rank failed: stopping the others");
            } else {
                tracing::error!(rank, %status, stopped = %stuck.join(","), "a rank failed while rank(s) {} were stopped (SIGSTOP or a debugger): they are the stuck ones; stopping the others", stuck.join(", "));
            }
            failed_at = Some((local, Instant::now()));
            for c in children.iter().flatten() {
                signal(c, libc::SIGCONT);
                signal(c, libc::SIGTERM);
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
    let code_of = |s: &ExitStatus| match s.code() {
        Some(0) | None => 1,
        Some(c) => c,
    };
    if let Some((local, _)) = failed_at {
        let code = codes[local].as_ref().map_or(1, code_of);
        if forwarded > 0 {
            return Ok(GroupEnd::Interrupted(code));
        }
        return Ok(GroupEnd::Failed { rank: rdzv.node_rank * nproc + local, code });
    }
    Ok(GroupEnd::Succeeded)
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
    fn a_failed_group_restarts_until_the_limit_but_not_for_usage_errors_or_signals() {
        let failed = |code| GroupEnd::Failed { rank: 1, code };
        assert_eq!(after_group(failed(1), 0, 0), AfterGroup::Exit(1), "--max-restarts 0: today's behaviour");
        assert_eq!(after_group(failed(1), 0, 2), AfterGroup::Restart);
        assert_eq!(after_group(failed(1), 1, 2), AfterGroup::Restart);
        assert_eq!(after_group(failed(134), 2, 2), AfterGroup::Exit(134), "the last failure's code after N restarts");
        assert_eq!(after_group(failed(2), 0, 5), AfterGroup::Exit(2), "a usage error fails the same way again");
        assert_eq!(after_group(GroupEnd::Interrupted(130), 0, 5), AfterGroup::Exit(130));
        assert_eq!(after_group(GroupEnd::Succeeded, 3, 5), AfterGroup::Exit(0));
    }

    #[test]
    fn a_restart_resumes_from_the_newest_checkpoint() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(resume_args(&args(&["c.toml", "--set", "a=1"])), args(&["c.toml", "--set", "a=1", "--resume", "auto"]));
        assert_eq!(resume_args(&args(&["c.toml", "--resume", "out/checkpoints/step-3", "--set", "a=1"])), args(&["c.toml", "--set", "a=1", "--resume", "auto"]));
        assert_eq!(resume_args(&args(&["--resume=x", "c.toml"])), args(&["c.toml", "--resume", "auto"]));
    }

    #[test]
    fn a_stopped_process_is_seen_in_proc() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        signal(&child, libc::SIGSTOP);
        // Delivery is asynchronous: wait for the state, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut state = proc_state(child.id());
        while state != Some('T') && Instant::now() < deadline {
            std::thread::yield_now();
            state = proc_state(child.id());
        }
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        assert_eq!(state, Some('T'));
        assert_eq!(proc_state(std::process::id()).map(|s| s != 'T'), Some(true));
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
