//! Dropout on the CPU with masks from a counter-based generator.
//!
//! libtorch's CPU dropout draws its Bernoulli noise one element at a time from its global
//! generator: 7–25 ns per element on the 2-core machines of BENCHMARKS.md, 95 ms of a
//! BERT-mini pre-training step and a fifth of a bf16 one. Here a mask element is a pure
//! function of `(key, call, index)`: SplitMix64's output over a Weyl sequence (the generator of
//! [`crate::rng`]), two 32-bit lanes per 64 bits, written by a loop the compiler vectorises
//! (0.25 ns per element with AVX-512, 0.7 with AVX2, 1.2 without). Being counter-based, it needs
//! no generator state in a checkpoint: the Trainer keys each update with [`reseed`] from
//! `(seed, step)`, so a resumed run draws the masks an uninterrupted one would.
//!
//! The mathematics is `at::dropout`'s: keep with probability `1 - p`, scale kept elements by
//! `1 / (1 - p)`, backward multiplies by the same mask (autograd's `mul`). `p` is resolved to
//! 2⁻³² (the drop test compares a 32-bit lane with `round(p · 2³²)`).
//!
//! Only CPU tensors of kind `Float` or `BFloat16` take this path; anything else (CUDA, where
//! libtorch's Philox kernel is fast and fused; other kinds) goes to `Tensor::dropout`.

use std::cell::Cell;
use tch::{Device, Kind, Tensor};

use crate::rng::{mix, WEYL};

thread_local! {
    /// `(key, calls since the key was set)` of the calling thread: the forward pass runs on the
    /// Trainer's thread, and tests that train on several threads at once must not share masks.
    static STREAM: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Keys this thread's dropout masks; every later [`dropout`] call draws the next mask of the
/// key's sequence. The Trainer calls it before every update.
pub fn reseed(key: u64) {
    STREAM.with(|s| s.set((key, 0)));
}

/// The key of the next mask, advancing this thread's call counter.
fn next_call_key() -> u64 {
    STREAM.with(|s| {
        let (key, calls) = s.get();
        s.set((key, calls + 1));
        mix(mix(key ^ WEYL).wrapping_add(calls.wrapping_mul(WEYL)))
    })
}

/// `x` with each element zeroed with probability `p` and the rest scaled by `1 / (1 - p)`
/// while `train`; `x` itself otherwise.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    if x.device() != Device::Cpu || p >= 1.0 || !matches!(x.kind(), Kind::Float | Kind::BFloat16) {
        return x.dropout(p, true);
    }
    x * mask(&x.size(), x.kind(), p, next_call_key())
}

/// A `[shape]` tensor of `kind` (`Float` or `BFloat16`, which [`dropout`] checks) holding `0`
/// with probability `p` and `1 / (1 - p)` otherwise, drawn from `key`.
fn mask(shape: &[i64], kind: Kind, p: f64, key: u64) -> Tensor {
    let out = Tensor::empty(shape, (kind, Device::Cpu));
    let n = out.numel();
    let threshold = drop_threshold(p);
    let scale = (1.0 / (1.0 - p)) as f32;
    match kind {
        Kind::Float => {
            // SAFETY: `out` was just allocated, contiguous, `n` f32 elements, and nothing else
            // refers to it yet.
            let buf = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, n) };
            fill(buf, key, threshold, scale, 0.0);
        }
        Kind::BFloat16 => {
            // SAFETY: as above, `n` bf16 elements stored as their 16-bit patterns.
            let buf = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut u16, n) };
            fill(buf, key, threshold, bf16_bits(scale), 0);
        }
        other => panic!("dropout::mask: kind {other:?} (only Float and BFloat16 are drawn here)"),
    }
    out
}

/// Lanes below this value (out of 2³²) are dropped.
fn drop_threshold(p: f64) -> u32 {
    (p * 4_294_967_296.0).round().clamp(0.0, u32::MAX as f64) as u32
}

/// The bf16 nearest to `x` (round to nearest, ties to even), as libtorch rounds a float.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Writes the mask of `key` into `out`: element `2j + l` keeps iff 32-bit lane `l` of
/// `mix(key + (j + 1) · WEYL)` is at least `threshold`. Dispatches to the widest vector unit
/// this CPU has; every variant computes the same values.
fn fill<T: Copy>(out: &mut [T], key: u64, threshold: u32, keep: T, drop: T) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the features were just detected.
            return unsafe { fill_avx512(out, key, threshold, keep, drop) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { fill_avx2(out, key, threshold, keep, drop) };
        }
    }
    fill_portable(out, key, threshold, keep, drop)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
