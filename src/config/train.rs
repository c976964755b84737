//! `[train]`: the optimisation (batch, steps, learning rate and its schedule, precision,
//! clipping, evaluation, checkpoints, early stopping).

use serde::{Deserialize, Serialize};

/// Arithmetic of the forward and backward passes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where the hardware has bf16 units (CUDA 8.0+, a CPU with AMX-BF16 or
    /// AVX512-BF16), fp32 elsewhere: `train::precision::resolve` decides and logs why.
    #[default]
    Auto,
    /// Everything in fp32.
    Fp32,
    /// Autocast to bfloat16 (matmuls and attention in bf16; weights, gradients, optimizer
    /// moments and loss reductions in fp32), on any device: emulated, and slower than fp32,
    /// where the hardware has no bf16 units.
    Bf16,
}

/// What to do when an update's loss or gradient norm is not finite.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NonFinitePolicy {
    /// Drop the update (count it in `pretune_nonfinite_steps_total`); abort after
    /// `train.max_nonfinite_in_a_row` in a row.
    Skip,
    /// Stop the run at the first one.
    Abort,
}

/// Shape of the learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Linear to `min_lr_ratio * lr` at `max_steps`.
    Linear,
    /// Half cosine to `min_lr_ratio * lr` at `max_steps`.
    Cosine,
    /// No decay.
    Constant,
}

/// `[train]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Longest sequence, special tokens included.
    pub max_seq_len: usize,
    /// Optimizer updates in the run.
    pub max_steps: u64,
    /// Micro-batches per optimizer update.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (takes precedence over `warmup_ratio` when non-zero).
    pub warmup_steps: u64,
    /// Warm-up as a share of `max_steps`.
    pub warmup_ratio: f64,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Final learning rate as a share of `lr`.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay (never on biases and LayerNorm).
    pub weight_decay: f64,
    /// AdamW betas.
    pub betas: [f64; 2],
    /// AdamW epsilon.
    pub eps: f64,
    /// Clip the global gradient norm to this (0: off).
    pub clip_grad_norm: f64,
    /// Read the loss off the device and log every N steps (the only sync points).
    pub log_every: u64,
    /// Evaluate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Keep the last K checkpoints (and the best one by held-out loss).
    pub keep_last: usize,
    /// `false`: write no checkpoint (Hugging Face's `save_strategy = "no"`), for a benchmark or
    /// a run whose numbers are all it is for: a BERT-base checkpoint with its optimizer state is
    /// 1.3 GB. Such a run cannot resume, and `export` / `predict` have nothing to read.
    pub save_checkpoints: bool,
    /// `skip` or `abort` on a non-finite loss or gradient norm.
    pub nonfinite: NonFinitePolicy,
    /// Under `skip`, abort after this many non-finite updates in a row.
    pub max_nonfinite_in_a_row: u32,
    /// Fine-tuning: passes over the training set (sets `max_steps` when non-zero).
    pub epochs: u64,
    /// Fine-tuning: stop after this many evaluations without improvement (0: never).
    pub patience: u32,
    /// Fine-tuning: learning rate of layer `l` (of L, head = L + 1) is `lr * decay^(L + 1 - l)`.
    pub layerwise_lr_decay: f64,
    /// Fine-tuning: keep the embeddings fixed.
    pub freeze_embeddings: bool,
    /// Fine-tuning: keep the first K encoder layers fixed.
    pub freeze_layers: i64,
    /// `auto` (bf16 where the hardware computes it natively), `fp32`, or `bf16` autocast.
    pub precision: Precision,
    /// AdamW through libtorch's fused kernel (`torch.optim.AdamW(fused=True)`); `false`: the
    /// tensor-by-tensor reference (same arithmetic, eight passes over the moments).
    pub fused_adamw: bool,
    /// Profile this many updates with libtorch's profiler (0: off) into `OUT_DIR/profile/`
    /// (`trace.json` for chrome://tracing or Perfetto, `breakdown.json`: self time per op group).
    pub profile_steps: u64,
    /// The first profiled update (after warm-up: allocations and oneDNN's kernel choices
    /// happen in the first steps).
    pub profile_start: u64,
    /// Fine-tuning: batch examples of similar length (shuffled, then sorted by length within
    /// windows of 50 batches, batches shuffled), like `transformers`' `group_by_length`: less
    /// padding, same examples per epoch.
    pub group_by_length: bool,
    /// The hardware's peak in TFLOP/s for MFU (0: a known CUDA device's data sheet, or a GEMM
    /// probe on the CPU; see `pretune check`).
    pub peak_tflops: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 32,
            max_seq_len: 128,
            max_steps: 1000,
            grad_accum: 1,
            lr: 1e-4,
            warmup_steps: 0,
            warmup_ratio: 0.01,
            decay: Decay::Linear,
            min_lr_ratio: 0.0,
            weight_decay: 0.01,
            betas: [0.9, 0.999],
            eps: 1e-6,
            clip_grad_norm: 1.0,
            log_every: 10,
            eval_every: 0,
            checkpoint_every: 0,
            keep_last: 3,
            save_checkpoints: true,
            nonfinite: NonFinitePolicy::Skip,
            max_nonfinite_in_a_row: 5,
            epochs: 0,
            patience: 0,
            layerwise_lr_decay: 1.0,
            freeze_embeddings: false,
            freeze_layers: 0,
            precision: Precision::Auto,
            fused_adamw: true,
            profile_steps: 0,
            peak_tflops: 0.0,
            profile_start: 3,
            group_by_length: false,
        }
    }
}
