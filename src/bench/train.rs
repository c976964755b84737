//! Training workloads: pre-training through the actor pipeline and fine-tuning through its loop,
//! timed from the runs' own `events.jsonl` (`log_every = 1`: on the CPU reading the loss each
//! step costs nothing).

use std::path::Path;

use serde_json::{json, Value};

use super::sys::{peak_rss_mb, round1, round4, CpuMonitor, StepStats};
use super::{fresh_dir, pretrain_toml, run_table, scaled_corpus, BenchArgs, BenchError};
use crate::actors::events::{read_records, Record, StepReport};
use crate::files::FileError;

/// Timing of the steps after `warmup`, from a run's events.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timing {
    /// Timed steps.
    pub steps: u64,
    /// Seconds of the timed steps.
    pub seconds: f64,
    /// Mean seconds per step.
    pub s_per_step: f64,
    /// Median, fastest, slowest.
    #[serde(flatten)]
    pub stats: StepStats,
    /// Non-padding tokens per second.
    pub real_tokens_per_s: f64,
    /// Share of the timed steps the Trainer waited for data.
    pub data_wait_share: f64,
    /// Loss of the first and the last step.
    pub loss_first_last: [f64; 2],
    /// Model FLOPs utilisation of the timed steps (the run's own, against its peak; see
    /// `docs/mfu.md`); `None` without a peak.
    pub mfu: Option<f64>,
}

/// Reads the step lines of `events.jsonl` and times the steps after `warmup`.
fn timing(events: &Path, warmup: u64) -> Result<Timing, BenchError> {
    let records = read_records(events).map_err(|e| BenchError::Result(crate::error_chain(&e)))?;
    let steps: Vec<StepReport> = records
        .into_iter()
        .filter_map(|r| match r {
            Record::Step(s) => Some(s),
            _ => None,
        })
        .collect();
    let base = steps.iter().position(|s| s.step == warmup).ok_or_else(|| BenchError::Result(format!("{}: no step {warmup} logged", events.display())))?;
    let timed = &steps[base + 1..];
    if timed.is_empty() {
        return Err(BenchError::Result(format!("{}: no step after the warm-up", events.display())));
    }
    // Logged steps may be `log_every` apart: an interval's time is shared by its steps.
    let (mut prev_t, mut prev_step) = (steps[base].elapsed_s, steps[base].step);
    let mut times = Vec::with_capacity(timed.len());
    let (mut waited, mut mfu_time, mut mfu_dt) = (0.0, 0.0, 0.0);
    for s in timed {
        let dt = s.elapsed_s - prev_t;
        waited += s.data_wait_share * dt;
        if let Some(m) = s.mfu {
            (mfu_time, mfu_dt) = (mfu_time + m * dt, mfu_dt + dt);
        }
        times.push(dt / (s.step - prev_step).max(1) as f64);
        (prev_t, prev_step) = (s.elapsed_s, s.step);
    }
    let last = timed.last().expect("not empty");
    let n_steps = last.step - steps[base].step;
    let seconds = last.elapsed_s - steps[base].elapsed_s;
    let tokens = last.tokens - steps[base].tokens;
    Ok(Timing {
        steps: n_steps,
        seconds: round4(seconds),
        s_per_step: round4(seconds / n_steps.max(1) as f64),
        stats: StepStats::of(&times).expect("not empty"),
        real_tokens_per_s: (tokens as f64 / seconds).round(),
        data_wait_share: round4(waited / seconds),
        loss_first_last: [round4(steps[0].loss), round4(timed.last().map_or(f64::NAN, |s| s.loss))],
        mfu: (mfu_dt > 0.0).then(|| round4(mfu_time / mfu_dt)),
    })
}

