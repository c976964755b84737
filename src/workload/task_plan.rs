//! The task of a fine-tuning config resolved, as named steps over one problem list: the task
//! kind found in the registry, the starting weights located, the tokenizer loaded, the task
//! built, its labelled data read and encoded, steps and the monitored metric derived.

use std::path::PathBuf;
use std::sync::Arc;

use crate::init::{InitSource, StartModel};
use crate::finetune::task::{prepare_tokenizer, TaskSpec};
use crate::finetune::tasks::{self, Encoded, Split, Task, TaskContext, TaskKind};
use crate::config::RunConfig;
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::model::bert::BertConfig;
use crate::objective::{ModelSpec, Monitor};

/// The fine-tuning part of a [`crate::plan::RunPlan`]: the task, its encoded labelled data,
/// the starting model and the derived step counts.
pub struct TaskPlan {
    /// The task, resolved (labels fixed).
    pub task: Arc<dyn Task>,
    /// What checkpoints record about the task model.
    pub spec: TaskSpec,
    /// Encoded training examples.
    pub train: Arc<Vec<Arc<TaskExample>>>,
    /// Encoded held-out examples (may be empty: then no evaluation).
    pub eval: Arc<Vec<Arc<TaskExample>>>,
    /// Training records read (sentences, texts, questions; QA windows are more).
    pub train_records: usize,
    /// Held-out records read.
    pub eval_records: usize,
    /// Metric for the best checkpoint and early stopping.
    pub monitor: Monitor,
    /// Tokenizer (saved with checkpoints and exports).
    pub tokenizer: Arc<TextTokenizer>,
    /// The network's base architecture (the BERT encoder, or the GLM for cloze).
    pub model: ModelSpec,
    /// Starting weights.
    pub init: InitSource,
    /// Updates in the run (`train.max_steps` when set, else epochs × updates per epoch).
    pub max_steps: u64,
    /// Updates per epoch when counting epochs, else 0.
    pub epoch_steps: u64,
    /// Malformed records skipped while reading (`data.on_error = "skip"`), reported when the
    /// run starts.
    pub skipped: Vec<crate::data::source::BadRecord>,
    /// What reading changed (sources and targets cut), for the run's start line.
    pub notes: Vec<String>,
    /// The training examples the Evaluator also scores (`task.eval_train`), as a probe.
    pub probes: Vec<super::probe::Probe>,
    /// The starting checkpoint's pre-training loss on held-out text, scored by the Evaluator
    /// (`[retention]`).
    pub retention: Option<Arc<super::retention::Retention>>,
}

