//! pretune pre-trains and fine-tunes transformer language models on libtorch (tch), as a
//! pipeline of actors.
//!
//! # Layout
//! Layers from the bottom up: a module imports only from its own folder and from layers below
//! it (no import cycles; `src/cli/`, the binary's, sits on top of all of them).
//! 1. Leaves: [`rng`] (counter-based randomness, every draw a pure function of a key),
//!    [`config`] (TOML structs, unknown keys rejected, `--set` overrides), [`cuda`] (libtorch's
//!    CUDA half, `dlopen`ed only where a GPU exists), [`http`] (the small server behind
//!    `/metrics` and the control endpoint) and `ffi` (the C ABI of `csrc/pretune_shim.cpp`),
//!    [`files`] (an I/O error with its path, a file's sha256), [`malloc`] (which allocator
//!    serves the process), [`memory`] (what the process may still allocate), [`failpoint`]
//!    (crashes placed by tests), [`decode`] (greedy, beam and sampled decoding as pure
//!    policies over a next-token model).
//! 2. [`data`]: sources, tokenization, packing, NSP / SOP pairs, the seekable example stream,
//!    labelled data, prepared (memory-mapped) corpora. [`metrics`]: metric names and the
//!    Prometheus exporter. [`distributed`]: c10d process groups, libtorch's DDP reducer and
//!    `pretune launch`'s rendezvous.
//! 3. [`batch`]: the data plane's messages ([`batch::RawBatch`], [`batch::HostBatch`]) and the
//!    label conventions every later layer shares.
//! 4. [`masking`]: MLM and GLM corruption and collation (pure, seeded, no tch). [`model`]: BERT,
//!    its heads and GLM with Hugging Face names; dropout and attention on the CPU; GLM filling
//!    a blank as [`decode`]'s next-token model.
//! 5. [`objective`]: the objective traits, batches on the device, losses, evaluation metrics and
//!    the monitored metric.
//! 6. [`train`]: AdamW, schedules, precision, one training step, the profiler window and the
//!    pure step policies. [`checkpoint`]: crash-safe folders, checksums, retention, resume.
//!    [`init`]: the starting weights of either phase (`[init]`: one of our checkpoints or a
//!    Hugging Face folder).
//! 7. [`finetune`]: tasks as types ([`finetune::tasks`]: one file per task, the registry), a
//!    task on the engine ([`finetune::task`]), labelled data, task metrics, the `predict` and
//!    `evaluate` drivers.
//! 8. [`workload`]: what a run trains on behind one seam (a pre-training corpus or a task);
//!    [`plan`]: a config resolved into one validated [`plan::RunPlan`] for either phase;
//!    [`export`]: a checkpoint of either phase as a `transformers` folder.
//! 9. [`actors`]: the pipeline (Loader, Masker workers, Trainer, Evaluator, Checkpointer, the
//!    Coordinator), their events and commands, `events.jsonl`'s records; every actor reports
//!    through a `Recipient<Event>` or an [`actors::events::EventSink`].
//! 10. What commands show: [`check`], [`preview`], [`report`], [`bench`].
//!
//! Threads are spawned by [`actors`], the HTTP server, `data prepare`'s tokenizing workers and
//! the benches.
//!
//! # Data flow
//! 1. The Loader reads documents, tokenizes them, packs them into segments, block-shuffles
//!    them and sends numbered [`batch::RawBatch`]es down a bounded channel.
//! 2. N Masker workers corrupt and collate each batch into a [`batch::HostBatch`]; randomness
//!    is keyed by `(seed, epoch, example index)`, so any worker count gives the same batches.
//! 3. The Trainer takes batches in `seq` order, runs forward / backward / AdamW, and every so
//!    often hands CPU copies of the weights to the Evaluator and the Checkpointer (actix
//!    `SyncArbiter` actors on their own threads), so neither blocks a training step.
//! 4. Every stage reports to the Coordinator (actix), which logs, shows progress, writes
//!    `events.jsonl`, and stops the run at the end, on Ctrl-C, or on the first error.
#![warn(missing_docs)]

pub mod batch;
pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod config;
#[macro_use]
pub mod console;
pub mod cuda;
pub mod decode;
pub mod data;
pub mod distributed;
mod ffi;
pub mod failpoint;
pub mod files;
pub mod generate;
pub mod guard;
pub mod init;
pub mod export;
pub mod malloc;
pub mod memory;
pub mod finetune;
pub mod http;
pub mod masking;
pub mod metrics;
pub mod mfu;
pub mod model;
pub mod objective;
pub mod rng;
pub mod train;
pub mod actors;
pub mod workload;
pub mod plan;
pub mod preview;
pub mod report;
pub mod sweep;

/// An error and then each of its causes, outermost first.
pub fn causes<'a>(e: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// An error and its causes on one line (`outer: inner: root`), for logs and messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e).map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

/// Ends the process now with `code`, skipping atexit handlers and static destructors.
///
/// For when another thread may be inside libtorch (an Evaluator mid-forward, a Trainer
/// mid-step): the normal exit path tears libtorch's globals down under it and can crash or
/// hang. Used on a failed run (everything that matters is already on disk: checkpoints are
/// fsynced, events flushed), on a second signal, and after a panic. Flushes stdout first.
pub fn exit_now(code: i32) -> ! {
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(code) }
}
