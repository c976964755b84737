//! Task metrics, pure and streaming (counts only: evaluation never keeps all logits).
//!
//! * Classification: accuracy, macro-F1, per-class precision and recall from a confusion
//!   matrix.
//! * NER: entity-level precision, recall and F1 with `seqeval`'s default (conlleval) chunking
//!   of BIO / IOB2 tags: an entity starts at `B-X`, or at `I-X` after a tag of another type or
//!   after `O`; it ends before `O`, `B-*`, or a tag of another type.
//! * Extractive QA: SQuAD v1.1's exact match and token F1 after its answer normalisation, as
//!   `transformers.data.metrics.squad_metrics` computes them.

use std::collections::{BTreeMap, HashSet};

/// A confusion matrix over `n` classes (row = gold, column = predicted).
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    counts: Vec<Vec<u64>>,
}

/// Classification metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassMetrics {
    /// Share right.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1.
    pub macro_f1: f64,
    /// Per class: precision.
    pub precision: Vec<f64>,
    /// Per class: recall.
    pub recall: Vec<f64>,
    /// Examples scored.
    pub n: u64,
}

impl Confusion {
    /// An empty matrix.
    pub fn new(n: usize) -> Self {
        Confusion { counts: vec![vec![0; n]; n] }
    }

    /// Counts one prediction.
    pub fn add(&mut self, gold: usize, pred: usize) {
        self.counts[gold][pred] += 1;
    }

    /// The metrics. A class never predicted has precision 0; never present, recall 0 (as
    /// scikit-learn with `zero_division=0`).
    pub fn metrics(&self) -> ClassMetrics {
        let k = self.counts.len();
        let n: u64 = self.counts.iter().flatten().sum();
        let right: u64 = (0..k).map(|i| self.counts[i][i]).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision: Vec<f64> = (0..k).map(|c| ratio(self.counts[c][c], (0..k).map(|g| self.counts[g][c]).sum())).collect();
        let recall: Vec<f64> = (0..k).map(|c| ratio(self.counts[c][c], self.counts[c].iter().sum())).collect();
        let f1: Vec<f64> =
            precision.iter().zip(&recall).map(|(&p, &r)| if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }).collect();
        ClassMetrics { accuracy: ratio(right, n), macro_f1: f1.iter().sum::<f64>() / k.max(1) as f64, precision, recall, n }
    }
}

