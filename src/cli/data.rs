//! `pretune data prepare CONFIG [--out DIR] [--workers N]`: prints what it wrote (or that the
//! folder is already up to date) and the bad records it skipped. `pretune data verify DIR`:
//! every array of a prepared folder against its checksum and its structure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::Failure;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Tokenize a pre-training config's `data.train` / `data.eval` once, on all cores, into a
    /// prepared dataset that runs memory-map (`data.train = ["DIR"]`).
    Prepare {
        /// TOML config file.
        config: PathBuf,
        /// Output folder (default: `prepared/<config name>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Tokenizing threads (default: every core).
        #[arg(long)]
        workers: Option<usize>,
        /// Override a config value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Check a prepared folder whole: each array's SHA-256 against the manifest, token ids
    /// within the vocabulary, offsets in order; exit 1 naming the first damaged file.
    Verify {
        /// The prepared folder.
        dir: PathBuf,
    },
}

pub fn run(c: Command) -> Result<ExitCode, Failure> {
    let (config, out, workers, overrides) = match c {
        Command::Prepare { config, out, workers, overrides } => (config, out, workers, overrides),
        Command::Verify { dir } => {
            let m = pretune::data::prepared::verify(&dir).map_err(Failure::failed)?;
            for (name, s) in &m.splits {
                pretune::outln!("{name}: {} documents, {} sentences, {} tokens: checksums and structure ok", s.docs, s.sentences, s.tokens);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if workers == Some(0) {
        return Err(Failure::usage("--workers must be at least 1 (leave it out for every core)"));
    }
    let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
    let input = pretune::plan::prepare_input(&config, &overrides, workers).map_err(Failure::usage)?;
    let out = out.unwrap_or_else(|| PathBuf::from("prepared").join(config.file_stem().unwrap_or_default()));
    let started = Instant::now();
    let mut last = started;
    let progress = |split: &str, docs: u64, _bytes: u64| {
        if last.elapsed().as_secs() >= 5 {
            last = Instant::now();
            pretune::errln!("{split}: {docs} documents of this file ({:.0} s)", started.elapsed().as_secs_f64());
        }
    };
    let r = pretune::data::prepared::prepare(&out, &input, progress).map_err(Failure::failed)?;
    let secs = started.elapsed().as_secs_f64();
    if r.up_to_date {
        pretune::outln!("{} is up to date (same tokenizer and sources): nothing to do", out.display());
    }
    for (name, s) in &r.manifest.splits {
        let skipped: u64 = s.files.iter().map(|f| f.skipped).sum();
        pretune::outln!("{name}: {} files, {} documents, {} sentences, {} tokens, {skipped} records skipped", s.files.len(), s.docs, s.sentences, s.tokens);
    }
    for b in &r.bad_records {
        pretune::errln!("skipped {}:{}: {} ({})", b.path.display(), b.line, b.detail, b.reason);
    }
    if !r.up_to_date {
        let tokens: u64 = r.manifest.splits.values().map(|s| s.tokens).sum();
        pretune::outln!("wrote {} in {secs:.1} s ({:.0} tokens/s, {workers} worker{}); train on it with --set data.train={}", out.display(), tokens as f64 / secs.max(1e-9), if workers == 1 { "" } else { "s" }, out.display());
    }
    Ok(ExitCode::SUCCESS)
}
