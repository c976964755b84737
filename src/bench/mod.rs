//! `pretune bench`: the workloads of the PyTorch + transformers baseline
//! (its Python scripts; `BENCHMARKS.md` says where they live and how to run them) through pretune's own code paths, on the same corpus, vocabulary,
//! shapes and thread count. Each prints one JSON line, like the baseline's scripts, so
//! `scripts/bench-side-by-side.sh` can run both alternately and print ratios.
//!
//! Timings live here and in `BENCHMARKS.md`, never in tests: the machines are noisy.
//!
//! * `tokenize`: the whole corpus, `encode_batch` in chunks of 10,000 sentences (the baseline's
//!   call), and the Loader's own per-sentence path with word starts.
//! * `mask`: the Masker's corruption + collation of batch × seq on one thread, per objective.
//! * `pretrain`: BERT-mini MLM or MLM+NSP through the whole actor pipeline.
//! * `finetune`: BERT-mini sequence classification (Austen vs King James) through the
//!   fine-tuning loop, the baseline's task; `--task qa`: extractive question answering from a
//!   pre-trained BERT on SQuAD windows (`scripts/qa_peer.py --bench` is the peer).
//! * `stream`: the data plane alone over a whole epoch of a corpus repeated `scale` times, for
//!   peak RSS against corpus size (`--prepared`: from a prepared copy of it).
//! * `prepare`: `pretune data prepare` of that corpus with `--threads` workers.
//! * `resume`: from the config to the first example at a cursor 90 % into the corpus, from the
//!   text and from the prepared copy.
//! * `generate`: GLM decoding throughput (greedy or beams, with or without the key / value
//!   cache) against `transformers`' `generate()` on a GPT-2 of the same sizes.

mod generate;
mod input;
mod prepared;
pub mod sys;
mod train;

use std::path::{Path, PathBuf};

use crate::files::FileError;

/// What went wrong in a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file could not be read or written.
    #[error("benchmark I/O failed")]
    Io(#[from] FileError),
    /// The generated config did not resolve.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::data::tokenize::TokenizerError),
    /// The example stream failed.
    #[error(transparent)]
    Stream(#[from] crate::data::stream::StreamError),
    /// Training (either phase) failed.
    #[error(transparent)]
    Run(#[from] crate::actors::RunError),
    /// The run ended without the numbers asked for.
    #[error("{0}")]
    Result(String),
}

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Tokenizer throughput over the corpus.
    Tokenize,
    /// Masking + collation throughput.
    Mask,
    /// BERT pre-training through the actor pipeline.
    Pretrain,
    /// Sequence-classification fine-tuning.
    Finetune,
    /// The data plane alone over a whole epoch.
    Stream,
    /// `pretune data prepare` of the corpus, with `--threads` tokenizing workers.
    Prepare,
    /// A resume deep into the corpus: config to the first example, text vs prepared.
    Resume,
    /// GLM decoding: `--batch` prompts of `--seq` tokens, `--steps` new tokens each.
    Generate,
}

/// Pre-training objective of the `pretrain` workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchObjective {
    /// Masked LM on packed segments (`BertForMaskedLM`).
    Mlm,
    /// Masked LM + next sentence prediction on sentence pairs (`BertForPreTraining`).
    MlmNsp,
    /// ModernBERT's masked LM at its recipe's 30 % on packed segments
    /// (`ModernBertForMaskedLM`): the `--model` depth, width and heads, a GeGLU of 1.5 × the
    /// width (ModernBERT-base's proportion), global attention every third layer and a window
    /// of 64 tokens on each side in the others, no dropout.
    ModernbertMlm,
    /// ELECTRA's replaced-token detection (`ElectraForPreTraining` + a generator a quarter as
    /// wide, `ElectraForMaskedLM`, sharing the embeddings): the `--model` sizes for the
    /// discriminator, masks at 15 %, λ = 50.
    Electra,
}

/// Model sizes (BERT's published shapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchModel {
    /// 4 layers, hidden 256, 4 heads, FFN 1024 (the CPU baseline's model).
    Mini,
    /// 12 layers, hidden 768, 12 heads, FFN 3072.
    Base,
    /// 24 layers, hidden 1024, 16 heads, FFN 4096.
    Large,
}

impl BenchModel {
    /// `(layers, hidden, heads, ffn)`.
    pub fn shape(self) -> (usize, usize, usize, usize) {
        match self {
            BenchModel::Mini => (4, 256, 4, 1024),
            BenchModel::Base => (12, 768, 12, 3072),
            BenchModel::Large => (24, 1024, 16, 4096),
        }
    }
}

