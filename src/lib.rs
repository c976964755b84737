//! pretune pre-trains and fine-tunes transformer language models on libtorch (tch), as a
//! pipeline of actors.
//!
//! # Layout
//! From the bottom up (a module uses the ones above it in this list, not the reverse; the
//! exceptions are being removed, see the layout issue):
//! * [`rng`]: counter-based randomness, every draw a pure function of a key.
//! * [`cuda`]: libtorch's CUDA half, `dlopen`ed only where a GPU exists.
//! * [`config`]: TOML structs (unknown keys rejected) and `--set` overrides.
//! * [`data`]: text and JSONL sources, tokenization, packing, NSP / SOP pairs, the seekable
//!   example stream, labelled data, and prepared (pre-tokenized, memory-mapped) corpora.
//! * [`masking`]: MLM and GLM corruption and collation; pure and seeded, no tch.
//! * [`batch`]: the data plane's messages ([`batch::RawBatch`], [`batch::HostBatch`]).
//! * [`model`]: BERT, its heads and GLM, with Hugging Face parameter names.
//! * [`objective`]: device halves: batches on the device, losses, evaluation metrics.
//! * [`finetune`]: task plans, heads, labelled examples, cloze, task metrics, Hugging Face
//!   import / export, `predict` and `evaluate`.
//! * [`plan`]: a config resolved into one validated [`plan::RunPlan`] for either phase.
//! * [`train`]: our AdamW (saveable moments), schedules, precision, the training step, the
//!   profiler window and the pure step policies (when to log, evaluate, checkpoint).
//! * [`checkpoint`]: crash-safe checkpoint folders, checksums, retention, resume points.
//! * [`dist`]: data parallelism on libtorch's c10d through `csrc/` (process group, the DDP
//!   reducer) and `pretune launch`'s rendezvous (it spawns the rank processes).
//! * [`metrics`] and [`http`]: metric names, the Prometheus exporter and the small server
//!   behind `/metrics` and the control endpoint (its own thread and tokio runtime).
//! * [`actors`]: the pipeline: Loader, Masker workers, Trainer, Evaluator, Checkpointer and
//!   the Coordinator, their events and commands. Threads are spawned here, by the HTTP
//!   server, by `data prepare`'s tokenizing workers and by the benches.
//! * Commands over the library: [`check`], [`preview`], [`report`], [`bench`] (the binary's
//!   `main.rs` parses the command line and calls them).
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
pub mod cuda;
pub mod data;
pub mod dist;
mod ffi;
pub mod finetune;
pub mod http;
pub mod masking;
pub mod metrics;
pub mod model;
pub mod objective;
pub mod rng;
pub mod train;
pub mod actors;
pub mod plan;
pub mod preview;
pub mod report;

/// An error and its causes on one line (`outer: inner: root`), for logs and messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
