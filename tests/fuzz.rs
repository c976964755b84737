//! No panic is reachable from a config: every key of every shipped config, replaced by a wrong
//! type, zero, a negative number, a huge number, NaN / infinity, an empty string and an empty
//! array, either resolves to a plan or is a config error naming the key.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use pretune::config::ConfigError;

use crate::util::root;

/// Dotted paths of every leaf key of a table (arrays and inline tables are leaves).
fn keys(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in t {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(inner) if !inner.is_empty() => keys(inner, &path, out),
            _ => out.push(path),
        }
    }
}

fn set(t: &mut toml::Table, path: &str, v: toml::Value) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = t;
    for p in &parts[..parts.len() - 1] {
        cur = cur.get_mut(*p).and_then(toml::Value::as_table_mut).expect("a table on the path");
    }
    cur.insert(parts[parts.len() - 1].to_string(), v);
}

fn variants() -> Vec<(&'static str, toml::Value)> {
    vec![
        ("wrong type", toml::Value::Table(toml::Table::new())),
        ("zero", toml::Value::Integer(0)),
        ("negative", toml::Value::Integer(-7)),
        ("huge", toml::Value::Integer(i64::MAX)),
        ("NaN", toml::Value::Float(f64::NAN)),
        ("infinity", toml::Value::Float(f64::INFINITY)),
        ("empty string", toml::Value::String(String::new())),
        ("empty array", toml::Value::Array(Vec::new())),
    ]
}

