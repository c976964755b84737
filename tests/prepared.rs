//! Prepared corpora (`pretune data prepare`): the same batches as the text, cursors that carry
//! over, a clear error for a dataset that does not match, and never a half-written folder that
//! looks complete.

use std::path::Path;
use std::sync::Arc;

use pretune::actors::control::StopFlag;
use pretune::actors::trainer::Reorder;
use pretune::actors::DataPlane;
use pretune::batch::HostBatch;
use pretune::plan::RunPlan;

use crate::util::{load_plan, root, run_cli, tiny_config};

/// The Masker's first `n` batches (masks, pairs and GLM blanks drawn), in order.
fn batches(plan: &RunPlan, n: usize) -> Vec<HostBatch> {
    let stop = StopFlag::new();
    let (rx, handles) = DataPlane::new(plan, stop.clone(), Arc::new(|e| panic!("data plane failed: {e:?}"))).workers(2).spawn().unwrap();
    let mut reorder = Reorder::new(0);
    let out = (0..n).map(|_| reorder.next(&rx, &stop).expect("a batch")).collect();
    stop.abort();
    drop(rx);
    for h in handles {
        h.join().unwrap();
    }
    out
}

fn prepare(cfg: &Path, out: &Path, workers: usize, sets: &[String]) -> (i32, String, String) {
    let mut args = vec!["data".to_string(), "prepare".into(), cfg.display().to_string(), "--out".into(), out.display().to_string(), "--workers".into(), workers.to_string()];
    for s in sets {
        args.extend(["--set".to_string(), s.clone()]);
    }
    run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn use_prepared(dir: &Path) -> String {
    format!("data.train=[\"{}\"]", dir.display())
}

/// Every objective's batches from the prepared dataset equal the text's: BERT MLM with NSP
/// and whole words (a block size that cuts the corpus into many blocks, several epochs' worth
/// of file order), GLM with its blanks, held-out documents cut by count, and the Chinese corpus
/// with its own word segmentation.
#[test]
fn prepared_data_gives_the_batches_of_the_text_for_mlm_nsp_whole_words_glm_and_chinese() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let prep = dir.path().join("prep");
    let (code, out, err) = prepare(&cfg, &prep, 2, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("train: 1 files") && out.contains("eval: 1 files"), "{out}");
    for objective in [
        vec!["objective.sentence_pair=\"nsp\"", "objective.unit=\"word\"", "data.shuffle_block_docs=3"],
        vec!["objective.kind=\"glm\"", "model.max_position_embeddings=65", "objective.glm.gap_sentence_prob=0.3"],
        vec!["objective.unit=\"word\"", "data.eval=[]", "data.eval_holdout_docs=25"],
    ] {
        let sets: Vec<String> = objective.iter().map(|s| s.to_string()).collect();
        let text = load_plan(&cfg, &sets);
        let mut with = sets.clone();
        with.push(use_prepared(&prep));
        if !sets.iter().any(|s| s.starts_with("data.eval=")) {
            with.push("data.eval=[]".into());
        }
        let prepared = load_plan(&cfg, &with);
        let (pc, tc) = (prepared.corpus().unwrap(), text.corpus().unwrap());
        assert!(pc.prepared.is_some() && tc.prepared.is_none());
        assert_eq!(pc.train_spans, tc.train_spans, "{sets:?}");
        assert_eq!(pc.eval_spans.iter().map(|s| (&s.path, s.start, s.end)).collect::<Vec<_>>(), tc.eval_spans.iter().map(|s| (&s.path, s.start, s.end)).collect::<Vec<_>>(), "{sets:?}");
        let (a, b) = (batches(&text, 30), batches(&prepared, 30));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{sets:?}: batch {} differs", x.seq);
        }
        // The held-out stream too.
        let eval = |p: &RunPlan| -> Vec<_> {
            let mut s = (pretune::actors::eval_data(p).expect("held-out data").held_out.source)();
            std::iter::from_fn(|| s.next_example().unwrap()).map(|e| e.payload).collect()
        };
        let (ea, eb) = (eval(&text), eval(&prepared));
        assert!(!ea.is_empty() && ea == eb, "{sets:?}: held-out examples differ ({} vs {})", ea.len(), eb.len());
    }

    // Chinese whole words: the `words` segmentation survives preparation.
    let zh = root().join(".cache/zh");
    assert!(zh.join("people-daily.jsonl").exists(), "run `make setup` (scripts/fetch-chinese.sh) to fetch the Chinese data");
    let sets: Vec<String> = vec![
        format!("data.train=[\"{}\"]", zh.join("people-daily.jsonl").display()),
        "data.eval=[]".into(),
        "data.eval_holdout_docs=300".into(),
        format!("tokenizer.path=\"{}\"", zh.join("vocab.txt").display()),
        "objective.unit=\"word\"".into(),
        "data.shuffle_block_docs=64".into(),
    ];
    let zh_prep = dir.path().join("zh");
    let (code, _, err) = prepare(&cfg, &zh_prep, 2, &sets);
    assert_eq!(code, 0, "{err}");
    let text = load_plan(&cfg, &sets);
    let mut with = sets.clone();
    with.push(use_prepared(&zh_prep));
    let prepared = load_plan(&cfg, &with);
    let (a, b) = (batches(&text, 20), batches(&prepared, 20));
    assert_eq!(a, b, "Chinese whole-word batches differ");
    let mut s = prepared.train_source(Default::default());
    let ex = s.next_example().unwrap().unwrap();
    let pretune::data::stream::Payload::Single(seg) = ex.payload else { panic!("a segment") };
    let words = seg.word_start.iter().filter(|&&w| w).count();
    assert!(words * 10 < seg.ids.len() * 9, "the segmentation was lost: {words} word starts in {} characters", seg.ids.len());
}

