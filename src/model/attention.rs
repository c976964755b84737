//! Scaled dot-product attention for the encoders: libtorch's fused kernel where it applies,
//! the same mathematics written out where probability dropout must come from
//! [`super::dropout`].
//!
//! With dropout on, libtorch's CPU attention falls back to its math path anyway (matmul,
//! softmax, `at::dropout`, matmul) and draws the `[batch, heads, seq, seq]` mask with its slow
//! generator; writing the path here keeps the ops and swaps only the mask. Evaluation and
//! dropout-free training keep `scaled_dot_product_attention`, so parity with `transformers`
//! and the fused kernel are untouched.

use tch::{Device, Kind, Tensor};

use super::dropout::dropout;

/// `softmax(q kᵀ / √d, masked) v` with dropout `p` on the probabilities while `train`.
///
/// * `q`, `k`, `v`: `[batch, heads, seq, head_dim]`
/// * `allowed`: bool, broadcastable to `[batch, heads, seq(q), seq(k)]`, true where a query
///   may attend to a key.
///
/// On the written-out path the probabilities are computed in fp32 (as libtorch's math path
/// does under bf16) and a query with no allowed key attends uniformly instead of producing NaN
/// (masked scores are `-1e30`, not `-inf`, as in `transformers`' eager attention).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, allowed: &Tensor, p: f64, train: bool) -> Tensor {
    let p = if train { p } else { 0.0 };
    if p == 0.0 || q.device() != Device::Cpu || !matches!(q.kind(), Kind::Float | Kind::BFloat16) {
        return Tensor::scaled_dot_product_attention(q, k, v, Some(allowed), p, false, None, false);
    }
    let d = *q.size().last().expect("q is [batch, heads, seq, head_dim]") as f64;
    let scores = (q * (1.0 / d.sqrt())).matmul(&k.transpose(-2, -1));
    let probs = scores.masked_fill(&allowed.logical_not(), -1e30).softmax(-1, Kind::Float);
    dropout(&probs, p, true).matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_out_path_is_libtorchs_attention() {
        // p = 1e-12 rounds to a drop threshold of 0: the written-out path runs, drops nothing and
        // scales by 1, so it must equal the fused kernel without dropout. Rows have lengths
        // 5, 1 and 8 (key padding as BERT masks it).
        tch::manual_seed(0);
        let (b, h, t, d) = (3, 2, 8, 16);
        let (q, k, v) = (Tensor::randn([b, h, t, d], (Kind::Float, Device::Cpu)), Tensor::randn([b, h, t, d], (Kind::Float, Device::Cpu)), Tensor::randn([b, h, t, d], (Kind::Float, Device::Cpu)));
        let lengths = Tensor::from_slice(&[5i64, 1, 8]);
        let allowed = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).lt_tensor(&lengths.unsqueeze(1)).view([b, 1, 1, t]);
        let fused = attention(&q, &k, &v, &allowed, 0.1, false);
        let written = attention(&q, &k, &v, &allowed, 1e-12, true);
        let diff = (fused - written).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max difference {diff}");
    }
}