/// The first `lines` lines of `from`, as `dir/name`: a labelled set or a JSONL corpus small
/// enough to read in milliseconds, in the same format.
fn head_of(from: &Path, lines: usize, dir: &Path, name: &str) -> toml::Value {
    let text = std::fs::read_to_string(from).unwrap();
    let to = dir.join(name);
    std::fs::write(&to, text.lines().take(lines).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    toml::Value::Array(vec![to.display().to_string().into()])
}

/// Cases of one config file: `(cases, plans, errors)`.
fn fuzz_config(path: &Path, dir: &Path) -> (usize, usize, usize) {
    let spam = root().join("data/spam");
    let (mut cases, mut plans, mut errors) = (0, 0, 0);
    let mut base: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Keep each resolution cheap (every case reads the data): outputs in a temporary folder,
    // small labelled sets (the spam set's first 60 / 40 records, both classes in each), a
    // JSONL corpus cut to its hold-out and 60 documents more.
    set(&mut base, "run.out_dir", toml::Value::String(dir.join("out").display().to_string()));
    if base.get("task").is_some() {
        set(&mut base, "data.train", head_of(&spam.join("train.jsonl"), 60, dir, "spam-train.jsonl"));
        set(&mut base, "data.eval", head_of(&spam.join("dev.jsonl"), 40, dir, "spam-dev.jsonl"));
    } else if let Some(corpus) = base.get("data").and_then(|d| d.get("train")).and_then(toml::Value::as_array).and_then(|a| a.first()).and_then(toml::Value::as_str).filter(|f| f.ends_with(".jsonl")) {
        let holdout = base["data"].get("eval_holdout_docs").and_then(toml::Value::as_integer).unwrap_or(0) as usize;
        let corpus = head_of(&root().join(corpus), holdout + 60, dir, "corpus.jsonl");
        set(&mut base, "data.train", corpus);
    }
    let file = dir.join(path.file_name().unwrap());
    let problems_of = |t: &toml::Table| -> Result<Vec<String>, String> {
        std::fs::write(&file, toml::to_string(t).unwrap_or_default()).unwrap();
        match catch_unwind(AssertUnwindSafe(|| pretune::plan::load_and_resolve(Path::new(&file), &[]))) {
            Err(_) => Err("panicked".into()),
            Ok(Ok(_)) => Ok(Vec::new()),
            Ok(Err(ConfigError::Invalid { problems, .. })) => Ok(problems),
            Ok(Err(e)) => Ok(vec![e.to_string()]),
        }
    };
    // A fine-tuning config may fail already (its checkpoint comes from a pre-training run):
    // those problems are the baseline; a variant must add none or name its key.
    let before = problems_of(&base).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut all = Vec::new();
    keys(&base, "", &mut all);
    for key in &all {
        for (what, value) in variants() {
            let mut t = base.clone();
            set(&mut t, key, value);
            cases += 1;
            let problems = problems_of(&t).unwrap_or_else(|e| panic!("{}: {key} = {what} {e}", path.display()));
            if problems.is_empty() {
                plans += 1;
                continue;
            }
            errors += 1;
            let new: Vec<&String> = problems.iter().filter(|p| !before.contains(p)).collect();
            assert!(new.is_empty() || new.iter().any(|p| p.contains(key.as_str())), "{}: {key} = {what}: {new:?}", path.display());
        }
    }
    (cases, plans, errors)
}

#[test]
fn no_config_value_reaches_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<std::path::PathBuf> = std::fs::read_dir(root().join("configs")).unwrap().map(|e| e.unwrap().path()).collect();
    // Two threads: each resolution is independent.
    let halves: Vec<Vec<std::path::PathBuf>> = vec![paths.iter().step_by(2).cloned().collect(), paths.iter().skip(1).step_by(2).cloned().collect()];
    let totals: Vec<(usize, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = halves
            .iter()
            .enumerate()
            .map(|(i, half)| {
                let d = dir.path().join(format!("t{i}"));
                std::fs::create_dir_all(&d).unwrap();
                s.spawn(move || half.iter().map(|p| fuzz_config(p, &d)).fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (cases, plans, errors) = totals.iter().fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    eprintln!("{cases} config cases: {plans} plans, {errors} config errors, no panic");
    assert!(cases > 500);
}

/// Malformed files of every format: each case is read to the end or rejected with its file
/// named; none panics.
fn malformed(kind: &str) -> Vec<(&'static str, Vec<u8>)> {
    let good: &[u8] = match kind {
        "jsonl" => b"{\"text\": \"free money now\", \"label\": \"spam\"}\n{\"text\": \"see you at lunch\", \"label\": \"ham\"}\n",
        "csv" => b"text,label\nfree money now,spam\nsee you at lunch,ham\n",
        "tsv" => b"text\tlabel\nfree money now\tspam\nsee you at lunch\tham\n",
        "conll" => b"Paris\tB-loc\nis\tO\n\nBob\tB-person\nsleeps\tO\n",
        "text" => b"The first sentence.\nThe second one.\n\nAnother document here.\n",
        _ => b"{\"text\": \"a document. with two sentences.\"}\n{\"text\": \"another one\"}\n",
    };
    let mut cases: Vec<(&'static str, Vec<u8>)> = vec![("as is", good.to_vec()), ("empty file", Vec::new())];
    cases.push(("truncated line", good[..good.len() * 2 / 3].to_vec()));
    let mut invalid = good.to_vec();
    invalid.splice(3..3, [0xff, 0xfe, 0xc3]);
    cases.push(("invalid UTF-8", invalid));
    let mut nul = good.to_vec();
    nul.splice(5..5, [0, 0, 0]);
    cases.push(("NUL bytes", nul));
    let huge = "x".repeat(3 << 20);
    let huge_case = match kind {
        "jsonl" | "pretrain-jsonl" => format!("{{\"text\": \"{huge}\", \"label\": \"spam\"}}\n{}", String::from_utf8_lossy(good)),
        "csv" => format!("text,label\n{huge},spam\nok,ham\n"),
        "tsv" => format!("text\tlabel\n{huge}\tspam\nok\tham\n"),
        "conll" => format!("{huge}\tO\n\nBob\tB-person\n"),
        _ => format!("{huge}\n\nshort.\n"),
    };
    cases.push(("huge field", huge_case.into_bytes()));
    let wrong = match kind {
        "jsonl" | "pretrain-jsonl" => b"{\"text\": [1, 2], \"label\": {\"a\": 1}}\n[]\n42\n{\"text\": null}\n".to_vec(),
        "csv" => b"text,label\n\"unclosed,spam\nx,y,z\n".to_vec(),
        "tsv" => b"text\tlabel\na\tb\tc\nd\n".to_vec(),
        "conll" => b"onlyonecolumn\n\t\t\n\nBob\tB-person\n".to_vec(),
        _ => b"\n\n\n".to_vec(),
    };
    cases.push(("wrong types or columns", wrong));
    let missing = match kind {
        "jsonl" | "pretrain-jsonl" => b"{\"body\": \"no text field\", \"label\": \"spam\"}\n".to_vec(),
        "csv" => b"body,label\nx,spam\n".to_vec(),
        "tsv" => b"body\tlabel\nx\tspam\n".to_vec(),
        "conll" => b"word\n".to_vec(),
        _ => b"   \n\t\n".to_vec(),
    };
    cases.push(("missing columns", missing));
    if kind == "pretrain-jsonl" {
        // A segmentation that does not spell its text, or is not a list of strings.
        let words = "{\"text\": \"我爱北京\", \"words\": [\"我\", \"爱\"]}\n{\"text\": \"我\", \"words\": [\"我\", \"爱\"]}\n{\"text\": \"我\", \"words\": [1]}\n{\"text\": \"我\", \"words\": \"我\"}\n{\"text\": \"\", \"words\": []}\n";
        cases.push(("bad word segmentation", words.as_bytes().to_vec()));
    }
    cases
}

#[test]
fn no_malformed_data_file_reaches_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let r = root();
    let mut n = 0;
    // Labelled sets, through the fine-tuning plan, under both policies.
    for (kind, ext, task) in [("jsonl", "jsonl", "sequence_classification"), ("csv", "csv", "sequence_classification"), ("tsv", "tsv", "sequence_classification"), ("conll", "txt", "token_classification")] {
        for (what, bytes) in malformed(kind) {
            let file = dir.path().join(format!("data.{ext}"));
            std::fs::write(&file, &bytes).unwrap();
            for policy in ["skip", "fail"] {
                n += 1;
                let cfg = crate::util::ft_config(dir.path(), task, &file.display().to_string(), &file.display().to_string(), "");
                let o = vec![format!("data.on_error=\"{policy}\""), "train.epochs=0".into(), "train.max_steps=1".into()];
                match catch_unwind(AssertUnwindSafe(|| pretune::plan::load_and_resolve(&cfg, &o))) {
                    Err(_) => panic!("{kind} / {what} / {policy}: panicked"),
                    Ok(Ok(plan)) => {
                        let t = plan.task().unwrap();
                        if policy == "fail" {
                            assert!(t.skipped.is_empty(), "{kind} / {what}: fail skipped records");
                        }
                    }
                    Ok(Err(e)) => {
                        let msg = e.to_string();
                        assert!(msg.contains("data.") || msg.contains("task.labels"), "{kind} / {what} / {policy}: {msg}");
                        assert!(msg.contains("data.") && msg.contains(file.file_name().unwrap().to_str().unwrap()) || msg.contains("task.labels"), "{kind} / {what} / {policy}: {msg}");
                    }
                }
            }
        }
    }
    // Pre-training text and JSONL, streamed to the end.
    let tok = std::sync::Arc::new(pretune::data::tokenize::TextTokenizer::load(&r.join("data/sotu/tokenizer.json"), None).unwrap());
    for (kind, ext) in [("text", "txt"), ("pretrain-jsonl", "jsonl")] {
        for (what, bytes) in malformed(kind) {
            let file = dir.path().join(format!("corpus.{ext}"));
            std::fs::write(&file, &bytes).unwrap();
            for policy in [pretune::config::BadRecordPolicy::Skip, pretune::config::BadRecordPolicy::Fail] {
                n += 1;
                let settings = pretune::data::stream::StreamSettings {
                    seed: 1,
                    block_docs: 4,
                    layout: pretune::data::stream::Layout::Segments { max_tokens: 30 },
                    read: pretune::data::source::ReadSettings { text_field: "text".into(), on_error: policy, max_line_bytes: 1 << 20 },
                    shuffle: false,
                    repeat: false,
                    group_batch: 0,
                    whole_words: true,
                };
                let span = pretune::data::source::FileSpan::whole(file.clone(), pretune::config::DataFormat::Auto);
                let got = catch_unwind(AssertUnwindSafe(|| {
                    let mut s = pretune::data::stream::ExampleStream::new(vec![span], tok.clone(), settings, Default::default());
                    let mut k = 0;
                    loop {
                        match s.next_example() {
                            Ok(Some(_)) => k += 1,
                            Ok(None) => return Ok(k),
                            Err(e) => return Err(pretune::error_chain(&e)),
                        }
                    }
                }));
                match got {
                    Err(_) => panic!("{kind} / {what} / {policy:?}: panicked"),
                    Ok(Ok(_)) => {}
                    Ok(Err(msg)) => assert!(msg.contains("corpus") || msg.contains("empty"), "{kind} / {what}: {msg}"),
                }
            }
        }
    }
    eprintln!("{n} malformed data cases, no panic");
}
