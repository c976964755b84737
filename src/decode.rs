//! Decoding strategies as pure policies over a next-token model: greedy search, beam search
//! with `transformers`' semantics, and seeded sampling (temperature, top-k, top-p), for many
//! inputs at once. The model is anything that gives log-probabilities of the next token for a
//! batch of (input row, tokens generated so far); GLM's blank filling plugs in there (its
//! Part A fixed per row), and the tests plug in a toy model whose every continuation can be
//! enumerated (exhaustive search is the beam search's oracle).
//!
//! Lengths count the new tokens, the end token included: a hypothesis that ends after `n` tokens
//! and the end token scores `sum of log-probs / (n + 1) ^ length_penalty`; one cut at
//! `max_new_tokens` scores over its `max_new_tokens` tokens.

use crate::rng::{Purpose, Rng};

/// `[generate]`: how new tokens are chosen.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeSettings {
    /// The most new tokens per input (the end token included).
    pub max_new_tokens: usize,
    /// The end token is forbidden before this many new tokens.
    pub min_new_tokens: usize,
    /// Beams per input (1: greedy, or sampling with `do_sample`).
    pub num_beams: usize,
    /// Exponent of the length a finished hypothesis's log-probability is divided by.
    pub length_penalty: f64,
    /// Beam search stops as soon as `num_beams` hypotheses have finished (`true`), or when no
    /// running beam can still beat the worst finished one by `transformers`' estimate (`false`).
    pub early_stopping: bool,
    /// No n-gram of this size occurs twice in what is generated (0: off).
    pub no_repeat_ngram_size: usize,
    /// Sample the next token instead of taking the most likely (with `num_beams = 1`).
    pub do_sample: bool,
    /// Divides the logits before sampling.
    pub temperature: f64,
    /// Sample among the `top_k` most likely tokens only (0: all).
    pub top_k: usize,
    /// Sample among the fewest most likely tokens whose probabilities sum to `top_p` (1: all).
    pub top_p: f64,
    /// Sampling seed: the same seed draws the same tokens.
    pub seed: u64,
    /// Attend each new token to cached keys and values (`false`: recompute every prefix
    /// whole, the reference the cache is checked against; the outputs are the same).
    pub kv_cache: bool,
    /// Outputs per input: beam search's best finished hypotheses (at most `num_beams`), or
    /// independent samples; greedy search has one.
    pub num_return_sequences: usize,
}

impl Default for DecodeSettings {
    fn default() -> Self {
        DecodeSettings {
            max_new_tokens: 32,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: false,
            no_repeat_ngram_size: 0,
            do_sample: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            kv_cache: true,
            num_return_sequences: 1,
        }
    }
}

impl DecodeSettings {
    /// Settings that cannot decode, each with its key.
    pub fn problems(&self) -> Vec<String> {
        [
            (self.max_new_tokens > 0, "generate.max_new_tokens: must be positive"),
            (self.min_new_tokens <= self.max_new_tokens, "generate.min_new_tokens: must not exceed generate.max_new_tokens"),
            (self.num_beams > 0, "generate.num_beams: must be positive"),
            (self.length_penalty.is_finite(), "generate.length_penalty: must be finite"),
            (self.temperature > 0.0 && self.temperature.is_finite(), "generate.temperature: must be positive"),
            (self.top_p > 0.0 && self.top_p <= 1.0, "generate.top_p: must be in (0, 1]"),
            (!(self.do_sample && self.num_beams > 1), "generate.do_sample: samples with num_beams = 1 (beam sampling is not built)"),
            (self.num_return_sequences > 0, "generate.num_return_sequences: must be positive"),
            (self.num_return_sequences <= self.num_beams || self.do_sample, "generate.num_return_sequences: at most generate.num_beams (beam search returns its best finished hypotheses; greedy search has one, sampling draws any number)"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, m)| m.to_owned())
        .collect()
    }
}

/// The next-token model: log-probabilities over the vocabulary (`log_softmax`ed) for each
/// `(input row, tokens generated so far)`, in order.
pub trait StepModel {
    /// One row of log-probabilities per prefix.
    fn log_probs(&mut self, prefixes: &[(usize, &[u32])]) -> Vec<Vec<f32>>;
}

