//! `pretune sweep`: a grid of runs, resumed after a kill without rerunning finished cells,
//! tables that are the cells' own numbers, errors before anything runs, and every spec in
//! `sweeps/` in its smoke version (so none can rot).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{bin, evals, ft_config, load_plan, records, root, run_cli, Drained};

fn spam() -> (String, String) {
    let r = root();
    (r.join("data/spam/train.jsonl").display().to_string(), r.join("data/spam/dev.jsonl").display().to_string())
}

/// A 2 × 2 grid over 2 seeds on the tiny spam config (6 updates a cell).
fn write_spec(dir: &Path, extra: &str) -> PathBuf {
    let (train, dev) = spam();
    let base = ft_config(dir, "sequence_classification", &train, &dev, "");
    let text = format!(
        r#"
[sweep]
base = "{base}"
out_dir = "{out}"
seeds = [1, 2]
metrics = [{{ name = "accuracy", scale = 100 }}, "loss"]
rows = ["data"]
doc = "{doc}"

[set]
"train.epochs" = 0
"train.max_steps" = 6
"train.eval_every" = 3
"train.checkpoint_every" = 3
"task.max_eval_examples" = 48
{extra}

[[axis]]
name = "lr"
key = "train.lr"
values = [1e-4, 3e-3]

[[axis]]
name = "data"
level = [{{ label = "all" }}, {{ label = "16 per class", set = {{ "task.train_per_class" = 16 }} }}]
"#,
        base = base.display(),
        out = dir.join("sweep").display(),
        doc = dir.join("docs/results.md").display()
    );
    let p = dir.join("spec.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn cells(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("sweep/cells")).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn finished(cell: &Path) -> bool {
    cell.join("events.jsonl").exists() && records(cell).iter().any(|r| matches!(r, pretune::actors::events::Record::Finished { .. }))
}

#[test]
fn a_sweep_killed_midway_resumes_without_rerunning_finished_cells_and_its_table_is_the_cells_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "");
    let mut first = Drained::spawn(Command::new(bin()).args(["sweep", "--jobs", "1"]).arg(&spec));
    crate::util::eventually(Duration::from_secs(240), "two cells finished", || (cells(tmp.path()).iter().filter(|c| finished(c)).count() >= 2).then_some(()));
    first.child.kill().unwrap();
    let _ = first.output(Duration::from_secs(60));
    let done: Vec<(PathBuf, String)> = cells(tmp.path()).into_iter().filter(|c| finished(c)).map(|c| (c.clone(), std::fs::read_to_string(c.join("events.jsonl")).unwrap())).collect();
    assert!(done.len() >= 2 && done.len() < 8, "{} cells finished before the kill", done.len());

    let (code, out, err) = run_cli(&[os("sweep"), os("--jobs"), os("2"), spec.as_os_str()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let all = cells(tmp.path());
    assert_eq!(all.len(), 8, "2 lr × 2 data × 2 seeds: {all:?}");
    assert!(all.iter().all(|c| finished(c)));
    for (cell, events) in &done {
        assert_eq!(&std::fs::read_to_string(cell.join("events.jsonl")).unwrap(), events, "{} was run again", cell.display());
    }
    // A finished cell keeps one checkpoint (`keep = "picked"`): the best one, whose evaluation
    // its number is, verified whole.
    for cell in &all {
        let ckpts = cell.join("checkpoints");
        let steps: Vec<String> = std::fs::read_dir(&ckpts).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("step-")).collect();
        let best = records(cell).iter().rev().find_map(|r| match r {
            pretune::actors::events::Record::Finished { best_step, .. } => *best_step,
            _ => None,
        });
        let best = best.expect("a fine-tuning run reports its best step");
        assert_eq!(steps, vec![format!("step-{best:08}")], "{}", cell.display());
        let (dir, state) = pretune::checkpoint::resume::locate(&ckpts).unwrap();
        assert_eq!((dir.file_name().unwrap().to_string_lossy().into_owned(), state.step), (steps[0].clone(), best));
    }

    // Every group is the mean and sample sd of its seeds' best evaluations, read here from the
    // cells' own events.
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("sweep/results.json")).unwrap()).unwrap();
    let groups = results["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2 * 4);
    for g in groups.iter().filter(|g| g["metric"] == "accuracy") {
        let (data, lr) = (g["row"][0].as_str().unwrap(), g["column"][0].as_str().unwrap());
        let accs: Vec<f64> = all
            .iter()
            .filter(|c| {
                let n = c.file_name().unwrap().to_string_lossy().into_owned();
                n.contains(&format!("lr={lr}__")) && n.contains(&format!("data={}", data.replace(' ', "-")))
            })
            .map(|c| evals(c).iter().filter_map(|(_, m)| m.get("accuracy")).fold(f64::MIN, f64::max))
            .collect();
        assert_eq!(accs.len(), 2, "{g}");
        let mean = (accs[0] + accs[1]) / 2.0;
        let sd = ((accs[0] - mean).powi(2) + (accs[1] - mean).powi(2)).sqrt();
        assert!((g["mean"].as_f64().unwrap() - mean).abs() < 1e-12 && (g["sd"].as_f64().unwrap() - sd).abs() < 1e-12, "{g} vs {accs:?}");
        let shown = format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * sd);
        assert!(out.contains(&shown), "{shown} missing from the table:\n{out}");
    }
    let svg = std::fs::read_to_string(tmp.path().join("sweep/spec-accuracy.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("data = 16 per class"), "one series per row");

    // --table-only renders the same numbers without running anything.
    std::fs::remove_file(tmp.path().join("sweep/results.json")).unwrap();
    let (code, again, err) = run_cli(&[os("sweep"), os("--table-only"), spec.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    let rerendered: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("sweep/results.json")).unwrap()).unwrap();
    assert_eq!(rerendered["groups"], results["groups"]);
    assert_eq!(again.lines().filter(|l| l.starts_with('|')).collect::<Vec<_>>(), out.lines().filter(|l| l.starts_with('|')).collect::<Vec<_>>());

    // The doc gets the table between the sweep's markers (its own text kept) and the plots.
    let doc = tmp.path().join("docs/results.md");
    std::fs::write(&doc, "# Results\n\n<!-- sweep:spec:start -->\nold\n<!-- sweep:spec:end -->\n\nWhat it shows.\n").unwrap();
    let (code, _, err) = run_cli(&[os("sweep"), os("--table-only"), spec.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(text.starts_with("# Results\n\n<!-- sweep:spec:start -->") && text.trim_end().ends_with("What it shows.") && !text.contains("\nold\n"), "{text}");
    for line in out.lines().filter(|l| l.starts_with('|')) {
        assert!(text.contains(line), "{line} missing from the doc:\n{text}");
    }
    assert!(tmp.path().join("docs/spec-accuracy.svg").exists() && text.contains("![accuracy](spec-accuracy.svg)"));
    let (code, _, _) = run_cli(&[os("sweep"), os("--table-only"), os("--smoke"), spec.as_os_str()]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&doc).unwrap(), text, "a smoke run never writes the doc");

    // A cell folder of another config is never mixed into the table.
    let changed = write_spec(tmp.path(), "\"train.warmup_ratio\" = 0.3");
    let (code, out, err) = run_cli(&[os("sweep"), changed.as_os_str()]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("was run with another config"), "{out}");
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn a_typo_in_a_sweep_names_the_key_the_cell_and_the_spec_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "\"train.max_step\" = 5");
    let (code, _, err) = run_cli(&[os("sweep"), spec.as_os_str()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&spec.display().to_string()) && err.contains("train.max_step") && err.contains("lr=1e-4 data=all seed=1"), "{err}");
    assert!(!tmp.path().join("sweep/cells").exists(), "nothing ran");
    let text = std::fs::read_to_string(&spec).unwrap().replace("\"train.max_step\" = 5", "").replace("values = [1e-4, 3e-3]", "values = [1e-4, 3e-3]\n[[exclude]]\nlr = \"1e-5\"");
    std::fs::write(&spec, text).unwrap();
    let (code, _, err) = run_cli(&[os("sweep"), spec.as_os_str()]);
    assert_eq!(code, 2);
    assert!(err.contains("exclude[0].lr: no value \"1e-5\" (values: 1e-4, 3e-3)"), "{err}");
    // A base that cannot be read is one problem for every cell, said once.
    let text = std::fs::read_to_string(&spec).unwrap();
    let base = text.lines().find_map(|l| l.strip_prefix("base = \"")).unwrap().trim_end_matches('"').to_owned();
    std::fs::write(&spec, text.replace(&base, "/nonexistent/base.toml").replace("[[exclude]]\nlr = \"1e-5\"", "")).unwrap();
    let (code, _, err) = run_cli(&[os("sweep"), spec.as_os_str()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("/nonexistent/base.toml").count(), 1, "{err}");
    assert!(err.contains("(in 8 runs, the first: lr=1e-4 data=all seed=1)"), "{err}");
}

#[test]
fn train_per_class_keeps_n_of_each_class_drawn_by_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, dev) = spam();
    let cfg = ft_config(tmp.path(), "sequence_classification", &train, &dev, "");
    let classes = |seed: u64| {
        let plan = load_plan(&cfg, &["task.train_per_class=10".to_string(), format!("run.seed={seed}")]);
        let task = plan.task().unwrap();
        let mut by = std::collections::BTreeMap::new();
        for e in task.train.iter() {
            *by.entry(e.labels[0]).or_insert(0) += 1;
        }
        (by, task.train.iter().map(|e| e.ids.clone()).collect::<Vec<_>>(), task.notes.clone())
    };
    let (a, ids_a, notes) = classes(1);
    assert_eq!(a.values().copied().collect::<Vec<_>>(), vec![10, 10]);
    assert!(notes.iter().any(|n| n.contains("task.train_per_class = 10: 20 of 720")), "{notes:?}");
    let (_, ids_b, _) = classes(2);
    assert_eq!(classes(1).1, ids_a, "the same seed draws the same examples");
    assert_ne!(ids_a, ids_b);
    // A task without one class per example says so.
    let rows = tmp.path().join("scores.jsonl");
    std::fs::write(&rows, "{\"text\": \"a fine day\", \"label\": 0.5}\n{\"text\": \"rain\", \"label\": 0.1}\n").unwrap();
    let reg = ft_config(tmp.path(), "regression", &rows.display().to_string(), &rows.display().to_string(), "");
    let e = pretune::plan::load_and_resolve(&reg, &["task.train_per_class=1".to_string()]).err().expect("refused").to_string();
    assert!(e.contains("task.train_per_class: task.kind = \"regression\" has no single class per example"), "{e}");
}