/// SQuAD's answer normalisation: lower case, ASCII punctuation removed, the words `a`, `an`
/// and `the` removed, whitespace collapsed. A word is a run of Unicode letters, digits and
/// `_`, what Python's `\b` sees.
pub fn normalize_answer(s: &str) -> String {
    let lower: String = s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    // `\b(a|an|the)\b` matches exactly the word runs spelled so; they become a space.
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut kept = String::with_capacity(lower.len());
    let mut run = String::new();
    for c in lower.chars().chain(std::iter::once(' ')) {
        if word(c) {
            run.push(c);
            continue;
        }
        if !run.is_empty() {
            kept.push_str(if matches!(run.as_str(), "a" | "an" | "the") { " " } else { &run });
            run.clear();
        }
        kept.push(c);
    }
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Exact match (1 or 0) of a prediction against one reference, after normalisation.
pub fn squad_exact(prediction: &str, reference: &str) -> f64 {
    f64::from(u8::from(normalize_answer(prediction) == normalize_answer(reference)))
}

/// Token F1 of a prediction against one reference: the bag-of-words overlap of the normalised
/// texts. When either is empty, 1 if both are, else 0 (`transformers`' `compute_f1`).
pub fn squad_f1(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (normalize_answer(prediction), normalize_answer(reference));
    let (p, r): (Vec<&str>, Vec<&str>) = (p.split(' ').filter(|w| !w.is_empty()).collect(), r.split(' ').filter(|w| !w.is_empty()).collect());
    if p.is_empty() || r.is_empty() {
        return f64::from(u8::from(p == r));
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for w in &r {
        *counts.entry(w).or_default() += 1;
    }
    let mut same = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w).filter(|c| **c > 0) {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let (precision, recall) = (same as f64 / p.len() as f64, same as f64 / r.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// Whether a question has an answer to score against: a reference that normalises to
/// something (`squad_metrics`' `has_answer`; SQuAD v2.0's unanswerable questions have none).
pub fn has_answer(references: &[&str]) -> bool {
    references.iter().any(|r| !normalize_answer(r).is_empty())
}

/// One question's `(exact match, F1)`, each the best over its references (0 to 1). References
/// that normalise to nothing are dropped, and a question left without any is scored against
/// `""` (`squad_metrics.get_raw_scores`): the empty prediction scores 1 there, any other 0.
pub fn squad_scores(prediction: &str, references: &[&str]) -> (f64, f64) {
    let mut refs: Vec<&str> = references.iter().copied().filter(|r| !normalize_answer(r).is_empty()).collect();
    if refs.is_empty() {
        refs.push("");
    }
    (refs.iter().map(|r| squad_exact(prediction, r)).fold(0.0, f64::max), refs.iter().map(|r| squad_f1(prediction, r)).fold(0.0, f64::max))
}

/// SQuAD v1.1 totals over questions: each question's best exact match and F1 over its
/// references, averaged, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SquadScore {
    exact: f64,
    f1: f64,
    n: u64,
}

impl SquadScore {
    /// Scores one question against its references. References that normalise to nothing are
    /// dropped, and a question left without any is scored against `""`
    /// (`squad_metrics.get_raw_scores`).
    pub fn add(&mut self, prediction: &str, references: &[&str]) {
        let (exact, f1) = squad_scores(prediction, references);
        self.exact += exact;
        self.f1 += f1;
        self.n += 1;
    }

    /// `(exact_match, f1)` in percent.
    pub fn percent(&self) -> (f64, f64) {
        let n = self.n.max(1) as f64;
        (100.0 * self.exact / n, 100.0 * self.f1 / n)
    }

    /// Questions scored.
    pub fn questions(&self) -> u64 {
        self.n
    }
}

/// An entity: `(type, start, end exclusive)`.
pub type Entity = (String, usize, usize);

fn split_tag(tag: &str) -> (char, &str) {
    match tag.split_once('-') {
        Some((p, t)) if p.len() == 1 => (p.chars().next().unwrap_or('O'), t),
        _ => (if tag == "O" { 'O' } else { 'I' }, if tag == "O" { "" } else { tag }),
    }
}

/// Entities of a tag sequence, as `seqeval` (default mode, `get_entities`) reads them: IOB1,
/// IOB2 and IOBES prefixes (`B-`, `I-`, `E-`, `S-`; another one-letter prefix, as BILOU's `U-`
/// and `L-`, ends or starts an entity only where the type changes, as there). A tag without
/// a prefix (`PER`) is read as `I-PER` (`seqeval` would read prefix `P`, type `ER`).
pub fn entities(tags: &[&str]) -> Vec<Entity> {
    // `end_of_chunk` / `start_of_chunk`: whether the entity before ends, and one starts, at a
    // tag, given the tag before (`prefix`, `type`; `O`'s type is `_`).
    let ends = |prev: char, tag: char, prev_type: &str, ty: &str| {
        matches!(prev, 'E' | 'S') || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O')) || (prev != 'O' && prev != '.' && prev_type != ty)
    };
    let starts = |prev: char, tag: char, prev_type: &str, ty: &str| {
        matches!(tag, 'B' | 'S') || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I')) || (tag != 'O' && tag != '.' && prev_type != ty)
    };
    let mut out = Vec::new();
    let (mut prev, mut prev_type, mut begin) = ('O', "_", 0);
    for (i, tag) in tags.iter().copied().chain(std::iter::once("O")).enumerate() {
        let (t, ty) = split_tag(tag);
        let ty = if ty.is_empty() { "_" } else { ty };
        if ends(prev, t, prev_type, ty) {
            out.push((prev_type.to_owned(), begin, i));
        }
        if starts(prev, t, prev_type, ty) {
            begin = i;
        }
        (prev, prev_type) = (t, ty);
    }
    out
}

/// Streaming entity-level counts over sentences.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityCounts {
    /// Per type: (true positives, predicted, gold).
    by_type: BTreeMap<String, (u64, u64, u64)>,
}

/// Entity-level metrics (micro-averaged, as `seqeval`'s `f1_score`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EntityMetrics {
    /// Predicted entities that match a gold one exactly (type and span), over all predicted.
    pub precision: f64,
    /// Gold entities matched exactly by a prediction, over all gold.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Gold entities.
    pub support: u64,
}

impl EntityCounts {
    /// Adds one sentence.
    pub fn add(&mut self, gold: &[&str], pred: &[&str]) {
        let g: HashSet<Entity> = entities(gold).into_iter().collect();
        let p: HashSet<Entity> = entities(pred).into_iter().collect();
        for e in &g {
            self.by_type.entry(e.0.clone()).or_default().2 += 1;
        }
        for e in &p {
            let c = self.by_type.entry(e.0.clone()).or_default();
            c.1 += 1;
            if g.contains(e) {
                c.0 += 1;
            }
        }
    }

    /// Micro-averaged precision, recall and F1.
    pub fn metrics(&self) -> EntityMetrics {
        let (tp, pred, gold) = self.by_type.values().fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
        entity_metrics(tp, pred, gold)
    }

    /// Per entity type (each type seen in the gold or the predicted tags): its precision,
    /// recall, F1 and gold count, as `seqeval`'s `classification_report` (0 where a ratio has
    /// nothing to divide by).
    pub fn by_type(&self) -> BTreeMap<&str, EntityMetrics> {
        self.by_type.iter().map(|(t, &(tp, pred, gold))| (t.as_str(), entity_metrics(tp, pred, gold))).collect()
    }
}

fn entity_metrics(tp: u64, pred: u64, gold: u64) -> EntityMetrics {
    let p = if pred == 0 { 0.0 } else { tp as f64 / pred as f64 };
    let r = if gold == 0 { 0.0 } else { tp as f64 / gold as f64 };
    EntityMetrics { precision: p, recall: r, f1: if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }, support: gold }
}

