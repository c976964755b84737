//! Fine-tuning: task heads on a pre-trained encoder, labelled data, metrics, early stopping,
//! Hugging Face import and export, prediction.

pub mod cloze;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod init;
pub mod metrics;
pub mod plan;

pub mod predict;
pub mod qa;
pub mod task;