/// A cursor taken on the text continues on the prepared data with the same examples as on the
/// text: a run can switch to a prepared dataset at a resume.
#[test]
fn cursors_carry_over_between_text_and_prepared_data() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let prep = dir.path().join("prep");
    assert_eq!(prepare(&cfg, &prep, 1, &[]).0, 0);
    let sets = vec!["data.shuffle_block_docs=3".to_string(), "objective.sentence_pair=\"sop\"".into()];
    let text = load_plan(&cfg, &sets);
    let mut with = sets.clone();
    with.extend([use_prepared(&prep), "data.eval=[]".into()]);
    let prepared = load_plan(&cfg, &with);
    let mut s = text.train_source(Default::default());
    let (mut all, mut cursors) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        cursors.push(s.cursor());
        all.push(s.next_example().unwrap().unwrap());
    }
    for at in [0usize, 1, 77, 250] {
        for to in [&prepared, &text] {
            let mut r = to.train_source(cursors[at]);
            for want in &all[at..] {
                let got = r.next_example().unwrap().unwrap();
                assert_eq!((got.index, &got.payload), (want.index, &want.payload), "resumed at {at}");
            }
        }
    }
}

/// Tokenizing threads change nothing: 1 and 3 workers write the same bytes.
#[test]
fn one_and_three_workers_write_identical_files_and_a_second_prepare_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let (one, three) = (dir.path().join("one"), dir.path().join("three"));
    assert_eq!(prepare(&cfg, &one, 1, &[]).0, 0);
    assert_eq!(prepare(&cfg, &three, 3, &[]).0, 0);
    for split in ["train", "eval"] {
        for f in ["tokens.bin", "word_starts.bin", "sentences.bin", "docs.bin"] {
            let (a, b) = (std::fs::read(one.join(split).join(f)).unwrap(), std::fs::read(three.join(split).join(f)).unwrap());
            assert!(!a.is_empty() && a == b, "{split}/{f} differs");
        }
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(one.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["token_bytes"], 2, "an 8k vocabulary fits 16 bits");
    assert!(manifest["splits"]["train"]["tokens"].as_u64().unwrap() > 300_000);
    let (code, out, _) = prepare(&cfg, &one, 2, &[]);
    assert_eq!(code, 0);
    assert!(out.contains("up to date"), "{out}");
}