/// Settings shared by the workloads (defaults are the baseline's).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// BERT-format corpus: one sentence per line, a blank line between documents (the
    /// baseline's `make_corpus.sh` writes it; see `BENCHMARKS.md`).
    #[arg(long, default_value = ".bench-data/corpus.txt")]
    pub corpus: PathBuf,
    /// Tokenizer: the baseline's cached `tokenizer.json` or `vocab.txt` (every workload but
    /// `finetune --task qa`, whose model brings its own).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Scratch folder for generated configs, data and run output.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// libtorch intra-op threads (`pretrain`, `finetune`).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Masker workers (`pretrain`, `stream`); 0 keeps the config default.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: u64,
    /// Seconds per `mask` variant; passes of `tokenize`; timed seconds of `generate`.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// `pretrain`: the objective.
    #[arg(long, value_enum, default_value_t = BenchObjective::MlmNsp)]
    pub objective: BenchObjective,
    /// `pretrain`, `finetune`: model size.
    #[arg(long, value_enum, default_value_t = BenchModel::Mini)]
    pub model: BenchModel,
    /// `cpu`, `cuda`, `auto`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `fp32`, `bf16` (autocast) or `auto` (bf16 where the hardware has bf16 units); fp32 by
    /// default so that a side-by-side comparison states its precision.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Training workloads: profile this many steps after the warm-up with libtorch's profiler
    /// and add the self-time breakdown per op group to the JSON (0: off; the profiled steps are
    /// slower, so time and profile in separate runs).
    #[arg(long, default_value_t = 0)]
    pub profile: u64,
    /// `pretrain`, `finetune`: attention-probability dropout (the baseline's 0.1; 0 lets
    /// attention take libtorch's fused kernel on the CPU).
    #[arg(long, default_value_t = 0.1)]
    pub attention_dropout: f64,
    /// Training workloads: AdamW tensor by tensor instead of libtorch's fused kernel (to
    /// measure the lever).
    #[arg(long)]
    pub unfused_adamw: bool,
    /// `pretrain`, `stream`: repeat the corpus this many times (peak RSS against corpus size).
    #[arg(long, default_value_t = 1)]
    pub scale: usize,
    /// Seed of the weights and of every random choice in the data plane.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training workloads: read the loss every N steps (on CUDA, every read is a sync: use 10
    /// or more, and a warm-up that is a multiple of it).
    #[arg(long, default_value_t = 1)]
    pub log_every: u64,
    /// `finetune`: batch examples of similar length (`train.group_by_length`).
    #[arg(long)]
    pub group_by_length: bool,
    /// `finetune`: the task.
    #[arg(long, value_enum, default_value_t = BenchTask::Seqcls)]
    pub task: BenchTask,
    /// `finetune --task qa`: SQuAD training file.
    #[arg(long, default_value = ".cache/squad/train-v1.1.json")]
    pub squad: PathBuf,
    /// `finetune --task qa`: the pre-trained BERT folder it starts from.
    #[arg(long, default_value = ".cache/minilm/model")]
    pub init: PathBuf,
    /// `finetune --task qa`: tokens shared by consecutive windows.
    #[arg(long, default_value_t = 96)]
    pub doc_stride: usize,
    /// `stream`: read a prepared copy of the corpus (made first if missing, not timed).
    #[arg(long)]
    pub prepared: bool,
    /// `generate`: beams per prompt (1: greedy).
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// `generate`: recompute every prefix instead of using the key / value cache.
    #[arg(long)]
    pub no_kv_cache: bool,
}

/// The task of the `finetune` workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchTask {
    /// BERT-mini from scratch on the baseline's Austen / King James classification.
    Seqcls,
    /// Extractive QA: a pre-trained BERT (`--init`) on SQuAD windows (`BertForQuestionAnswering`).
    Qa,
}

impl BenchArgs {
    /// `--tokenizer`, which every workload but `finetune --task qa` needs.
    ///
    /// # Errors
    /// When it was not given.
    pub fn tokenizer(&self) -> Result<&Path, BenchError> {
        self.tokenizer.as_deref().ok_or_else(|| BenchError::Result("--tokenizer is required by this workload (the baseline's cached tokenizer.json or vocab.txt)".into()))
    }
}

/// Runs one workload; returns its JSON line.
///
/// # Errors
/// [`BenchError`].
pub fn run(w: Workload, a: &BenchArgs) -> Result<serde_json::Value, BenchError> {
    std::fs::create_dir_all(&a.out).map_err(FileError::at(&a.out))?;
    let mut v = match w {
        Workload::Tokenize => input::tokenize(a)?,
        Workload::Mask => input::mask(a)?,
        Workload::Stream => input::stream(a)?,
        Workload::Prepare => prepared::prepare(a)?,
        Workload::Resume => prepared::resume(a)?,
        Workload::Pretrain => train::pretrain(a)?,
        Workload::Finetune if a.task == BenchTask::Qa => train::finetune_qa(a)?,
        Workload::Finetune => train::finetune(a)?,
        Workload::Generate => generate::generate(a)?,
    };
    if let Some(m) = v.as_object_mut() {
        m.insert("corpus".into(), a.corpus.display().to_string().into());
        m.insert("versions".into(), versions());
    }
    Ok(v)
}

