//! The `pretune` binary: bad input, preview, tokenizer training, live metrics.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{bin, free_port, http_get, root, run_cli, tiny_config};

fn no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
}

#[test]
fn unknown_config_key_names_the_key_and_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let text = std::fs::read_to_string(&cfg).unwrap().replace("max_steps = 60", "max_step = 60");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = run_cli(&["train", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("train.max_step") && err.contains("tiny.toml"), "{err}");
    no_panic(&err);
}

#[test]
fn wrong_type_missing_file_and_bad_override_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let c = cfg.to_str().unwrap();
    let (code, _, err) = run_cli(&["train", c, "--set", "train.lr=fast"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("train.lr"), "{err}");
    let (code, _, err) = run_cli(&["train", c, "--set", "data.train=[\"/nonexistent/corpus.txt\"]"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("data.train") && err.contains("/nonexistent/corpus.txt"), "{err}");
    let (code, _, err) = run_cli(&["train", c, "--set", "novalue"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cli(&["train", "/nonexistent/config.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/config.toml"), "{err}");
    no_panic(&err);
}

#[test]
fn empty_corpus_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n\n").unwrap();
    let (code, _, err) = run_cli(&["train", cfg.to_str().unwrap(), "--set", &format!("data.train=[\"{}\"]", empty.display())]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("corpus is empty") && err.contains("empty.txt"), "{err}");
    no_panic(&err);
    // Every record skipped (invalid UTF-8, an over-long line): the error says so, by reason.
    let bad = dir.path().join("bad.txt");
    let mut bytes = b"caf\xff one\n\xfe two\n\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 4096));
    bytes.push(b'\n');
    std::fs::write(&bad, bytes).unwrap();
    let (code, _, err) = run_cli(&["train", cfg.to_str().unwrap(), "--set", &format!("data.train=[\"{}\"]", bad.display()), "--set", "data.max_line_bytes=1024", "--set", "data.on_error=\"skip\""]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("every record of") && err.contains("invalid_utf8") && err.contains("1 line_too_long"), "{err}");
    no_panic(&err);
}

#[test]
fn overrides_apply_to_seed_out_dir_and_steps() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("elsewhere");
    let (code, stdout, err) = run_cli(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "train.max_steps=3",
        "--set",
        &format!("run.out_dir={}", out.display()),
        "--set",
        "run.seed=11",
        "--set",
        "metrics.listen=",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("steps             3"), "{stdout}");
    let resolved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(resolved.contains("seed = 11"), "{resolved}");
    assert!(out.join("checkpoints/step-00000003/model.safetensors").exists());
}

#[test]
fn preview_json_shows_masked_inputs_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let (code, stdout, err) = run_cli(&["preview", cfg.to_str().unwrap(), "-n", "4", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4);
    for r in rows {
        let ids: Vec<i64> = serde_json::from_value(r["input_ids"].clone()).unwrap();
        let labels: Vec<i64> = serde_json::from_value(r["labels"].clone()).unwrap();
        let tokens: Vec<String> = serde_json::from_value(r["tokens"].clone()).unwrap();
        let pos: Vec<i64> = serde_json::from_value(r["position_ids"].clone()).unwrap();
        assert!(ids.len() <= 64 && ids.len() == labels.len() && ids.len() == tokens.len());
        assert_eq!((tokens[0].as_str(), tokens.last().unwrap().as_str()), ("[CLS]", "[SEP]"));
        assert_eq!(pos, (0..ids.len() as i64).collect::<Vec<_>>());
        let scored = labels.iter().filter(|&&l| l != -100).count();
        assert!(scored >= 1 && scored <= ids.len() / 5, "{scored} of {}", ids.len());
        assert!(labels.iter().zip(&ids).all(|(&l, _)| l == -100 || l >= 0));
    }
}

#[test]
fn tokenizer_train_writes_a_bert_wordpiece_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tok.json");
    let corpus = root().join("data/sotu/valid.txt");
    let (code, stdout, err) = run_cli(&["tokenizer", "train", "--vocab-size", "600", "--out", out.to_str().unwrap(), corpus.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("600 tokens"), "{stdout}");
    let t = pretune::data::tokenize::TextTokenizer::load(&out, None).unwrap();
    let ids = t.special_ids();
    assert_eq!((ids.pad, ids.unk, ids.cls, ids.sep, ids.mask), (0, 1, 2, 3, 4));
    let s = t.encode("The Congress shall make no law").unwrap();
    assert!(!s.ids.is_empty() && s.ids.iter().all(|&i| i != ids.unk));
    // A ceiling above what the text holds: every piece, and said so.
    let (code, stdout, err) = run_cli(&["tokenizer", "train", "--vocab-size", "10000000", "--out", out.to_str().unwrap(), corpus.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("tokens: every piece the text holds, fewer than --vocab-size 10000000"), "{stdout}");
}

#[test]
fn live_metrics_show_trainer_tokens_for_pretraining() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let port = free_port();
    let jsonl = dir.path().join("extra.jsonl");
    std::fs::write(&jsonl, "{\"text\": \"One more document.\\nWith two sentences.\"}\nnot json\n{\"body\": 1}\n").unwrap();
    let train = format!("data.train=[\"{}\", \"{}\"]", jsonl.display(), root().join("data/sotu/train.txt").display());
    let mut child = Command::new(bin())
        .args(["train", cfg.to_str().unwrap(), "--set", &format!("metrics.listen=127.0.0.1:{port}"), "--set", &train])
        .args(["--set", "train.max_steps=200", "--set", "metrics.linger_s=20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let trainer_tokens = |b: &str| crate::util::metric_value(b, "pretune_tokens_total", &[("phase", "pretrain"), ("stage", "trainer")]).unwrap_or(0.0);
    let body = crate::util::eventually(Duration::from_secs(120), "trainer tokens, step durations and skipped records on /metrics", || {
        http_get(port, "/metrics").filter(|b| trainer_tokens(b) > 0.0 && b.contains("pretune_step_duration_seconds_bucket") && b.contains("pretune_records_skipped_total"))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(trainer_tokens(&body) > 0.0, "no trainer tokens in:\n{body}");
    for name in [
        "pretune_tokens_total",
        "pretune_samples_total",
        "pretune_steps_total",
        "pretune_step_duration_seconds_bucket",
        "pretune_data_wait_seconds_total",
        "pretune_queue_depth",
        "pretune_loss",
        "pretune_learning_rate",
        "pretune_build_info",
    ] {
        assert!(body.contains(&format!("\n{name}")) || body.starts_with(name), "{name} missing:\n{body}");
        assert!(body.contains(&format!("# HELP {}", name.trim_end_matches("_bucket"))), "{name} has no HELP:\n{body}");
    }
    assert!(body.contains("run_id=\"test\""), "{body}");
    for reason in ["bad_json", "missing_field"] {
        assert!(body.lines().any(|l| l.starts_with("pretune_records_skipped_total{") && l.contains(&format!("reason=\"{reason}\"")) && l.ends_with(" 1")), "{reason}:\n{body}");
    }
    assert!(body.contains("phase=\"pretrain\",stage=\"masker\"") || body.contains("stage=\"masker\""), "{body}");
}

#[test]
fn every_config_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let text = std::fs::read_to_string(&cfg).unwrap().replace("max_steps = 60", "max_step = 60").replace("hidden_size = 64", "hidden_size = \"wide\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = run_cli(&["train", cfg.to_str().unwrap(), "--set", "train.batch_size=0", "--set", "tokenizer.path=/nonexistent/tok.json"]);
    assert_eq!(code, 2, "{err}");
    for key in ["train.max_step", "model.hidden_size", "train.batch_size", "tokenizer.path"] {
        assert!(err.contains(key), "{key} missing:\n{err}");
    }
    assert!(err.contains("tiny.toml") && err.contains("/nonexistent/tok.json"), "{err}");
    // What the command line wrote names the `--set`; what the file wrote does not.
    let line = |key: &str| err.lines().find(|l| l.contains(key)).unwrap_or_default().to_owned();
    assert!(line("train.batch_size:").ends_with("(from --set train.batch_size=0)"), "{err}");
    assert!(line("tokenizer.path:").ends_with("(from --set tokenizer.path=/nonexistent/tok.json)"), "{err}");
    assert!(!line("train.max_step:").contains("--set") && !line("model.hidden_size:").contains("--set"), "{err}");
    no_panic(&err);
}

fn write_bad_corpus(dir: &std::path::Path) -> std::path::PathBuf {
    let good = std::fs::read_to_string(root().join("data/sotu/valid.txt")).unwrap();
    let mut bytes = b"A fine sentence.\n\nA bad \xff byte here.\n\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'y', 5000));
    bytes.extend_from_slice(b"\n\n");
    bytes.extend_from_slice(good.as_bytes());
    let p = dir.join("bad.txt");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn bad_records_are_skipped_with_file_and_line_or_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let bad = write_bad_corpus(dir.path());
    let train = format!("data.train=[\"{}\"]", bad.display());
    let c = cfg.to_str().unwrap();
    let (code, _, err) = run_cli(&["train", c, "--set", &train, "--set", "data.max_line_bytes=1000", "--set", "train.max_steps=2", "--set", "data.eval=[]"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("bad.txt") && err.contains("line=3") && err.contains("invalid_utf8"), "{err}");
    assert!(err.contains("line=5") && err.contains("line_too_long"), "{err}");
    let (code, _, err) = run_cli(&["train", c, "--set", &train, "--set", "data.on_error=\"fail\"", "--set", "data.eval=[]"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad.txt:3") && err.contains("invalid UTF-8"), "{err}");
    no_panic(&err);
}

#[test]
fn a_metrics_port_in_use_is_a_clear_error_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run_cli(&["train", cfg.to_str().unwrap(), "--set", &format!("metrics.listen={addr}")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&addr) && err.to_lowercase().contains("in use"), "{err}");
    no_panic(&err);
}

/// `launch` checks what every rank would get before it starts one: a config key typo, a
/// mistyped `train` option or a missing config is one error, exit 2, with no rank started
/// (each rank would print it again and the launcher would report a rank failure).
#[test]
fn launch_reports_a_bad_config_or_train_option_once_before_starting_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let c = cfg.to_str().unwrap();
    let missing = dir.path().join("missing.toml");
    for (args, names) in [
        (vec!["--set", "trian.lr=1"], "trian"),
        (vec!["--set", "train.lr=\"fast\""], "train.lr"),
        (vec!["--resum", "auto"], "--resum"),
    ] {
        let mut all = vec!["launch", "--nproc", "2", c];
        all.extend(&args);
        let (code, _, err) = run_cli(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(names) && !err.contains("launching ranks") && !err.contains("rank failed"), "{args:?}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "one error: {err}");
        no_panic(&err);
    }
    let (code, _, err) = run_cli(&["launch", "--nproc", "2", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("cannot read config").count(), 1, "one error: {err}");
    assert!(!err.contains("launching ranks"), "{err}");
}

#[test]
fn preview_json_carries_each_objectives_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let c = cfg.to_str().unwrap();
    let (code, stdout, err) = run_cli(&["preview", c, "-n", "6", "--json", "--set", "objective.sentence_pair=\"nsp\""]);
    assert_eq!(code, 0, "{err}");
    for l in stdout.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(r["objective"], "mlm+nsp");
        assert_eq!(r["attention"]["kind"], "bidirectional");
        assert!(r["nsp_label"].as_i64().is_some_and(|l| l == 0 || l == 1), "{r}");
        let types: Vec<i64> = serde_json::from_value(r["token_type_ids"].clone()).unwrap();
        let tokens: Vec<String> = serde_json::from_value(r["tokens"].clone()).unwrap();
        let first_b = types.iter().position(|&t| t == 1).expect("a B segment");
        assert_eq!(tokens[first_b - 1], "[SEP]");
        assert!(types[first_b..].iter().all(|&t| t == 1) && types[..first_b].iter().all(|&t| t == 0));
        assert!(tokens.len() <= 64);
    }
    let (code, stdout, err) = run_cli(&["preview", c, "-n", "6", "--json", "--set", "objective.kind=\"glm\"", "--set", "model.max_position_embeddings=65"]);
    assert_eq!(code, 0, "{err}");
    for l in stdout.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(r["objective"], "glm");
        assert_eq!(r["attention"]["kind"], "prefix_causal");
        let sep = r["attention"]["prefix_len"].as_u64().unwrap() as usize;
        let blocks: Vec<i64> = serde_json::from_value(r["block_position_ids"].clone()).unwrap();
        let labels: Vec<i64> = serde_json::from_value(r["labels"].clone()).unwrap();
        let tokens: Vec<String> = serde_json::from_value(r["tokens"].clone()).unwrap();
        assert!(blocks[..sep].iter().all(|&b| b == 0) && labels[..sep].iter().all(|&l| l == -100));
        assert!(tokens[sep..].first().is_some_and(|t| t == "[sop]" || t == "[gMASK]" ) || sep == tokens.len(), "{r}");
        assert!(tokens[..sep].iter().any(|t| t == "[MASK]" || t == "[sMASK]" || t == "[gMASK]"), "{r}");
    }
}

/// Every shipped config parses with no unknown or mistyped key; pre-training ones also resolve
/// and preview (fine-tuning ones start from checkpoints a pre-training run makes first).
#[test]
fn every_shipped_config_parses_and_pretraining_ones_preview() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let cfg = pretune::config::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
        n += 1;
        if cfg.task.kind.is_some() {
            continue;
        }
        let (code, stdout, err) = run_cli(&["preview", path.to_str().unwrap(), "-n", "2", "--json"]);
        assert_eq!(code, 0, "{}: {err}", path.display());
        assert_eq!(stdout.lines().count(), 2, "{}", path.display());
    }
    assert!(n >= 10);
}

/// `pretune bench`: every workload runs on the bundled corpus and prints one JSON line with
/// sane contents (a smoke test of the entry point; the timings themselves live in BENCHMARKS.md).
#[test]
fn bench_workloads_print_one_json_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let common = ["--corpus", "data/sotu/train.txt", "--tokenizer", "data/sotu/tokenizer.json", "--out", &out];
    let bench = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        all.extend_from_slice(&common);
        let (code, stdout, err) = run_cli(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
    };
    let mask = bench(&["mask", "--seconds", "0.05", "--batch", "8", "--seq", "64"]);
    let variants: Vec<&str> = mask["results"].as_array().unwrap().iter().map(|r| r["variant"].as_str().unwrap()).collect();
    assert_eq!(variants, ["mlm_bernoulli", "mlm_exact", "mlm_wwm", "nsp_pairs", "glm_blank_infilling"]);
    for r in mask["results"].as_array().unwrap() {
        assert!(r["sequences_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    let frac = mask["results"][0]["sanity"]["scored_frac"].as_f64().unwrap();
    assert!((0.05..0.3).contains(&frac), "scored share {frac}");

    let tok = bench(&["tokenize"]);
    let r = &tok["results"][0];
    assert!(r["tokens"].as_u64().unwrap() > 100_000 && r["tokens_per_s"].as_f64().unwrap() > 0.0, "{tok}");

    let pre = bench(&["pretrain", "--objective", "mlm", "--batch", "8", "--seq", "64", "--warmup", "1", "--steps", "2"]);
    assert_eq!(pre["timing"]["steps"], 2, "{pre}");
    assert!(pre["tokens_per_s"].as_f64().unwrap() > 0.0 && pre["peak_rss_mb"].as_f64().unwrap() > 10.0, "{pre}");
    assert!(pre["train_step_gflop_dense_equivalent"].as_f64().unwrap() > 0.0);

    let stream = bench(&["stream", "--batch", "8", "--seq", "64"]);
    assert!(stream["sequences"].as_u64().unwrap() > 100, "{stream}");
    // The same epoch from a prepared copy: the same sequences.
    let prepared = bench(&["stream", "--batch", "8", "--seq", "64", "--prepared"]);
    assert_eq!(prepared["sequences"], stream["sequences"], "{prepared}");
    assert_eq!(prepared["tokens"], stream["tokens"], "{prepared}");

    let prep = bench(&["prepare", "--threads", "2"]);
    assert!(prep["tokens"].as_u64().unwrap() > 300_000 && prep["tokens_per_s"].as_f64().unwrap() > 0.0, "{prep}");
    let resume = bench(&["resume"]);
    assert_eq!(resume["text"]["first_example_tokens"], resume["prepared"]["first_example_tokens"], "{resume}");
    assert!(resume["prepared"]["seconds_best"].as_f64().unwrap() > 0.0, "{resume}");
}

/// `preview` shows a fine-tuning task's rows through the task's own collator: the class of a
/// text, each tagged word's tag on its first sub-token, a QA window with its answer span, and
/// cloze rows with the candidate each scores (BERT's MLM slots).
#[test]
fn preview_shows_each_tasks_rows_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let preview = |kind: &str, train: &std::path::Path, extra: &str, sets: &[&str]| -> Vec<serde_json::Value> {
        let cfg = crate::util::ft_config(d, kind, &train.display().to_string(), &train.display().to_string(), extra);
        let mut args = vec!["preview".to_owned(), cfg.display().to_string(), "-n".into(), "4".into(), "--json".into()];
        for s in sets {
            args.extend(["--set".to_owned(), (*s).to_owned()]);
        }
        let (code, stdout, err) = run_cli(&args);
        assert_eq!(code, 0, "{kind}: {err}");
        stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let texts = d.join("texts.jsonl");
    std::fs::write(&texts, "{\"text\": \"a good film\", \"label\": \"pos\"}\n{\"text\": \"a bad one\", \"label\": \"neg\"}\n").unwrap();
    let rows = preview("sequence_classification", &texts, "", &[]);
    // Four rows of a two-example set: its epochs repeat, each example once per epoch.
    let mut labels: Vec<&str> = rows.iter().map(|r| r["target"].as_str().unwrap()).collect();
    labels.sort();
    assert_eq!(labels, ["label neg", "label neg", "label pos", "label pos"]);
    assert!(rows.iter().all(|r| r["objective"] == "sequence_classification"));

    let conll = d.join("ner.txt");
    std::fs::write(&conll, "Paris\tB-loc\nis\tO\nbig\tO\n\nBob\tB-person\nsleeps\tO\n").unwrap();
    let rows = preview("token_classification", &conll, "", &[]);
    let targets: Vec<&str> = rows.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert!(targets.iter().any(|t| t.contains("/B-loc") && t.matches("/O").count() == 2), "{targets:?}");
    assert!(targets.iter().any(|t| t.contains("/B-person")), "{targets:?}");

    let squad = d.join("qa.jsonl");
    std::fs::write(&squad, r#"{"id": "q1", "question": "Where is the cat?", "context": "The cat sat on the mat.", "answers": {"text": ["on the mat"], "answer_start": [12]}}"#.to_owned() + "\n").unwrap();
    let rows = preview("question_answering", &squad, "", &["task.doc_stride=16"]);
    assert_eq!(rows.len(), 4, "one window, four epochs");
    let target = rows[0]["target"].as_str().unwrap();
    let (span, text) = target.split_once(": ").expect("an answer span");
    assert!(span.starts_with("answer tokens "), "{target}");
    assert_eq!(text.replace(" ##", ""), "on the mat", "{target}");

    // Cloze on BERT's MLM head: one row per example for one-token verbalizers, both candidates
    // at its `[MASK]`. (MiniLM, which has no MLM head, could not train it; preview loads no
    // weights.)
    let cfg = crate::util::ft_config(d, "cloze", &texts.display().to_string(), &texts.display().to_string(), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[task]\nkind = \"cloze\"",
        &format!("[init]\nhf = \"{}\"\n[task]\nkind = \"cloze\"\npattern = \"{{text}} It was [MASK].\"\n[task.verbalizers]\npos = \"great\"\nneg = \"terrible\"", root().join(".cache/minilm/model").display()),
    );
    let (head, tail) = text.split_once("[model]").unwrap();
    std::fs::write(&cfg, format!("{head}{}", &tail[tail.find("[train]").unwrap()..]).replace("[tokenizer]\npath", "[tokenizer]\n# path")).unwrap();
    let (code, stdout, err) = run_cli(&["preview", cfg.to_str().unwrap(), "-n", "4", "--json"]);
    assert_eq!(code, 0, "{err}");
    let targets: Vec<String> = stdout.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["target"].as_str().unwrap().to_owned()).collect();
    assert_eq!(targets.len(), 4, "{targets:?}");
    assert!(targets.iter().all(|t| t.starts_with("candidates `") && t.contains(" | ") && t.contains("`great`") && t.contains("`terrible`")), "{targets:?}");
}

/// `pretune train ... 2>&1 | head -3`: the reader goes away after three lines; the run goes on
/// to its last step and checkpoint (writes to the closed pipe are dropped, never a panic or an
/// abort), and exits 0.
#[test]
fn a_closed_log_pipe_does_not_stop_the_run() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = crate::util::KillOnDrop(
        Command::new(bin())
            .args(["train", cfg.to_str().unwrap(), "--set", "train.max_steps=12", "--set", "train.log_every=1", "--set", "train.checkpoint_every=6", "--set", "data.eval=[]", "--set", "metrics.listen=\"\""])
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(reader).lines();
    for _ in 0..3 {
        lines.next().expect("a line before the reader quits").unwrap();
    }
    drop(lines);
    let status = crate::util::wait_bounded(&mut child.0, Duration::from_secs(120));
    assert!(status.success(), "{status:?}");
    let latest = std::fs::read_to_string(dir.path().join("run/checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000012");
}

/// A finished run lingering for a last scrape (`metrics.linger_s`) ends at once on SIGTERM.
#[test]
fn sigterm_ends_a_metrics_linger_at_once() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let (reader, writer) = std::io::pipe().unwrap();
    let port = free_port();
    let mut child = crate::util::KillOnDrop(
        Command::new(bin())
            .args(["train", cfg.to_str().unwrap(), "--set", "train.max_steps=2", "--set", "data.eval=[]", "--set", &format!("metrics.listen=\"127.0.0.1:{port}\""), "--set", "metrics.linger_s=600"])
            .stdout(Stdio::null())
            .stderr(writer)
            .spawn()
            .unwrap(),
    );
    let lines = std::io::BufReader::new(reader).lines();
    let mut seen = Vec::new();
    for line in lines {
        let line = line.unwrap();
        let lingering = line.contains("lingering for a last scrape");
        seen.push(line);
        if lingering {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains("lingering")), "{seen:?}");
    // SAFETY: kill(2) on our child.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let t0 = std::time::Instant::now();
    let status = crate::util::wait_bounded(&mut child.0, Duration::from_secs(30));
    assert!(status.success() && t0.elapsed() < Duration::from_secs(10), "{status:?} after {:?}", t0.elapsed());
}

/// `pretune check` finds what would stop a run at its output folder and ports: a
/// `checkpoints` that is a file, a folder a live run holds, a per-rank metrics port taken (with
/// `--nproc`), and a disk without room for two checkpoints (a 1 MB tmpfs; skipped with a
/// reason where mounting is not allowed).
#[test]
fn check_finds_output_folder_and_port_problems() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("checkpoints"), b"not a folder").unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec!["check".to_string(), cfg.display().to_string(), "--set".into(), format!("run.out_dir=\"{}\"", out.display())];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, _, err) = check(&["--set", "metrics.listen=\"\""]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("checkpoints") && err.contains("is not a folder"), "{err}");
    std::fs::remove_file(out.join("checkpoints")).unwrap();

    let held = pretune::actors::FolderLock::acquire(&out).unwrap();
    let (code, _, err) = check(&["--set", "metrics.listen=\"\""]);
    assert!(code == 2 && err.contains(&format!("in use by pid {}", std::process::id())), "{err}");
    drop(held);

    let port = free_port();
    let taken = std::net::TcpListener::bind(("127.0.0.1", port + 1)).unwrap();
    let listen = format!("metrics.listen=\"127.0.0.1:{port}\"");
    assert_eq!(check(&["--set", &listen]).0, 0, "one process needs only the first port");
    let (code, _, err) = check(&["--set", &listen, "--nproc", "2"]);
    assert!(code == 2 && err.contains(&format!("metrics.listen: cannot listen on 127.0.0.1:{}", port + 1)), "{err}");
    drop(taken);

    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", small.to_str().unwrap()]).status().is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped the full-disk case: cannot mount a tmpfs here (needs root)");
        return;
    }
    let (code, _, err) = run_cli(&["check", cfg.to_str().unwrap(), "--set", &format!("run.out_dir=\"{}\"", small.join("run").display()), "--set", "metrics.listen=\"\""]);
    let _ = Command::new("umount").arg(&small).status();
    assert!(code == 2 && err.contains("MB free where two checkpoints take"), "{err}");
}

