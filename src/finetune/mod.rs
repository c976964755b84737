//! Fine-tuning: tasks as types (one file per task under [`tasks`]), their place on the engine
//! ([`task`]), labelled data, metrics, and the `evaluate` / `predict` drivers. A fine-tuning
//! run's plan (a task with its data and starting point) is the fine-tuning workload,
//! [`crate::workload::task_plan`]. `[init]` and Hugging Face export serve both phases:
//! [`crate::init`], [`crate::export`].

pub mod data;
pub mod drive;
pub mod evaluate;
pub mod metrics;
pub mod predict;
pub mod qa;
pub mod rouge;
pub mod squad_v2;
pub mod task;
pub mod tasks;