fn versions() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()));
    serde_json::json!({
        "pretune": env!("CARGO_PKG_VERSION"),
        "tch": "0.26.0",
        "cpu": cpu,
        "nproc": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// A corpus file repeated `scale` times (documents stay documents); the file itself for 1.
pub(crate) fn scaled_corpus(a: &BenchArgs) -> Result<PathBuf, BenchError> {
    if a.scale <= 1 {
        return Ok(a.corpus.clone());
    }
    let path = a.out.join(format!("corpus-x{}.txt", a.scale));
    let want = std::fs::metadata(&a.corpus).map_err(FileError::at(&a.corpus))?.len() * a.scale as u64 + a.scale as u64;
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(want) {
        let text = std::fs::read(&a.corpus).map_err(FileError::at(&a.corpus))?;
        let mut out = Vec::with_capacity(want as usize);
        for _ in 0..a.scale {
            out.extend_from_slice(&text);
            out.push(b'\n');
        }
        std::fs::write(&path, out).map_err(FileError::at(&path))?;
    }
    Ok(path)
}

/// The `[run]` table every generated bench config starts with: its name, the bench's seed,
/// device and threads, and where the run writes.
pub(crate) fn run_table(name: &str, a: &BenchArgs, out_dir: &Path) -> String {
    format!("[run]\nname = {name:?}\nseed = {}\nout_dir = {:?}\ndevice = {:?}\nthreads = {}\n", a.seed, out_dir.display().to_string(), a.device, a.threads)
}

/// The pre-training config of a workload, as a user would write it.
pub(crate) fn pretrain_toml(a: &BenchArgs, out_dir: &Path, corpus: &Path, objective: BenchObjective, selection: &str, unit: &str) -> Result<String, BenchError> {
    let pair = match objective {
        BenchObjective::Mlm | BenchObjective::ModernbertMlm | BenchObjective::Electra => "none",
        BenchObjective::MlmNsp => "nsp",
    };
    let (model, mask_prob) = match objective {
        BenchObjective::ModernbertMlm => (modernbert_section(a), 0.3),
        _ => (model_section(a), 0.15),
    };
    Ok(format!(
        r#"{run}
[data]
train = [{corpus:?}]

[tokenizer]
path = {tok:?}

{model}
[objective]
kind = {kind:?}
mask_prob = {mask_prob}
selection = {selection:?}
unit = {unit:?}
sentence_pair = {pair:?}

[train]
batch_size = {batch}
max_seq_len = {seq}
max_steps = {steps}
lr = 1e-4
warmup_steps = 0
decay = "constant"
weight_decay = 0.01
clip_grad_norm = 1.0
log_every = {log_every}
keep_last = 1
precision = {precision:?}
profile_steps = {profile}
profile_start = {warmup}
fused_adamw = {fused}

[pipeline]
masker_workers = {workers}
prefetch = 4

[metrics]
listen = ""
"#,
        run = run_table("bench", a, out_dir),
        corpus = corpus.display().to_string(),
        tok = a.tokenizer()?.display().to_string(),
        batch = a.batch,
        seq = a.seq,
        steps = a.warmup + a.steps,
        kind = if objective == BenchObjective::Electra { "electra" } else { "mlm" },
        workers = a.workers.max(1),
        log_every = a.log_every.max(1),
        precision = a.precision,
        profile = a.profile,
        warmup = a.warmup,
        fused = !a.unfused_adamw,
    ))
}

/// The `[model]` table of a workload: BERT's shape, the baseline's dropout and positions.
fn model_section(a: &BenchArgs) -> String {
    let (layers, hidden, heads, ffn) = a.model.shape();
    format!(
        "[model]\nhidden_size = {hidden}\nnum_layers = {layers}\nnum_heads = {heads}\nintermediate_size = {ffn}\n\
         max_position_embeddings = 512\nhidden_dropout = 0.1\nattention_dropout = {}\n",
        a.attention_dropout
    )
}

/// The `[model]` table of the ModernBERT workload ([`BenchObjective::ModernbertMlm`]).
fn modernbert_section(a: &BenchArgs) -> String {
    let (layers, hidden, heads, _) = a.model.shape();
    format!(
        "[model]\narchitecture = \"modernbert\"\nhidden_size = {hidden}\nnum_layers = {layers}\nnum_heads = {heads}\nintermediate_size = {}\n\
         max_position_embeddings = 512\nlocal_attention = 128\nglobal_attn_every_n_layers = 3\nhidden_dropout = 0.0\nattention_dropout = 0.0\nlayer_norm_eps = 1e-5\n",
        hidden * 3 / 2
    )
}

/// Writes a generated config; returns its path.
pub(crate) fn write_config(out_dir: &Path, name: &str, toml: &str) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(out_dir).map_err(FileError::at(out_dir))?;
    let path = out_dir.join(name);
    std::fs::write(&path, toml).map_err(FileError::at(&path))?;
    Ok(path)
}

/// Writes a generated pre-training config and resolves it the way `pretune train` does.
fn load_pretrain(out_dir: &Path, name: &str, toml: &str) -> Result<crate::plan::RunPlan, BenchError> {
    Ok(crate::plan::load_and_resolve(&write_config(out_dir, name, toml)?, &[])?)
}

/// A fresh output folder (events.jsonl appends, so an old one would mix runs).
pub(crate) fn fresh_dir(path: &Path) -> Result<(), BenchError> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(FileError::at(path))?;
    }
    Ok(std::fs::create_dir_all(path).map_err(FileError::at(path))?)
}
