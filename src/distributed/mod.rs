//! Data-parallel training on libtorch's own c10d (ProcessGroupGloo on the CPU,
//! ProcessGroupNCCL on CUDA) through the small C++ shim in `csrc/`.
//!
//! * [`DistEnv`]: the torchrun rendezvous variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//!   `MASTER_ADDR`, `MASTER_PORT`).
//! * [`ProcessGroup`]: connect (rank 0 serves the TCPStore), all-reduce, broadcast, barrier;
//!   failures are [`DistError`]s with c10d's message, never aborts, and every collective has
//!   a timeout, so a dead or stuck rank ends the others with an error instead of a hang.
//! * [`Reducer`]: libtorch's own DDP reducer (`c10d::Reducer`): gradients bucketed in the
//!   order they become ready and all-reduced while the backward pass goes on.
//!
//! How a run divides the work (see `docs/distributed.md`): every rank reads the same stream and
//! the Loader keeps rank r's share of each global batch (`batch_size × world_size` examples),
//! so shards are disjoint, cover the data, and the run equals one process with the global
//! batch. Losses are normalised by the global counts (one small all-reduce per update), so the
//! summed gradients are the global batch's gradient.

pub mod launch;
pub mod reshard;

use std::ffi::CString;

use tch::{Device, Tensor};

use crate::ffi;

/// What went wrong in distributed set-up or a collective.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A rendezvous variable is missing or malformed.
    #[error("distributed environment: {0}")]
    Env(String),
    /// This build has no c10d.
    #[error("{0}")]
    Unavailable(String),
    /// Connecting the process group failed (the store or the peers did not answer in time).
    #[error("rank {rank} of {world}: cannot form the process group at {addr}: {message}")]
    Connect {
        /// This rank.
        rank: usize,
        /// Ranks expected.
        world: usize,
        /// `MASTER_ADDR:MASTER_PORT`.
        addr: String,
        /// c10d's message.
        message: String,
    },
    /// A collective failed: a peer died, hung up, or timed out.
    #[error("rank {rank} of {world}: {op} failed (another rank died, stopped or timed out): {message}")]
    Collective {
        /// This rank.
        rank: usize,
        /// Ranks in the run.
        world: usize,
        /// `all-reduce`, `broadcast`, `barrier`.
        op: &'static str,
        /// c10d's message.
        message: String,
    },
}

/// The torchrun rendezvous: who this process is and where rank 0's store listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Rank on this machine (picks the CUDA device).
    pub local_rank: usize,
    /// Ranks on this machine (`LOCAL_WORLD_SIZE`, else all of them): they share its cores.
    pub local_world: usize,
    /// Rank 0's host.
    pub master_addr: String,
    /// Rank 0's TCPStore port.
    pub master_port: u16,
    /// Network interfaces Gloo binds (`GLOO_SOCKET_IFNAME`, comma-separated, as in PyTorch);
    /// empty: the local address that routes to `master_addr`.
    pub gloo_ifname: String,
}

impl DistEnv {
    /// Reads the variables through `get` (the process environment in [`DistEnv::from_env`]).
    /// `None` without `WORLD_SIZE` (or with `WORLD_SIZE=1`): a single-process run.
    ///
    /// # Errors
    /// [`DistError::Env`] naming the variable that is missing or malformed.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>, DistError> {
        let Some(world) = get("WORLD_SIZE") else { return Ok(None) };
        let num = |k: &str, v: &str| v.trim().parse::<usize>().map_err(|_| DistError::Env(format!("{k}={v:?} is not a number")));
        let world = num("WORLD_SIZE", &world)?;
        // `PRETUNE_FORCE_DIST=1` keeps a process group at WORLD_SIZE=1 (the one-GPU NCCL
        // smoke test: NCCL refuses two ranks on one device).
        if world == 0 || (world == 1 && get("PRETUNE_FORCE_DIST").is_none()) {
            return Ok(None);
        }
        let need = |k: &str| get(k).ok_or_else(|| DistError::Env(format!("WORLD_SIZE={world} but {k} is not set")));
        let rank = num("RANK", &need("RANK")?)?;
        if rank >= world {
            return Err(DistError::Env(format!("RANK={rank} is not below WORLD_SIZE={world}")));
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", &v)?,
            None => rank,
        };
        let local_world = match get("LOCAL_WORLD_SIZE") {
            Some(v) => num("LOCAL_WORLD_SIZE", &v)?.max(1),
            None => world,
        };
        let port = need("MASTER_PORT")?;
        let master_port = port.trim().parse::<u16>().map_err(|_| DistError::Env(format!("MASTER_PORT={port:?} is not a port")))?;
        let master_addr = get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let gloo_ifname = get("GLOO_SOCKET_IFNAME").unwrap_or_default().trim().to_owned();
        Ok(Some(DistEnv { rank, world, local_rank, local_world, master_addr, master_port, gloo_ifname }))
    }

    /// [`DistEnv::from_vars`] over the process environment.
    ///
    /// # Errors
    /// As there.
    pub fn from_env() -> Result<Option<DistEnv>, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }
}