impl<F: FnMut(&[(usize, &[u32])]) -> Vec<Vec<f32>>> StepModel for F {
    fn log_probs(&mut self, prefixes: &[(usize, &[u32])]) -> Vec<Vec<f32>> {
        self(prefixes)
    }
}

/// What was generated for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The new tokens, without the end token.
    pub tokens: Vec<u32>,
    /// Whether it ended with the end token (else it reached `max_new_tokens`).
    pub ended: bool,
    /// Sum of the chosen tokens' log-probabilities (the end token's included).
    pub sum_logprobs: f64,
    /// The length-normalised score beam search ranks by.
    pub score: f64,
}

/// Generates for `inputs` rows with `settings`; `eos` ends a hypothesis. A row's sampling
/// draws are keyed by its index (see [`generate_keyed`]).
pub fn generate(model: &mut dyn StepModel, inputs: usize, eos: u32, settings: &DecodeSettings) -> Vec<Generated> {
    let keys: Vec<Vec<u64>> = (0..inputs as u64).map(|r| vec![r]).collect();
    generate_keyed(model, &keys, eos, settings)
}

/// Generates for one row per key; a row's sampling draws are keyed by `settings.seed`, its key
/// and the step, so what a row draws does not depend on which rows are decoded beside it (a
/// batch size, or the memory left, changes nothing). Keys are the input itself where the
/// caller has no stable index (GLM: the text's tokens and the blank). One output per row:
/// the best (see [`generate_many`]).
pub fn generate_keyed(model: &mut dyn StepModel, keys: &[Vec<u64>], eos: u32, settings: &DecodeSettings) -> Vec<Generated> {
    let one = DecodeSettings { num_return_sequences: 1, ..settings.clone() };
    generate_many(model, keys, eos, &one).into_iter().map(|mut g| g.swap_remove(0)).collect()
}

/// [`generate_keyed`] with `settings.num_return_sequences` outputs per row: beam search's best
/// finished hypotheses, best first, or independent samples (the first drawn as a single
/// sample would be: its key is the row's; the others' add their index).
pub fn generate_many(model: &mut dyn StepModel, keys: &[Vec<u64>], eos: u32, settings: &DecodeSettings) -> Vec<Vec<Generated>> {
    let n = settings.num_return_sequences.max(1);
    if settings.num_beams > 1 {
        return beam_search(model, keys.len(), eos, settings).into_iter().map(|mut best| {
            best.truncate(n);
            best
        }).collect();
    }
    if n == 1 {
        return sample_or_greedy(model, keys, eos, settings).into_iter().map(|g| vec![g]).collect();
    }
    // n samples per row: n rows per input, each asking the model about its input's row.
    let copies: Vec<Vec<u64>> = keys.iter().flat_map(|k| (0..n as u64).map(move |j| if j == 0 { k.clone() } else { k.iter().copied().chain([u64::MAX, j]).collect() })).collect();
    let mut of_input = |prefixes: &[(usize, &[u32])]| {
        let asked: Vec<(usize, &[u32])> = prefixes.iter().map(|&(r, p)| (r / n, p)).collect();
        model.log_probs(&asked)
    };
    let mut all = sample_or_greedy(&mut of_input, &copies, eos, settings).into_iter();
    (0..keys.len()).map(|_| all.by_ref().take(n).collect()).collect()
}

fn score(sum: f64, len: usize, length_penalty: f64) -> f64 {
    sum / (len.max(1) as f64).powf(length_penalty)
}

