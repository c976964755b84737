//! Input-preparation workloads: tokenization, masking + collation, and the data plane over a
//! whole epoch.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::sys::{peak_rss_mb, round1, round4, CpuMonitor};
use super::{fresh_dir, load_pretrain, pretrain_toml, scaled_corpus, BenchArgs, BenchError, BenchObjective};
use crate::actors::control::StopFlag;
use crate::actors::DataPlane;
use crate::batch::RawBatch;
use crate::plan::RunPlan;
use crate::data::tokenize::TextTokenizer;
use crate::masking::collate::mask_and_collate;
use crate::batch::IGNORE;
use crate::rng::Purpose;
use crate::files::FileError;

/// Sentences per `encode_batch` call (the baseline's batch).
const SENTENCES_PER_CALL: usize = 10_000;
/// Batches prepared before timing the Masker (the baseline uses at most 200 too).
const MASK_BATCHES: usize = 200;

fn sentences(a: &BenchArgs) -> Result<Vec<String>, BenchError> {
    let text = std::fs::read_to_string(&a.corpus).map_err(FileError::at(&a.corpus))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Tokenizer throughput: `encode_batch` with special tokens (threads from `RAYON_NUM_THREADS`,
/// like the baseline's `encode_batch` rows), and the Loader's per-sentence `encode` with word
/// starts (one thread: the Loader is one thread). Best of three passes each.
pub fn tokenize(a: &BenchArgs) -> Result<Value, BenchError> {
    let tok = TextTokenizer::load(a.tokenizer()?, None)?;
    let sents = sentences(a)?;
    let bytes: usize = sents.iter().map(|s| s.len()).sum();
    let passes = 3;
    let mut results = Vec::new();
    let threads = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok());

    let mut best = f64::INFINITY;
    let mut tokens = 0usize;
    let mon = CpuMonitor::start();
    for _ in 0..passes {
        let t0 = Instant::now();
        tokens = 0;
        for chunk in sents.chunks(SENTENCES_PER_CALL) {
            let enc = tok.inner().encode_batch(chunk.to_vec(), true).map_err(crate::data::tokenize::TokenizerError::Encode)?;
            tokens += enc.iter().map(|e| e.get_ids().len()).sum::<usize>();
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    results.push(json!({
        "variant": "encode_batch", "rayon_threads": threads, "tokens": tokens, "seconds_best": round4(best),
        "tokens_per_s": (tokens as f64 / best).round(), "sentences_per_s": (sents.len() as f64 / best).round(),
        "mb_per_s": round4(bytes as f64 / best / 1e6), "cpu": mon.finish(),
    }));

    let mut best = f64::INFINITY;
    let mon = CpuMonitor::start();
    for _ in 0..passes {
        let t0 = Instant::now();
        tokens = 0;
        for s in &sents {
            tokens += tok.encode(s)?.ids.len() + 2;
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    results.push(json!({
        "variant": "loader_encode_with_word_starts", "threads": 1, "tokens": tokens, "seconds_best": round4(best),
        "tokens_per_s": (tokens as f64 / best).round(), "sentences_per_s": (sents.len() as f64 / best).round(),
        "mb_per_s": round4(bytes as f64 / best / 1e6), "cpu": mon.finish(),
        "note": "counts [CLS]/[SEP] per sentence like encode_batch",
    }));
    Ok(json!({"bench": "tokenize", "sentences": sents.len(), "bytes": bytes, "results": results, "peak_rss_mb": peak_rss_mb()}))
}

fn pretrain_plan(a: &BenchArgs, name: &str, objective: BenchObjective, selection: &str, unit: &str, glm: bool) -> Result<RunPlan, BenchError> {
    let dir = a.out.join(name);
    let mut toml = pretrain_toml(a, &dir, &a.corpus, objective, selection, unit)?;
    if glm {
        toml = toml.replace("kind = \"mlm\"", "kind = \"glm\"").replace("sentence_pair = \"none\"\n", "");
    }
    load_pretrain(&dir, "config.toml", &toml)
}

/// The first `n` raw batches of the plan's training stream, and the seconds the Loader's path
/// (read, tokenize, pack or pair, block-shuffle) took to produce them.
fn raw_batches(plan: &RunPlan, n: usize) -> Result<(Vec<RawBatch>, f64), BenchError> {
    let t0 = Instant::now();
    let mut stream = plan.train_source(Default::default());
    let bs = plan.config.train.batch_size;
    let mut out = Vec::with_capacity(n);
    for seq in 0..n as u64 {
        let mut examples = Vec::with_capacity(bs);
        while examples.len() < bs {
            match stream.next_example()? {
                Some(e) => examples.push(e),
                None => break,
            }
        }
        out.push(RawBatch { seq, examples, cursor: stream.cursor() });
    }
    Ok((out, t0.elapsed().as_secs_f64()))
}

/// Masking + collation on one thread (per core, as the baseline's collator runs), per objective.
pub fn mask(a: &BenchArgs) -> Result<Value, BenchError> {
    let variants: [(&str, BenchObjective, &str, &str, bool, &str); 5] = [
        ("mlm_bernoulli", BenchObjective::Mlm, "bernoulli", "token", false, "like DataCollatorForLanguageModeling: each token with p=0.15, 80/10/10"),
        ("mlm_exact", BenchObjective::Mlm, "exact", "token", false, "round(0.15 * len) positions, like Google's create_pretraining_data"),
        ("mlm_wwm", BenchObjective::Mlm, "bernoulli", "word", false, "whole words from the tokenizer's word ids, 80/10/10 kept"),
        ("nsp_pairs", BenchObjective::MlmNsp, "bernoulli", "token", false, "NSP pairs [CLS] A [SEP] B [SEP] with segment ids, padded, masked"),
        ("glm_blank_infilling", BenchObjective::Mlm, "exact", "token", true, "no transformers counterpart"),
    ];
    fresh_dir(&a.out.join("mask"))?;
    let mut results = Vec::new();
    for (name, objective, selection, unit, glm, note) in variants {
        let plan = pretrain_plan(a, &format!("mask/{name}"), objective, selection, unit, glm)?;
        let (batches, load_s) = raw_batches(&plan, MASK_BATCHES)?;
        let examples: usize = batches.iter().map(|b| b.examples.len()).sum();
        let corpus = plan.corpus().ok_or_else(|| BenchError::Result("not a pre-training config".into()))?;
        let ctx = corpus.mask_context(&plan.context(), Purpose::Mask);
        let first = mask_and_collate(&batches[0], &ctx);
        let mon = CpuMonitor::start();
        let t0 = Instant::now();
        let (mut n, mut seqs, mut padded) = (0usize, 0usize, 0usize);
        loop {
            let b = mask_and_collate(&batches[n % batches.len()], &ctx);
            seqs += b.batch_size;
            padded += b.seq_len;
            black_box(&b);
            n += 1;
            let dt = t0.elapsed().as_secs_f64();
            if dt >= a.seconds && n >= 20 {
                break;
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        let cpu = mon.finish();
        // Sanity: how many real tokens are scored, and how many of those show [MASK].
        let scored = first.labels.iter().filter(|&&l| l != IGNORE).count();
        let mask_id = plan.tokenizer.special_ids().mask as i64;
        let shown_mask = first.labels.iter().zip(&first.input_ids).filter(|(&l, &t)| l != IGNORE && t == mask_id).count();
        results.push(json!({
            "variant": name, "note": note, "threads": 1, "batches": n, "seconds": round4(dt),
            "sequences_per_s": (seqs as f64 / dt).round(), "ms_per_batch": round4(1e3 * dt / n as f64),
            "mean_padded_len": round1(padded as f64 / n as f64),
            "loader_examples_per_s": (examples as f64 / load_s).round(),
            "sanity": {"scored_frac": round4(scored as f64 / first.n_tokens.max(1) as f64),
                       "mask_token_frac": round4(shown_mask as f64 / scored.max(1) as f64)},
            "cpu": cpu,
        }));
    }
    Ok(json!({"bench": "mask", "batch": a.batch, "seq": a.seq, "results": results, "peak_rss_mb": peak_rss_mb()}))
}

/// The Loader and Masker threads alone (no model) over one whole epoch of the corpus repeated
/// `scale` times: throughput, and peak RSS, which must not grow with the corpus.
pub fn stream(a: &BenchArgs) -> Result<Value, BenchError> {
    let dir = a.out.join(format!("stream-x{}", a.scale));
    fresh_dir(&dir)?;
    let corpus = scaled_corpus(a)?;
    let corpus_mb = std::fs::metadata(&corpus).map_err(FileError::at(&corpus))?.len() as f64 / 1e6;
    let mut toml = pretrain_toml(a, &dir, &corpus, BenchObjective::MlmNsp, "bernoulli", "token")?;
    if a.prepared {
        let prepared = super::prepared::prepared_copy(a, &corpus)?;
        toml = super::prepared::on_prepared(&toml, &corpus, &prepared);
    }
    let plan = load_pretrain(&dir, "config.toml", &toml)?;
    let rss_start = super::sys::rss_mb();
    let stop = StopFlag::new();
    let sink: crate::actors::events::EventSink = Arc::new(|_| {});
    let mon = CpuMonitor::start();
    let t0 = Instant::now();
    let (rx, handles) = DataPlane::new(&plan, stop.clone(), sink).workers(a.workers).spawn()?;
    let (mut seqs, mut tokens, mut rss_max) = (0u64, 0u64, 0f64);
    for b in rx.iter() {
        if b.cursor.epoch > 0 {
            break;
        }
        seqs += b.batch_size as u64;
        tokens += b.n_tokens as u64;
        if seqs % (1024 * a.batch as u64) == 0 {
            rss_max = rss_max.max(super::sys::rss_mb());
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    stop.abort();
    drop(rx);
    for h in handles {
        let _ = h.join();
    }
    Ok(json!({
        "bench": "stream", "scale": a.scale, "corpus_mb": round1(corpus_mb), "masker_workers": a.workers.max(1),
        "sequences": seqs, "tokens": tokens, "seconds": round4(dt),
        "sequences_per_s": (seqs as f64 / dt).round(), "tokens_per_s": (tokens as f64 / dt).round(),
        "rss_start_mb": rss_start, "rss_sampled_max_mb": rss_max, "peak_rss_mb": peak_rss_mb(), "cpu": mon.finish(),
        "prepared": a.prepared, "rss_anon_file_mb_at_end": super::sys::rss_anon_file_mb(),
    }))
}
