//! `pretune launch --nproc N CONFIG`: N local ranks of `pretune train`, like `torchrun
//! --standalone --nproc-per-node N`. Each child gets `RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//! `MASTER_ADDR`, `MASTER_PORT`. When one rank fails, the others are stopped (SIGTERM, then
//! SIGKILL after a grace period), so a launch never hangs on a dead rank; SIGINT / SIGTERM to
//! the launcher are passed on to every rank.

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

/// Runs `nproc` ranks of `pretune train <train_args>`; returns the exit code for the launcher:
/// 0 when every rank succeeded, else the first failing rank's code (1 when it had none).
///
/// # Errors
/// When the executable cannot be found or a rank cannot start.
pub fn launch(nproc: usize, master_port: Option<u16>, train_args: &[String]) -> std::io::Result<i32> {
    let exe = std::env::current_exe()?;
    let port = match master_port {
        Some(p) => p,
        None => free_port()?,
    };
    // SAFETY: installing a handler that only stores an integer.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as usize);
        libc::signal(libc::SIGTERM, on_signal as *const () as usize);
    }
    tracing::info!(nproc, port, "launching ranks");
    let mut children: Vec<Option<Child>> = Vec::new();
    for rank in 0..nproc {
        let child = Command::new(&exe)
            .arg("train")
            .args(train_args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
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
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            if let Some(status) = c.try_wait()? {
                codes[rank] = Some(status);
                *slot = None;
                if !status.success() && failed_at.is_none() {
                    tracing::error!(rank, %status, "a rank failed: stopping the others");
                    failed_at = Some((rank, Instant::now()));
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
