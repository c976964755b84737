//! GLM as the next-token model of [`crate::decode`]: each row's Part A (the text with its
//! blanks) and the spans already filled are fixed, the blank being filled is `[sop]` and the
//! tokens generated so far, at the blank's position with block positions 1, 2, 3, ... (GLM's
//! layout in pre-training). [`GlmFill`] recomputes the whole row at every step (the reference);
//! [`GlmCachedFill`] encodes the fixed part once and attends each new token to the cached keys
//! and values, finding every prefix's parent by its tokens, so greedy, sampling and beam search
//! (whose beams reorder) all reuse the cache. [`fill_blanks`] fills several blanks per text
//! left to right, each seeing the ones filled before it (GLM's own order).

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::glm::{Glm, GlmConfig};
use crate::decode::{generate_many, DecodeSettings, Generated, StepModel};

/// One row to fill: Part A's ids, the spans filled before, and where the blank is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BlankRow {
    /// `[CLS]`, the text with its blank tokens, ...
    pub part_a: Vec<i64>,
    /// Blanks filled before this one, in order: each blank's index in `part_a` and its tokens
    /// (Part B spans `[sop] + tokens`, as pre-training laid them out).
    pub filled: Vec<(usize, Vec<i64>)>,
    /// The blank being filled: its index in `part_a`, Part B's position.
    pub blank: usize,
}

impl BlankRow {
    /// A row with one blank and nothing filled yet.
    pub fn new(part_a: Vec<i64>, blank: usize) -> Self {
        BlankRow { part_a, filled: Vec::new(), blank }
    }

    /// The fixed tokens with their positions and block positions: Part A, then each filled
    /// span after its `[sop]`.
    fn fixed(&self, sop: i64) -> impl Iterator<Item = (i64, i64, i64)> + '_ {
        let a = self.part_a.iter().enumerate().map(|(j, &id)| (id, j as i64, 0));
        let spans = self.filled.iter().flat_map(move |(at, toks)| std::iter::once(sop).chain(toks.iter().copied()).enumerate().map(move |(j, id)| (id, *at as i64, j as i64 + 1)));
        a.chain(spans)
    }

    fn fixed_len(&self) -> usize {
        self.part_a.len() + self.filled.iter().map(|(_, t)| t.len() + 1).sum::<usize>()
    }
}

/// GLM filling one blank per row by full recomputation.
pub struct GlmFill<'a> {
    glm: &'a Glm,
    rows: Vec<BlankRow>,
    sop: i64,
    pad: i64,
    device: Device,
}

impl<'a> GlmFill<'a> {
    /// Fills `rows` with `glm` on `device`; `sop` starts Part B, `pad` fills short rows.
    pub fn new(glm: &'a Glm, rows: Vec<BlankRow>, sop: u32, pad: u32, device: Device) -> Self {
        GlmFill { glm, rows, sop: sop as i64, pad: pad as i64, device }
    }

    /// The batch of `(row, generated)` as GLM reads it: ids, positions, block positions, Part A
    /// lengths, and each row's last real index (where the next token is predicted).
    fn batch(&self, prefixes: &[(usize, &[u32])]) -> (Tensor, Tensor, Tensor, Tensor, Vec<i64>) {
        let lens: Vec<usize> = prefixes.iter().map(|(r, g)| self.rows[*r].fixed_len() + 1 + g.len()).collect();
        let t = lens.iter().copied().max().unwrap_or(1);
        let n = prefixes.len();
        let (mut ids, mut pos, mut block) = (vec![self.pad; n * t], vec![0i64; n * t], vec![0i64; n * t]);
        let mut prefix_len = Vec::with_capacity(n);
        for (i, (r, generated)) in prefixes.iter().enumerate() {
            let row = &self.rows[*r];
            let new = std::iter::once(self.sop).chain(generated.iter().map(|&x| x as i64)).enumerate().map(|(j, id)| (id, row.blank as i64, j as i64 + 1));
            for (j, (id, p, b)) in row.fixed(self.sop).chain(new).enumerate() {
                ids[i * t + j] = id;
                pos[i * t + j] = p;
                block[i * t + j] = b;
            }
            prefix_len.push(row.part_a.len() as i64);
        }
        let shape = [n as i64, t as i64];
        let up = |v: Vec<i64>| Tensor::from_slice(&v).view(shape).to_device(self.device);
        let last = lens.iter().enumerate().map(|(i, &l)| (i * t + l - 1) as i64).collect();
        (up(ids), up(pos), up(block), Tensor::from_slice(&prefix_len).to_device(self.device), last)
    }
}

