//! Corruption of token sequences for pre-training objectives: pure, seeded, no tch.

pub mod glm;
pub mod mlm;
pub mod collate;