/// A step that cannot allocate (an address-space limit, as a machine without the memory would
/// give) ends the run with what ran out and what to change, exit 1, never "internal error";
/// the checkpoint of the run it resumed stays intact.
#[test]
fn out_of_memory_in_a_step_is_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let (code, _, err) = run_cli(&["train", cfg.to_str().unwrap(), "--set", "train.max_steps=2", "--set", "data.eval=[]", "--set", "metrics.listen=\"\""]);
    assert_eq!(code, 0, "{err}");
    let latest = dir.path().join("run/checkpoints/step-00000002");
    let mut cmd = Command::new(bin());
    cmd.args(["train", cfg.to_str().unwrap(), "--resume", "auto", "--set", "train.max_steps=4", "--set", "data.eval=[]", "--set", "metrics.listen=\"\"", "--set", "train.batch_size=4096", "--set", "train.max_seq_len=64", "--set", "pipeline.masker_workers=1"]);
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 4 << 30, rlim_max: 4 << 30 };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let (status, _, err) = crate::util::Drained::adopt(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()).output(Duration::from_secs(180));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("out of memory at step 3") && err.contains("4096 rows") && err.contains("train.batch_size"), "{err}");
    no_panic(&err);
    assert!(!err.contains("internal error"), "{err}");
    pretune::checkpoint::CheckpointStore::verify(&latest).unwrap();
}