impl StepModel for GlmFill<'_> {
    fn log_probs(&mut self, prefixes: &[(usize, &[u32])]) -> Vec<Vec<f32>> {
        let _guard = tch::no_grad_guard();
        let (ids, pos, block, prefix_len, last) = self.batch(prefixes);
        let h = self.glm.forward(&ids, &pos, &block, &prefix_len, false);
        let h = h.view([-1, h.size()[2]]).index_select(0, &Tensor::from_slice(&last).to_device(self.device));
        next_token_log_probs(self.glm, &h)
    }
}

/// Log-probabilities over the vocabulary of each hidden state `[rows, hidden]`, on the host.
fn next_token_log_probs(glm: &Glm, h: &Tensor) -> Vec<Vec<f32>> {
    let lp = glm.logits(h).log_softmax(-1, Kind::Float).to_device(Device::Cpu).contiguous();
    let v = lp.size()[1] as usize;
    let flat = Vec::<f32>::try_from(lp.view([-1])).expect("a contiguous f32 tensor converts");
    flat.chunks(v).map(<[f32]>::to_vec).collect()
}

/// GLM filling one blank per row with a key / value cache.
pub struct GlmCachedFill<'a> {
    full: GlmFill<'a>,
    cache: Option<Cache>,
}

/// The keys and values of the last call's prefixes.
struct Cache {
    /// `(row, generated)` to its row in the tensors.
    index: HashMap<(usize, Vec<u32>), i64>,
    /// Per layer `[prefixes, heads, T, head_dim]`.
    kv: Vec<(Tensor, Tensor)>,
    /// `[prefixes, T]`: which cached positions are real (short rows are padded).
    key_ok: Tensor,
}

impl<'a> GlmCachedFill<'a> {
    /// As [`GlmFill::new`].
    pub fn new(glm: &'a Glm, rows: Vec<BlankRow>, sop: u32, pad: u32, device: Device) -> Self {
        GlmCachedFill { full: GlmFill::new(glm, rows, sop, pad, device), cache: None }
    }

    /// Encodes the prefixes whole (Part A, `[sop]`, what is generated), keeping the cache.
    fn prefill(&mut self, prefixes: &[(usize, &[u32])]) -> Tensor {
        let f = &self.full;
        let (ids, pos, block, prefix_len, last) = f.batch(prefixes);
        let (h, kv) = f.glm.prefill(&ids, &pos, &block, &prefix_len);
        let (n, t) = ids.size2().expect("[prefixes, T]");
        let lens: Vec<i64> = last.iter().enumerate().map(|(i, &l)| l - i as i64 * t + 1).collect();
        let key_ok = Tensor::arange(t, (Kind::Int64, f.device)).unsqueeze(0).lt_tensor(&Tensor::from_slice(&lens).to_device(f.device).unsqueeze(1));
        let at = Tensor::from_slice(&last).to_device(f.device);
        self.remember(prefixes, kv, key_ok);
        h.view([n * t, -1]).index_select(0, &at)
    }

    fn remember(&mut self, prefixes: &[(usize, &[u32])], kv: Vec<(Tensor, Tensor)>, key_ok: Tensor) {
        let index = prefixes.iter().enumerate().map(|(i, (r, g))| ((*r, g.to_vec()), i as i64)).collect();
        self.cache = Some(Cache { index, kv, key_ok });
    }