/// Pearson's correlation of two series (0 when either is constant).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let (mx, my) = (x[..n].iter().sum::<f64>() / n as f64, y[..n].iter().sum::<f64>() / n as f64);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Ranks from 1, ties sharing their mean rank (as `scipy.stats.rankdata`).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation: Pearson's on the ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_metrics_match_a_hand_computation() {
        // gold: 0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
        let mut c = Confusion::new(3);
        for (g, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 2), (2, 2)] {
            c.add(g, p);
        }
        let m = c.metrics();
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(m.precision, vec![1.0, 0.5, 0.5]);
        assert_eq!(m.recall, vec![2.0 / 3.0, 0.5, 1.0]);
        let f1 = [0.8, 0.5, 2.0 / 3.0];
        assert!((m.macro_f1 - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    }

    /// Cases worked by hand against seqeval 1.2 (`seqeval.metrics.f1_score`, default mode).
    #[test]
    fn entities_follow_seqeval_default_chunking() {
        assert_eq!(entities(&["B-PER", "I-PER", "O", "B-LOC"]), vec![("PER".into(), 0, 2), ("LOC".into(), 3, 4)]);
        // An I- without a B- starts an entity (IOB1-tolerant conlleval behaviour).
        assert_eq!(entities(&["O", "I-PER", "I-PER"]), vec![("PER".into(), 1, 3)]);
        // A type change inside I- tags splits the entity.
        assert_eq!(entities(&["B-PER", "I-LOC"]), vec![("PER".into(), 0, 1), ("LOC".into(), 1, 2)]);
        // B- right after B- of the same type: two entities.
        assert_eq!(entities(&["B-ORG", "B-ORG", "I-ORG"]), vec![("ORG".into(), 0, 1), ("ORG".into(), 1, 3)]);
        assert_eq!(entities(&["O", "O"]), vec![]);
    }

    #[test]
    fn entity_f1_is_micro_averaged_over_exact_matches() {
        let mut c = EntityCounts::default();
        // gold: PER(0,2) LOC(3,4); pred: PER(0,2) LOC(3,5) -> 1 tp of 2 pred, 2 gold
        c.add(&["B-PER", "I-PER", "O", "B-LOC", "O"], &["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]);
        // gold: MISC(1,2); pred: none
        c.add(&["O", "B-MISC"], &["O", "O"]);
        let m = c.metrics();
        assert!((m.precision - 0.5).abs() < 1e-12);
        assert!((m.recall - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 0.4).abs() < 1e-12);
        assert_eq!(m.support, 3);
    }

    #[test]
    fn correlations_match_scipy() {
        // Python 3.11: statistics.correlation(x, y), and on the mean ranks (scipy.stats.rankdata).
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0];
        let y = [2.0, 1.0, 4.0, 3.0, 7.0, 6.0];
        assert!((pearson(&x, &y) - 0.8635115366415456).abs() < 1e-12, "{}", pearson(&x, &y));
        assert!((spearman(&x, &y) - 0.8696565534786727).abs() < 1e-12, "{}", spearman(&x, &y));
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }
}
