//! The one integration-test binary (linking libtorch once instead of per file).

mod cli;
mod distributed;
mod engine;
mod extension;
mod finetune;
mod observability;
mod parity;
mod pipeline;
mod resume;
mod util;