/// Bad input: a dataset from another tokenizer or from sources that changed since is refused
/// naming both hashes; a damaged or half-written folder is never read as complete, and
/// preparing again repairs it; unreadable records are counted per file.
#[test]
fn mismatched_damaged_and_interrupted_datasets_are_clear_errors_and_prepare_repairs_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    // A private copy of the corpus with one unreadable line, so it can be changed.
    let corpus = dir.path().join("corpus.txt");
    let mut text = std::fs::read(root().join("data/sotu/train.txt")).unwrap();
    text.truncate(200_000);
    text.extend_from_slice(b"\n\nan \xff invalid line\n\nthe last document.\n");
    std::fs::write(&corpus, &text).unwrap();
    let sets = vec![format!("data.train=[\"{}\"]", corpus.display()), "data.eval=[]".into()];
    let prep = dir.path().join("prep");
    let (code, out, err) = prepare(&cfg, &prep, 2, &sets);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 records skipped") && err.contains("invalid_utf8"), "{out}{err}");
    let train = |extra: &[&str]| -> (i32, String, String) {
        let mut args = vec!["check".to_string(), cfg.display().to_string(), "--set".into(), use_prepared(&prep), "--set".into(), "data.eval=[]".into()];
        for e in extra {
            args.extend(["--set".to_string(), e.to_string()]);
        }
        run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_eq!(train(&[]).0, 0, "{}", train(&[]).2);

    // Another tokenizer (the same file lower-casing differently is another tokenizer).
    let vocab = dir.path().join("vocab.txt");
    let tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root().join("data/sotu/tokenizer.json")).unwrap()).unwrap();
    let mut words: Vec<(&String, u64)> = tok["model"]["vocab"].as_object().unwrap().iter().map(|(k, v)| (k, v.as_u64().unwrap())).collect();
    words.sort_by_key(|w| w.1);
    std::fs::write(&vocab, words.iter().map(|w| w.0.as_str()).collect::<Vec<_>>().join("\n")).unwrap();
    let (code, _, err) = train(&[&format!("tokenizer.path=\"{}\"", vocab.display())]);
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(prep.join("manifest.json")).unwrap()).unwrap();
    let recorded = manifest["tokenizer"]["sha256"].as_str().unwrap();
    assert!(code != 0 && err.contains("tokenizer") && err.contains(recorded) && err.contains("hashes") && err.contains("data prepare"), "{err}");

    // The source changed after preparing.
    std::fs::write(&corpus, [text.as_slice(), b"\nan appended document.\n"].concat()).unwrap();
    let (code, _, err) = train(&[]);
    let fp = manifest["splits"]["train"]["files"][0]["fingerprint"].as_str().unwrap();
    assert!(code != 0 && err.contains("fingerprint") && err.contains(fp), "{err}");
    // Preparing again catches up; the moved text is not needed by a run.
    assert_eq!(prepare(&cfg, &prep, 2, &sets).0, 0);
    std::fs::rename(&corpus, dir.path().join("moved.txt")).unwrap();
    assert_eq!(train(&[]).0, 0, "{}", train(&[]).2);

    // Damaged: a truncated array is refused by size.
    let tokens = prep.join("train/tokens.bin");
    let len = std::fs::metadata(&tokens).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&tokens).unwrap().set_len(len - 2).unwrap();
    let (code, _, err) = train(&[]);
    assert!(code != 0 && err.contains("tokens.bin") && err.contains("damaged"), "{err}");

    // Interrupted: a preparation killed part-way (by a failpoint: SIGKILL once the old
    // manifest is gone and the first split is being rewritten) leaves no manifest, which a run
    // refuses; the next prepare starts clean.
    std::fs::rename(dir.path().join("moved.txt"), &corpus).unwrap();
    let status = std::process::Command::new(crate::util::bin())
        .args(["data", "prepare", cfg.to_str().unwrap(), "--out", prep.to_str().unwrap(), "--workers", "1", "--set", &sets[0], "--set", &sets[1]])
        .env("PRETUNE_FAILPOINT", "prepare.split_created")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "the failpoint killed it: {status:?}");
    assert!(!prep.join("manifest.json").exists(), "no manifest after a killed preparation");
    let (code, _, err) = train(&[]);
    assert!(code != 0 && err.contains("not a prepared dataset"), "{err}");
    assert_eq!(prepare(&cfg, &prep, 2, &sets).0, 0);
    assert_eq!(train(&[]).0, 0);
    let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(prep.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(again["splits"]["train"]["files"][0]["skipped"], 1);
    assert_eq!(again["splits"]["train"]["docs"], manifest["splits"]["train"]["docs"].as_u64().unwrap() + 1);

    // Not a prepared folder at all.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = run_cli(&["check", cfg.to_str().unwrap(), "--set", &use_prepared(&empty), "--set", "data.format=\"prepared\""]);
    assert!(code == 2 && err.contains("not a prepared dataset folder"), "{err}");
}