    /// Each prefix's last token on its parent's cached keys and values; `None` when a parent is
    /// not cached (the first step, or a caller that jumped).
    fn extend(&mut self, prefixes: &[(usize, &[u32])]) -> Option<Tensor> {
        let cache = self.cache.as_ref()?;
        let f = &self.full;
        let mut parents = Vec::with_capacity(prefixes.len());
        let (mut ids, mut pos, mut block) = (Vec::new(), Vec::new(), Vec::new());
        for (r, g) in prefixes {
            let (&last, before) = g.split_last()?;
            parents.push(*cache.index.get(&(*r, before.to_vec()))?);
            ids.push(last as i64);
            pos.push(f.rows[*r].blank as i64);
            block.push(g.len() as i64 + 1);
        }
        let n = prefixes.len() as i64;
        let at = Tensor::from_slice(&parents).to_device(f.device);
        let mut kv: Vec<(Tensor, Tensor)> = cache.kv.iter().map(|(k, v)| (k.index_select(0, &at), v.index_select(0, &at))).collect();
        let key_ok = cache.key_ok.index_select(0, &at);
        let col = |v: Vec<i64>| Tensor::from_slice(&v).view([n, 1]).to_device(f.device);
        let h = f.glm.extend(&col(ids), &col(pos), &col(block), &key_ok, &mut kv);
        let key_ok = Tensor::cat(&[key_ok, Tensor::ones([n, 1], (Kind::Bool, f.device))], 1);
        self.remember(prefixes, kv, key_ok);
        Some(h.squeeze_dim(1))
    }
}

impl StepModel for GlmCachedFill<'_> {
    fn log_probs(&mut self, prefixes: &[(usize, &[u32])]) -> Vec<Vec<f32>> {
        let _guard = tch::no_grad_guard();
        let h = match self.extend(prefixes) {
            Some(h) => h,
            None => self.prefill(prefixes),
        };
        next_token_log_probs(self.full.glm, &h)
    }
}

/// GLM's special ids decoding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillIds {
    /// Starts each Part B span.
    pub sop: u32,
    /// Ends a span.
    pub eop: u32,
    /// Pads short rows.
    pub pad: u32,
}

/// Fills every blank of every text: `texts` are Part A's ids with the blanks' indices, in
/// order. The k-th blanks of all texts that have one are decoded together, each text's Part B
/// holding its blanks filled so far (GLM's order: left to right, each seeing those before it).
/// `settings.kv_cache` picks [`GlmCachedFill`] or [`GlmFill`]; a blank ends at `[eop]` or at
/// `max_new_tokens`. One filling per text (see [`fill_blanks_many`]).
pub fn fill_blanks(glm: &Glm, texts: &[(Vec<i64>, Vec<usize>)], ids: FillIds, settings: &DecodeSettings, device: Device) -> Vec<Vec<Generated>> {
    let one = DecodeSettings { num_return_sequences: 1, ..settings.clone() };
    fill_blanks_many(glm, texts, ids, &one, device).into_iter().map(|mut t| t.swap_remove(0)).collect()
}

/// [`fill_blanks`] with `settings.num_return_sequences` fillings per text, `[text][filling]
/// [blank]`: filling j takes the j-th output of the first blank (beam search's j-th best
/// hypothesis, or the j-th sample), then each later blank decoded on top of it (the best
/// continuation, or a sample of its own).
pub fn fill_blanks_many(glm: &Glm, texts: &[(Vec<i64>, Vec<usize>)], ids: FillIds, settings: &DecodeSettings, device: Device) -> Vec<Vec<Vec<Generated>>> {
    // As many texts at once as the memory left holds (a wide beam search decodes fewer at a
    // time, one at least: `check_decode_memory` refused what one alone cannot fit).
    let per_text = texts.iter().map(|(a, blanks)| decode_bytes_per_input(glm.config(), widest_fixed_len(a.len(), blanks.len(), settings), settings)).max().unwrap_or(1);
    let at_once = crate::memory::available_bytes().map_or(texts.len(), |free| inputs_at_once(per_text, free, texts.len()));
    texts.chunks(at_once.max(1)).flat_map(|chunk| fill_together(glm, chunk, ids, settings, device)).collect()
}

