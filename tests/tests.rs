//! The one integration-test binary (linking libtorch once instead of per file).

mod cli;
mod finetune;
mod parity;
mod pipeline;
mod resume;
mod util;
