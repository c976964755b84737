//! Labelled examples: one encoded example of a fine-tuning task (with what question
//! answering needs to map logits back to text), and the order of one epoch of them. A leaf of
//! the data plane: the example stream carries these as payloads, the labelled stream serves
//! them.

use std::sync::Arc;

use crate::rng::Rng;

/// One encoded labelled example.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskExample {
    /// `[CLS] A [SEP] (B [SEP])` (cloze: Part A with its blank).
    pub ids: Vec<u32>,
    /// Segment ids.
    pub types: Vec<u8>,
    /// Classification: one class id; token classification: a label per token (-100 off first
    /// sub-tokens); regression: empty.
    pub labels: Vec<i64>,
    /// Regression target.
    pub target: f32,
    /// Token classification: for each word, the position of its first sub-token (`None` if
    /// truncated away). Cloze: the blank's position.
    pub word_starts: Vec<Option<usize>>,
    /// Question answering, held-out and prediction windows only: where the window's tokens
    /// sit in the context, to turn logits back into answer text (training windows need only
    /// their start / end labels, so 88 k SQuAD windows do not carry offsets).
    pub window: Option<Arc<QaWindow>>,
    /// Prediction only: what the record's output line echoes of its input (`{"text": ..}`,
    /// `{"tokens": [..]}`), so a batched `predict` can write each line from its example.
    pub shown: Option<Arc<serde_json::Value>>,
    /// Generation, held-out examples: the reference texts the output is scored against.
    pub references: Option<Arc<Vec<String>>>,
    /// The record was longer than `train.max_seq_len` leaves room for and lost tokens
    /// (token classification: words past the end, which get no tag), counted for the notes.
    pub cut: bool,
}

/// One reference answer: its text and where it starts in the context.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QaAnswer {
    /// The answer text.
    pub text: String,
    /// Its first character's index in the context, in characters (Unicode scalar values, as
    /// SQuAD's `answer_start` counts them in Python), not bytes.
    pub start: usize,
}

/// A question with its context and reference answers (SQuAD).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QaRecord {
    /// The question's id.
    pub id: String,
    /// The question text (the first segment of every window).
    pub question: String,
    /// The paragraph, shared by all its questions.
    pub context: Arc<str>,
    /// Reference answers: training uses the first, evaluation scores against all of them.
    pub answers: Vec<QaAnswer>,
}

/// One window of a question's context: the map from its tokens back to the context, for
/// post-processing. Windows of one question are consecutive and share `question`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QaWindow {
    /// Index of the question in its set.
    pub question: usize,
    /// The question, its context and its answers.
    pub record: Arc<QaRecord>,
    /// Per token of the window: the character span in the context it covers, `None` for the
    /// question and special tokens (no answer can start or end there).
    pub offsets: Vec<Option<(u32, u32)>>,
}

/// Windows of this many batches are sorted by length under `group_by_length`.
const LENGTH_WINDOW_BATCHES: usize = 50;

/// The order of one epoch's examples, to be cut into batches of `batch`: a seeded shuffle, or
/// with `group_by_length`, a shuffle, then each window of 50 batches sorted by length (longest
/// first), then the batches themselves shuffled, so batches hold similar lengths (less padding)
/// while every example still comes once and batch order stays random (what `transformers`'
/// `group_by_length` does).
pub fn epoch_order(lens: &[usize], batch: usize, group_by_length: bool, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    rng.shuffle(&mut order);
    if !group_by_length || batch == 0 {
        return order;
    }
    for window in order.chunks_mut(batch * LENGTH_WINDOW_BATCHES) {
        window.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    }
    let mut batches: Vec<&[usize]> = order.chunks(batch).collect();
    rng.shuffle(&mut batches);
    batches.concat()
}
