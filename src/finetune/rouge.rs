//! ROUGE-1, ROUGE-2 and ROUGE-L F-measures as Google's `rouge-score` package (0.1.2) computes
//! them with `RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)`, so a number here
//! is the number a summarisation paper's script gives on the same outputs.
//!
//! Tokens: the text lower-cased, every run of characters outside `[a-z0-9]` a separator.
//! ROUGE-N: clipped n-gram overlap, precision over the prediction's n-grams, recall over the
//! reference's. ROUGE-L: the longest common subsequence of the two token lists (no sentence
//! splitting: `rougeL`, not `rougeLsum`). F = 2PR / (P + R), 0 when both are 0.

use std::collections::HashMap;

/// `rouge-score`'s tokens of `text`.
pub fn tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit())).filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

/// One prediction's F-measures against one reference, in [0, 1].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rouge {
    /// Unigram overlap.
    pub rouge1: f64,
    /// Bigram overlap.
    pub rouge2: f64,
    /// Longest common subsequence.
    pub rouge_l: f64,
}

fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

fn ngrams(t: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut m = HashMap::new();
    if t.len() >= n {
        for w in t.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

fn rouge_n(reference: &[String], prediction: &[String], n: usize) -> f64 {
    let (r, p) = (ngrams(reference, n), ngrams(prediction, n));
    let overlap: usize = p.iter().map(|(g, &c)| c.min(r.get(g).copied().unwrap_or(0))).sum();
    let (nr, np) = (r.values().sum::<usize>(), p.values().sum::<usize>());
    fmeasure(overlap as f64 / np.max(1) as f64, overlap as f64 / nr.max(1) as f64)
}

fn lcs(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    for x in a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The scores of `prediction` against `reference`.
pub fn rouge(reference: &str, prediction: &str) -> Rouge {
    let (r, p) = (tokens(reference), tokens(prediction));
    let rouge_l = if r.is_empty() || p.is_empty() {
        0.0
    } else {
        let l = lcs(&r, &p) as f64;
        fmeasure(l / p.len() as f64, l / r.len() as f64)
    };
    Rouge { rouge1: rouge_n(&r, &p, 1), rouge2: rouge_n(&r, &p, 2), rouge_l }
}

/// Mean F-measures over predictions, ×100 (what tables report).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RougeTotals {
    sum: Rouge,
    n: u64,
}

impl RougeTotals {
    /// Adds one prediction scored against its reference.
    pub fn add(&mut self, reference: &str, prediction: &str) {
        let r = rouge(reference, prediction);
        self.sum.rouge1 += r.rouge1;
        self.sum.rouge2 += r.rouge2;
        self.sum.rouge_l += r.rouge_l;
        self.n += 1;
    }

    /// The means ×100.
    pub fn percent(&self) -> Rouge {
        let n = self.n.max(1) as f64;
        Rouge { rouge1: 100.0 * self.sum.rouge1 / n, rouge2: 100.0 * self.sum.rouge2 / n, rouge_l: 100.0 * self.sum.rouge_l / n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercase_alphanumeric_runs() {
        assert_eq!(tokens("The U.S.-led talks, 2004!  Café"), vec!["the", "u", "s", "led", "talks", "2004", "caf"]);
        assert!(tokens(" ,.; ").is_empty());
    }

    #[test]
    fn worked_example() {
        // reference: the cat sat on the mat (6), prediction: the cat on the mat (5)
        let r = rouge("The cat sat on the mat.", "the cat on the mat");
        // unigrams: overlap 5 -> P 1, R 5/6
        assert!((r.rouge1 - 2.0 * (5.0 / 6.0) / (1.0 + 5.0 / 6.0)).abs() < 1e-12);
        // bigrams: the cat, on the, the mat overlap (3 of 4 predicted, 3 of 5 reference)
        assert!((r.rouge2 - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-12);
        assert!((r.rouge_l - r.rouge1).abs() < 1e-12, "LCS is the whole prediction");
        assert_eq!(rouge("", "x"), Rouge::default());
        assert_eq!(rouge("a b", "").rouge_l, 0.0);
    }
}
