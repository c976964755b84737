//! A sweep spec (TOML) and the cells it expands to: a base config, axes over config keys, the
//! seeds, exclusions, the pre-training runs the cells start from, and how the table is drawn.
//! Reading and expanding are pure: every problem is found before anything runs.
//!
//! ```toml
//! [sweep]
//! base = "configs/finetune-cls-minilm.toml"   # paths are relative to the working directory, as in configs
//! seeds = [1, 2, 3]                            # set as run.seed (`seed_key`)
//! metrics = ["accuracy", { name = "f1", label = "entity F1", scale = 100 }]
//! rows = ["data"]                              # the axes of the rows (default: all but the last)
//! columns = ["lr"]                             # the axes of the columns (default: the last)
//! keep = "picked"                              # a finished cell's checkpoints: "picked" (the one
//!                                              # its number comes from), "all" or "none"
//!
//! [set]                                        # every cell
//! "train.max_steps" = 60
//!
//! [[axis]]                                     # a key and its values ...
//! name = "lr"
//! key = "train.lr"
//! values = [1e-5, 1e-4]
//!
//! [[axis]]                                     # ... or named levels, each setting any keys
//! name = "data"
//! level = [{ label = "all" }, { label = "32 per class", set = { "task.train_per_class" = 32 } }]
//!
//! [[exclude]]                                  # cells not run ("n/a" in the table)
//! data = "32 per class"
//! lr = "1e-5"
//!
//! [[when]]                                     # settings of the cells that match
//! data = "32 per class"
//! set = { "train.batch_size" = 16 }
//!
//! [[pretrain]]                                 # a run the cells start from: "{pretrain.mlm}"
//! name = "mlm"
//! config = "configs/pretrain-mlm-tiny.toml"
//! out_dir = "runs/pretrain/tiny-mlm-2000"     # optional: shared by the specs that name it
//! set = { "train.max_steps" = 2000 }
//!
//! [smoke]                                      # `--smoke`: the first cell, one seed, these too
//! "train.max_steps" = 2
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a spec cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// Not valid TOML, or a key the spec does not have (the parser names it and its line).
    #[error("{}: not a valid sweep spec", file.display())]
    Syntax {
        /// The spec.
        file: PathBuf,
        /// The parser's message.
        source: toml::de::Error,
    },
    /// Everything else that is wrong, each problem naming its key.
    #[error("{}: invalid sweep spec:\n  - {}", file.display(), problems.join("\n  - "))]
    Invalid {
        /// The spec.
        file: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    sweep: Header,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    smoke: toml::Table,
    #[serde(default)]
    axis: Vec<AxisFile>,
    #[serde(default)]
    exclude: Vec<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    when: Vec<toml::Table>,
    #[serde(default)]
    pretrain: Vec<PretrainFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    base: PathBuf,
    out_dir: Option<PathBuf>,
    #[serde(default = "one_seed")]
    seeds: Vec<u64>,
    #[serde(default = "seed_key")]
    seed_key: String,
    #[serde(default)]
    title: String,
    metrics: Vec<MetricFile>,
    #[serde(default)]
    pick: Pick,
    #[serde(default)]
    keep: Keep,
    rows: Option<Vec<String>>,
    columns: Option<Vec<String>>,
    doc: Option<PathBuf>,
}

fn one_seed() -> Vec<u64> {
    vec![1]
}