/// Flipped bytes in each array of a prepared folder: a token id past the vocabulary, sentence
/// offsets out of order, a document's first sentence out of range, and a flip that breaks no
/// structure (only the checksum sees it). `data verify` names the damaged array every time; a
/// run opening the folder refuses the structural damage before training (never an index error
/// inside libtorch); `data prepare` rebuilds the folder instead of calling it up to date.
#[test]
fn flipped_bytes_in_any_array_are_caught_and_prepare_repairs_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let prep = dir.path().join("prep");
    let sets = vec!["data.eval=[]".to_string()];
    assert_eq!(prepare(&cfg, &prep, 2, &sets).0, 0);
    let (code, out, err) = run_cli(&["data", "verify", prep.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("checksums and structure ok"), "{out}");
    let pristine: Vec<(String, Vec<u8>)> = ["tokens.bin", "word_starts.bin", "sentences.bin", "docs.bin"].iter().map(|a| (a.to_string(), std::fs::read(prep.join("train").join(a)).unwrap())).collect();
    // (array, byte offset, new byte, whether a run's open must refuse it too)
    let cases: [(&str, usize, u8, bool); 5] = [
        ("tokens.bin", 101, 0xff, true),     // the high byte of a u16 id: id >= 65280, past the 8k vocabulary
        ("sentences.bin", 8 * 3 + 5, 0x40, true), // an offset far past the token count
        ("docs.bin", 8 * 4 + 6, 0x7f, true),      // document 1's first sentence out of range
        ("word_starts.bin", 10, 0x00, false),     // word starts lost: structure fine, checksum not
        ("docs.bin", 8 * 4 * 3 + 8 * 3, 0x01, false), // a document's end line: only the checksum
    ];
    for (array, at, byte, structural) in cases {
        let path = prep.join("train").join(array);
        let mut bytes = pristine.iter().find(|(a, _)| a == array).unwrap().1.clone();
        assert_ne!(bytes[at], byte, "{array}: the flip changes a byte");
        bytes[at] = byte;
        std::fs::write(&path, &bytes).unwrap();
        let (code, _, err) = run_cli(&["data", "verify", prep.to_str().unwrap()]);
        assert_eq!(code, 1, "{array}: {err}");
        assert!(err.contains(array) && err.contains("damaged"), "{array}: {err}");
        let (code, _, err) = run_cli(&["check", cfg.to_str().unwrap(), "--set", &use_prepared(&prep), "--set", "data.eval=[]"]);
        if structural {
            assert!(code != 0 && err.contains(array) && err.contains("damaged") && !err.contains("panicked") && !err.contains("internal error"), "{array}: {err}");
        }
        let (code, out, err) = prepare(&cfg, &prep, 2, &sets);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("up to date"), "{array}: a damaged folder is rebuilt: {out}");
        assert_eq!(run_cli(&["data", "verify", prep.to_str().unwrap()]).0, 0, "{array}: repaired");
    }
}

/// The examples of `n` global batches of `global` as rank `rank` of `world` keeps them, read
/// the way the Loader reads them (positions first, then the ids of the kept examples only, when
/// `world` > 1), and the bytes of token ids the stream read.
fn shard_of(plan: &RunPlan, global: usize, rank: usize, world: usize, n: usize) -> (Vec<pretune::data::stream::Example>, u64) {
    let mut s = plan.train_source(Default::default());
    let deferred = world > 1 && s.defer_reads();
    assert_eq!(deferred, world > 1, "a prepared corpus defers its reads");
    let mut out = Vec::new();
    for _ in 0..n {
        let mut batch: Vec<_> = (0..global).map(|_| s.next_example().unwrap().unwrap()).collect();
        let keep = pretune::distributed::shard_range(batch.len(), rank, world);
        batch.truncate(keep.end);
        batch.drain(..keep.start);
        for e in &mut batch {
            s.resolve(e);
            assert_eq!(e.positions_from, None);
        }
        out.extend(batch);
    }
    (out, s.token_bytes_read())
}