/// `keep = "none"`: a finished cell keeps its events and no checkpoint; `"all"` keeps what the
/// run kept.
#[test]
fn a_finished_cell_keeps_the_checkpoints_the_spec_asks_for() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "");
    for (keep, want) in [("none", 0), ("all", 2)] {
        let text = std::fs::read_to_string(&spec).unwrap();
        let out_dir = |d: &str| format!("out_dir = \"{}\"", tmp.path().join(d).display());
        let text = text.replace(&out_dir("sweep"), &format!("{}\nkeep = \"{keep}\"", out_dir(keep)));
        let spec = tmp.path().join(format!("{keep}.toml"));
        std::fs::write(&spec, text).unwrap();
        let (code, out, err) = run_cli(&[os("sweep"), os("--smoke"), os("--no-doc"), spec.as_os_str()]);
        assert_eq!(code, 0, "{out}\n{err}");
        let cell = std::fs::read_dir(tmp.path().join(format!("{keep}-smoke")).join("cells")).unwrap().next().unwrap().unwrap().path();
        assert!(finished(&cell));
        let steps = std::fs::read_dir(cell.join("checkpoints")).map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("step-")).count()).unwrap_or(0);
        assert_eq!(steps, want, "keep = {keep:?}: checkpoints at steps 3 and 6");
        assert_eq!(cell.join("checkpoints").exists(), want > 0);
    }
}

/// Every spec in `sweeps/` runs its first cell with its `[smoke]` settings (its pre-training
/// runs too, a few steps each). One folder for all: the specs that name the same pre-training
/// run with the same settings share it, as they do outside smoke mode.
#[test]
fn every_sweep_spec_in_the_repo_runs_in_smoke_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let mut specs: Vec<PathBuf> = std::fs::read_dir(root().join("sweeps")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    specs.sort();
    assert!(!specs.is_empty());
    for spec in specs {
        let name = spec.file_stem().unwrap().to_string_lossy().into_owned();
        let out = tmp.path().join("smoke");
        let (code, stdout, err) = run_cli(&[os("sweep"), os("--smoke"), os("--no-doc"), os("--out"), out.as_os_str(), spec.as_os_str()]);
        assert_eq!(code, 0, "{name}:\n{stdout}\n{err}");
        assert!(stdout.contains("1 of 1 cells finished"), "{name}:\n{stdout}");
    }
}