fn fill_together(glm: &Glm, texts: &[(Vec<i64>, Vec<usize>)], ids: FillIds, settings: &DecodeSettings, device: Device) -> Vec<Vec<Vec<Generated>>> {
    let decode = |rows: Vec<BlankRow>, keys: &[Vec<u64>], s: &DecodeSettings| {
        if s.kv_cache {
            generate_many(&mut GlmCachedFill::new(glm, rows, ids.sop, ids.pad, device), keys, ids.eop, s)
        } else {
            generate_many(&mut GlmFill::new(glm, rows, ids.sop, ids.pad, device), keys, ids.eop, s)
        }
    };
    // A text's draws are keyed by the text, the blank and the filling, not by its place in the
    // batch.
    let key = |i: usize, k: usize, j: usize| -> Vec<u64> {
        let text = &texts[i].0;
        let mut key: Vec<u64> = std::iter::once(text.len() as u64).chain(text.iter().map(|&t| t as u64)).chain([k as u64]).collect();
        if j > 0 {
            key.extend([u64::MAX, j as u64]);
        }
        key
    };
    // The first blank: every filling's start at once.
    let first: Vec<usize> = (0..texts.len()).filter(|&i| !texts[i].1.is_empty()).collect();
    let rows = first.iter().map(|&i| BlankRow::new(texts[i].0.clone(), texts[i].1[0])).collect();
    let keys: Vec<Vec<u64>> = first.iter().map(|&i| key(i, 0, 0)).collect();
    let mut out: Vec<Vec<Vec<Generated>>> = vec![vec![Vec::new()]; texts.len()];
    for (i, starts) in first.into_iter().zip(decode(rows, &keys, settings)) {
        out[i] = starts.into_iter().map(|g| vec![g]).collect();
    }
    // Each later blank on top of each filling's blanks so far.
    let one = DecodeSettings { num_return_sequences: 1, ..settings.clone() };
    let most = texts.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    for k in 1..most {
        let active: Vec<(usize, usize)> = (0..texts.len()).filter(|&i| texts[i].1.len() > k).flat_map(|i| (0..out[i].len()).map(move |j| (i, j))).collect();
        let rows: Vec<BlankRow> = active
            .iter()
            .map(|&(i, j)| {
                let (part_a, blanks) = &texts[i];
                let filled = blanks.iter().zip(&out[i][j]).map(|(&at, g)| (at, g.tokens.iter().map(|&t| t as i64).collect())).collect();
                BlankRow { part_a: part_a.clone(), filled, blank: blanks[k] }
            })
            .collect();
        let keys: Vec<Vec<u64>> = active.iter().map(|&(i, j)| key(i, k, j)).collect();
        for ((i, j), mut g) in active.into_iter().zip(decode(rows, &keys, &one)) {
            out[i][j].push(g.swap_remove(0));
        }
    }
    out
}

/// The most fixed tokens a row of a text holds: Part A and, filling its last blank, every
/// span before it at its longest (`[sop]` and `max_new_tokens`).
pub fn widest_fixed_len(part_a: usize, blanks: usize, s: &DecodeSettings) -> usize {
    part_a.saturating_add(blanks.saturating_sub(1).saturating_mul(s.max_new_tokens.saturating_add(1)))
}

