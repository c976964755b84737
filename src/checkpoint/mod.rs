//! Checkpoints: layout, crash-safe writing, verification, and the retention policy.
//!
//! ```text
//! OUT/checkpoints/
//!   step-00000100/  model.safetensors  optimizer.safetensors  state.json
//!   step-00000200/  ...
//!   latest          "step-00000200" (moved last, atomically)
//! ```
//! A checkpoint is written into a hidden temporary folder, every file fsynced, then renamed into
//! place; `latest` is replaced by a rename only after that. A crash at any moment leaves the
//! previous `latest` pointing at a complete checkpoint.

pub mod policy;
pub mod resume;
pub mod state;
pub mod store;

pub use state::CheckpointState;
pub use store::{CheckpointError, CheckpointStore};
