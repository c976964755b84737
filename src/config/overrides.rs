//! `--set key.path=value` on top of a parsed TOML table.
//!
//! The value is read as a TOML literal (`3`, `1e-4`, `true`, `[0.9, 0.98]`, `"text"`); anything
//! that is not a literal is taken as a bare string, so `--set run.out_dir=/tmp/x` works
//! unquoted. Types are checked later, by the same deserialization as the file itself.

use super::ConfigError;

/// Applies one override to `table`, creating intermediate tables as needed.
///
/// # Errors
/// [`ConfigError::Override`] when there is no `=`, the key is empty, or a path component is
/// not a table.
pub fn apply_override(table: &mut toml::Table, spec: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::Override(spec.to_owned());
    let (key, raw) = spec.split_once('=').ok_or_else(bad)?;
    set_value(table, key.trim(), parse_value(raw.trim())).map_err(|_| bad())
}

/// Sets `key` (a dotted path, `train.lr`) to `value`, making the tables on the way.
///
/// # Errors
/// [`ConfigError::Override`] when the path is empty somewhere or runs through a value that is
/// not a table.
pub fn set_value(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), ConfigError> {
    let bad = || ConfigError::Override(format!("{key}={value}"));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let (last, parents) = parts.split_last().ok_or_else(bad)?;
    let mut cur = table;
    for p in parents {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(bad)?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// Tags each problem (`key: message`) whose key a `--set` wrote with that override, so an
/// error that names the config file does not send the reader looking in it for a value the
/// command line gave: `train.lr: must be positive (from --set train.lr=-1)`. A problem at or
/// under an overridden key (`train.betas[1]` under `train.betas`) counts, and an unknown key
/// above one (`trian` for `--set trian.lr=1`: serde names the unknown table, not the leaf);
/// a problem of a whole table (`data: ...`) does not blame one override inside it. The last
/// matching override wins, as it did when it was applied.
pub fn attribute_problems(problems: Vec<String>, overrides: &[String]) -> Vec<String> {
    problems
        .into_iter()
        .map(|p| {
            let Some((key, message)) = p.split_once(": ") else { return p };
            let unknown = message.starts_with("unknown field");
            let from = overrides.iter().rev().find(|o| o.split_once('=').is_some_and(|(k, _)| within(key, k.trim()) || (unknown && within(k.trim(), key))));
            match from {
                Some(o) => format!("{key}: {message} (from --set {o})"),
                None => p,
            }
        })
        .collect()
}

/// Whether key path `long` is `short` or inside it (`a.b`, `a.b.c`, `a.b[2]` are inside `a.b`;
/// `a.bc` is not).
fn within(long: &str, short: &str) -> bool {
    long.strip_prefix(short).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        // `[a.jsonl, b.jsonl]` as a shell passes it, without the quotes TOML wants: a list of
        // its comma-separated items, each read as a value of its own (Hydra's override
        // grammar reads it so too).
        Err(_) => match raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Some(inner) if !inner.contains(['[', ']', '"', '\'']) => {
                toml::Value::Array(inner.split(',').map(str::trim).filter(|i| !i.is_empty()).map(parse_value).collect())
            }
            _ => toml::Value::String(raw.to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_typed_values_and_bare_strings() {
        let mut t = toml::Table::new();
        apply_override(&mut t, "train.max_steps=5").unwrap();
        apply_override(&mut t, "run.out_dir=/tmp/x y").unwrap();
        apply_override(&mut t, "train.betas=[0.9, 0.98]").unwrap();
        assert_eq!(t["train"]["max_steps"].as_integer(), Some(5));
        assert_eq!(t["run"]["out_dir"].as_str(), Some("/tmp/x y"));
        assert_eq!(t["train"]["betas"].as_array().unwrap().len(), 2);
        apply_override(&mut t, "data.train=[a.jsonl, /x/b-*.jsonl]").unwrap();
        apply_override(&mut t, "data.eval=[]").unwrap();
        apply_override(&mut t, "x.mixed=[1, two,3.5]").unwrap();
        let strings = |v: &toml::Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(strings(&t["data"]["train"]), ["a.jsonl", "/x/b-*.jsonl"], "an unquoted list is a list of bare strings");
        assert!(t["data"]["eval"].as_array().unwrap().is_empty());
        assert_eq!(t["x"]["mixed"].as_array().unwrap(), &[toml::Value::Integer(1), toml::Value::String("two".into()), toml::Value::Float(3.5)]);
        apply_override(&mut t, "x.text=[a, \"b]").unwrap();
        assert_eq!(t["x"]["text"].as_str(), Some("[a, \"b]"), "half-quoted: left as one string for the type check to name");
    }

    #[test]
    fn problems_from_an_override_name_it() {
        let problems = vec![
            "train.lrr: unknown field `lrr`".to_owned(),
            "train.lr: must be positive".to_owned(),
            "train.betas[1]: bad".to_owned(),
            "trian: unknown field `trian`".to_owned(),
            "train.lr_x: unknown field".to_owned(),
            "no key here".to_owned(),
            "data: a.jsonl:3: label `x` is not in the label set".to_owned(),
        ];
        let sets = ["train.lrr=1", "train.lr=0.1", "train.lr=-1", "train.betas=[0.9, 2]", "trian.lr=1", "data.eval=a.jsonl"].map(String::from);
        let got = attribute_problems(problems, &sets);
        assert_eq!(got[0], "train.lrr: unknown field `lrr` (from --set train.lrr=1)");
        assert_eq!(got[1], "train.lr: must be positive (from --set train.lr=-1)", "the last override of a key is the one in force");
        assert_eq!(got[2], "train.betas[1]: bad (from --set train.betas=[0.9, 2])");
        assert_eq!(got[3], "trian: unknown field `trian` (from --set trian.lr=1)");
        assert_eq!(got[4], "train.lr_x: unknown field", "a shared prefix is not the same key");
        assert_eq!(got[5], "no key here");
        assert_eq!(got[6], "data: a.jsonl:3: label `x` is not in the label set", "a table's problem is not one override's");
        assert_eq!(attribute_problems(vec!["train.lr: must be positive".into()], &[]), ["train.lr: must be positive"], "from the file: unchanged");
    }

    #[test]
    fn malformed_override_is_an_error() {
        let mut t = toml::Table::new();
        assert!(apply_override(&mut t, "novalue").is_err());
        assert!(apply_override(&mut t, ".x=1").is_err());
        apply_override(&mut t, "a=1").unwrap();
        assert!(apply_override(&mut t, "a.b=1").is_err(), "a is not a table");
    }
}
