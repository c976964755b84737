//! Device halves of the objectives: batches on the device, losses, evaluation outputs.

pub mod mlm;

use tch::{Device, Tensor};

use crate::batch::HostBatch;

/// A [`HostBatch`] moved to the device.
pub struct DeviceBatch {
    /// `[batch, seq]`
    pub input_ids: Tensor,
    /// `[batch, seq]`
    pub token_type_ids: Tensor,
    /// `[batch]`
    pub lengths: Tensor,
    /// `[n_scored]` flat positions.
    pub masked_positions: Tensor,
    /// `[n_scored]` labels.
    pub masked_labels: Tensor,
    /// Loss divisor, from the host.
    pub n_scored: usize,
}

impl DeviceBatch {
    /// Copies the buffers to `device`. On CUDA the host tensors are pinned first so the copies
    /// can run asynchronously; on CPU `from_slice` is the only copy.
    pub fn new(b: &HostBatch, device: Device) -> Self {
        let shape = [b.batch_size as i64, b.seq_len as i64];
        let up = |t: Tensor| if device.is_cuda() { t.pin_memory(device).to_device_(device, t.kind(), true, false) } else { t };
        DeviceBatch {
            input_ids: up(Tensor::from_slice(&b.input_ids).view(shape)),
            token_type_ids: up(Tensor::from_slice(&b.token_type_ids).view(shape)),
            lengths: up(Tensor::from_slice(&b.lengths)),
            masked_positions: up(Tensor::from_slice(&b.masked_positions)),
            masked_labels: up(Tensor::from_slice(&b.masked_labels)),
            n_scored: b.n_scored,
        }
    }
}
