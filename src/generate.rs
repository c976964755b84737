//! `pretune generate --checkpoint DIR --input FILE [--output FILE] [--set generate.KEY=V]`:
//! GLM generation from JSONL.
//!
//! * A pre-trained GLM fills the blanks of each line's `text` (`[MASK]` a span, `[sMASK]` a
//!   sentence, `[gMASK]` the rest of the text), left to right, each blank seeing those filled
//!   before it (GLM's order), and writes `{"text": the text with its blanks filled, "blanks":
//!   [the fillings]}` (with the line's `id` when it has one): everything outside the blanks is
//!   the input's own characters.
//! * A `task.kind = "generation"` checkpoint generates a target for each line's `source`:
//!   `{"id", "output"}`, as `pretune predict` writes it.
//!
//! Anything else (a BERT, another task) is refused with what would work instead.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{nn, Device};

use crate::checkpoint::resume::locate;
use crate::config::{decode_settings, ConfigError, InitConfig};
use crate::data::tokenize::{TextTokenizer, TokenizerError};
use crate::decode::DecodeSettings;
use crate::files::FileError;
use crate::finetune::drive::{DriveError, Inference};
use crate::finetune::predict::{predict, Predicted};
use crate::finetune::task::{describe, SavedModel, Throughput};
use crate::finetune::tasks::cloze::glm_ids;
use crate::init::{resolve_start, InitError, StartModel};
use crate::masking::glm::GlmIds;
use crate::model::glm::{Glm, GlmConfig};
use crate::model::glm_fill::{check_decode_memory, fill_blanks_many, widest_fixed_len, FillIds};
use crate::objective::ModelSpec;

/// The blank markers a text may hold.
pub const BLANKS: [&str; 3] = ["[MASK]", "[sMASK]", "[gMASK]"];