/// Shards per rank: a rank of a data-parallel run reads, from a prepared corpus, the token ids
/// of its own examples only. With 2 and 4 ranks each rank's examples equal its slice of one
/// process's (ids and word starts, packed segments and NSP pairs), the bytes it read are its
/// examples' tokens exactly, and the ranks' bytes add up to the examples' tokens: no rank read
/// another's examples (one process reads its blocks whole). The real Loader with a shard hands
/// the Maskers ids, never positions.
#[test]
fn each_rank_reads_only_its_own_examples_from_a_prepared_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let prep = dir.path().join("prep");
    assert_eq!(prepare(&cfg, &prep, 2, &[]).0, 0);
    let token_bytes = |e: &pretune::data::stream::Example| e.payload.n_tokens() as u64 * 2;
    for layout in [vec!["objective.unit=\"word\""], vec!["objective.sentence_pair=\"nsp\"", "data.shuffle_block_docs=3"]] {
        let mut sets: Vec<String> = layout.iter().map(|s| s.to_string()).collect();
        sets.extend([use_prepared(&prep), "data.eval=[]".into()]);
        let plan = load_plan(&cfg, &sets);
        // One process reads its blocks whole (every document's tokens, used or not yet).
        let (whole, whole_bytes) = shard_of(&plan, 8, 0, 1, 30);
        let used: u64 = whole.iter().map(token_bytes).sum();
        assert!(whole_bytes >= used, "{layout:?}: one process read {whole_bytes} bytes for {used} bytes of examples");
        for world in [2, 4] {
            let mut total = 0;
            let mut seen = Vec::new();
            for rank in 0..world {
                let (mine, bytes) = shard_of(&plan, 8, rank, world, 30);
                assert_eq!(bytes, mine.iter().map(token_bytes).sum::<u64>(), "{layout:?} rank {rank}/{world}: read exactly its examples' tokens");
                assert!(bytes < whole_bytes, "{layout:?} rank {rank}/{world}");
                total += bytes;
                seen.extend(mine);
            }
            assert_eq!(total, used, "{layout:?} {world} ranks: the shards' bytes add up to the examples' tokens, each read once");
            seen.sort_by_key(|e| e.index);
            assert_eq!(seen.len(), whole.len());
            for (a, b) in seen.iter().zip(&whole) {
                assert_eq!(a.index, b.index);
                assert_eq!(a.payload, b.payload, "{layout:?} {world} ranks: example {} differs from one process's", a.index);
            }
        }
        // The Loader, sharded: ids from the prepared corpus, equal to one process's examples.
        let (tx, rx) = crossbeam_channel::bounded(64);
        let loader = pretune::actors::loader::Loader {
            stream: plan.train_source(Default::default()),
            batch_size: 2,
            first_seq: 0,
            tx,
            queue: pretune::actors::queue::QueueGauge::new("test", 64),
            stop: StopFlag::new(),
            events: Arc::new(|_| {}),
            phase: pretune::workload::Phase::Pretrain,
            shard: Some((1, 4)),
        };
        let h = std::thread::spawn(move || loader.run());
        let got: Vec<_> = rx.iter().take(30).flat_map(|b| b.examples).collect();
        drop(rx);
        h.join().unwrap();
        let expect: Vec<_> = whole.chunks(8).flat_map(|c| c[2..4].to_vec()).collect();
        assert_eq!(got.len(), expect.len());
        for (a, b) in got.iter().zip(&expect) {
            assert_eq!((a.index, &a.payload, a.positions_from), (b.index, &b.payload, None), "{layout:?}: the Loader's example {}", a.index);
        }
    }
}