/// Validates the task of a fine-tuning config (one with `[task] kind`) and encodes its data;
/// `world` ranks share each global batch.
///
/// # Errors
/// Every problem found, each starting with its key path.
pub fn resolve_task(c: &RunConfig, table: &toml::Table, world: usize) -> Result<TaskPlan, Vec<String>> {
    let Some(name) = &c.task.kind else { return Err(vec!["task.kind: missing".into()]) };
    if c.train.batch_size == 0 || c.train.grad_accum == 0 {
        // Reported by the shared checks (`train.batch_size` / `train.grad_accum: must be
        // positive`); nothing below can be derived without them.
        return Err(Vec::new());
    }
    let mut problems: Vec<String> = Vec::new();
    let kind = tasks::lookup(name).map_err(|e| problems.push(e.to_string())).ok();
    if let Some(kind) = &kind {
        problems.extend(kind_problems(c, table, kind));
    }
    if c.train.epochs == 0 && c.train.max_steps == 0 {
        problems.push("train.epochs: give epochs or max_steps".into());
    }
    let start = starting_point(c, table, kind.as_ref(), &mut problems);
    let tokenizer = super::load_tokenizer(c, start.tokenizer.as_ref(), &mut problems);
    let positions = start.encoder.max_positions();
    if c.train.max_seq_len as i64 > positions || c.train.max_seq_len < 4 {
        problems.push(format!("train.max_seq_len: must be in [4, {positions}] (the model's positions)"));
    }
    let train_files = crate::data::source::expand(&c.data.train, "data.train", &mut problems);
    let eval_files = crate::data::source::expand(&c.data.eval, "data.eval", &mut problems);
    if c.data.train.is_empty() {
        problems.push("data.train: no training files given".into());
    }
    let retention = super::retention::resolve(c, &start.source, &mut problems);
    let (Some(kind), Some((mut tokenizer, tokenizer_path)), true) = (kind, tokenizer, problems.is_empty()) else { return Err(problems) };

    let Start { source: init, mut encoder, .. } = start;
    prepare_tokenizer(&mut tokenizer, &encoder).map_err(|e| e.problems())?;
    let tokenizer = Arc::new(tokenizer);
    match &mut encoder {
        ModelSpec::Bert { config, .. } => {
            config.vocab_size = config.vocab_size.max(tokenizer.vocab_size() as i64);
            config.pad_token_id = tokenizer.special_ids().pad as i64;
        }
        ModelSpec::ModernBert { config } => {
            config.vocab_size = config.vocab_size.max(tokenizer.vocab_size() as i64);
            config.pad_token_id = tokenizer.special_ids().pad as i64;
        }
        ModelSpec::Glm { .. } | ModelSpec::Electra { .. } => {}
    }
    let cx = TaskContext { config: &c.task, tokenizer: tokenizer.clone(), encoder: &encoder, max_seq_len: c.train.max_seq_len, generate: c.generate.clone() };
    let mut task = (kind.build)(&cx).map_err(|e| e.problems())?;
    let data = read_data(c, task.as_mut(), &train_files, &eval_files)?;
    task.check_trained().map_err(|e| e.problems())?;

    let (max_steps, epoch_steps) = steps(c, data.train.examples.len(), world);
    let spec = spec_of(&kind, task.as_ref(), &encoder, tokenizer_path, c.train.max_seq_len);
    let monitor = kind.monitor(&c.task.metric).expect("checked with the kind");
    let notes = data.train.notes.iter().chain(&data.eval.notes).cloned().collect();
    let share = |v: Vec<TaskExample>| Arc::new(v.into_iter().map(Arc::new).collect::<Vec<_>>());
    let task: Arc<dyn Task> = Arc::from(task);
    // `task.eval_train`: the first training examples, scored by the Evaluator as `train.*` on
    // the weights it evaluates (storage shared with its model: no copy).
    let probes = if c.task.eval_train > 0 {
        let examples = data.train.examples.iter().take(c.task.eval_train).cloned().collect();
        vec![super::probe::Probe { name: "train".into(), prefix: "train.".into(), task: task.clone(), examples: Arc::new(examples) }]
    } else {
        Vec::new()
    };
    Ok(TaskPlan { task, probes, retention, spec, train_records: data.train.records, eval_records: data.eval.records, train: share(data.train.examples), eval: share(data.eval.examples), monitor, tokenizer, model: encoder, init, max_steps, epoch_steps, skipped: data.skipped, notes })
}

/// What checkpoints record of the task model.
fn spec_of(kind: &TaskKind, task: &dyn Task, encoder: &ModelSpec, tokenizer: PathBuf, max_seq_len: usize) -> TaskSpec {
    let (config, glm, modernbert) = match encoder {
        ModelSpec::Bert { config, .. } => (config.clone(), None, None),
        ModelSpec::Glm { config } => (BertConfig::default(), Some(config.clone()), None),
        ModelSpec::ModernBert { config } => (BertConfig::default(), None, Some(config.clone())),
        ModelSpec::Electra { pair } => (pair.discriminator.clone(), None, None),
    };
    TaskSpec { architecture: "BertForTask".into(), config, kind: kind.name.to_owned(), labels: task.labels().to_vec(), tokenizer, max_seq_len, glm, modernbert, settings: task.saved() }
}

/// What the kind asks of the config: a metric it has, no other kind's keys, and for a task
/// that reuses a pre-trained output layer, a starting point.
fn kind_problems(c: &RunConfig, table: &toml::Table, kind: &TaskKind) -> Vec<String> {
    let mut problems = tasks::foreign_keys(kind, table);
    if kind.monitor(&c.task.metric).is_none() {
        problems.push(format!("task.metric: `{}` does not fit task.kind = \"{}\" ({})", c.task.metric, kind.name, kind.metric_names().join(", ")));
    }
    if kind.reuses_pretraining_head && c.init.checkpoint.as_os_str().is_empty() && c.init.hf.as_os_str().is_empty() {
        problems.push(format!(
            "init: task.kind = \"{}\" reuses a pre-trained output layer: give init.checkpoint (a GLM or BERT MLM pre-training checkpoint) or init.hf (a BertForMaskedLM / BertForPreTraining folder)",
            kind.name
        ));
    }
    problems
}