unsafe fn fill_avx512<T: Copy>(out: &mut [T], key: u64, threshold: u32, keep: T, drop: T) {
    fill_portable(out, key, threshold, keep, drop)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_avx2<T: Copy>(out: &mut [T], key: u64, threshold: u32, keep: T, drop: T) {
    fill_portable(out, key, threshold, keep, drop)
}

#[inline(always)]
fn fill_portable<T: Copy>(out: &mut [T], key: u64, threshold: u32, keep: T, drop: T) {
    let pick = |lane: u32| if lane >= threshold { keep } else { drop };
    let mut pairs = out.chunks_exact_mut(2);
    let mut state = key;
    for pair in &mut pairs {
        state = state.wrapping_add(WEYL);
        let r = mix(state);
        pair[0] = pick(r as u32);
        pair[1] = pick((r >> 32) as u32);
    }
    if let [last] = pairs.into_remainder() {
        *last = pick(mix(state.wrapping_add(WEYL)) as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(t: &Tensor) -> f64 {
        t.ne(0.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
    }

    #[test]
    fn keep_rate_and_scale_match_p_over_many_keys() {
        // 64 keys × 100,003 elements (odd: the tail lane too): the kept fraction of each key
        // is within 5 standard deviations of 1 - p, and of all keys together within 5 of theirs.
        for p in [0.1, 0.5, 0.9] {
            let n = 100_003_i64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            let mut total = 0.0;
            for key in 0..64 {
                let m = mask(&[n], Kind::Float, p, key);
                let k = kept(&m);
                assert!((k - (1.0 - p)).abs() < 5.0 * sd, "p {p} key {key}: kept {k}");
                total += k;
                let max = m.max().double_value(&[]);
                assert!((max - 1.0 / (1.0 - p)).abs() < 1e-6, "scale {max}");
            }
            let mean = total / 64.0;
            assert!((mean - (1.0 - p)).abs() < 5.0 * sd / 8.0, "p {p}: mean kept {mean}");
        }
    }

    #[test]
    fn every_vector_path_draws_the_same_mask() {
        let mut a = vec![0f32; 1001];
        let mut b = a.clone();
        fill_portable(&mut a, 42, drop_threshold(0.3), 1.0, 0.0);
        fill(&mut b, 42, drop_threshold(0.3), 1.0, 0.0);
        assert_eq!(a, b);
        // bf16 bits follow the same lanes.
        let mut h = vec![0u16; 1001];
        fill(&mut h, 42, drop_threshold(0.3), 1, 0);
        assert!(a.iter().zip(&h).all(|(x, y)| (*x == 1.0) == (*y == 1)));
    }

    #[test]
    fn neighbouring_elements_and_calls_are_uncorrelated() {
        // Adjacent elements (the two lanes of one draw, and consecutive draws) and the masks of
        // consecutive calls under one key: P(both kept) = (1 - p)² within 5 standard deviations.
        let p = 0.5;
        let n = 200_000;
        let m = mask(&[n], Kind::Float, p, 7).ne(0.0).to_kind(Kind::Double);
        let sd = (0.25 * 0.75 / n as f64).sqrt();
        for shift in [1, 2, 3] {
            let both = (m.narrow(0, 0, n - shift) * m.narrow(0, shift, n - shift)).mean(Kind::Double).double_value(&[]);
            assert!((both - 0.25).abs() < 5.0 * sd, "shift {shift}: {both}");
        }
        reseed(9);
        let x = Tensor::ones([n], (Kind::Float, Device::Cpu));
        let (a, b) = (dropout(&x, p, true).ne(0.0).to_kind(Kind::Double), dropout(&x, p, true).ne(0.0).to_kind(Kind::Double));
        let both = (a * b).mean(Kind::Double).double_value(&[]);
        assert!((both - 0.25).abs() < 5.0 * sd, "consecutive calls: {both}");
    }

    #[test]
    fn reseeding_replays_the_masks_and_keys_differ() {
        let x = Tensor::randn([3, 517], (Kind::Float, Device::Cpu));
        reseed(5);
        let (a1, a2) = (dropout(&x, 0.1, true), dropout(&x, 0.1, true));
        reseed(5);
        let (b1, b2) = (dropout(&x, 0.1, true), dropout(&x, 0.1, true));
        assert!(a1.equal(&b1) && a2.equal(&b2));
        assert!(!a1.equal(&a2));
        reseed(6);
        assert!(!dropout(&x, 0.1, true).equal(&a1));
        // Not training, or p = 0: the input itself.
        assert!(dropout(&x, 0.1, false).equal(&x) && dropout(&x, 0.0, true).equal(&x));
    }

    #[test]
    fn gradient_is_the_mask_and_bf16_scales_like_libtorch() {
        let x = Tensor::randn([64, 33], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        reseed(11);
        let y = dropout(&x, 0.2, true);
        y.sum(Kind::Float).backward();
        let g = x.grad();
        // Kept elements: y = x · 1.25 and dy/dx = 1.25; dropped: both 0.
        let kept = y.ne(0.0);
        assert!(g.masked_select(&kept).allclose(&Tensor::from(1.25f32), 1e-6, 1e-6, false));
        assert_eq!(g.masked_select(&kept.logical_not()).abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!(y.masked_select(&kept).allclose(&(x.masked_select(&kept) * 1.25), 1e-6, 1e-6, false));
        // bf16: the scale is libtorch's bf16 rounding of 1 / (1 - p).
        let m = mask(&[4096], Kind::BFloat16, 0.1, 3);
        let expected = Tensor::from(1.0f32 / 0.9).to_kind(Kind::BFloat16).to_kind(Kind::Float).double_value(&[]);
        assert_eq!(m.to_kind(Kind::Float).max().double_value(&[]), expected);
        assert!((kept_bf16(&m) - 0.9).abs() < 0.03);
    }

    fn kept_bf16(m: &Tensor) -> f64 {
        kept(&m.to_kind(Kind::Float))
    }
}