/// Host memory one input's decoding takes at its widest step, in bytes, for `fixed_len`
/// fixed tokens (Part A and the spans filled before). Live, per beam: the next-token
/// log-probabilities (the logits, their log-softmax and two host copies: 16 bytes a vocabulary
/// entry) and either its keys and values (cached: the cache, the parents' gathered copy and the
/// extended one, three times layers × 2 × T × hidden floats) or one layer's activations over
/// its T tokens (recomputing). Twice that: the allocator keeps freed pages a while (jemalloc's
/// decay) and every step's tensors are a little longer, so the peak resident memory measured
/// was 1.25-1.7× the live figure (the tiny GLM, 16 inputs × 50, 100, 200 beams).
pub fn decode_bytes_per_input(config: &GlmConfig, fixed_len: usize, s: &DecodeSettings) -> u64 {
    let t = (fixed_len as u64).saturating_add(1).saturating_add(s.max_new_tokens as u64);
    let [v, h, layers, inner, heads] = [config.vocab_size, config.hidden_size, config.num_layers, config.intermediate_size, config.num_attention_heads].map(|x| x.max(0) as u64);
    let log_probs = 16 * v;
    let state = if s.kv_cache { 3 * layers * 2 * t * h * 4 } else { 4 * t * (8 * h + 2 * inner + 2 * heads * t) };
    (decode_rows(s) as u64).saturating_mul(log_probs.saturating_add(state)).saturating_mul(2)
}

/// Rows one input decodes as: its beams, or its samples.
fn decode_rows(s: &DecodeSettings) -> usize {
    s.num_beams.max(if s.do_sample { s.num_return_sequences } else { 1 })
}

/// How many inputs to decode at once: those whose estimate fits three quarters of `free`
/// (the rest for everything else the process holds), at least one, at most `most`.
pub fn inputs_at_once(per_input: u64, free: u64, most: usize) -> usize {
    let fit = (free / 4 * 3) / per_input.max(1);
    usize::try_from(fit).unwrap_or(usize::MAX).clamp(1, most.max(1))
}

/// One input's decoding would not fit the memory left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{setting} = {rows}: decoding one input needs about {} of memory, more than the {} decoding may take (three quarters of the {} available): lower {}",
    crate::memory::human(*need),
    crate::memory::human(free / 4 * 3),
    crate::memory::human(*free),
    if *rows > 1 { setting } else { "generate.max_new_tokens or the input's length" }
)]
pub struct DecodeMemoryError {
    /// What sets the rows one input decodes as: `generate.num_beams`, or
    /// `generate.num_return_sequences` when sampling.
    pub setting: &'static str,
    /// Those rows.
    pub rows: usize,
    /// The estimate for one input, in bytes.
    pub need: u64,
    /// What the process may still allocate, in bytes.
    pub free: u64,
}

/// Refuses settings under which one input alone would not fit the memory left. `Ok` where the
/// kernel does not say.
///
/// # Errors
/// [`DecodeMemoryError`] with the sizes.
pub fn check_decode_memory(config: &GlmConfig, fixed_len: usize, s: &DecodeSettings) -> Result<(), DecodeMemoryError> {
    match crate::memory::available_bytes() {
        Some(free) => decode_fits(decode_bytes_per_input(config, fixed_len, s), free, s),
        None => Ok(()),
    }
}