/// The starting point resolved: where the weights are, the encoder's sizes (the file's
/// dropout and initializer overrides applied), and the tokenizer that goes with them.
struct Start {
    source: InitSource,
    encoder: ModelSpec,
    tokenizer: Option<PathBuf>,
}

/// `[init]`, or a fresh encoder from `[model]`. Only a kind that reuses a pre-trained output
/// layer sits on a GLM, and it cannot start from a fine-tuned checkpoint.
fn starting_point(c: &RunConfig, table: &toml::Table, kind: Option<&TaskKind>, problems: &mut Vec<String>) -> Start {
    let fresh = || Start { source: InitSource::Fresh, encoder: ModelSpec::Bert { config: BertConfig::default(), pair_head: false }, tokenizer: None };
    let reuses_head = kind.is_some_and(|k| k.reuses_pretraining_head);
    let st = match crate::init::resolve_start(&c.init) {
        Err(e) => {
            problems.push(crate::error_chain(&e));
            return fresh();
        }
        Ok(None) => return Start { encoder: ModelSpec::Bert { config: BertConfig::from_section(&c.model, 0, 0), pair_head: false }, ..fresh() },
        Ok(Some(st)) => st,
    };
    let mut encoder = match (&st.model, reuses_head) {
        (StartModel::Pretrain(ModelSpec::Glm { config }), _) if kind.is_some_and(|k| k.on_glm) => ModelSpec::Glm { config: config.clone() },
        (StartModel::Task(_), true) => {
            problems.push(format!("init.checkpoint: {:?} is a fine-tuned task checkpoint; task.kind = \"{}\" starts from a pre-training checkpoint (GLM, or BERT with its MLM head)", st.source, kind.map_or("", |k| k.name)));
            return fresh();
        }
        (m, _) => match m.encoder() {
            Some(encoder) => encoder,
            None => {
                problems.push(format!("init.checkpoint: {:?} is not a BERT checkpoint", st.source));
                return fresh();
            }
        },
    };
    crate::init::apply_overrides(&mut encoder, table);
    problems.extend(crate::init::size_conflicts(table, &encoder));
    let source = if c.init.reinitialize { InitSource::Fresh } else { st.source };
    Start { source, encoder, tokenizer: st.tokenizer }
}

/// Both splits, encoded, with the records skipped under `data.on_error = "skip"`.
struct TaskData {
    train: Encoded,
    eval: Encoded,
    skipped: Vec<crate::data::source::BadRecord>,
}

fn read_data(c: &RunConfig, task: &mut dyn Task, train_files: &[PathBuf], eval_files: &[PathBuf]) -> Result<TaskData, Vec<String>> {
    let mut skipped = Vec::new();
    let mut bad = crate::finetune::data::BadRecords { policy: c.data.on_error, skipped: &mut skipped };
    let mut train = task.read(train_files, Split::Train, c.task.max_train_examples, &mut bad).map_err(|e| e.problems())?;
    if c.task.train_per_class > 0 {
        per_class(task, &mut train, c.task.train_per_class, c.run.seed)?;
    }
    let eval = if eval_files.is_empty() { Encoded::default() } else { task.read(eval_files, Split::Eval, c.task.max_eval_examples, &mut bad).map_err(|e| e.problems())? };
    Ok(TaskData { train, eval, skipped })
}

