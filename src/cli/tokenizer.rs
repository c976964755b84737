//! `pretune tokenizer train --vocab-size N --out tokenizer.json FILES...`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Train a BERT-style WordPiece tokenizer.
    Train {
        /// Vocabulary size.
        #[arg(long, default_value_t = 8000)]
        vocab_size: usize,
        /// Output `tokenizer.json`.
        #[arg(long)]
        out: PathBuf,
        /// Keep case (default: lower-case, like uncased BERT).
        #[arg(long)]
        cased: bool,
        /// Text files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(c: Command) -> Result<ExitCode, Failure> {
    let Command::Train { vocab_size, out, cased, files } = c;
    let t = pretune::data::train_tokenizer::train_wordpiece(&files, vocab_size, !cased, &out).map_err(|e| Failure::either(e.is_usage(), e))?;
    let got = t.get_vocab_size(true);
    // --vocab-size is a ceiling, as in `tokenizers`: a small corpus holds fewer pieces.
    let short = if got < vocab_size { format!(": every piece the text holds, fewer than --vocab-size {vocab_size}") } else { String::new() };
    pretune::outln!("wrote {} ({got} tokens{short})", out.display());
    Ok(ExitCode::SUCCESS)
}
