//! pretune pre-trains and fine-tunes transformer language models on libtorch (tch), as a
//! pipeline of actors.
//!
//! # Layout
//! * [`config`]: TOML structs (unknown keys rejected), `--set` overrides, resolution into a
//!   validated [`config::RunPlan`].
//! * [`data`]: streaming sources, tokenization, packing, the seekable cursor. Host data only.
//! * [`masking`]: MLM corruption and collation; pure and seeded, no tch.
//! * [`batch`]: the data plane's messages ([`batch::RawBatch`], [`batch::HostBatch`]).
//! * [`model`]: the BERT encoder and MLM head with Hugging Face parameter names.
//! * [`objective`]: device halves: batches on the device, losses, evaluation metrics.
//! * [`train`]: our AdamW (saveable moments), learning-rate schedules, one training step,
//!   and the pure step policies (when to log, evaluate, checkpoint).
//! * [`checkpoint`]: crash-safe checkpoint folders, checksums, retention.
//! * [`metrics`]: the metric names (one list) and the Prometheus exporter.
//! * [`finetune`]: task heads, labelled data, task metrics, early stopping, Hugging Face
//!   import / export, prediction.
//! * [`actors`]: every thread and actor: Loader, Masker workers, Trainer, Evaluator,
//!   Checkpointer and the Coordinator. The only module that spawns threads.
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
