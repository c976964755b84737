//! The data plane's host-side pieces: sources, tokenization, packing, the cursor.

pub mod examples;
pub mod labelled;
pub mod packing;
pub mod pairs;
pub mod prepared;
pub mod source;
pub mod stream;
pub mod tokenize;
pub mod train_tokenizer;
