//! Fine-tuning: tasks as types (one file per task under [`tasks`]), their place on the engine
//! ([`task`]), labelled data, metrics, `[init]`, Hugging Face export, and the `evaluate` /
//! `predict` drivers.

pub mod data;
pub mod drive;
pub mod evaluate;
pub mod export;
pub mod init;
pub mod metrics;
pub mod plan;
pub mod predict;
pub mod qa;
pub mod task;
pub mod tasks;