/// Keeps `n` training examples of each class, drawn with `seed` (the same draw for every
/// worker count and resume: it is made once, here, before the Loader sees the examples), in
/// file order. A class with fewer than `n` keeps them all, and the start line says so.
fn per_class(task: &dyn Task, train: &mut Encoded, n: usize, seed: u64) -> Result<(), Vec<String>> {
    let classes: Option<Vec<usize>> = train.examples.iter().map(|e| task.class_of(e)).collect();
    let Some(classes) = classes else {
        return Err(vec![format!("task.train_per_class: task.kind = \"{}\" has no single class per example (classification and cloze have)", task.kind())]);
    };
    let picked = draw_per_class(&classes, n, seed);
    let before = train.examples.len();
    let mut keep = vec![false; before];
    for &i in &picked {
        keep[i] = true;
    }
    train.examples = std::mem::take(&mut train.examples).into_iter().zip(keep).filter_map(|(e, k)| k.then_some(e)).collect();
    let mut counts = std::collections::BTreeMap::new();
    for &i in &picked {
        *counts.entry(classes[i]).or_insert(0usize) += 1;
    }
    let short: Vec<String> = counts.iter().filter(|(_, &c)| c < n).map(|(&l, c)| format!("{} ({c})", task.labels().get(l).map_or("?", String::as_str))).collect();
    let mut note = format!("task.train_per_class = {n}: {} of {before} training examples kept (drawn with run.seed = {seed})", train.examples.len());
    if !short.is_empty() {
        note += &format!("; fewer in {}", short.join(", "));
    }
    train.notes.push(note);
    Ok(())
}

/// The indices (sorted) of at most `n` examples of each class in `classes`, drawn uniformly
/// without replacement with `seed`.
pub(crate) fn draw_per_class(classes: &[usize], n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..classes.len()).collect();
    crate::rng::Rng::keyed(seed, crate::rng::Purpose::Subset, &[]).shuffle(&mut order);
    let mut taken = std::collections::HashMap::new();
    let mut picked: Vec<usize> = order
        .into_iter()
        .filter(|&i| {
            let t = taken.entry(classes[i]).or_insert(0usize);
            *t += 1;
            *t <= n
        })
        .collect();
    picked.sort_unstable();
    picked
}

/// `(max_steps, epoch_steps)`: batches of an epoch end at its last example (a short last
/// batch, as a DataLoader), and the ranks of a data-parallel run share each global batch.
pub(crate) fn steps(c: &RunConfig, examples: usize, world: usize) -> (u64, u64) {
    let batches_per_epoch = (examples as u64).div_ceil(c.train.batch_size.saturating_mul(world) as u64).max(1);
    let epoch_steps = batches_per_epoch.div_ceil(c.train.grad_accum as u64).max(1);
    if c.train.epochs > 0 {
        (c.train.epochs.saturating_mul(epoch_steps), epoch_steps)
    } else {
        (c.train.max_steps, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::draw_per_class;

    #[test]
    fn per_class_draws_n_of_each_class_uniformly_and_by_seed() {
        // 10 examples of class 0, 4 of class 1, 30 of class 2, interleaved.
        let classes: Vec<usize> = (0..44).map(|i| if i % 4 == 1 && i < 16 { 1 } else if i % 2 == 0 && i < 20 { 0 } else { 2 }).collect();
        let count = |c: usize| classes.iter().filter(|&&x| x == c).count();
        let (n0, n1, n2) = (count(0), count(1), count(2));
        assert_eq!((n0, n1, n0 + n1 + n2), (10, 4, 44));
        let mut hits = vec![0u32; classes.len()];
        let seeds = 3000;
        for seed in 0..seeds {
            let p = draw_per_class(&classes, 3, seed);
            assert!(p.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            for c in 0..3 {
                assert_eq!(p.iter().filter(|&&i| classes[i] == c).count(), 3.min(count(c)), "class {c}");
            }
            for i in p {
                hits[i] += 1;
            }
        }
        assert_eq!(draw_per_class(&classes, 3, 7), draw_per_class(&classes, 3, 7));
        assert_ne!(draw_per_class(&classes, 3, 7), draw_per_class(&classes, 3, 8));
        // Each example of a class of size m is kept with probability 3 / m; 4-sigma bounds.
        for (i, &h) in hits.iter().enumerate() {
            let p = 3.0_f64.min(count(classes[i]) as f64) / count(classes[i]) as f64;
            let (mean, sd) = (seeds as f64 * p, (seeds as f64 * p * (1.0 - p)).sqrt());
            assert!((h as f64 - mean).abs() <= 4.0 * sd + 1e-9, "example {i}: {h} vs {mean:.0} ± {sd:.1}");
        }
    }
}
