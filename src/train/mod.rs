//! Optimisation: our AdamW (with saveable state), schedules, and one training step.

pub mod adamw;
pub mod groups;
pub mod schedule;
pub mod stages;
pub mod step;
pub mod policy;
pub mod precision;
pub mod profile;