fn seed_key() -> String {
    "run.seed".into()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MetricFile {
    Name(String),
    Full {
        name: String,
        label: Option<String>,
        scale: Option<f64>,
        digits: Option<usize>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisFile {
    name: String,
    key: Option<String>,
    values: Option<Vec<toml::Value>>,
    #[serde(default)]
    level: Vec<LevelFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelFile {
    label: String,
    #[serde(default)]
    set: toml::Table,
    pick: Option<Pick>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PretrainFile {
    name: String,
    config: PathBuf,
    out_dir: Option<PathBuf>,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    smoke: toml::Table,
}

/// Which evaluation of a run a cell reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// The evaluation of the best checkpoint by the run's monitored metric (the checkpoint
    /// `export` and `predict` use), else the last.
    #[default]
    Best,
    /// The last evaluation.
    Last,
}

/// What a finished cell keeps of its checkpoints. A cell's result is read from its
/// `events.jsonl`; its checkpoints only serve a resume while it runs, so keeping every cell's
/// (up to `checkpoint.keep_last` plus the best, each with its optimizer state: about 270 MB a
/// MiniLM cell) would fill a disk over a grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The checkpoint of the evaluation the cell reports (`pick`): the model behind each number,
    /// ready for `export` or `predict`.
    #[default]
    Picked,
    /// Everything the run kept.
    All,
    /// No checkpoint: the events, the log and the config stay.
    None,
}

/// A `{pretrain.NAME}` in a value that names no `[[pretrain]]` (or is never closed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{text:?}: no [[pretrain]] named {name:?} (have: {})", have.join(", "))]
pub struct Unresolved {
    /// The value.
    pub text: String,
    /// The name it gives.
    pub name: String,
    /// The `[[pretrain]]` names there are.
    pub have: Vec<String>,
}

/// A config key and its value, `section.key` (`task.verbalizers` may hold a table).
pub type Setting = (String, toml::Value);

/// Labels by axis name: the cells an `[[exclude]]` or `[[when]]` applies to.
pub type Labels = BTreeMap<String, Vec<String>>;

/// A metric column of the table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metric {
    /// Its name in the picked evaluation (`accuracy`, `f1`, `loss`, ...) or of the run's end
    /// (`elapsed_s`, `steps`, `tokens_per_second`).
    pub name: String,
    /// What the table calls it.
    pub label: String,
    /// Multiplies mean and deviation (100: percent).
    pub scale: f64,
    /// Decimals shown.
    pub digits: usize,
}

/// One value of an axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// What the table and folder names call it.
    pub label: String,
    /// What it sets.
    pub set: Vec<Setting>,
    /// Which evaluation its cells report, over the spec's `pick` (the over-fitting table:
    /// the last evaluation of a run without early stopping, the best of one with it).
    pub pick: Option<Pick>,
}

/// A dimension of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Its name (table headers, folder names, `[[exclude]]`).
    pub name: String,
    /// Its values in order.
    pub levels: Vec<Level>,
}

/// A pre-training run the cells start from (`{pretrain.NAME}` in a value is its folder).
#[derive(Debug, Clone, PartialEq)]
pub struct Pretrain {
    /// Its name.
    pub name: String,
    /// Its config.
    pub config: PathBuf,
    /// Its folder: `out_dir` when the spec gives one (specs that start from the same
    /// checkpoint share it, and the second finds it done), else `OUT/pretrain/NAME`.
    pub dir: Option<PathBuf>,
    /// What it sets over the config (the smoke settings included under `--smoke`).
    pub set: Vec<Setting>,
}

/// A sweep, read and checked.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The spec file.
    pub file: PathBuf,
    /// Its name (the file's stem): the doc markers and plot files.
    pub name: String,
    /// The config every cell starts from.
    pub base: PathBuf,
    /// Where the cells' folders go.
    pub out_dir: PathBuf,
    /// The seeds of every cell.
    pub seeds: Vec<u64>,
    /// The key the seed sets.
    pub seed_key: String,
    /// The table's title.
    pub title: String,
    /// The table's metrics.
    pub metrics: Vec<Metric>,
    /// Which evaluation a cell reports.
    pub pick: Pick,
    /// What a finished cell keeps of its checkpoints.
    pub keep: Keep,
    /// Every cell's settings (`[set]`).
    pub set: Vec<Setting>,
    /// `[smoke]` under `--smoke` (else empty): applied after the axes' and `[[when]]`'s, so a
    /// level's step budget cannot outlast the smoke run's.
    pub smoke_set: Vec<Setting>,
    /// The grid.
    pub axes: Vec<Axis>,
    /// Axis names of the rows.
    pub rows: Vec<String>,
    /// Axis names of the columns.
    pub columns: Vec<String>,
    /// Excluded combinations: each maps axis names to the labels it excludes; a cell matching
    /// every entry of one is not run.
    pub exclude: Vec<Labels>,
    /// Settings of the cells whose labels match: `(axis -> labels, settings)`, applied after
    /// the axes' own in spec order (the Chinese cells of "ours" start from the Chinese
    /// checkpoint).
    pub when: Vec<(Labels, Vec<Setting>)>,
    /// Runs the cells start from.
    pub pretrain: Vec<Pretrain>,
    /// A Markdown file whose table (between the sweep's markers) is rewritten.
    pub doc: Option<PathBuf>,
    /// Whether this is the smoke version (the first cell, one seed, `[smoke]` settings).
    pub smoke: bool,
}