/// Dense matmul FLOPs of one BERT training step (3 × forward; a multiply-add is 2), the
/// baseline's `common.bert_train_flops`: the MLM decoder counted over every position, as
/// `transformers` computes it. pretune's sparse decoder does less work than this counts, so the
/// "achieved" figure is the baseline-equivalent rate.
fn train_flops(a: &BenchArgs, shape: (usize, usize, usize, usize), vocab: usize, head: &str) -> f64 {
    let (l, h, _, i) = shape;
    let (l, h, i, v, b, s) = (l as f64, h as f64, i as f64, vocab as f64, a.batch as f64, a.seq as f64);
    let tokens = b * s;
    let mut fwd = l * (2.0 * tokens * (4.0 * h * h + 2.0 * h * i) + 4.0 * b * s * s * h);
    match head {
        "pretraining" => fwd += 2.0 * tokens * (h * h + h * v) + 2.0 * b * (h * h + 2.0 * h),
        "mlm" => fwd += 2.0 * tokens * (h * h + h * v),
        "qa" => fwd += 2.0 * tokens * 2.0 * h,
        "electra" => fwd += 2.0 * tokens * (h * h + h),
        _ => fwd += 2.0 * b * (h * h + 2.0 * h),
    }
    3.0 * fwd
}

/// What the bench's device says about bf16 units (recorded next to every number).
fn bf16_units(device: &str) -> String {
    crate::cuda::load();
    let device = if device.starts_with("cuda") { tch::Device::cuda_if_available() } else { tch::Device::Cpu };
    match crate::train::precision::probe(device) {
        crate::train::precision::Bf16Support::Native(how) | crate::train::precision::Bf16Support::Missing(how) => how,
    }
}

fn summary(a: &BenchArgs, t: &Timing, flops: f64, cpu: super::sys::CpuInfo) -> Value {
    let sps = 1.0 / t.s_per_step;
    let mut v = json!({
        "batch": a.batch, "seq": a.seq, "threads": a.threads, "device": a.device, "precision": a.precision,
        "cpu_model": super::sys::cpu_model(), "bf16_units": bf16_units(&a.device), "fused_adamw": !a.unfused_adamw, "attention_dropout": a.attention_dropout,
        "model": a.model, "warmup_steps": a.warmup,
        "timing": t,
        "steps_per_s": round4(sps), "sequences_per_s": round4(sps * a.batch as f64),
        "tokens_per_s": (sps * (a.batch * a.seq) as f64).round(),
        "train_step_gflop_dense_equivalent": round1(flops / 1e9),
        "achieved_gflops_dense_equivalent": round1(flops * sps / 1e9),
        "peak_rss_mb": peak_rss_mb(), "cpu": cpu,
    });
    if a.profile > 0 {
        v["profiled_steps"] = a.profile.into();
    }
    v
}

