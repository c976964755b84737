//! The one integration-test binary (linking libtorch once instead of per file).

mod cli;
mod distributed;
mod electra;
mod endpoints;
mod engine;
mod extension;
mod finetune;
mod fuzz;
mod mfu;
mod generation;
mod observability;
mod parity;
mod pipeline;
mod precision;
mod prepared;
mod probe;
mod qa;
mod resume;
mod sweep;
mod util;