/// [`check_decode_memory`]'s rule, pure.
fn decode_fits(need: u64, free: u64, s: &DecodeSettings) -> Result<(), DecodeMemoryError> {
    let setting = if s.do_sample && s.num_return_sequences > s.num_beams { "generate.num_return_sequences" } else { "generate.num_beams" };
    if need <= free / 4 * 3 { Ok(()) } else { Err(DecodeMemoryError { setting, rows: decode_rows(s), need, free }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::generate;
    use tch::nn;

    fn tiny() -> (nn::VarStore, Glm) {
        let cfg = GlmConfig {
            vocab_size: 40,
            hidden_size: 16,
            num_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 32,
            max_sequence_length: 33,
            hidden_dropout: 0.0,
            attention_dropout: 0.0,
            layernorm_epsilon: 1e-5,
            init_method_std: 0.5,
            explicit_attention: false,
        };
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let glm = Glm::new(&vs.root(), &cfg);
        (vs, glm)
    }

    /// What each decoding step saw equals one teacher-forced pass over the finished row (Part B
    /// is causal: a position never sees what comes after it), and rows decoded together equal
    /// rows decoded alone (padding changes nothing).
    #[test]
    fn step_logits_equal_a_teacher_forced_pass_and_rows_are_independent() {
        let (_vs, glm) = tiny();
        let (sop, eop, pad) = (5u32, 6u32, 0u32);
        let rows = vec![BlankRow::new(vec![1, 10, 11, 2, 12], 3), BlankRow::new(vec![1, 2, 13, 14, 15, 16, 17], 1)];
        let s = DecodeSettings { max_new_tokens: 6, ..Default::default() };
        let mut steps: Vec<Vec<Vec<f32>>> = vec![Vec::new(); rows.len()];
        let mut fill = GlmFill::new(&glm, rows.clone(), sop, pad, Device::Cpu);
        let mut recording = |p: &[(usize, &[u32])]| {
            let out = fill.log_probs(p);
            for ((r, _), lp) in p.iter().zip(&out) {
                steps[*r].push(lp.clone());
            }
            out
        };
        let together = generate(&mut recording, rows.len(), eop, &s);
        for (r, g) in together.iter().enumerate() {
            let alone = generate(&mut GlmFill::new(&glm, vec![rows[r].clone()], sop, pad, Device::Cpu), 1, eop, &s);
            assert_eq!(alone[0].tokens, g.tokens, "row {r}: decoded alone");
            // The whole row once: the prediction after `[sop] y_1 .. y_j` for every j.
            let mut forced = GlmFill::new(&glm, vec![rows[r].clone()], sop, pad, Device::Cpu);
            for (j, want) in steps[r].iter().enumerate() {
                let got = forced.log_probs(&[(0, &g.tokens[..j])]).remove(0);
                let d = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(d < 1e-5, "row {r}, step {j}: {d}");
            }
            let (ids, pos, block, prefix, _) = forced.batch(&[(0, &g.tokens)]);
            let h = tch::no_grad(|| glm.forward(&ids, &pos, &block, &prefix, false));
            let a = rows[r].part_a.len() as i64;
            let lp = glm.logits(&h.get(0).narrow(0, a, steps[r].len() as i64)).log_softmax(-1, Kind::Float);
            for (j, want) in steps[r].iter().enumerate() {
                let got = Vec::<f32>::try_from(lp.get(j as i64)).unwrap();
                let d = got.iter().zip(want).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(d < 1e-5, "row {r}: teacher-forced position {j} differs by {d}");
            }
            let positions = Vec::<i64>::try_from(pos.get(0)).unwrap();
            assert!(positions[a as usize..].iter().all(|&p| p == rows[r].blank as i64), "Part B sits at the blank: {positions:?}");
        }
    }

    /// The cached path decodes exactly what full recomputation decodes, greedy and with beams
    /// (whose beams reorder), and every step's log-probabilities agree within 1e-5.
    #[test]
    fn the_key_value_cache_gives_the_full_recomputations_logits_and_outputs() {
        let (_vs, glm) = tiny();
        let (sop, eop, pad) = (5u32, 6u32, 0u32);
        // The last row fills its second blank after its first (a filled span in Part B).
        let rows = vec![
            BlankRow::new(vec![1, 10, 11, 2, 12], 3),
            BlankRow::new(vec![1, 2, 13, 14, 15, 16, 17], 1),
            BlankRow { part_a: vec![1, 2, 20, 3], filled: vec![(1, vec![30, 31])], blank: 3 },
        ];
        for s in [DecodeSettings { max_new_tokens: 7, ..Default::default() }, DecodeSettings { max_new_tokens: 7, num_beams: 4, no_repeat_ngram_size: 2, ..Default::default() }] {
            let mut full = GlmFill::new(&glm, rows.clone(), sop, pad, Device::Cpu);
            let mut cached = GlmCachedFill::new(&glm, rows.clone(), sop, pad, Device::Cpu);
            let (mut worst, mut steps) = (0.0f32, 0);
            let mut both = |p: &[(usize, &[u32])]| {
                let (a, b) = (full.log_probs(p), cached.log_probs(p));
                for (x, y) in a.iter().zip(&b) {
                    worst = worst.max(x.iter().zip(y).map(|(u, w)| (u - w).abs()).fold(0.0, f32::max));
                }
                steps += 1;
                b
            };
            let with_cache = generate(&mut both, rows.len(), eop, &s);
            assert!(steps > 2 && worst < 1e-5, "{steps} steps, the paths differ by up to {worst} ({s:?})");
            let without = generate(&mut GlmFill::new(&glm, rows.clone(), sop, pad, Device::Cpu), rows.len(), eop, &s);
            // The same tokens; the scores sum the same log-probabilities up to float noise.
            let tokens = |g: &[crate::decode::Generated]| g.iter().map(|x| (x.tokens.clone(), x.ended)).collect::<Vec<_>>();
            assert_eq!(tokens(&with_cache), tokens(&without), "{s:?}");
            assert!(with_cache.iter().zip(&without).all(|(a, b)| (a.score - b.score).abs() < 1e-5), "{s:?}");
        }
    }

    /// Several blanks per text are filled left to right, the later ones seeing the earlier
    /// ones' tokens in Part B; texts with fewer blanks stop early; with and without the cache
    /// the same tokens come out.
    #[test]
    fn blanks_fill_left_to_right_each_seeing_the_ones_before() {
        let (_vs, glm) = tiny();
        let ids = FillIds { sop: 5, eop: 6, pad: 0 };
        let texts = vec![(vec![1i64, 10, 2, 11, 12, 3, 13], vec![2usize, 5]), (vec![1, 14, 4], vec![2])];
        let s = DecodeSettings { max_new_tokens: 4, ..Default::default() };
        let filled = fill_blanks(&glm, &texts, ids, &s, Device::Cpu);
        assert_eq!(filled.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
        let uncached = fill_blanks(&glm, &texts, ids, &DecodeSettings { kv_cache: false, ..s.clone() }, Device::Cpu);
        let tokens = |v: &[Vec<Generated>]| v.iter().map(|b| b.iter().map(|g| (g.tokens.clone(), g.ended)).collect::<Vec<_>>()).collect::<Vec<_>>();
        assert_eq!(tokens(&filled), tokens(&uncached));
        // The second blank by hand: Part B holds the first blank's span.
        let first: Vec<i64> = filled[0][0].tokens.iter().map(|&t| t as i64).collect();
        let row = BlankRow { part_a: texts[0].0.clone(), filled: vec![(2, first)], blank: 5 };
        let by_hand = generate(&mut GlmFill::new(&glm, vec![row.clone()], ids.sop, ids.pad, Device::Cpu), 1, ids.eop, &s);
        assert_eq!(by_hand[0].tokens, filled[0][1].tokens);
        // ... and it sees it: without the first span the second blank's first step differs.
        let with = GlmFill::new(&glm, vec![row.clone()], ids.sop, ids.pad, Device::Cpu).log_probs(&[(0, &[])]).remove(0);
        let without = GlmFill::new(&glm, vec![BlankRow { filled: Vec::new(), ..row }], ids.sop, ids.pad, Device::Cpu).log_probs(&[(0, &[])]).remove(0);
        assert!(with.iter().zip(&without).any(|(a, b)| (a - b).abs() > 1e-4));
    }

    /// Decoding texts in smaller groups (a batch size, or a wide beam search when memory is
    /// short) or in another order gives each text the same tokens, beams and samples alike (a
    /// text's draws are keyed by the text, not by its place in the batch).
    #[test]
    fn texts_decoded_in_groups_or_another_order_equal_texts_decoded_together() {
        let (_vs, glm) = tiny();
        let ids = FillIds { sop: 5, eop: 6, pad: 0 };
        let texts = vec![(vec![1i64, 10, 2, 11, 12, 3, 13], vec![2usize, 5]), (vec![1, 14, 4], vec![2]), (vec![1, 15, 16, 2, 17], vec![3])];
        let tokens = |v: Vec<Vec<Generated>>| v.into_iter().map(|b| b.into_iter().map(|g| (g.tokens, g.ended)).collect::<Vec<_>>()).collect::<Vec<_>>();
        let fill_together = |texts: &[(Vec<i64>, Vec<usize>)], ids: FillIds, s: &DecodeSettings| fill_together(&glm, texts, ids, s, Device::Cpu).into_iter().map(|mut t| t.swap_remove(0)).collect::<Vec<_>>();
        let sampling = DecodeSettings { max_new_tokens: 6, do_sample: true, temperature: 2.0, seed: 3, ..Default::default() };
        for s in [DecodeSettings { max_new_tokens: 5, num_beams: 3, ..Default::default() }, sampling.clone()] {
            let together = tokens(fill_together(&texts, ids, &s));
            let alone = tokens(texts.chunks(1).flat_map(|c| fill_together(c, ids, &s)).collect());
            assert_eq!(together, alone, "{s:?}");
            let reversed: Vec<_> = texts.iter().rev().cloned().collect();
            let mut back = tokens(fill_together(&reversed, ids, &s));
            back.reverse();
            assert_eq!(back, together, "{s:?}");
            assert_eq!(tokens(fill_blanks(&glm, &texts, ids, &s, Device::Cpu)), together);
        }
        // ... and the seed is what draws: another one draws otherwise.
        let other = tokens(fill_together(&texts, ids, &DecodeSettings { seed: 4, ..sampling.clone() }));
        assert_ne!(other, tokens(fill_together(&texts, ids, &sampling)));
    }

    /// The estimate grows with the beams; the inputs decoded at once fit three quarters of
    /// what is free (one at least); one input that cannot fit is refused with its numbers.
    #[test]
    fn decoding_is_sized_to_the_memory_left() {
        let (_vs, glm) = tiny();
        let cfg = glm.config();
        let s = DecodeSettings { num_beams: 8, max_new_tokens: 10, ..Default::default() };
        let one = decode_bytes_per_input(cfg, 20, &s);
        assert_eq!(decode_bytes_per_input(cfg, 20, &DecodeSettings { num_beams: 16, ..s.clone() }), 2 * one);
        assert!(decode_bytes_per_input(cfg, 40, &s) > one, "a longer row holds more keys and values");
        assert!(decode_bytes_per_input(cfg, 20, &DecodeSettings { num_beams: usize::MAX, ..s.clone() }) == u64::MAX, "saturates, never wraps");
        assert_eq!(inputs_at_once(one, one * 100, 16), 16);
        assert_eq!(inputs_at_once(one, one * 8, 16), 6);
        assert_eq!(inputs_at_once(one, one / 2, 16), 1);
        assert_eq!(inputs_at_once(0, 10, 0), 1);
        assert!(decode_fits(one, one * 2, &s).is_ok());
        let e = decode_fits(4 << 30, 2 << 30, &s).unwrap_err().to_string();
        assert_eq!(e, "generate.num_beams = 8: decoding one input needs about 4.0 GiB of memory, more than the 1.5 GiB decoding may take (three quarters of the 2.0 GiB available): lower generate.num_beams");
        let greedy = decode_fits(4 << 30, 2 << 30, &DecodeSettings { num_beams: 1, ..s }).unwrap_err().to_string();
        assert!(greedy.ends_with("lower generate.max_new_tokens or the input's length"), "{greedy}");
        assert_eq!(widest_fixed_len(7, 3, &DecodeSettings { max_new_tokens: 4, ..Default::default() }), 7 + 2 * 5);
        // Samples are rows too: eight samples hold what eight beams hold, and are named.
        let samples = DecodeSettings { num_beams: 1, do_sample: true, num_return_sequences: 8, ..s.clone() };
        assert_eq!(decode_bytes_per_input(cfg, 20, &samples), one);
        let e = decode_fits(4 << 30, 2 << 30, &samples).unwrap_err().to_string();
        assert!(e.starts_with("generate.num_return_sequences = 8: ") && e.ends_with("lower generate.num_return_sequences"), "{e}");
    }
}