/// The profile's breakdown of a run in `dir`, when `--profile` asked for one.
fn with_profile(mut v: Value, a: &BenchArgs, dir: &Path) -> Value {
    if a.profile > 0 {
        let file = crate::train::profile::dir_of(dir).join("breakdown.json");
        v["profile"] = std::fs::read_to_string(&file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    }
    v
}

/// BERT pre-training through the whole pipeline (Loader, Masker workers, Trainer, Coordinator),
/// masked like `DataCollatorForLanguageModeling` (each token with p = 0.15, 80/10/10).
pub fn pretrain(a: &BenchArgs) -> Result<Value, BenchError> {
    let name = format!("pretrain-{:?}-x{}", a.objective, a.scale).to_lowercase();
    let dir = a.out.join(&name);
    fresh_dir(&dir)?;
    let corpus = scaled_corpus(a)?;
    let toml = pretrain_toml(a, &dir, &corpus, a.objective, "bernoulli", "token")?;
    let plan = super::load_pretrain(&dir, "bench.toml", &toml)?;
    let vocab = plan.tokenizer.vocab_size();
    let mon = CpuMonitor::start();
    crate::actors::run(plan)?;
    let cpu = mon.finish();
    let t = timing(&dir.join("events.jsonl"), a.warmup)?;
    let (head, shape) = match a.objective {
        super::BenchObjective::Mlm => ("mlm", a.model.shape()),
        super::BenchObjective::MlmNsp => ("pretraining", a.model.shape()),
        // The GeGLU's three matrices of h × 1.5h count as two of h × 2.25h.
        super::BenchObjective::ModernbertMlm => {
            let (l, h, heads, _) = a.model.shape();
            ("mlm", (l, h, heads, h * 9 / 4))
        }
        // The discriminator's count; the run's own MFU counts the generator too.
        super::BenchObjective::Electra => ("electra", a.model.shape()),
    };
    let mut v = summary(a, &t, train_flops(a, shape, vocab, head), cpu);
    v["bench"] = "pretrain".into();
    v["variant"] = name.into();
    v["objective"] = serde_json::to_value(a.objective).unwrap_or_default();
    v["masker_workers"] = a.workers.max(1).into();
    v["scale"] = a.scale.into();
    v["vocab_size"] = vocab.into();
    Ok(with_profile(v, a, &dir))
}

/// The baseline's fine-tuning task: windows of consecutive sentences up to `seq - 2` tokens,
/// labelled by source (Jane Austen or the King James Bible, whose first chapter opens "In the
/// beginning God"). Returns JSONL lines.
fn classification_windows(a: &BenchArgs) -> Result<Vec<String>, BenchError> {
    let tok = crate::data::tokenize::TextTokenizer::load(a.tokenizer()?, None)?;
    let text = std::fs::read_to_string(&a.corpus).map_err(FileError::at(&a.corpus))?;
    let mut out = Vec::new();
    let mut kjv = false;
    for doc in text.split("\n\n").map(str::trim).filter(|d| !d.is_empty()) {
        let lines: Vec<&str> = doc.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        kjv |= lines.first().is_some_and(|l| l.starts_with("In the beginning God"));
        let label = if kjv { "kjv" } else { "austen" };
        let (mut cur, mut len) = (Vec::new(), 0usize);
        for s in lines {
            let n = tok.encode(s)?.ids.len();
            if !cur.is_empty() && len + n > a.seq - 2 {
                out.push(json!({"text": cur.join(" "), "label": label}).to_string());
                cur.clear();
                len = 0;
            }
            cur.push(s);
            len += n;
        }
        if !cur.is_empty() {
            out.push(json!({"text": cur.join(" "), "label": label}).to_string());
        }
    }
    Ok(out)
}

/// The `[train]` and `[metrics]` tables of a fine-tuning workload: the run's shapes and step
/// count at a constant learning rate without warm-up, so every timed step does the same work.
fn train_section(a: &BenchArgs, lr: &str, clip: &str) -> String {
    format!(
        "[train]\nbatch_size = {}\nmax_seq_len = {}\nmax_steps = {}\nepochs = 0\nlr = {lr}\nwarmup_ratio = 0.0\ndecay = \"constant\"\n\
         weight_decay = 0.01\nclip_grad_norm = {clip}\nlog_every = {}\nkeep_last = 1\nprecision = {:?}\nprofile_steps = {}\nprofile_start = {}\nfused_adamw = {}\ngroup_by_length = {}\n\n[metrics]\nlisten = \"\"\n",
        a.batch,
        a.seq,
        a.warmup + a.steps,
        a.log_every.max(1),
        a.precision,
        a.profile,
        a.warmup,
        !a.unfused_adamw,
        a.group_by_length,
    )
}

/// BERT sequence classification through the fine-tuning loop (fresh weights, like the
/// baseline's `BertForSequenceClassification` from a config).
pub fn finetune(a: &BenchArgs) -> Result<Value, BenchError> {
    let dir = a.out.join("finetune-seqcls");
    fresh_dir(&dir)?;
    let data = a.out.join("finetune-data");
    let train = data.join("train.jsonl");
    let dev = data.join("dev.jsonl");
    if !train.exists() {
        let lines = classification_windows(a)?;
        std::fs::create_dir_all(&data).map_err(FileError::at(&data))?;
        std::fs::write(&dev, lines.iter().step_by(100).take(64).cloned().collect::<Vec<_>>().join("\n") + "\n").map_err(FileError::at(&dev))?;
        std::fs::write(&train, lines.join("\n") + "\n").map_err(FileError::at(&train))?;
    }
    let toml = format!(
        r#"{run}
[task]
kind = "sequence_classification"
metric = "accuracy"

[data]
train = [{train:?}]
eval = [{dev:?}]

[tokenizer]
path = {tok:?}

{model}
{train_section}"#,
        run = run_table("bench-finetune", a, &dir),
        train = train.display().to_string(),
        dev = dev.display().to_string(),
        tok = a.tokenizer()?.display().to_string(),
        model = super::model_section(a),
        train_section = train_section(a, "1e-4", "0.0"),
    );
    let plan = crate::plan::load_and_resolve(&super::write_config(&dir, "bench.toml", &toml)?, &[])?;
    let Some(task) = plan.task() else { return Err(BenchError::Result("not a fine-tuning config".into())) };
    let examples = task.train.len();
    let mon = CpuMonitor::start();
    crate::actors::run(plan)?;
    let cpu = mon.finish();
    let t = timing(&dir.join("events.jsonl"), a.warmup)?;
    let mut v = summary(a, &t, train_flops(a, a.model.shape(), 0, "seqcls"), cpu);
    v["bench"] = "finetune".into();
    v["variant"] = if a.group_by_length { "seqcls_group_by_length" } else { "seqcls" }.into();
    v["train_examples"] = examples.into();
    Ok(with_profile(v, a, &dir))
}

/// Extractive question answering from a pre-trained BERT (`--init`, all-MiniLM-L6-v2 by
/// default) on SQuAD windows of `--seq` tokens, `--doc-stride` apart, through the fine-tuning
/// loop: the workload of `configs/finetune-qa-minilm.toml`'s CPU override, timed.
pub fn finetune_qa(a: &BenchArgs) -> Result<Value, BenchError> {
    let dir = a.out.join("finetune-qa");
    fresh_dir(&dir)?;
    // Enough questions for every step (a question gives one window or more).
    let questions = (a.warmup + a.steps) as usize * a.batch;
    let toml = format!(
        r#"{run}
[init]
hf = {init:?}

[task]
kind = "question_answering"
doc_stride = {stride}
max_train_examples = {questions}

[data]
train = [{train:?}]

{train_section}"#,
        run = run_table("bench-finetune-qa", a, &dir),
        init = a.init.display().to_string(),
        stride = a.doc_stride,
        train = a.squad.display().to_string(),
        train_section = train_section(a, "5e-5", "1.0"),
    );
    let plan = crate::plan::load_and_resolve(&super::write_config(&dir, "bench.toml", &toml)?, &[])?;
    let Some(task) = plan.task() else { return Err(BenchError::Result("not a fine-tuning config".into())) };
    let windows = task.train.len();
    let c = &task.spec.config;
    let shape = (c.num_hidden_layers as usize, c.hidden_size as usize, c.num_attention_heads as usize, c.intermediate_size as usize);
    let mon = CpuMonitor::start();
    crate::actors::run(plan)?;
    let cpu = mon.finish();
    let t = timing(&dir.join("events.jsonl"), a.warmup)?;
    let mut v = summary(a, &t, train_flops(a, shape, 0, "qa"), cpu);
    v["bench"] = "finetune".into();
    v["variant"] = "qa".into();
    v["model"] = a.init.display().to_string().into();
    v["doc_stride"] = a.doc_stride.into();
    v["train_questions"] = questions.into();
    v["train_windows"] = windows.into();
    Ok(with_profile(v, a, &dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_starts_after_the_warmup_and_weights_data_wait_by_step_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let step = |step: u64, elapsed_s: f64, loss: f64, data_wait_share: f64| {
            let r = StepReport { phase: crate::workload::Phase::Pretrain, step, loss, losses: Default::default(), lr: 0.1, grad_norm: 1.0, tokens: 100 * step, tokens_per_second: 0.0, elapsed_s, data_wait_share, buckets: None, mfu: Some(data_wait_share / 10.0 + 0.5) };
            serde_json::to_string(&Record::Step(r)).unwrap()
        };
        let lines = [
            step(1, 5.0, 9.0, 0.9),
            step(2, 6.0, 8.0, 0.5),
            r#"{"kind":"eval","phase":"pretrain","step":2,"eval":{}}"#.to_owned(),
            step(3, 7.0, 7.5, 0.0),
            step(4, 10.0, 7.0, 0.1),
        ];
        std::fs::write(&p, lines.join("\n")).unwrap();
        let t = timing(&p, 2).unwrap();
        assert_eq!(t.steps, 2);
        assert_eq!(t.seconds, 4.0);
        assert_eq!(t.s_per_step, 2.0);
        // MFU weighted by each interval's time: (0.5 * 1 s + 0.51 * 3 s) / 4 s.
        assert_eq!(t.mfu, Some(round4((0.5 + 0.51 * 3.0) / 4.0)));
        assert_eq!(t.stats.s_per_step_median, 3.0);
        assert_eq!(t.real_tokens_per_s, 50.0);
        assert!((t.data_wait_share - 0.3 / 4.0).abs() < 1e-4, "{}", t.data_wait_share);
        assert_eq!(t.loss_first_last, [9.0, 7.0]);
        assert!(timing(&p, 9).is_err());
    }
}
