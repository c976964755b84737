//! SQuAD v2.0's official evaluation (`evaluate-v2.0.py`, as `transformers`' `squad_metrics`
//! and the `evaluate` library's `squad_v2` carry it): exact match and F1 over every question,
//! over those with an answer and over those without, and the best of each over all null
//! thresholds with the threshold that gives it.
//!
//! A question is scored from its best span's text and its null score difference (null score
//! minus the span's score): at a threshold `t` the answer is empty when the difference is
//! above `t`. An empty answer scores 1 on a question without an answer and 0 on one with;
//! a span scores its exact match / F1 against the references (0 against no answer).
//!
//! The best threshold is the official script's walk: start from answering nothing, then answer
//! questions in increasing order of their difference, keeping the running total's maximum;
//! the threshold is the difference of the last question answered there, `0.0` when answering
//! nothing is best (the script's convention).

use super::metrics::{has_answer, squad_scores};

/// One scored question.
#[derive(Debug, Clone, PartialEq)]
struct Scored {
    /// Whether it has an answer.
    has_answer: bool,
    /// The best span's exact match against the references (0 or 1).
    exact: f64,
    /// The best span's F1 against the references (0 to 1).
    f1: f64,
    /// Null score minus the span's score; `None`: no span qualified, always the empty answer.
    diff: Option<f32>,
    /// Whether the span's text is not empty.
    spoken: bool,
}

/// SQuAD v2.0 totals, built question by question.
#[derive(Debug, Clone, Default)]
pub struct SquadV2Score {
    questions: Vec<Scored>,
}

/// The totals at a threshold and the best thresholds, in percent (thresholds in logits).
#[derive(Debug, Clone, PartialEq)]
pub struct SquadV2Totals {
    /// Exact match over every question.
    pub exact: f64,
    /// F1 over every question.
    pub f1: f64,
    /// Exact match and F1 over the questions with an answer (`None` when there are none).
    pub has_answer: Option<(f64, f64)>,
    /// Questions with an answer.
    pub has_answer_questions: usize,
    /// Exact match and F1 over the questions without one.
    pub no_answer: Option<(f64, f64)>,
    /// Questions without an answer.
    pub no_answer_questions: usize,
    /// The best exact match over thresholds, and its threshold.
    pub best_exact: (f64, f64),
    /// The best F1 over thresholds, and its threshold.
    pub best_f1: (f64, f64),
}

impl SquadV2Score {
    /// Adds a question: its best span's text (`""` when none qualified), the null score
    /// difference (`None` when no span qualified) and the references (none: no answer).
    pub fn add(&mut self, span: &str, diff: Option<f32>, references: &[&str]) {
        let (exact, f1) = squad_scores(span, references);
        self.questions.push(Scored { has_answer: has_answer(references), exact, f1, diff, spoken: !span.is_empty() });
    }

    /// Questions added.
    pub fn len(&self) -> usize {
        self.questions.len()
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    /// The totals with the answer empty where the difference is above `threshold`.
    pub fn totals(&self, threshold: f32) -> SquadV2Totals {
        let answered = |q: &Scored| q.diff.is_some_and(|d| d <= threshold);
        // `apply_no_ans_threshold`: an empty answer scores whether the question has none.
        let at = |q: &Scored, raw: f64| if answered(q) { raw } else { f64::from(u8::from(!q.has_answer)) };
        let mean = |qs: &[&Scored]| -> Option<(f64, f64)> {
            (!qs.is_empty()).then(|| {
                let n = qs.len() as f64;
                (100.0 * qs.iter().map(|q| at(q, q.exact)).sum::<f64>() / n, 100.0 * qs.iter().map(|q| at(q, q.f1)).sum::<f64>() / n)
            })
        };
        let all: Vec<&Scored> = self.questions.iter().collect();
        let (with, without): (Vec<&Scored>, Vec<&Scored>) = all.iter().partition(|q| q.has_answer);
        let (exact, f1) = mean(&all).unwrap_or((0.0, 0.0));
        SquadV2Totals {
            exact,
            f1,
            has_answer: mean(&with),
            has_answer_questions: with.len(),
            no_answer: mean(&without),
            no_answer_questions: without.len(),
            best_exact: self.best_threshold(|q| q.exact),
            best_f1: self.best_threshold(|q| q.f1),
        }
    }

    /// `find_best_thresh`: the best total (percent) over thresholds and its threshold.
    fn best_threshold(&self, raw: impl Fn(&Scored) -> f64) -> (f64, f64) {
        if self.questions.is_empty() {
            return (0.0, 0.0);
        }
        let mut order: Vec<&Scored> = self.questions.iter().collect();
        // Increasing difference, ties in question order (Python's stable sort); questions
        // without a span never answer (an infinite difference: last, and they add nothing).
        order.sort_by(|a, b| a.diff.unwrap_or(f32::INFINITY).total_cmp(&b.diff.unwrap_or(f32::INFINITY)));
        let mut current = self.questions.iter().filter(|q| !q.has_answer).count() as f64;
        let (mut best, mut threshold) = (current, 0.0);
        for q in order {
            current += if q.has_answer {
                raw(q)
            } else if q.spoken {
                -1.0
            } else {
                0.0
            };
            if current > best {
                best = current;
                threshold = f64::from(q.diff.unwrap_or(f32::INFINITY));
            }
        }
        (100.0 * best / self.questions.len() as f64, threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_splits_answers_from_abstentions() {
        let mut s = SquadV2Score::default();
        s.add("Denver Broncos", Some(-3.0), &["Denver Broncos"]); // answered right at 0
        s.add("Paris", Some(2.0), &["Paris"]); // right, but abstains at 0
        s.add("the moon", Some(1.0), &[]); // no answer, abstains at 0: right
        s.add("nothing", Some(-1.0), &[]); // no answer, answers at 0: wrong
        s.add("", None, &[]); // no span: always abstains, right
        let t = s.totals(0.0);
        assert_eq!((t.exact, t.has_answer_questions, t.no_answer_questions), (60.0, 2, 3));
        assert_eq!(t.has_answer, Some((50.0, 50.0)));
        assert_eq!(t.no_answer.map(|x| x.0), Some(100.0 * 2.0 / 3.0));
        // Answering everything up to 2.0 gets both answers right but "nothing" and "the moon"
        // wrong (3 of 5); answering only the difference -3.0 gets 4 of 5 (the best).
        assert_eq!(s.totals(2.0).exact, 60.0);
        assert_eq!(s.totals(-3.0).exact, 80.0);
        assert_eq!(t.best_exact, (80.0, -3.0));
        // Nobody answering: the official script reports threshold 0.0.
        let mut n = SquadV2Score::default();
        n.add("x", Some(1.0), &[]);
        assert_eq!(n.totals(0.0).best_f1, (100.0, 0.0));
        assert!(SquadV2Score::default().is_empty());
    }
}
