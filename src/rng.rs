//! Counter-based randomness: every random decision in the data plane is a pure function of a
//! key such as `(seed, stream, epoch, example index)`.
//!
//! That is what makes masks identical with 1 or 8 Masker workers and after a resume: no RNG
//! state travels between examples, so nothing depends on which thread saw what first.

/// A small, fast generator (SplitMix64 output function over a Weyl sequence).
///
/// SplitMix64 passes BigCrush; it is the seeding generator of xoshiro and Java's
/// `SplittableRandom`. Plenty for masking decisions, and trivially keyed.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// What a draw is for. Each purpose keys its own sequence, so that e.g. the shuffle and the
/// masks of the same example never share bits.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Purpose {
    /// File order per epoch.
    FileOrder = 1,
    /// Order of the packed sequences inside a shuffle block.
    Block = 2,
    /// Masking of one training example.
    Mask = 3,
    /// Masking of one evaluation example (independent of the training seed's epochs).
    EvalMask = 4,
    /// Dropout masks of one update (the CPU's counter-based masks; libtorch's generator on CUDA).
    Dropout = 5,
    /// GLM's per-batch choices (mode, document-mode length).
    GlmBatch = 6,
    /// A sampled token while decoding (keyed by input row and step).
    Sample = 7,
    /// The training examples kept by `task.train_per_class`.
    Subset = 8,
    /// ELECTRA's generator samples: one uniform per masked position of an example.
    Replace = 9,
}

/// SplitMix64's increment (2⁶⁴ / φ): successive states of its Weyl sequence.
pub(crate) const WEYL: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function: a bijective 64-bit finaliser whose outputs over a Weyl sequence pass BigCrush.
#[inline(always)]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator keyed by a seed, a stream and any number of integers.
    pub fn keyed(seed: u64, stream: Purpose, key: &[u64]) -> Self {
        let mut h = mix(seed ^ WEYL);
        h = mix(h ^ (stream as u64).wrapping_mul(0xd6e8_feb8_6659_fd93));
        for &k in key {
            h = mix(h.wrapping_add(WEYL) ^ mix(k));
        }
        Rng { state: h }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(WEYL);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)`, unbiased (Lemire's multiply-and-reject). `n` must be positive.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let t = n.wrapping_neg() % n;
            while (m as u64) < t {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_stream_of_numbers() {
        let a: Vec<u64> = (0..5).scan(Rng::keyed(7, Purpose::Mask, &[1, 2]), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(Rng::keyed(7, Purpose::Mask, &[1, 2]), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        let c = Rng::keyed(7, Purpose::Mask, &[2, 1]).next_u64();
        assert_ne!(a[0], c, "key order matters");
        assert_ne!(a[0], Rng::keyed(7, Purpose::Block, &[1, 2]).next_u64(), "streams differ");
    }

    #[test]
    fn below_is_uniform_within_tolerance() {
        let mut r = Rng::keyed(1, Purpose::Mask, &[]);
        let mut counts = [0u32; 10];
        let n = 200_000;
        for _ in 0..n {
            counts[r.below(10) as usize] += 1;
        }
        for c in counts {
            let p = c as f64 / n as f64;
            assert!((p - 0.1).abs() < 0.005, "{counts:?}");
        }
    }
}
