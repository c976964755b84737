//! Models with Hugging Face parameter names.

pub mod bert;
pub mod glm;
pub mod heads;

/// Rows `idx` of the 2-D `x` (`x.index_select(0, idx)`), for gathers whose indices are
/// distinct (real tokens, scored positions).
///
/// Under bf16 autocast on the CPU the activations are bf16, and the gather's backward
/// (`index_add_` into zeros) has no vectorised bf16 kernel there: it ran as a scalar
/// `scatter_add_` taking about 50 ms of a 0.5 s step on BERT-mini. Gathering in fp32 costs two
/// casts of the gathered rows and keeps the backward on the fast kernel; the next linear layer
/// casts back to bf16 anyway.
pub fn gather_rows(x: &tch::Tensor, idx: &tch::Tensor) -> tch::Tensor {
    match x.kind() {
        tch::Kind::BFloat16 | tch::Kind::Half if x.device() == tch::Device::Cpu => x.to_kind(tch::Kind::Float).index_select(0, idx),
        _ => x.index_select(0, idx),
    }
}