/// A broken starting point is one problem naming `init.hf` and what is wrong with it, not
/// followed by a tokenizer problem that only follows from it; a starting point without a
/// tokenizer says that.
#[test]
fn a_broken_starting_point_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let minilm = root().join(".cache/minilm/model");
    let folder = |name: &str, config: Option<&str>, tokenizer: bool| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        match config {
            Some(text) => std::fs::write(d.join("config.json"), text).unwrap(),
            None => std::fs::copy(minilm.join("config.json"), d.join("config.json")).map(|_| ()).unwrap(),
        }
        std::os::unix::fs::symlink(minilm.join("model.safetensors"), d.join("model.safetensors")).unwrap();
        if tokenizer {
            std::fs::copy(minilm.join("tokenizer.json"), d.join("tokenizer.json")).unwrap();
        }
        d
    };
    let cfg = root().join("configs/finetune-cls-minilm.toml");
    let check = |d: &std::path::Path| run_cli(&["check", cfg.to_str().unwrap(), "--set", &format!("init.hf={}", d.display()), "--set", "metrics.listen=\"\""]);
    let (code, _, err) = check(&folder("bad-json", Some("{\"model_type\": \"bert\", "), true));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("init.hf: ") && err.contains("bad-json/config.json"), "{err}");
    assert!(!err.contains("tokenizer.path"), "the tokenizer problem only follows from the broken folder: {err}");
    let (code, _, err) = check(&folder("no-tokenizer", None, false));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tokenizer.path: not given, and the starting point has no tokenizer"), "{err}");
    no_panic(&err);
}