/// Which c10d backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors.
    Gloo,
    /// NCCL: CUDA tensors.
    Nccl,
}

impl Backend {
    /// NCCL for CUDA devices, Gloo otherwise.
    pub fn for_device(d: Device) -> Self {
        if d.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }
}

/// A c10d process group. Used from one thread (the Trainer's).
pub struct ProcessGroup {
    ptr: *mut ffi::ProcessGroupHandle,
    /// This process's rank, 0 to `world - 1` (0 logs, evaluates and checkpoints).
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// The backend in use.
    pub backend: Backend,
}

// SAFETY: the group is created and used by one thread at a time (the Trainer moves it into its
// own thread and keeps it there); c10d's objects are not tied to the creating thread.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Connects: rank 0 serves the TCPStore at `MASTER_ADDR:MASTER_PORT`, the others join;
    /// returns when all `world` ranks are in, or fails after `timeout`.
    ///
    /// # Errors
    /// [`DistError::Unavailable`] for a build without c10d (or NCCL), [`DistError::Connect`].
    pub fn connect(env: &DistEnv, backend: Backend, timeout: std::time::Duration) -> Result<Self, DistError> {
        // SAFETY: no arguments.
        let available = unsafe { ffi::pt_c10d_available() };
        if available == 0 {
            return Err(DistError::Unavailable("pretune was built without c10d: install Debian's libgloo-dev and rebuild".into()));
        }
        if backend == Backend::Nccl && available & 2 == 0 {
            return Err(DistError::Unavailable("this build has no NCCL backend: CUDA and NCCL headers were not found at build time (docs/distributed.md)".into()));
        }
        let host = CString::new(env.master_addr.clone()).map_err(|_| DistError::Env("MASTER_ADDR holds a NUL byte".into()))?;
        let connect_err = |message: String| DistError::Connect { rank: env.rank, world: env.world, addr: format!("{}:{}", env.master_addr, env.master_port), message };
        // Gloo's own sockets: the interfaces named, or the address this machine reaches rank
        // 0's host from (on another node the master's address is not a local one to bind).
        let local = if env.gloo_ifname.is_empty() {
            local_address_towards(&env.master_addr, env.master_port).map_err(|e| connect_err(format!("cannot find the local address that reaches {}: {e} (set GLOO_SOCKET_IFNAME to the interface to use)", env.master_addr)))?.to_string()
        } else {
            String::new()
        };
        let local = CString::new(local).unwrap_or_default();
        let ifnames = CString::new(env.gloo_ifname.clone()).map_err(|_| DistError::Env("GLOO_SOCKET_IFNAME holds a NUL byte".into()))?;
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let b = match backend {
            Backend::Gloo => 0,
            Backend::Nccl => 1,
        };
        // SAFETY: the strings outlive the call; the shim copies them.
        let ptr = unsafe { ffi::pt_pg_new(b, host.as_ptr(), env.master_port as i32, env.rank as i32, env.world as i32, ms, local.as_ptr(), ifnames.as_ptr()) };
        if ptr.is_null() {
            return Err(connect_err(ffi::last_error()));
        }
        Ok(ProcessGroup { ptr, rank: env.rank, world: env.world, backend })
    }

    fn check(&self, rc: i32, op: &'static str) -> Result<(), DistError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(DistError::Collective { rank: self.rank, world: self.world, op, message: ffi::last_error() })
        }
    }

    /// c10d reduces a tensor's storage in place, so a strided view would be reduced over the
    /// wrong elements: refuse it rather than corrupt gradients.
    fn contiguous(&self, t: &Tensor, op: &'static str) -> Result<(), DistError> {
        if t.is_contiguous() {
            Ok(())
        } else {
            Err(DistError::Collective { rank: self.rank, world: self.world, op, message: format!("the tensor ({:?}, strides {:?}) is not contiguous", t.size(), t.stride()) })
        }
    }

    /// Sums `t` over all ranks, in place. `t` must be contiguous (an error otherwise).
    ///
    /// # Errors
    /// [`DistError::Collective`].
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError> {
        self.contiguous(t, "all-reduce")?;
        // SAFETY: `t` is a live, contiguous tensor; the shim wraps the same storage.
        let rc = unsafe { ffi::pt_pg_allreduce_sum(self.ptr, t.as_mut_ptr()) };
        self.check(rc, "all-reduce")
    }

    /// Overwrites `t` with rank `root`'s values, in place.
    ///
    /// # Errors
    /// [`DistError::Collective`].
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        self.contiguous(t, "broadcast")?;
        // SAFETY: as above.
        let rc = unsafe { ffi::pt_pg_broadcast(self.ptr, t.as_mut_ptr(), root as i32) };
        self.check(rc, "broadcast")
    }

    /// Waits for every rank.
    ///
    /// # Errors
    /// [`DistError::Collective`].
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: a live group.
        let rc = unsafe { ffi::pt_pg_barrier(self.ptr) };
        self.check(rc, "barrier")
    }

    /// Makes every rank's variables equal rank 0's (start of a run, after a resume).
    ///
    /// # Errors
    /// [`DistError::Collective`].
    pub fn broadcast_vars(&self, vars: &[Tensor]) -> Result<(), DistError> {
        let _guard = tch::no_grad_guard();
        let mut flat = flatten(vars.iter().map(Tensor::detach));
        self.broadcast(&mut flat, 0)?;
        copy_slices(&flat, vars, Tensor::detach);
        Ok(())
    }
}

