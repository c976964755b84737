//! GLM generation: ROUGE against Google's `rouge-score`, the generation task end to end,
//! `pretune generate` on a pre-trained GLM and on a generation checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pretune::finetune::rouge::rouge;
use serde_json::Value;

use crate::util::{root, run_cli};

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

/// A seq2seq set from the bundled corpus whose targets a few steps can learn: one of two
/// phrases, by whether the line mentions America.
fn copy_set(dir: &Path) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(root().join("data/sotu/valid.txt")).unwrap();
    let rows: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().take(24).collect::<Vec<_>>())
        .filter(|w| w.len() >= 8)
        .map(|w| {
            let target = if w.iter().any(|x| x.starts_with("America")) { "the american people" } else { "our great nation" };
            serde_json::json!({ "source": w.join(" "), "target": target }).to_string()
        })
        .take(140)
        .collect();
    let (train, dev) = (dir.join("train.jsonl"), dir.join("dev.jsonl"));
    std::fs::write(&train, rows[..120].join("\n")).unwrap();
    std::fs::write(&dev, rows[120..].join("\n")).unwrap();
    (train, dev)
}

fn cli(args: &[&str]) -> (i32, String, String) {
    run_cli(args)
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The ROUGE `rouge-score` gives for each (reference, output), averaged ×100.
fn oracle_rouge(pairs: &[(String, String)]) -> [f64; 3] {
    let mut child = Command::new(root().join(".venv/bin/python")).arg(root().join("scripts/rouge_oracle.py")).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(serde_json::to_string(pairs).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let each: Vec<[f64; 3]> = serde_json::from_slice(&out.stdout).unwrap();
    let n = each.len() as f64;
    [0, 1, 2].map(|k| 100.0 * each.iter().map(|s| s[k]).sum::<f64>() / n)
}

/// A GLM pre-trained briefly fills blanks with `pretune generate`, then fine-tunes as
/// generation: no new weights; the run's held-out ROUGE is what `pretune evaluate` finds in
/// its best checkpoint and what `rouge-score` gives on `pretune predict`'s outputs;
/// `generate` writes the same outputs as `predict`, with or without the cache; decoding keys
/// are checked; resume is exact; two ranks equal one process with twice the batch.
#[test]
fn glm_generation_fine_tunes_generates_predicts_evaluates_resumes_and_runs_on_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pre = d.join("pre");
    let cfg = crate::util::tiny_config(d);
    let o: Vec<String> = ["train.max_steps=10", "data.eval=[]", "objective.kind=\"glm\"", "model.max_position_embeddings=65", "model.hidden_dropout=0.0", "model.attention_dropout=0.0", &format!("run.out_dir={}", pre.display())].iter().map(|s| s.to_string()).collect();
    pretune::actors::run(pretune::plan::load_and_resolve(&cfg, &o).unwrap()).unwrap();

    // Blank filling on the pre-trained GLM: everything outside the blanks is the input's.
    let input = d.join("blanks.jsonl");
    std::fs::write(&input, "{\"text\": \"The state of our [MASK] is strong, and [sMASK] Tonight:[gMASK]\", \"id\": 7}\n{\"text\": \"We [MASK].\"}\n").unwrap();
    let (code, out, err) = cli(&["generate", "--checkpoint", pre.to_str().unwrap(), "--input", input.to_str().unwrap(), "--set", "generate.max_new_tokens=5"]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    let blanks: Vec<String> = lines[0]["blanks"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_owned()).collect();
    assert_eq!(blanks.len(), 3);
    assert_eq!(lines[0]["text"], format!("The state of our {} is strong, and {} Tonight:{}", blanks[0], blanks[1], blanks[2]));
    assert_eq!(lines[0]["id"], 7);
    let (code, out2, _) = cli(&["generate", "--checkpoint", pre.to_str().unwrap(), "--input", input.to_str().unwrap(), "--set", "generate.max_new_tokens=5", "--no-kv-cache"]);
    assert_eq!((code, &out2), (0, &out), "the cache changes nothing");
    std::fs::write(&input, "{\"text\": \"fine\"}\n{\"text\": \"no blank here\"}\n").unwrap();
    let (code, _, err) = cli(&["generate", "--checkpoint", pre.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("blanks.jsonl:1: no blank in `text`"), "{err}");
    // Several fillings: samples each their own, the first the single sample.
    std::fs::write(&input, "{\"text\": \"The state of our [MASK] is strong, and [sMASK]\"}\n").unwrap();
    let sample = |extra: &[&str]| {
        let mut args = vec!["generate", "--checkpoint", pre.to_str().unwrap(), "--input", input.to_str().unwrap(), "--set", "generate.max_new_tokens=4", "--set", "generate.do_sample=true", "--set", "generate.temperature=2.0"];
        args.extend_from_slice(extra);
        let (code, out, err) = cli(&args);
        assert_eq!(code, 0, "{err}");
        json_lines(&out).remove(0)
    };
    let (one, three) = (sample(&[]), sample(&["--set", "generate.num_return_sequences=3"]));
    let candidates = three["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 3);
    assert_eq!((&candidates[0]["text"], &three["text"]), (&one["text"], &one["text"]));
    assert!(candidates.iter().all(|c| c["blanks"].as_array().map(Vec::len) == Some(2)));
    // Beams no memory holds: refused before decoding, not a process the kernel kills.
    std::fs::write(&input, "{\"text\": \"We [MASK].\"}\n").unwrap();
    let (code, _, err) = cli(&["generate", "--checkpoint", pre.to_str().unwrap(), "--input", input.to_str().unwrap(), "--set", "generate.num_beams=1000000000000"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("generate.num_beams = 1000000000000: decoding one input needs about") && err.contains("lower generate.num_beams"), "{err}");

    // Fine-tuning as generation.
    let (train, dev) = copy_set(d);
    let ft = crate::util::ft_config(d, "generation", train.to_str().unwrap(), dev.to_str().unwrap(), "");
    let text = std::fs::read_to_string(&ft).unwrap();
    let (head, tail) = text.split_once("[model]").unwrap();
    let text = format!(
        "{}\n[init]\ncheckpoint = \"{}\"\n[generate]\nmax_new_tokens = 6\nmin_new_tokens = 3\n{}",
        head.replace("kind = \"generation\"", "kind = \"generation\"\nmax_target_len = 8"),
        pre.join("checkpoints").display(),
        &tail[tail.find("[train]").unwrap()..]
    );
    std::fs::write(&ft, text).unwrap();
    let run_dir = d.join("gen");
    let sets = |extra: &[String]| -> Vec<String> {
        let mut v: Vec<String> = ["train.epochs=0", "train.max_steps=8", "train.eval_every=8", "train.checkpoint_every=4", "train.keep_last=0", "train.log_every=1", "train.lr=3e-3", "train.batch_size=8"].iter().map(|s| s.to_string()).collect();
        v.extend_from_slice(extra);
        v
    };
    let s = crate::finetune::finetune(&ft, &sets(&[format!("run.out_dir={}", run_dir.display())]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(s.metric, "rougeL");
    let init = s.init.clone().unwrap();
    assert!(init.missing.is_empty(), "no new weights: {:?}", init.missing);
    let (_, reported) = crate::util::evals(&run_dir).pop().unwrap();
    for k in ["rouge1", "rouge2", "rougeL", "exact_match", "f1", "examples", "generated_tokens", "generation_tokens_per_second", "loss"] {
        assert!(reported.get(k).is_some(), "{k} missing from {reported:?}");
    }
    assert_eq!(reported.get("examples"), Some(20.0));
    assert!(reported.get("rouge1").unwrap() > 0.0, "something to compare: {}", reported.summary());
    assert!(reported.get("generation_tokens_per_second").unwrap() > 0.0);
    let best = s.best_checkpoint.clone().unwrap();

    // evaluate --json equals the run's evaluation; predict's outputs scored by rouge-score
    // give the same ROUGE.
    let (code, out, err) = cli(&["evaluate", "--checkpoint", best.to_str().unwrap(), "--data", dev.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let ev: Value = serde_json::from_str(&out).unwrap();
    for k in ["rouge1", "rouge2", "rougeL", "exact_match", "f1", "examples"] {
        assert!((ev[k].as_f64().unwrap() - reported.get(k).unwrap()).abs() < 1e-9, "{k}: evaluate {} vs the run {:?}", ev[k], reported.get(k));
    }
    let (code, predicted, err) = cli(&["predict", "--checkpoint", best.to_str().unwrap(), "--input", dev.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let outputs = json_lines(&predicted);
    let refs: Vec<String> = json_lines(&std::fs::read_to_string(&dev).unwrap()).iter().map(|r| r["target"].as_str().unwrap().to_owned()).collect();
    assert_eq!(outputs.len(), refs.len());
    assert_eq!(outputs[0]["id"], 1, "no `id` field: the line number");
    let pairs: Vec<(String, String)> = refs.iter().zip(&outputs).map(|(r, o)| (r.clone(), o["output"].as_str().unwrap().to_owned())).collect();
    let want = oracle_rouge(&pairs);
    for (k, w) in ["rouge1", "rouge2", "rougeL"].iter().zip(want) {
        assert!((ev[k].as_f64().unwrap() - w).abs() < 1e-9, "{k}: ours {} vs rouge-score {w}", ev[k]);
    }
    // generate on a generation checkpoint is predict; the cache changes nothing; beams run.
    for extra in [vec![], vec!["--no-kv-cache"]] {
        let mut args = vec!["generate", "--checkpoint", best.to_str().unwrap(), "--input", dev.to_str().unwrap()];
        args.extend(extra);
        let (code, out, err) = cli(&args);
        assert_eq!((code, out.as_str()), (0, predicted.as_str()), "{err}");
    }
    let (code, beams, err) = cli(&["generate", "--checkpoint", best.to_str().unwrap(), "--input", dev.to_str().unwrap(), "--set", "generate.num_beams=3", "--set", "generate.no_repeat_ngram_size=2"]);
    assert_eq!((code, json_lines(&beams).len()), (0, 20), "{err}");
    // Several outputs: the beams' best first, the first the single output.
    let (code, several, err) = cli(&["generate", "--checkpoint", best.to_str().unwrap(), "--input", dev.to_str().unwrap(), "--set", "generate.num_beams=3", "--set", "generate.no_repeat_ngram_size=2", "--set", "generate.num_return_sequences=2"]);
    assert_eq!(code, 0, "{err}");
    for (one, two) in json_lines(&beams).iter().zip(json_lines(&several)) {
        assert_eq!(two["outputs"].as_array().map(Vec::len), Some(2), "{two}");
        assert_eq!((&two["output"], &two["outputs"][0]), (&one["output"], &one["output"]), "{two}");
        assert!(one.get("outputs").is_none());
    }
    let (code, _, err) = cli(&["generate", "--checkpoint", best.to_str().unwrap(), "--input", dev.to_str().unwrap(), "--set", "generate.num_beam=3"]);
    assert_eq!(code, 2);
    assert!(err.contains("generate.num_beam"), "{err}");
    let (code, _, err) = cli(&["predict", "--checkpoint", best.to_str().unwrap(), "--input", dev.to_str().unwrap(), "--set", "generate.num_beams=1000000000000"]);
    assert_eq!(code, 2);
    assert!(err.contains("generate.num_beams = 1000000000000: decoding one input needs about"), "{err}");
    let (code, _, err) = cli(&["export", "--hf", d.join("hf").to_str().unwrap(), "--checkpoint", best.to_str().unwrap()]);
    assert!(code != 0 && err.contains("no Hugging Face"), "{err}");

    // Resume from step 4 ends with the uninterrupted run's weights.
    let resumed = d.join("resumed");
    let mut args: Vec<String> = vec!["train".into(), ft.display().to_string(), "--resume".into(), run_dir.join("checkpoints/step-00000004").display().to_string()];
    for s in sets(&[format!("run.out_dir={}", resumed.display())]) {
        args.extend(["--set".into(), s]);
    }
    let (code, _, err) = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    crate::util::assert_same_weights(&run_dir.join("checkpoints/step-00000008"), &resumed.join("checkpoints/step-00000008"));

    // Two ranks of batch 4 end with the weights of one process of batch 8.
    let two = d.join("two");
    let mut args: Vec<String> = vec!["launch".into(), "--nproc".into(), "2".into(), ft.display().to_string()];
    for s in sets(&[format!("run.out_dir={}", two.display()), "train.batch_size=4".into(), "train.eval_every=0".into()]) {
        args.extend(["--set".into(), s]);
    }
    let (code, _, err) = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let (a, b) = (crate::util::weights(&two.join("checkpoints/step-00000008")), crate::util::weights(&run_dir.join("checkpoints/step-00000008")));
    let worst = a.iter().map(|(k, t)| (t - &b[k]).abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(worst < 1e-5, "two ranks differ from one process by {worst}");
}

/// A BERT checkpoint, or a task that does not generate, is refused with what works instead.
#[test]
fn generate_refuses_checkpoints_that_do_not_generate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::util::tiny_config(dir.path());
    pretune::actors::run(pretune::plan::load_and_resolve(&cfg, &["train.max_steps=2".into(), "data.eval=[]".into()]).unwrap()).unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"a [MASK] b\"}\n").unwrap();
    let (code, _, err) = cli(&["generate", "--checkpoint", dir.path().join("run").to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("a bert pre-training checkpoint does not generate"), "{err}");
}

/// `scripts/glm_generation.py` in its smoke mode runs every cell once, keeps the text around
/// the table, and re-renders the same table from the runs alone; the random-init cells start
/// from fresh weights (`init.reinitialize`), the pre-trained ones load every weight.
#[test]
fn the_glm_generation_table_script_runs_and_regenerates_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.md");
    std::fs::write(&doc, "# Title\n\n<!-- table:start -->\nold\n<!-- table:end -->\n\nWhat it shows.\n").unwrap();
    let out_dir = dir.path().join("gg");
    let script = |extra: &[&str]| {
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("scripts/glm_generation.py"))
            .args(["--smoke", "--pretune", crate::util::bin().to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--doc", doc.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(&doc).unwrap()
    };
    let first = script(&[]);
    assert!(first.starts_with("# Title\n\n") && first.trim_end().ends_with("What it shows.") && !first.contains("\nold\n"), "{first}");
    for needle in ["| tiny GLM, pre-trained (ours) |", "| same GLM, random init |", "lead baseline: the article's first", "all-MiniLM-L6-v2", "SMOKE"] {
        assert!(first.contains(needle), "{needle} missing:\n{first}");
    }
    let cells: usize = first.lines().filter(|l| l.starts_with("| ")).map(|l| l.matches(" ± ").count()).sum();
    assert_eq!(cells, 3 * 2 + 2 * 2, "every measured cell holds a number:\n{first}");
    assert_eq!(script(&["--table-only"]), first, "the table comes from the runs alone");
    let started = |init: &str| -> Option<Value> {
        let state = std::fs::read_to_string(out_dir.join(format!("runs/headline/{init}/seed1/checkpoints/step-00000002/state.json"))).unwrap();
        serde_json::from_str::<Value>(&state).unwrap().get("init").cloned().filter(|v| !v.is_null())
    };
    assert!(started("pretrained").is_some() && started("random").is_none(), "pre-trained: {:?}; random: {:?}", started("pretrained"), started("random"));
}
