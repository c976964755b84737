//! GLM generation: ROUGE against Google's `rouge-score`, the generation task end to end,
//! `pretune generate` on a pre-trained GLM and on a generation checkpoint.

use std::io::Write;
use std::process::{Command, Stdio};

use pretune::finetune::rouge::rouge;

use crate::util::root;

/// Texts built to hit the tokenizer's corners (case, punctuation, digits, accents, repeats,
/// empty) and the scores' (no overlap, repeated n-grams, one-token texts).
fn rouge_cases() -> Vec<(String, String)> {
    let words = ["the", "The", "cat", "CAT", "sat", "on", "mat", "U.S.", "2004", "café", "naïve", "--", "a", "a", "of", "talks,", "rise!", "x1", "", "Öl"];
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut text = |max: usize| {
        let len = next(max + 1);
        (0..len).map(|_| words[next(words.len())]).collect::<Vec<_>>().join(if next(4) == 0 { "  " } else { " " })
    };
    let mut cases: Vec<(String, String)> = (0..400).map(|_| (text(12), text(12))).collect();
    cases.extend([("".into(), "".into()), ("a a a a".into(), "a a".into()), ("Home, sweet home.".into(), "home sweet home".into())]);
    cases
}

#[test]
fn rouge_equals_google_rouge_score() {
    let cases = rouge_cases();
    let mut child = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/rouge_oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the venv's python (make setup)");
    child.stdin.take().unwrap().write_all(serde_json::to_string(&cases).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "rouge-score==0.1.2 missing? {}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<[f64; 3]> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), cases.len());
    let mut nonzero = 0;
    for ((r, p), want) in cases.iter().zip(&theirs) {
        let ours = rouge(r, p);
        for (name, a, b) in [("rouge1", ours.rouge1, want[0]), ("rouge2", ours.rouge2, want[1]), ("rougeL", ours.rouge_l, want[2])] {
            assert!((a - b).abs() < 1e-12, "{name} of {p:?} against {r:?}: ours {a}, rouge-score {b}");
        }
        nonzero += usize::from(want[1] > 0.0 && want[2] < want[0] + 1e-12);
    }
    assert!(nonzero > 20, "the cases exercise bigram overlap ({nonzero})");
}