/// The local IP address this machine sends from to reach `host:port` (the routing table's
/// choice, asked through an unconnected-until-now UDP socket: no packet is sent). Loopback for
/// a loopback master, the cluster-facing interface's address otherwise.
///
/// # Errors
/// When `host` does not resolve or no route reaches it.
pub fn local_address_towards(host: &str, port: u16) -> std::io::Result<std::net::IpAddr> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} resolves to no address"));
    for target in (host, port).to_socket_addrs()? {
        let any = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        match UdpSocket::bind(any).and_then(|s| s.connect(target).and_then(|()| s.local_addr())) {
            Ok(a) => return Ok(a.ip()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One flat 1-D tensor of `ts`, in order: one collective call instead of one per tensor.
fn flatten(ts: impl Iterator<Item = Tensor>) -> Tensor {
    Tensor::cat(&ts.map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
}

/// Copies consecutive slices of `flat`, shaped like each of `like`, into `target(like)`; an
/// undefined target is passed over (its slice skipped).
fn copy_slices(flat: &Tensor, like: &[Tensor], target: impl Fn(&Tensor) -> Tensor) {
    let mut off = 0;
    for t in like {
        let n = t.numel() as i64;
        let mut dst = target(t);
        if dst.defined() {
            dst.copy_(&flat.narrow(0, off, n).view_as(t));
        }
        off += n;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by pt_pg_new, freed once.
        unsafe { ffi::pt_pg_free(self.ptr) };
    }
}

/// libtorch's `c10d::Reducer`, the engine inside `DistributedDataParallel`, over the trainable
/// parameters: autograd hooks on their gradient accumulators copy each gradient into its bucket
/// as it is computed and launch the bucket's all-reduce (a sum: the losses are normalised by
/// the global counts) as soon as the bucket is full, so communication overlaps the rest of the
/// backward pass; the backward returns once every bucket is reduced and copied back.
///
/// The first update reduces one bucket at the end of the backward pass; before the second the
/// buckets are rebuilt in the order the gradients became ready (a first bucket of 1 MiB, then
/// `bucket_bytes` each), as DDP does. Every trainable parameter must receive a gradient in every
/// update unless `find_unused` is set (DDP's `find_unused_parameters`).
pub struct Reducer {
    ptr: *mut ffi::ReducerHandle,
    /// Keeps the parameters alive as long as the hooks that point at them.
    _params: Vec<Tensor>,
}

// SAFETY: used from the Trainer's thread only, like the process group it belongs to.
unsafe impl Send for Reducer {}

/// DDP's first bucket: small, so the last layers' gradients go out at once.
const FIRST_BUCKET_BYTES: i64 = 1 << 20;

/// When each bucket's all-reduce started and ended in the last backward pass, on the shim's
/// steady clock (ns; see [`now_ns`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketTimes {
    /// Launch time per bucket, in bucket order (bucket 0 holds the last layers).
    pub launched: Vec<i64>,
    /// Completion time per bucket (0 if it never completed).
    pub done: Vec<i64>,
}

impl BucketTimes {
    /// Nanoseconds of communication the backward pass waited for after its last gradient was
    /// computed: from the last bucket's launch (the moment the last gradient was ready) to
    /// `backward_end`. What overlapping did not hide.
    pub fn exposed_ns(&self, backward_end: i64) -> i64 {
        self.launched.iter().max().map_or(0, |&last| (backward_end - last).max(0))
    }
}

/// The shim's steady clock in nanoseconds (the clock of [`BucketTimes`]).
pub fn now_ns() -> i64 {
    // SAFETY: no arguments.
    unsafe { ffi::pt_now_ns() }
}

impl Reducer {
    /// Hooks the reducer onto `params` (the trainable parameters, in the same order on every
    /// rank) over `pg`'s backend, in buckets of `bucket_bytes` (`usize::MAX`: one bucket).
    ///
    /// # Errors
    /// [`DistError::Unavailable`] with c10d's message when the reducer cannot be built.
    pub fn new(pg: &ProcessGroup, params: &[Tensor], bucket_bytes: usize, find_unused: bool) -> Result<Self, DistError> {
        let params: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
        let ptrs: Vec<*mut torch_sys::C_tensor> = params.iter().map(|t| t.as_ptr().cast_mut()).collect();
        let bucket = i64::try_from(bucket_bytes).unwrap_or(i64::MAX);
        // `usize::MAX`: one bucket, the first included (no overlap: `dist.overlap = false`).
        let first = if bucket_bytes == usize::MAX { bucket } else { FIRST_BUCKET_BYTES.min(bucket) };
        // SAFETY: the tensors outlive the reducer (kept in `_params`); the shim copies the
        // handles.
        let ptr = unsafe { ffi::pt_reducer_new(pg.ptr, ptrs.as_ptr(), ptrs.len() as i32, bucket, first, i32::from(find_unused)) };
        if ptr.is_null() {
            return Err(DistError::Unavailable(format!("cannot build c10d's Reducer: {}", ffi::last_error())));
        }
        Ok(Reducer { ptr, _params: params })
    }

    /// Arms the hooks for the backward pass of `loss` (call it after the forward pass of an
    /// update's last micro-batch; earlier micro-batches accumulate locally, like DDP's
    /// `no_sync`); rebuilds the buckets once, after the first update (a collective: every rank
    /// calls it).
    ///
    /// # Errors
    /// [`DistError::Collective`] (the rebuild broadcasts from rank 0; a reduction left
    /// unfinished by the previous backward, such as a parameter that got no gradient, is
    /// reported here with c10d's message).
    pub fn prepare(&self, loss: &Tensor, rank: usize, world: usize) -> Result<(), DistError> {
        let outputs = [loss.as_ptr().cast_mut()];
        // SAFETY: a live reducer; `loss` outlives the call.
        let rc = unsafe { ffi::pt_reducer_prepare(self.ptr, outputs.as_ptr(), 1) };
        if rc == 0 {
            Ok(())
        } else {
            let mut message = ffi::last_error();
            if message.contains("find_unused_parameters") {
                message.push_str(" [pretune: set dist.find_unused_parameters = true]");
            }
            Err(DistError::Collective { rank, world, op: "gradient all-reduce (reducer)", message })
        }
    }

    /// The last backward pass's bucket times (called every update: two buffers of the bucket
    /// count, not of a worst case).
    pub fn times(&self) -> BucketTimes {
        // SAFETY: a cap of 0 writes nothing and returns the count.
        let n = unsafe { ffi::pt_reducer_times(self.ptr, std::ptr::null_mut(), std::ptr::null_mut(), 0) }.max(0) as usize;
        let (mut launched, mut done) = (vec![0i64; n], vec![0i64; n]);
        // SAFETY: both buffers hold `n` values; the shim writes at most `n`.
        let got = unsafe { ffi::pt_reducer_times(self.ptr, launched.as_mut_ptr(), done.as_mut_ptr(), n as i32) }.clamp(0, n as i32) as usize;
        launched.truncate(got);
        done.truncate(got);
        BucketTimes { launched, done }
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: created by pt_reducer_new, freed once.
        unsafe { ffi::pt_reducer_free(self.ptr) };
    }
}

/// The examples of a global batch that belong to `rank`: the `rank`-th of `world` equal
/// slices (the global batch holds `world × per_rank` examples; a short last batch is split as
/// evenly as it goes, earlier ranks first).
pub fn shard_range(len: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let (q, r) = (len / world, len % world);
    let start = rank * q + rank.min(r);
    start..start + q + usize::from(rank < r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Option<DistEnv>, DistError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DistEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn gloo_binds_the_address_that_reaches_the_master() {
        assert_eq!(local_address_towards("127.0.0.1", 29500).unwrap(), std::net::IpAddr::from([127, 0, 0, 1]));
        assert!(local_address_towards("localhost", 29500).unwrap().is_loopback());
        assert!(local_address_towards("no-such-host.invalid", 29500).is_err());
    }

    #[test]
    fn torchrun_variables_are_read_and_checked() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        let forced = env(&[("WORLD_SIZE", "1"), ("RANK", "0"), ("MASTER_PORT", "9"), ("PRETUNE_FORCE_DIST", "1")]).unwrap().unwrap();
        assert_eq!((forced.rank, forced.world), (0, 1));
        let e = env(&[("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29500")]).unwrap().unwrap();
        assert_eq!(e, DistEnv { rank: 1, world: 2, local_rank: 1, local_world: 2, master_addr: "10.0.0.1".into(), master_port: 29500, gloo_ifname: String::new() });
        let e = env(&[("WORLD_SIZE", "4"), ("RANK", "3"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2"), ("MASTER_PORT", "1234")]).unwrap().unwrap();
        assert_eq!((e.local_rank, e.local_world, e.master_addr.as_str()), (1, 2, "127.0.0.1"));
        let e = env(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "1"), ("GLOO_SOCKET_IFNAME", " eth1,eth2 ")]).unwrap().unwrap();
        assert_eq!(e.gloo_ifname, "eth1,eth2");
        for (vars, needle) in [
            (vec![("WORLD_SIZE", "2"), ("MASTER_PORT", "1")], "RANK is not set"),
            (vec![("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_PORT", "1")], "not below"),
            (vec![("WORLD_SIZE", "two")], "WORLD_SIZE"),
            (vec![("WORLD_SIZE", "2"), ("RANK", "0")], "MASTER_PORT"),
            (vec![("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "70000")], "not a port"),
        ] {
            let e = env(&vars).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_global_batch() {
        for len in [0, 1, 7, 8, 64] {
            for world in [1, 2, 3, 8] {
                let mut seen = vec![0; len];
                let mut sizes = Vec::new();
                for rank in 0..world {
                    let r = shard_range(len, rank, world);
                    sizes.push(r.len());
                    for i in r {
                        seen[i] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "len {len} world {world}: {seen:?}");
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn exposed_time_runs_from_the_last_bucket_launch_to_the_end_of_the_backward() {
        let t = BucketTimes { launched: vec![100, 250, 400], done: vec![300, 420, 900] };
        assert_eq!(t.exposed_ns(1000), 600);
        assert_eq!(t.exposed_ns(350), 0);
        assert_eq!(BucketTimes::default().exposed_ns(5), 0);
    }
}
