//! `pretune bench generate`: decoding throughput of GLM blank filling with the tiny GLM's
//! sizes (2 layers, width 128, 2 heads, FFN 512, 8,004 tokens), random weights, random
//! prompts of `--seq` tokens ending in the blank, `--steps` new tokens per row (the end token
//! forbidden until then, so every row decodes the same number), `--batch` rows, `--beams`
//! beams, with or without the key / value cache. The peer is `scripts/bench_generate_peer.py`:
//! `transformers`' `generate()` on a `GPT2LMHeadModel` of the same sizes.

use serde_json::{json, Value};
use tch::nn;

use super::{BenchArgs, BenchError};
use crate::decode::DecodeSettings;
use crate::model::glm::{Glm, GlmConfig};
use crate::model::glm_fill::{fill_blanks, FillIds};
use crate::rng::{Purpose, Rng};

/// The tiny GLM's vocabulary (8,000 WordPiece tokens and GLM's four).
const VOCAB: i64 = 8004;

/// Times one decoding configuration after one untimed warm-up call: whole `generate` calls,
/// repeated until `--seconds` have passed (one call of a small batch takes milliseconds).
///
/// # Errors
/// A bad `--device`.
pub fn generate(a: &BenchArgs) -> Result<Value, BenchError> {
    tch::set_num_threads(a.threads as i32);
    tch::manual_seed(a.seed as i64);
    let device = crate::plan::parse_device(&a.device).map_err(|e| BenchError::Result(e.to_string()))?;
    let cfg = GlmConfig {
        vocab_size: VOCAB,
        hidden_size: 128,
        num_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 512,
        max_sequence_length: (a.seq + a.steps as usize + 2) as i64,
        hidden_dropout: 0.0,
        attention_dropout: 0.0,
        layernorm_epsilon: 1e-5,
        init_method_std: 0.02,
        explicit_attention: false,
    };
    let vs = nn::VarStore::new(device);
    let glm = Glm::new(&vs.root(), &cfg);
    let ids = FillIds { sop: 5, eop: 6, pad: 0 };
    let mut rng = Rng::keyed(a.seed, Purpose::Sample, &[]);
    let texts: Vec<(Vec<i64>, Vec<usize>)> = (0..a.batch)
        .map(|_| {
            let mut p: Vec<i64> = (0..a.seq - 1).map(|_| 10 + rng.below(VOCAB as u64 - 10) as i64).collect();
            p.push(4);
            (p, vec![a.seq - 1])
        })
        .collect();
    let n = a.steps as usize;
    let settings = DecodeSettings { max_new_tokens: n, min_new_tokens: n, num_beams: a.beams, kv_cache: !a.no_kv_cache, ..Default::default() };
    let _guard = tch::no_grad_guard();
    fill_blanks(&glm, &texts, ids, &DecodeSettings { max_new_tokens: 2, min_new_tokens: 2, ..settings.clone() }, device);
    let t0 = std::time::Instant::now();
    let (mut tokens, mut calls) = (0usize, 0usize);
    while calls == 0 || t0.elapsed().as_secs_f64() < a.seconds {
        let out = fill_blanks(&glm, &texts, ids, &settings, device);
        tokens += out.iter().map(|g| g[0].tokens.len()).sum::<usize>();
        calls += 1;
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(json!({
        "workload": "generate",
        "side": "pretune",
        "batch": a.batch,
        "prompt": a.seq,
        "new_tokens": n,
        "beams": a.beams,
        "kv_cache": !a.no_kv_cache,
        "threads": a.threads,
        "seconds": seconds,
        "calls": calls,
        "tokens": tokens,
        "tokens_per_s": tokens as f64 / seconds,
    }))
}