/// One run of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The label of each axis, in axis order.
    pub labels: Vec<String>,
    /// Its seed.
    pub seed: u64,
    /// Its folder's name under `OUT/cells`.
    pub slug: String,
    /// Everything it sets over the base config, in order (later wins), `run.out_dir` excepted.
    pub set: Vec<Setting>,
    /// Which evaluation it reports.
    pub pick: Pick,
}

/// The settings of a TOML table: `"section.key" = v` as is, and `section.key = v` (a nested
/// table one level deep) flattened to the same; a table under a dotted key is one value.
fn settings(t: &toml::Table) -> Vec<Setting> {
    let mut out = Vec::new();
    for (k, v) in t {
        match v {
            toml::Value::Table(inner) if !k.contains('.') => out.extend(inner.iter().map(|(ik, iv)| (format!("{k}.{ik}"), iv.clone()))),
            _ => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// An `[[exclude]]` / `[[when]]` entry checked against the axes: axis name -> labels.
fn matcher(axes: &[Axis], at: &str, entry: BTreeMap<String, OneOrMany>, problems: &mut Vec<String>) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    for (axis, labels) in entry {
        let labels = match labels {
            OneOrMany::One(l) => vec![l],
            OneOrMany::Many(v) => v,
        };
        match axes.iter().find(|a| a.name == axis) {
            None => problems.push(format!("{at}: no axis named {axis:?}")),
            Some(a) => {
                for l in &labels {
                    if !a.levels.iter().any(|x| &x.label == l) {
                        problems.push(format!("{at}.{axis}: no value {l:?} (values: {})", a.levels.iter().map(|x| x.label.as_str()).collect::<Vec<_>>().join(", ")));
                    }
                }
            }
        }
        m.insert(axis, labels);
    }
    m
}

/// A value as a label: strings bare, numbers as short as they are exact (`3e-5`, `0.1`).
pub fn label_of(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => {
            let (plain, sci) = (format!("{f}"), format!("{f:e}"));
            if sci.len() < plain.len() { sci } else { plain }
        }
        other => other.to_string(),
    }
}

/// A label as part of a folder name: letters, digits, `.`, `-`, `_`, `+` kept, runs of
/// anything else one `-`.
fn slug_part(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

impl Spec {
    /// Reads and checks `file`; `smoke` keeps the first cell and one seed and adds `[smoke]`.
    ///
    /// # Errors
    /// [`SpecError`] with every problem found.
    pub fn read(file: &Path, smoke: bool) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(file).map_err(crate::files::FileError::at(file))?;
        Self::parse(file, &text, smoke)
    }

    /// [`Spec::read`] on text.
    ///
    /// # Errors
    /// [`SpecError`] with every problem found.
    pub fn parse(file: &Path, text: &str, smoke: bool) -> Result<Spec, SpecError> {
        let f: SpecFile = toml::from_str(text).map_err(|source| SpecError::Syntax { file: file.to_owned(), source })?;
        let mut problems = Vec::new();
        let name = file.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
        let h = f.sweep;
        if h.seeds.is_empty() {
            problems.push("sweep.seeds: empty (give at least one seed)".into());
        }
        if h.metrics.is_empty() {
            problems.push("sweep.metrics: empty (name the metrics the table shows)".into());
        }
        let metrics = h
            .metrics
            .into_iter()
            .map(|m| match m {
                MetricFile::Name(name) => Metric { label: name.clone(), name, scale: 1.0, digits: 3 },
                MetricFile::Full { name, label, scale, digits } => {
                    let scale = scale.unwrap_or(1.0);
                    Metric { label: label.unwrap_or_else(|| name.clone()), name, scale, digits: digits.unwrap_or(if scale >= 100.0 { 1 } else { 3 }) }
                }
            })
            .collect();
        let mut axes = Vec::new();
        for (i, a) in f.axis.into_iter().enumerate() {
            let at = format!("axis[{i}] ({})", a.name);
            let levels: Vec<Level> = match (a.key, a.values, a.level.is_empty()) {
                (Some(key), Some(values), true) => values.iter().map(|v| Level { label: label_of(v), set: vec![(key.clone(), v.clone())], pick: None }).collect(),
                (None, None, false) => a.level.into_iter().map(|l| Level { label: l.label, set: settings(&l.set), pick: l.pick }).collect(),
                _ => {
                    problems.push(format!("{at}: give either key and values, or level = [{{ label, set }}, ...]"));
                    continue;
                }
            };
            if levels.is_empty() {
                problems.push(format!("{at}: no values"));
            }
            let mut seen = BTreeSet::new();
            for l in &levels {
                if !seen.insert(slug_part(&l.label)) {
                    problems.push(format!("{at}: two values named alike ({:?})", l.label));
                }
            }
            if a.name.is_empty() || axes.iter().any(|b: &Axis| b.name == a.name) || a.name == "seed" {
                problems.push(format!("{at}: every axis needs its own name (not \"seed\")"));
            }
            axes.push(Axis { name: a.name, levels });
        }
        let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
        let (rows, columns) = match (h.rows, h.columns) {
            (Some(r), Some(c)) => (r, c),
            (Some(r), None) => {
                let c = names.iter().filter(|n| !r.iter().any(|x| x == *n)).map(|n| n.to_string()).collect();
                (r, c)
            }
            (None, Some(c)) => {
                let r = names.iter().filter(|n| !c.iter().any(|x| x == *n)).map(|n| n.to_string()).collect();
                (r, c)
            }
            (None, None) => match names.split_last() {
                Some((last, rest)) => (rest.iter().map(|n| n.to_string()).collect(), vec![last.to_string()]),
                None => (vec![], vec![]),
            },
        };
        let mut placed: Vec<&String> = rows.iter().chain(&columns).collect();
        for n in &placed {
            if !names.contains(&n.as_str()) {
                problems.push(format!("sweep.rows / sweep.columns: no axis named {n:?} (axes: {})", names.join(", ")));
            }
        }
        placed.sort();
        placed.dedup();
        if placed.len() != rows.len() + columns.len() || placed.len() != names.len() {
            problems.push(format!("sweep.rows and sweep.columns must place every axis once (axes: {})", names.join(", ")));
        }
        let exclude: Vec<_> = f.exclude.into_iter().enumerate().map(|(i, e)| matcher(&axes, &format!("exclude[{i}]"), e, &mut problems)).collect();
        let mut when = Vec::new();
        for (i, mut w) in f.when.into_iter().enumerate() {
            let at = format!("when[{i}]");
            let set = match w.remove("set") {
                Some(toml::Value::Table(t)) => settings(&t),
                _ => {
                    problems.push(format!("{at}.set: a table of the settings to apply"));
                    Vec::new()
                }
            };
            let mut m = BTreeMap::new();
            for (k, v) in w {
                match v {
                    toml::Value::String(l) => {
                        m.insert(k, OneOrMany::One(l));
                    }
                    toml::Value::Array(a) if a.iter().all(toml::Value::is_str) => {
                        m.insert(k, OneOrMany::Many(a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()));
                    }
                    _ => problems.push(format!("{at}.{k}: a label or a list of labels of axis {k:?}")),
                }
            }
            when.push((matcher(&axes, &at, m, &mut problems), set));
        }
        let mut pretrain: Vec<Pretrain> = Vec::new();
        for p in f.pretrain {
            if slug_part(&p.name) != p.name || pretrain.iter().any(|q| q.name == p.name) {
                problems.push(format!("pretrain {:?}: names are unique and made of letters, digits, '.', '-', '_'", p.name));
            }
            let mut set = settings(&p.set);
            if smoke {
                set.extend(settings(&p.smoke));
            }
            let dir = if smoke { None } else { p.out_dir };
            pretrain.push(Pretrain { name: p.name, config: p.config, dir, set });
        }
        let set = settings(&f.set);
        let smoke_set = if smoke { settings(&f.smoke) } else { Vec::new() };
        let out_dir = h.out_dir.unwrap_or_else(|| PathBuf::from("runs/sweeps").join(&name));
        let out_dir = if smoke { PathBuf::from(format!("{}-smoke", out_dir.display())) } else { out_dir };
        let seeds = if smoke { h.seeds.into_iter().take(1).collect() } else { h.seeds };
        let spec = Spec { file: file.to_owned(), name, base: h.base, out_dir, seeds, seed_key: h.seed_key, title: h.title, metrics, pick: h.pick, keep: h.keep, set, smoke_set, axes, rows, columns, exclude, when, pretrain, doc: h.doc, smoke };
        let levels = spec.axes.iter().flat_map(|a| a.levels.iter().map(move |l| (format!("axis {} = {}", a.name, l.label), &l.set)));
        let pre = spec.pretrain.iter().map(|p| (format!("pretrain {}", p.name), &p.set));
        let when = spec.when.iter().enumerate().map(|(i, (_, set))| (format!("when[{i}]"), set));
        for (at, set) in [("set".to_owned(), &spec.set), ("smoke".to_owned(), &spec.smoke_set)].into_iter().chain(levels).chain(pre).chain(when) {
            for (k, v) in set {
                if let Err(p) = spec.interpolate(v) {
                    problems.push(format!("{at}: {k}: {p}"));
                }
            }
        }
        problems.dedup();
        if problems.is_empty() { Ok(spec) } else { Err(SpecError::Invalid { file: file.to_owned(), problems }) }
    }

    /// Whether the labels (in axis order) fall under an `[[exclude]]`.
    pub fn excluded(&self, labels: &[String]) -> bool {
        self.exclude.iter().any(|e| self.matches(e, labels))
    }

    /// Whether labels (in axis order) match every entry of `m`.
    fn matches(&self, m: &BTreeMap<String, Vec<String>>, labels: &[String]) -> bool {
        m.iter().all(|(axis, ls)| self.axes.iter().position(|a| &a.name == axis).is_some_and(|i| ls.contains(&labels[i])))
    }

    /// Every cell of the grid but the excluded ones, seeds outermost (a sweep cut short has
    /// whole seeds done first), axes in spec order with the last varying fastest.
    pub fn all_cells(&self) -> Vec<Cell> {
        let mut combos: Vec<Vec<usize>> = vec![vec![]];
        for a in &self.axes {
            combos = combos.into_iter().flat_map(|c| (0..a.levels.len()).map(move |i| [c.clone(), vec![i]].concat())).collect();
        }
        let mut cells = Vec::new();
        for &seed in &self.seeds {
            for combo in &combos {
                let labels: Vec<String> = combo.iter().zip(&self.axes).map(|(&i, a)| a.levels[i].label.clone()).collect();
                if self.excluded(&labels) {
                    continue;
                }
                let mut set = self.set.clone();
                let mut pick = self.pick;
                for (&i, a) in combo.iter().zip(&self.axes) {
                    set.extend(a.levels[i].set.iter().cloned());
                    pick = a.levels[i].pick.unwrap_or(pick);
                }
                for (m, extra) in &self.when {
                    if self.matches(m, &labels) {
                        set.extend(extra.iter().cloned());
                    }
                }
                set.extend(self.smoke_set.iter().cloned());
                set.push((self.seed_key.clone(), toml::Value::Integer(seed as i64)));
                let mut parts: Vec<String> = self.axes.iter().zip(&labels).map(|(a, l)| format!("{}={}", slug_part(&a.name), slug_part(l))).collect();
                parts.push(format!("seed={seed}"));
                cells.push(Cell { labels, seed, slug: parts.join("__"), set, pick });
            }
        }
        cells
    }

    /// The cells to run: the whole grid, or under `--smoke` its first cell.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = self.all_cells();
        if self.smoke {
            cells.truncate(1);
        }
        cells
    }

    /// The folder of pre-training run `name`.
    pub fn pretrain_dir(&self, name: &str) -> PathBuf {
        self.pretrain.iter().find(|p| p.name == name).and_then(|p| p.dir.clone()).unwrap_or_else(|| self.out_dir.join("pretrain").join(name))
    }

    /// The folder of a cell.
    pub fn cell_dir(&self, cell: &Cell) -> PathBuf {
        self.out_dir.join("cells").join(&cell.slug)
    }

    /// `v` with `{pretrain.NAME}` in its strings replaced by that run's folder and `{out}` by
    /// the sweep's.
    ///
    /// # Errors
    /// [`Unresolved`]: a `{pretrain.NAME}` with no such run, or one left open.
    pub fn interpolate(&self, v: &toml::Value) -> Result<toml::Value, Unresolved> {
        Ok(match v {
            toml::Value::String(s) => toml::Value::String(self.interpolate_str(s)?),
            toml::Value::Array(a) => toml::Value::Array(a.iter().map(|x| self.interpolate(x)).collect::<Result<_, _>>()?),
            toml::Value::Table(t) => toml::Value::Table(t.iter().map(|(k, x)| Ok((k.clone(), self.interpolate(x)?))).collect::<Result<_, Unresolved>>()?),
            other => other.clone(),
        })
    }

    fn interpolate_str(&self, s: &str) -> Result<String, Unresolved> {
        let mut out = s.replace("{out}", &self.out_dir.display().to_string());
        while let Some(at) = out.find("{pretrain.") {
            let unresolved = |name: &str| Unresolved { text: s.to_owned(), name: name.to_owned(), have: self.pretrain.iter().map(|p| p.name.clone()).collect() };
            let end = out[at..].find('}').map(|e| at + e).ok_or_else(|| unresolved(&out[at + "{pretrain.".len()..]))?;
            let name = &out[at + "{pretrain.".len()..end];
            if !self.pretrain.iter().any(|p| p.name == name) {
                return Err(unresolved(name));
            }
            out = format!("{}{}{}", &out[..at], self.pretrain_dir(name).display(), &out[end + 1..]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
[sweep]
base = "configs/finetune-cls-tiny.toml"
seeds = [1, 2]
metrics = ["accuracy", { name = "macro_f1", label = "macro F1", scale = 100 }]

[set]
"train.max_steps" = 60
metrics.listen = ""

[smoke]
"train.max_steps" = 2

[[axis]]
name = "start"
level = [{ label = "random init", pick = "last" }, { label = "MiniLM", set = { "init.hf" = ".cache/minilm/model" } }, { label = "ours", set = { "init.checkpoint" = "{pretrain.mlm}/checkpoints" } }]

[[axis]]
name = "lr"
key = "train.lr"
values = [3e-5, 1e-3, 0.1]

[[exclude]]
start = "MiniLM"
lr = ["1e-3", "0.1"]

[[when]]
start = ["ours", "random init"]
lr = "0.1"
set = { "train.warmup_ratio" = 0.5 }

[[pretrain]]
name = "mlm"
config = "configs/pretrain-mlm-tiny.toml"
set = { "train.max_steps" = 2000 }
smoke = { "train.max_steps" = 4 }
"#;

    fn spec(smoke: bool) -> Spec {
        Spec::parse(Path::new("sweeps/x.toml"), SPEC, smoke).unwrap()
    }

    #[test]
    fn a_grid_expands_seed_major_with_exclusions_and_every_setting_in_order() {
        let s = spec(false);
        assert_eq!((s.rows.clone(), s.columns.clone()), (vec!["start".to_string()], vec!["lr".to_string()]));
        assert_eq!(s.out_dir, PathBuf::from("runs/sweeps/x"));
        let cells = s.cells();
        assert_eq!(cells.len(), 2 * (9 - 2));
        assert_eq!(cells[0].labels, ["random init", "3e-5"]);
        assert_eq!(cells[0].slug, "start=random-init__lr=3e-5__seed=1");
        assert_eq!((cells[0].pick, cells[6].pick), (Pick::Last, Pick::Best), "a level's pick wins over the spec's");
        assert!(cells[..7].iter().all(|c| c.seed == 1) && cells[7..].iter().all(|c| c.seed == 2));
        assert!(!cells.iter().any(|c| c.labels[0] == "MiniLM" && c.labels[1] != "3e-5"));
        let ours = cells.iter().find(|c| c.labels == ["ours", "0.1"] && c.seed == 2).unwrap();
        let keys: Vec<&str> = ours.set.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["metrics.listen", "train.max_steps", "init.checkpoint", "train.lr", "train.warmup_ratio", "run.seed"]);
        assert!(!cells.iter().find(|c| c.labels == ["ours", "1e-3"]).unwrap().set.iter().any(|(k, _)| k == "train.warmup_ratio"));
        assert_eq!(s.interpolate(&ours.set[2].1).unwrap().as_str(), Some("runs/sweeps/x/pretrain/mlm/checkpoints"));
        assert_eq!(ours.set[3].1.as_float(), Some(0.1));
        assert_eq!(s.metrics[1], Metric { name: "macro_f1".into(), label: "macro F1".into(), scale: 100.0, digits: 1 });
    }

    #[test]
    fn smoke_keeps_the_first_cell_with_the_smoke_settings_in_its_own_folder() {
        let s = spec(true);
        let cells = s.cells();
        assert_eq!(cells.len(), 1);
        assert_eq!(cells[0].set.iter().rfind(|(k, _)| k == "train.max_steps").unwrap().1.as_integer(), Some(2));
        let with_level = SPEC.replace("{ label = \"random init\", pick = \"last\" }", "{ label = \"random init\", pick = \"last\", set = { \"train.max_steps\" = 500 } }");
        let s = Spec::parse(Path::new("sweeps/x.toml"), &with_level, true).unwrap();
        assert_eq!(s.cells()[0].set.iter().rfind(|(k, _)| k == "train.max_steps").unwrap().1.as_integer(), Some(2), "[smoke] wins over a level's budget");
        assert_eq!(s.pretrain[0].set.last().unwrap().1.as_integer(), Some(4));
        assert_eq!(s.out_dir, PathBuf::from("runs/sweeps/x-smoke"));
    }

    #[test]
    fn every_problem_is_named_with_its_key() {
        let bad = SPEC.replace("lr = [\"1e-3\", \"0.1\"]", "lr = [\"1e-4\"]\nsize = \"big\"").replace("{pretrain.mlm}", "{pretrain.glm}").replace("seeds = [1, 2]", "seeds = []\ncolumns = [\"lr\", \"width\"]");
        let e = Spec::parse(Path::new("sweeps/bad.toml"), &bad, false).unwrap_err().to_string();
        for needle in ["sweeps/bad.toml", "sweep.seeds: empty", "no axis named \"width\"", "exclude[0].lr: no value \"1e-4\"", "exclude[0]: no axis named \"size\"", "no [[pretrain]] named \"glm\""] {
            assert!(e.contains(needle), "{needle:?} missing from:\n{e}");
        }
        let typo = SPEC.replace("seeds = [1, 2]", "seed = [1, 2]");
        let e = crate::error_chain(&Spec::parse(Path::new("sweeps/typo.toml"), &typo, false).unwrap_err());
        assert!(e.contains("sweeps/typo.toml") && e.contains("unknown field `seed`"), "{e}");
        assert_eq!(e.matches("unknown field").count(), 1, "the parser's message once: {e}");
        let both = SPEC.replace("key = \"train.lr\"", "key = \"train.lr\"\nlevel = [{ label = \"a\" }]");
        assert!(Spec::parse(Path::new("s.toml"), &both, false).unwrap_err().to_string().contains("either key and values"));
    }

    #[test]
    fn labels_are_short_and_exact() {
        assert_eq!(label_of(&toml::Value::Float(3e-5)), "3e-5");
        assert_eq!(label_of(&toml::Value::Float(0.1)), "0.1");
        assert_eq!(label_of(&toml::Value::Float(1e-3)), "1e-3");
        assert_eq!(label_of(&toml::Value::Float(0.25)), "0.25");
        assert_eq!(label_of(&toml::Value::Integer(32)), "32");
        assert_eq!(label_of(&toml::Value::String("all data".into())), "all data");
        assert_eq!(slug_part("Chinese / 32 per class"), "Chinese-32-per-class");
    }
}