/// The processors `transformers` applies before choosing: the end token masked before
/// `min_new_tokens`, tokens that would repeat an n-gram masked.
fn process(lp: &mut [f32], prefix: &[u32], eos: u32, s: &DecodeSettings) {
    if prefix.len() < s.min_new_tokens {
        if let Some(x) = lp.get_mut(eos as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
    let n = s.no_repeat_ngram_size;
    if n > 0 && prefix.len() + 1 >= n {
        let tail = &prefix[prefix.len() + 1 - n..];
        for w in prefix.windows(n) {
            if w[..n - 1] == *tail {
                if let Some(x) = lp.get_mut(w[n - 1] as usize) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0
}

/// The token to take: the most likely, or one drawn from the temperature-scaled, top-k and
/// top-p filtered distribution (`draw` in [0, 1)). Only what the filters need is sorted: top-k
/// selects its k, top-p sorts a head of the best tokens that grows until it holds the mass p,
/// and without top-p the draw walks the tokens in the order they are held (a full sort of the
/// vocabulary per row per step cost three times the model's step on a 8k vocabulary).
fn choose(lp: &[f32], s: &DecodeSettings, draw: f64) -> usize {
    if !s.do_sample {
        return argmax(lp);
    }
    let mut order: Vec<usize> = (0..lp.len()).filter(|&i| lp[i].is_finite()).collect();
    if order.is_empty() {
        return argmax(lp);
    }
    let best_first = |a: &usize, b: &usize| lp[*b].total_cmp(&lp[*a]).then(a.cmp(b));
    if s.top_k > 0 && order.len() > s.top_k {
        order.select_nth_unstable_by(s.top_k, best_first);
        order.truncate(s.top_k);
    }
    let top = order.iter().map(|&i| lp[i]).fold(f32::NEG_INFINITY, f32::max) as f64;
    let weight = |i: usize| ((lp[i] as f64 - top) / s.temperature).exp();
    let total: f64 = order.iter().map(|&i| weight(i)).sum();
    let kept = if s.top_p < 1.0 {
        // top-p on the tempered distribution: the fewest best tokens whose mass reaches p.
        let mut head = order.len().min(64);
        loop {
            if head < order.len() {
                order.select_nth_unstable_by(head, best_first);
            }
            order[..head].sort_by(best_first);
            let mut mass = 0.0;
            let reached = order[..head].iter().position(|&i| {
                mass += weight(i) / total;
                mass >= s.top_p
            });
            match reached {
                Some(k) => break k + 1,
                None if head == order.len() => break head,
                None => head = (head * 4).min(order.len()),
            }
        }
    } else {
        order.len()
    };
    let kept_mass: f64 = if kept == order.len() { total } else { order[..kept].iter().map(|&i| weight(i)).sum() };
    let mut at = draw * kept_mass;
    for &i in &order[..kept] {
        let w = weight(i);
        if at < w {
            return i;
        }
        at -= w;
    }
    order[kept - 1]
}

fn sample_or_greedy(model: &mut dyn StepModel, keys: &[Vec<u64>], eos: u32, s: &DecodeSettings) -> Vec<Generated> {
    let inputs = keys.len();
    let mut draw_key = Vec::new();
    let mut out: Vec<Generated> = (0..inputs).map(|_| Generated { tokens: Vec::new(), ended: false, sum_logprobs: 0.0, score: 0.0 }).collect();
    for step in 0..s.max_new_tokens {
        let live: Vec<usize> = (0..inputs).filter(|&r| !out[r].ended).collect();
        if live.is_empty() {
            break;
        }
        let prefixes: Vec<(usize, &[u32])> = live.iter().map(|&r| (r, out[r].tokens.as_slice())).collect();
        let mut rows = model.log_probs(&prefixes);
        let mut picks = Vec::with_capacity(live.len());
        for (&r, lp) in live.iter().zip(rows.iter_mut()) {
            process(lp, &out[r].tokens, eos, s);
            draw_key.clear();
            draw_key.extend_from_slice(&keys[r]);
            draw_key.push(step as u64);
            let draw = Rng::keyed(s.seed, Purpose::Sample, &draw_key).next_f64();
            let t = choose(lp, s, draw);
            picks.push((r, t, lp[t] as f64));
        }
        for (r, t, l) in picks {
            let g = &mut out[r];
            g.sum_logprobs += l;
            if t as u32 == eos {
                g.ended = true;
            } else {
                g.tokens.push(t as u32);
            }
        }
    }
    for g in &mut out {
        g.score = score(g.sum_logprobs, g.tokens.len() + usize::from(g.ended), s.length_penalty);
    }
    out
}

/// One input's beams and finished hypotheses.
#[derive(Default)]
struct Beams {
    running: Vec<(Vec<u32>, f64)>,
    finished: Vec<Generated>,
    done: bool,
}

impl Beams {
    /// Whether no running beam can still enter the best `num_beams` (`transformers`'
    /// `BeamHypotheses.is_done`).
    fn is_done(&self, best_running: f64, len: usize, s: &DecodeSettings) -> bool {
        if self.finished.len() < s.num_beams {
            return false;
        }
        if s.early_stopping {
            return true;
        }
        let worst = self.finished.iter().map(|g| g.score).fold(f64::INFINITY, f64::min);
        worst >= score(best_running, len, s.length_penalty)
    }

    fn add(&mut self, g: Generated, num_beams: usize) {
        self.finished.push(g);
        if self.finished.len() > num_beams {
            let worst = (0..self.finished.len()).min_by(|&a, &b| self.finished[a].score.total_cmp(&self.finished[b].score)).expect("not empty");
            self.finished.remove(worst);
        }
    }
}

/// The tokens of one beam's `n` best continuations (finite log-probabilities only), in the
/// order beam search ranks candidates: the summed log-probability `base + lp[t]` (computed as
/// the ranking computes it, so a tie that rounding makes is broken the same way), then the lower
/// token. Unordered. The `n`-th best log-probability is found first among plain floats (a
/// selection over the vocabulary with index lookups cost more than the model); every token
/// whose sum reaches that one's is a candidate (the sum never falls as the log-probability
/// grows, so the best `n` are among them), and the exact order picks among those few.
/// `scratch` is reused across calls.
fn best_continuations<'a>(lp: &[f32], base: f64, n: usize, scratch: &'a mut Scratch) -> &'a [u32] {
    let Scratch { tokens, values } = scratch;
    tokens.clear();
    values.clear();
    values.extend(lp.iter().copied().filter(|x| x.is_finite()));
    if n == 0 || values.is_empty() {
        return tokens;
    }
    let floor = if values.len() > n { base + *values.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a)).1 as f64 } else { f64::NEG_INFINITY };
    tokens.extend((0..lp.len() as u32).filter(|&t| lp[t as usize].is_finite() && base + lp[t as usize] as f64 >= floor));
    if tokens.len() > n {
        let key = |t: u32| base + lp[t as usize] as f64;
        tokens.select_nth_unstable_by(n, |a, c| key(*c).total_cmp(&key(*a)).then(a.cmp(c)));
        tokens.truncate(n);
    }
    tokens
}

/// Buffers [`best_continuations`] reuses.
#[derive(Default)]
struct Scratch {
    tokens: Vec<u32>,
    values: Vec<f32>,
}

/// Each input's finished hypotheses, best first (one at least).
fn beam_search(model: &mut dyn StepModel, inputs: usize, eos: u32, s: &DecodeSettings) -> Vec<Vec<Generated>> {
    let k = s.num_beams;
    let mut all: Vec<Beams> = (0..inputs).map(|_| Beams { running: vec![(Vec::new(), 0.0)], ..Default::default() }).collect();
    let mut scratch = Scratch::default();
    for step in 0..s.max_new_tokens {
        let prefixes: Vec<(usize, &[u32])> = all.iter().enumerate().filter(|(_, b)| !b.done).flat_map(|(r, b)| b.running.iter().map(move |(t, _)| (r, t.as_slice()))).collect();
        if prefixes.is_empty() {
            break;
        }
        let owners: Vec<usize> = prefixes.iter().map(|p| p.0).collect();
        let mut rows = model.log_probs(&prefixes);
        let mut at = 0;
        for (r, b) in all.iter_mut().enumerate() {
            if b.done {
                continue;
            }
            let n = owners[at..].iter().take_while(|&&o| o == r).count();
            // (beam, token) continuations by their summed log-probability, best first, in a
            // total order (ties: lower beam, then lower token). Only a beam's own best
            // 2·num_beams can be among the input's best 2·num_beams, so a beam offers those
            // alone, and the pool is cut back to the best 2·num_beams whenever it doubles:
            // beams × vocabulary candidates per step cost more than the model, and holding
            // them grew with num_beams².
            let keep = k.saturating_mul(2);
            let order = |a: &(f64, usize, u32, f64), c: &(f64, usize, u32, f64)| c.0.total_cmp(&a.0).then(a.1.cmp(&c.1)).then(a.2.cmp(&c.2));
            let mut cands: Vec<(f64, usize, u32, f64)> = Vec::with_capacity(keep.saturating_mul(3).min(n * keep.min(rows.get(at).map_or(0, Vec::len))));
            for (i, lp) in rows[at..at + n].iter_mut().enumerate() {
                process(lp, &b.running[i].0, eos, s);
                let base = b.running[i].1;
                for &t in best_continuations(lp, base, keep, &mut scratch) {
                    cands.push((base + lp[t as usize] as f64, i, t, lp[t as usize] as f64));
                }
                if cands.len() >= keep.saturating_mul(2) {
                    cands.select_nth_unstable_by(keep, order);
                    cands.truncate(keep);
                }
            }
            at += n;
            if cands.len() > keep {
                cands.select_nth_unstable_by(keep, order);
                cands.truncate(keep);
            }
            cands.sort_by(order);
            let mut next = Vec::with_capacity(k);
            for (rank, &(sum, i, t, _)) in cands.iter().enumerate() {
                if t == eos {
                    // An end below the top `num_beams` candidates is not a hypothesis.
                    if rank < k {
                        let tokens = b.running[i].0.clone();
                        let len = tokens.len() + 1;
                        b.add(Generated { tokens, ended: true, sum_logprobs: sum, score: score(sum, len, s.length_penalty) }, k);
                    }
                } else {
                    let mut tokens = b.running[i].0.clone();
                    tokens.push(t);
                    next.push((tokens, sum));
                }
                if next.len() == k {
                    break;
                }
            }
            let best_running = next.first().map_or(f64::NEG_INFINITY, |n| n.1);
            b.running = next;
            b.done = b.running.is_empty() || b.is_done(best_running, step + 1, s);
        }
    }
    all.into_iter()
        .map(|mut b| {
            // Beams still running at the length limit finish there.
            if !b.done {
                for (tokens, sum) in std::mem::take(&mut b.running) {
                    let len = tokens.len();
                    b.add(Generated { tokens, ended: false, sum_logprobs: sum, score: score(sum, len, s.length_penalty) }, k);
                }
            }
            if b.finished.is_empty() {
                return vec![Generated { tokens: Vec::new(), ended: false, sum_logprobs: 0.0, score: f64::NEG_INFINITY }];
            }
            // Best first; among equal scores the later added first (the one `max_by` picks).
            let mut best = b.finished;
            best.reverse();
            best.sort_by(|a, c| c.score.total_cmp(&a.score));
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy model: the next token's log-probabilities are a fixed function of the row and
    /// the prefix (a hash), softmaxed over `v` tokens.
    // The model trait's own closure shape, spelled out once here.
    #[allow(clippy::type_complexity)]
    fn toy(v: usize) -> impl FnMut(&[(usize, &[u32])]) -> Vec<Vec<f32>> {
        move |prefixes: &[(usize, &[u32])]| {
            prefixes
                .iter()
                .map(|(r, p)| {
                    let key: Vec<u64> = std::iter::once(*r as u64).chain(p.iter().map(|&t| t as u64)).collect();
                    let mut rng = Rng::keyed(99, Purpose::Sample, &key);
                    let logits: Vec<f64> = (0..v).map(|_| 3.0 * rng.next_f64()).collect();
                    let z = logits.iter().map(|x| x.exp()).sum::<f64>().ln();
                    logits.iter().map(|x| (x - z) as f32).collect()
                })
                .collect()
        }
    }

    /// Every continuation up to `max` new tokens, scored as beam search scores them.
    fn exhaustive(model: &mut dyn StepModel, row: usize, v: usize, eos: u32, s: &DecodeSettings) -> Generated {
        every_hypothesis(model, row, v, eos, s).into_iter().fold(Generated { tokens: vec![], ended: false, sum_logprobs: 0.0, score: f64::NEG_INFINITY }, |best, g| if g.score > best.score { g } else { best })
    }

    /// Every complete continuation of `row` (ended, or cut at `max_new_tokens`) with its score.
    fn every_hypothesis(model: &mut dyn StepModel, row: usize, v: usize, eos: u32, s: &DecodeSettings) -> Vec<Generated> {
        let mut all = Vec::new();
        let mut stack: Vec<(Vec<u32>, f64)> = vec![(vec![], 0.0)];
        while let Some((prefix, sum)) = stack.pop() {
            let mut lp = model.log_probs(&[(row, &prefix)]).remove(0);
            process(&mut lp, &prefix, eos, s);
            for t in 0..v as u32 {
                let l = lp[t as usize] as f64;
                if !l.is_finite() {
                    continue;
                }
                let total = sum + l;
                let (tokens, ended) = if t == eos { (prefix.clone(), true) } else { ([prefix.clone(), vec![t]].concat(), false) };
                let len = tokens.len() + usize::from(ended);
                if ended || len == s.max_new_tokens {
                    all.push(Generated { tokens, ended, sum_logprobs: total, score: score(total, len, s.length_penalty) });
                } else {
                    stack.push((tokens, total));
                }
            }
        }
        all
    }

    /// Several outputs per input: beam search's are the n best complete continuations
    /// (exhaustive search as the oracle, beams as wide as every continuation), best first,
    /// the first the single output; samples are n draws, the first the single sample, the
    /// others draws of their own. Greedy has one; beams return at most their number.
    #[test]
    fn several_outputs_are_the_best_hypotheses_or_independent_samples() {
        let (v, eos) = (4usize, 0u32);
        let keys: Vec<Vec<u64>> = (0..3).map(|r| vec![r]).collect();
        for length_penalty in [0.0, 1.0] {
            let s = DecodeSettings { max_new_tokens: 3, num_beams: v.pow(3), num_return_sequences: 5, length_penalty, ..Default::default() };
            let many = generate_many(&mut toy(v), &keys, eos, &s);
            let single = generate(&mut toy(v), 3, eos, &s);
            for (row, outs) in many.iter().enumerate() {
                let mut want = every_hypothesis(&mut toy(v), row, v, eos, &s);
                want.sort_by(|a, c| c.score.total_cmp(&a.score));
                assert_eq!(outs.iter().map(|g| &g.tokens).collect::<Vec<_>>(), want[..5].iter().map(|g| &g.tokens).collect::<Vec<_>>(), "row {row}, lp {length_penalty}");
                assert!(outs.iter().zip(&want).all(|(a, b)| (a.score - b.score).abs() < 1e-9));
                assert_eq!(outs[0], single[row]);
            }
        }
        let s = DecodeSettings { max_new_tokens: 10, do_sample: true, temperature: 3.0, seed: 11, num_return_sequences: 4, ..Default::default() };
        let many = generate_many(&mut toy(50), &keys, eos, &s);
        let single = generate(&mut toy(50), 3, eos, &s);
        for (row, outs) in many.iter().enumerate() {
            assert_eq!(outs.len(), 4);
            assert_eq!(outs[0], single[row], "the first sample is the single sample");
            let distinct: std::collections::BTreeSet<&Vec<u32>> = outs.iter().map(|g| &g.tokens).collect();
            assert_eq!(distinct.len(), 4, "draws of their own: {outs:?}");
        }
        assert_eq!(many, generate_many(&mut toy(50), &keys, eos, &s), "one seed, one draw");
        let p = DecodeSettings { num_return_sequences: 2, ..Default::default() }.problems();
        assert!(p.iter().any(|m| m.starts_with("generate.num_return_sequences: at most generate.num_beams")), "{p:?}");
        assert!(DecodeSettings { num_return_sequences: 4, num_beams: 4, ..Default::default() }.problems().is_empty());
        assert!(!DecodeSettings { num_return_sequences: 0, ..Default::default() }.problems().is_empty());
    }

    #[test]
    fn beam_search_as_wide_as_every_continuation_equals_exhaustive_search() {
        let (v, eos) = (4usize, 0u32);
        // The oracle tells searches apart: greedy misses the best continuation somewhere.
        let mut greedy_misses = 0;
        for length_penalty in [0.0, 0.5, 1.0, 2.0] {
            for (max, min, ngram) in [(3, 0, 0), (4, 2, 0), (4, 0, 2)] {
                let s = DecodeSettings { max_new_tokens: max, min_new_tokens: min, no_repeat_ngram_size: ngram, num_beams: v.pow(max as u32), length_penalty, ..Default::default() };
                let mut model = toy(v);
                let beams = generate(&mut model, 3, eos, &s);
                let greedy = generate(&mut model, 3, eos, &DecodeSettings { num_beams: 1, ..s.clone() });
                for (row, got) in beams.iter().enumerate() {
                    let want = exhaustive(&mut model, row, v, eos, &s);
                    assert_eq!(got.tokens, want.tokens, "row {row}, lp {length_penalty}, max {max}, min {min}, ngram {ngram}");
                    assert!((got.score - want.score).abs() < 1e-9);
                    greedy_misses += usize::from(greedy[row].tokens != want.tokens);
                }
            }
        }
        assert!(greedy_misses > 0, "a toy model where greedy is always optimal tests nothing");
    }

    /// A beam offers its best continuations by the ranking's own key, so what it leaves out
    /// could never have been chosen: against a full sort, with forbidden tokens, and at a
    /// summed log-probability so large that rounding makes ties the lower token must break.
    #[test]
    fn a_beam_offers_its_best_continuations_in_the_rankings_order() {
        let mut lp = toy(50)(&[(3, &[])]).remove(0);
        for t in [4, 17, 31] {
            lp[t] = f32::NEG_INFINITY;
        }
        let mut scratch = Scratch::default();
        for base in [0.0, -3.5, -1e15] {
            let key = |t: u32| base + lp[t as usize] as f64;
            let order = |a: &u32, c: &u32| key(*c).total_cmp(&key(*a)).then(a.cmp(c));
            let mut all: Vec<u32> = (0..50).filter(|&t| lp[t as usize].is_finite()).collect();
            all.sort_by(order);
            if base < -1e14 {
                assert!(all.windows(2).any(|w| key(w[0]) == key(w[1]) && lp[w[0] as usize] != lp[w[1] as usize]), "rounding makes no tie: the case is not tested");
            }
            for n in [0, 1, 2, 7, 46, 47, 80] {
                let mut got = best_continuations(&lp, base, n, &mut scratch).to_vec();
                got.sort_by(order);
                assert_eq!(got, all[..n.min(all.len())], "base {base}, n {n}");
            }
        }
    }

    #[test]
    fn one_beam_is_greedy_and_greedy_takes_the_most_likely_token() {
        let (v, eos) = (6usize, 5u32);
        let s = DecodeSettings { max_new_tokens: 8, ..Default::default() };
        let greedy = generate(&mut toy(v), 4, eos, &s);
        let mut model = toy(v);
        for (row, g) in greedy.iter().enumerate() {
            let mut prefix = Vec::new();
            for _ in 0..s.max_new_tokens {
                let t = argmax(&model.log_probs(&[(row, &prefix)])[0]) as u32;
                if t == eos {
                    break;
                }
                prefix.push(t);
            }
            assert_eq!(g.tokens, prefix, "row {row}");
        }
        // A beam search of one that stops at its first finished hypothesis keeps the best
        // continuation only: greedy's tokens.
        let one = beam_search(&mut toy(v), 4, eos, &DecodeSettings { num_beams: 1, early_stopping: true, ..s.clone() });
        assert_eq!(one.iter().map(|g| &g[0].tokens).collect::<Vec<_>>(), greedy.iter().map(|g| &g.tokens).collect::<Vec<_>>());
    }

    #[test]
    fn sampling_repeats_for_a_seed_differs_across_seeds_and_respects_top_k() {
        let (v, eos) = (50usize, 0u32);
        let s = DecodeSettings { max_new_tokens: 20, do_sample: true, temperature: 1.5, seed: 7, ..Default::default() };
        let a = generate(&mut toy(v), 8, eos, &s);
        assert_eq!(a, generate(&mut toy(v), 8, eos, &s), "one seed, one draw");
        assert_ne!(a, generate(&mut toy(v), 8, eos, &DecodeSettings { seed: 8, ..s.clone() }), "another seed draws otherwise");
        // top_k = 1 is greedy whatever the seed.
        let greedy = generate(&mut toy(v), 8, eos, &DecodeSettings { max_new_tokens: 20, ..Default::default() });
        assert_eq!(generate(&mut toy(v), 8, eos, &DecodeSettings { top_k: 1, ..s.clone() }), greedy);
        // Over many draws from one distribution, every token sampled is among the top 3.
        let lp = toy(v)(&[(0, &[])]).remove(0);
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&x, &y| lp[y].total_cmp(&lp[x]));
        let k3 = DecodeSettings { top_k: 3, ..s.clone() };
        let seen: std::collections::BTreeSet<usize> = (0..2000).map(|i| choose(&lp, &k3, Rng::keyed(i, Purpose::Sample, &[]).next_f64())).collect();
        assert_eq!(seen, order[..3].iter().copied().collect(), "all three drawn, nothing else");
    }

    /// Over many draws, each token comes as often as the tempered distribution says (within 5
    /// standard deviations), renormalised over the nucleus under top-p (the fewest best tokens
    /// whose mass reaches p, found here by a full sort), and never outside it.
    #[test]
    fn sampling_draws_each_token_as_often_as_its_tempered_probability() {
        // More tokens than the first head top-p sorts (64), so the head grows.
        let v = 200;
        let lp = toy(v)(&[(1, &[])]).remove(0);
        let n = 40_000u64;
        for (temperature, top_p) in [(1.0, 1.0), (1.7, 1.0), (0.6, 1.0), (1.0, 0.8), (1.3, 0.5)] {
            let s = DecodeSettings { do_sample: true, temperature, top_p, ..Default::default() };
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
            let w: Vec<f64> = order.iter().map(|&i| (lp[i] as f64 / temperature).exp()).collect();
            let total: f64 = w.iter().sum();
            let (mut mass, mut keep) = (0.0, v);
            for (k, x) in w.iter().enumerate() {
                mass += x / total;
                if mass >= top_p {
                    keep = k + 1;
                    break;
                }
            }
            let kept: f64 = w[..keep].iter().sum();
            let mut want = vec![0.0; v];
            for k in 0..keep {
                want[order[k]] = w[k] / kept;
            }
            let mut seen = vec![0u64; v];
            for d in 0..n {
                seen[choose(&lp, &s, Rng::keyed(d, Purpose::Sample, &[17]).next_f64())] += 1;
            }
            for t in 0..v {
                let got = seen[t] as f64 / n as f64;
                let sd = (want[t] * (1.0 - want[t]) / n as f64).sqrt();
                assert!((got - want[t]).abs() <= 5.0 * sd + 1e-12, "T {temperature}, p {top_p}, token {t}: drawn {got}, want {}", want[t]);
            }
            if top_p < 1.0 {
                assert!(keep > 1 && keep < v, "the nucleus cuts somewhere: {keep}");
            }
        }
    }

    #[test]
    fn min_new_tokens_and_no_repeat_ngrams_hold_and_bad_settings_name_their_key() {
        let (v, eos) = (3usize, 0u32);
        let s = DecodeSettings { max_new_tokens: 12, min_new_tokens: 5, no_repeat_ngram_size: 2, num_beams: 3, ..Default::default() };
        for g in generate(&mut toy(v), 6, eos, &s) {
            assert!(g.tokens.len() >= 5 || !g.ended, "{g:?}");
            let grams: Vec<&[u32]> = g.tokens.windows(2).collect();
            let unique: std::collections::BTreeSet<&[u32]> = grams.iter().copied().collect();
            assert_eq!(unique.len(), grams.len(), "a repeated bigram in {:?}", g.tokens);
        }
        let bad = DecodeSettings { max_new_tokens: 0, top_p: 1.5, do_sample: true, num_beams: 2, ..Default::default() };
        let p = bad.problems();
        assert!(p.iter().any(|m| m.starts_with("generate.max_new_tokens")) && p.iter().any(|m| m.starts_with("generate.top_p")) && p.iter().any(|m| m.starts_with("generate.do_sample")), "{p:?}");
        assert!(DecodeSettings::default().problems().is_empty());
    }
}