/// Why `generate` failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The checkpoint could not be opened, or a generation checkpoint's prediction failed.
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// The pre-trained checkpoint could not be located or read.
    #[error(transparent)]
    Init(#[from] InitError),
    /// A `--set` that does not apply.
    #[error(transparent)]
    Settings(#[from] ConfigError),
    /// A checkpoint that does not generate.
    #[error("{}: {what}", dir.display())]
    Refused {
        /// The checkpoint.
        dir: PathBuf,
        /// What it is and what would work.
        what: String,
    },
    /// The input could not be read.
    #[error("cannot read the input")]
    Read(#[from] FileError),
    /// A line that cannot be filled.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The input.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer could not be loaded or could not encode.
    #[error("tokenizer")]
    Tokenizer(#[from] TokenizerError),
    /// The weights could not be loaded.
    #[error("{}: cannot load the weights", dir.display())]
    Weights {
        /// The checkpoint.
        dir: PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// Writing the output.
    #[error("{}: cannot write the output", path.display())]
    Write {
        /// The output (`-` for stdout).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl GenerateError {
    /// Whether the caller asked for something that cannot be (exit 2): a bad `--set`, a
    /// checkpoint that does not generate, a line without a blank or too long.
    pub fn is_usage(&self) -> bool {
        match self {
            GenerateError::Drive(e) => e.is_usage(),
            GenerateError::Settings(_) | GenerateError::Refused { .. } | GenerateError::Line { .. } => true,
            _ => false,
        }
    }
}

/// One text cut at its blanks: the pieces around them and which marker each blank was.
#[derive(Debug, Clone, PartialEq)]
pub struct BlankText {
    /// `blanks.len() + 1` pieces of the text, verbatim.
    pub pieces: Vec<String>,
    /// Each blank's marker (an index into [`BLANKS`]).
    pub blanks: Vec<usize>,
}

impl BlankText {
    /// Cuts `text` at every blank marker, left to right.
    pub fn parse(text: &str) -> Self {
        let (mut pieces, mut blanks, mut rest) = (Vec::new(), Vec::new(), text);
        loop {
            let next = BLANKS.iter().enumerate().filter_map(|(k, m)| rest.find(m).map(|at| (at, k))).min();
            let Some((at, k)) = next else { break };
            pieces.push(rest[..at].to_owned());
            blanks.push(k);
            rest = &rest[at + BLANKS[k].len()..];
        }
        pieces.push(rest.to_owned());
        BlankText { pieces, blanks }
    }

    /// The text with each blank replaced by its filling.
    pub fn fill(&self, fillings: &[String]) -> String {
        let mut out = self.pieces[0].clone();
        for (f, p) in fillings.iter().zip(&self.pieces[1..]) {
            out.push_str(f);
            out.push_str(p);
        }
        out
    }

    /// Part A (`[CLS]`, the pieces' tokens, each blank's token) and each blank's index in it.
    ///
    /// # Errors
    /// A tokenizer error.
    pub fn part_a(&self, tok: &TextTokenizer, ids: &GlmIds) -> Result<(Vec<i64>, Vec<usize>), TokenizerError> {
        let mut part_a = vec![i64::from(ids.cls)];
        let mut at = Vec::with_capacity(self.blanks.len());
        for (i, piece) in self.pieces.iter().enumerate() {
            if !piece.trim().is_empty() {
                part_a.extend(tok.encode(piece)?.ids.iter().map(|&t| i64::from(t)));
            }
            if let Some(&k) = self.blanks.get(i) {
                at.push(part_a.len());
                part_a.push(i64::from([ids.mask, ids.smask, ids.gmask][k]));
            }
        }
        Ok((part_a, at))
    }
}

/// What `generate` did.
#[derive(Debug, Clone)]
pub struct GenerateReport {
    /// The checkpoint used.
    pub checkpoint: PathBuf,
    /// Lines written.
    pub lines: usize,
    /// New tokens and the time they took.
    pub throughput: Throughput,
    /// What reading the input changed (a generation checkpoint's `sources cut to N tokens`).
    pub notes: Vec<String>,
}

/// Generates for every line of `input` with the checkpoint at (or under) `checkpoint` on
/// the device and batch `run` says, into `output` (stdout when `None`); `overrides` are
/// `generate.KEY=VALUE`.
///
/// # Errors
/// [`GenerateError`]: a checkpoint that does not generate, a line without a blank or too long,
/// unreadable input, unwritable output.
pub fn generate(checkpoint: &Path, input: &Path, output: Option<&Path>, overrides: &[String], run: Inference) -> Result<GenerateReport, GenerateError> {
    let (dir, state) = locate(checkpoint).map_err(DriveError::from)?;
    match describe(&state.model, &state.config).map_err(DriveError::from)? {
        SavedModel::Task(spec) if spec.kind == "generation" => {
            let Predicted { checkpoint, lines, throughput, notes } = predict(&dir, input, output, overrides, run)?;
            Ok(GenerateReport { checkpoint, lines, throughput, notes })
        }
        SavedModel::Task(spec) => Err(GenerateError::Refused { dir, what: format!("a task.kind = \"{}\" checkpoint does not generate (use `pretune predict`)", spec.kind) }),
        SavedModel::Pretrain { model, .. } => Err(GenerateError::Refused { dir, what: format!("a {} pre-training checkpoint does not generate (an encoder, no left-to-right decoder): fill blanks with a GLM pre-training checkpoint, or fine-tune one with task.kind = \"generation\"", model.model_type()) }),
        SavedModel::Glm => {
            let settings = decode_settings(&dir.join("state.json"), state.config.get("generate"), overrides)?;
            fill_file(&dir, input, output, &settings, run)
        }
    }
}

/// The pre-trained GLM, its tokenizer (GLM's tokens added) and ids.
struct Filler {
    glm: Glm,
    config: GlmConfig,
    tokenizer: TextTokenizer,
    ids: GlmIds,
    _vs: nn::VarStore,
}

fn load(dir: &Path, device: Device) -> Result<Filler, GenerateError> {
    let start = resolve_start(&InitConfig { checkpoint: dir.to_owned(), ..Default::default() })?.expect("a checkpoint was given");
    let refused = |what: &str| GenerateError::Refused { dir: dir.to_owned(), what: what.to_owned() };
    let StartModel::Pretrain(ModelSpec::Glm { config }) = start.model else { return Err(refused("not a GLM pre-training checkpoint")) };
    let path = start.tokenizer.ok_or_else(|| refused("its state.json names no tokenizer"))?;
    let mut tokenizer = TextTokenizer::load(&path, None)?;
    let ids = glm_ids(&mut tokenizer).map_err(|e| refused(&crate::error_chain(&e)))?;
    let mut vs = nn::VarStore::new(device);
    let glm = Glm::new(&vs.root(), &config);
    vs.load(dir.join("model.safetensors")).map_err(|source| GenerateError::Weights { dir: dir.to_owned(), source })?;
    Ok(Filler { glm, config, tokenizer, ids, _vs: vs })
}

/// One input line: its text cut at the blanks, Part A, and its `id` if it has one.
struct Line {
    text: BlankText,
    part_a: (Vec<i64>, Vec<usize>),
    id: Option<Value>,
}

fn read_lines(path: &Path, f: &Filler, settings: &DecodeSettings) -> Result<Vec<Line>, GenerateError> {
    let bytes = std::fs::read(path).map_err(FileError::at(path))?;
    let mut out = Vec::new();
    // Every line must be readable: an input to fill is never skipped quietly.
    let mut fail = crate::finetune::data::BadRecords { policy: crate::config::BadRecordPolicy::Fail, skipped: &mut Vec::new() };
    let values = crate::finetune::data::jsonl_values(path, &bytes, &mut fail).map_err(|e| match e {
        crate::finetune::data::TaskDataError::Record { path, line, message } => GenerateError::Line { path, line, message },
        other => GenerateError::Line { path: path.to_owned(), line: 0, message: crate::error_chain(&other) },
    })?;
    let mut widest: Option<(u64, usize)> = None;
    for (line, v) in values {
        let bad = |message: String| GenerateError::Line { path: path.to_owned(), line, message };
        let text = v.get("text").and_then(Value::as_str).ok_or_else(|| bad("no `text` field (a string)".into()))?;
        let parsed = BlankText::parse(text);
        if parsed.blanks.is_empty() {
            return Err(bad(format!("no blank in `text`: write {} where GLM should fill in", BLANKS.join(", "))));
        }
        let part_a = parsed.part_a(&f.tokenizer, &f.ids)?;
        let room = usize::try_from(f.config.max_sequence_length - 1).unwrap_or(0);
        if part_a.0.len() > room {
            return Err(bad(format!("{} tokens with [CLS] and the blanks; the model has {room} positions", part_a.0.len())));
        }
        if settings.max_new_tokens >= room {
            return Err(bad(format!("generate.max_new_tokens = {} but the model has {room} block positions", settings.max_new_tokens)));
        }
        let fixed = widest_fixed_len(part_a.0.len(), part_a.1.len(), settings);
        if widest.is_none_or(|(_, w)| fixed > w) {
            widest = Some((line, fixed));
        }
        out.push(Line { text: parsed, part_a, id: v.get("id").cloned() });
    }
    // The memory left is read once, against the line that needs the most.
    if let Some((line, fixed)) = widest {
        check_decode_memory(&f.config, fixed, settings).map_err(|e| GenerateError::Line { path: path.to_owned(), line, message: e.to_string() })?;
    }
    Ok(out)
}

fn fill_file(dir: &Path, input: &Path, output: Option<&Path>, settings: &DecodeSettings, run: Inference) -> Result<GenerateReport, GenerateError> {
    let f = load(dir, run.device)?;
    let lines = read_lines(input, &f, settings)?;
    let out_path = output.map_or_else(|| PathBuf::from("-"), Path::to_owned);
    let write_err = |source| GenerateError::Write { path: out_path.clone(), source };
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(write_err)?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let _guard = tch::no_grad_guard();
    let fill = FillIds { sop: f.ids.sop, eop: f.ids.eop, pad: f.tokenizer.special_ids().pad };
    let mut throughput = Throughput::default();
    for chunk in lines.chunks(run.batch_size.max(1)) {
        let texts: Vec<(Vec<i64>, Vec<usize>)> = chunk.iter().map(|l| l.part_a.clone()).collect();
        let t0 = std::time::Instant::now();
        let filled = fill_blanks_many(&f.glm, &texts, fill, settings, run.device);
        throughput.seconds += t0.elapsed().as_secs_f64();
        for (l, fillings) in chunk.iter().zip(filled) {
            let mut candidates = Vec::with_capacity(fillings.len());
            for gens in &fillings {
                throughput.tokens += gens.iter().map(|g| g.tokens.len() as u64 + u64::from(g.ended)).sum::<u64>();
                let blanks: Vec<String> = gens.iter().map(|g| f.tokenizer.decode(&g.tokens)).collect::<Result<_, _>>()?;
                candidates.push(json!({ "text": l.text.fill(&blanks), "blanks": blanks }));
            }
            // The best (or first) filling at the top; all of them, in order, when several.
            let mut line = candidates[0].clone();
            if settings.num_return_sequences > 1 {
                line["candidates"] = Value::Array(candidates);
            }
            if let Some(id) = &l.id {
                line["id"] = id.clone();
            }
            writeln!(out, "{line}").map_err(write_err)?;
        }
    }
    out.flush().map_err(write_err)?;
    Ok(GenerateReport { checkpoint: dir.to_owned(), lines: lines.len(), throughput, notes: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_cut_at_its_blanks_and_filled_back_verbatim() {
        let t = BlankText::parse("The [MASK] sat on the [sMASK]. Then:[gMASK]");
        assert_eq!(t.pieces, vec!["The ", " sat on the ", ". Then:", ""]);
        assert_eq!(t.blanks, vec![0, 1, 2]);
        assert_eq!(t.fill(&["cat".into(), "mat".into(), " it slept".into()]), "The cat sat on the mat. Then: it slept");
        let none = BlankText::parse("no blanks [mask] here");
        assert!(none.blanks.is_empty() && none.pieces == vec!["no blanks [mask] here"]);
        assert_eq!(BlankText::parse("[gMASK][MASK]").blanks, vec![2, 0]);
    }
}
