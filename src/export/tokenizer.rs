//! The tokenizer half of an exported folder: `tokenizer.json` with the framing pretune's
//! tasks give their inputs, and the `tokenizer_config.json` `AutoTokenizer` reads beside it.
//!
//! pretune frames inputs itself (`[CLS] A [SEP] B [SEP]`, RoBERTa's `<s> A </s></s> B </s>`)
//! and ignores a `tokenizer.json`'s post-processor; `transformers` relies on it. Without a
//! `tokenizer_config.json`, `AutoTokenizer` also guesses the rest from `config.json`'s model
//! type, and the guesses change what the model sees: a cased WordPiece is lower-cased again
//! (`BertTokenizer`'s `do_lower_case` defaults to true and rewrites the normalizer), the
//! length limit is unbounded (a long text then overruns the position table inside the model
//! instead of being truncated), and a RoBERTa vocabulary trained without a post-processor gets
//! no `<s>` / `</s>`. Both files are written here so `tokenizer(text, pair)` in `transformers`
//! gives the ids, token types and truncation the fine-tuned model was trained on.

use serde_json::{json, Map, Value};

use crate::data::tokenize::TextTokenizer;

/// What the exported folder's model says about its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// `config.json`'s `model_type`.
    pub model_type: &'a str,
    /// The longest input the position table holds (RoBERTa's offset taken off).
    pub max_length: i64,
    /// Whether the model reads token types (`type_vocab_size` above 1).
    pub token_types: bool,
}

/// The tokenizer to save as `tokenizer.json` (`tok` with pretune's framing as its
/// post-processor) and the `tokenizer_config.json` for `tok` beside a model with `inputs`.
pub fn hf_tokenizer_files(tok: &TextTokenizer, inputs: Inputs<'_>) -> (tokenizers::Tokenizer, Value) {
    let json: Value = serde_json::from_str(&tok.serialized()).expect("a loaded tokenizer serializes to JSON");
    let ids = tok.special_ids();
    let name = |id: u32| tok.id_to_token(id);
    let (cls, sep) = (name(ids.cls), name(ids.sep));
    let roberta_style = tok.pair_separators() == 2;
    let mut framed = tok.inner().clone();
    let processor: tokenizers::PostProcessorWrapper =
        serde_json::from_value(post_processor(&cls, ids.cls, &sep, ids.sep, roberta_style)).expect("the template built here is a valid TemplateProcessing");
    framed.with_post_processor(Some(processor));

    let canonical_wordpiece = json["model"]["type"] == "WordPiece" && json["normalizer"]["type"] == "BertNormalizer" && json["pre_tokenizer"]["type"] == "BertPreTokenizer";
    let class = match inputs.model_type {
        "bert" if canonical_wordpiece => "BertTokenizer",
        "electra" if canonical_wordpiece => "ElectraTokenizer",
        // Anything else is loaded as written (`PreTrainedTokenizerFast`): a family class would
        // rebuild the pipeline from its own defaults (RoBERTa's `add_prefix_space`, ...).
        _ => "PreTrainedTokenizerFast",
    };
    let mut config = Map::new();
    config.insert("tokenizer_class".into(), json!(class));
    config.insert("model_max_length".into(), json!(inputs.max_length));
    for (key, id) in [("cls_token", ids.cls), ("sep_token", ids.sep), ("pad_token", ids.pad), ("mask_token", ids.mask), ("unk_token", ids.unk)] {
        config.insert(key.into(), json!(name(id)));
    }
    if roberta_style {
        config.insert("bos_token".into(), json!(cls));
        config.insert("eos_token".into(), json!(sep));
    }
    if class != "PreTrainedTokenizerFast" {
        // The family classes rebuild the normalizer from these; say what the file does.
        let normalizer = &json["normalizer"];
        config.insert("do_lower_case".into(), normalizer["lowercase"].clone());
        config.insert("strip_accents".into(), normalizer["strip_accents"].clone());
        config.insert("tokenize_chinese_chars".into(), normalizer["handle_chinese_chars"].clone());
    }
    let names: &[&str] = if inputs.token_types { &["input_ids", "token_type_ids", "attention_mask"] } else { &["input_ids", "attention_mask"] };
    config.insert("model_input_names".into(), json!(names));
    (framed, Value::Object(config))
}

/// A `TemplateProcessing` that frames as pretune's tasks do: BERT's `[CLS] A [SEP]` and
/// `[CLS] A [SEP] B [SEP]` with B's tokens of type 1, or RoBERTa's `<s> A </s>` and
/// `<s> A </s></s> B </s>` (one token type).
fn post_processor(cls: &str, cls_id: u32, sep: &str, sep_id: u32, roberta_style: bool) -> Value {
    let special = |id: &str, type_id: u32| json!({"SpecialToken": {"id": id, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let b_type = u32::from(!roberta_style);
    let single = vec![special(cls, 0), seq("A", 0), special(sep, 0)];
    let mut pair = vec![special(cls, 0), seq("A", 0), special(sep, 0)];
    if roberta_style {
        pair.push(special(sep, 0));
    }
    pair.extend([seq("B", b_type), special(sep, b_type)]);
    let tokens: Map<String, Value> =
        [(cls, cls_id), (sep, sep_id)].into_iter().map(|(t, id)| (t.to_owned(), json!({"id": t, "ids": [id], "tokens": [t]}))).collect();
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": tokens})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::data::{encode_classification, ClsRecord};
    use std::str::FromStr;

    fn record(text: &str, pair: Option<&str>) -> ClsRecord {
        ClsRecord { text: text.into(), pair: pair.map(Into::into), label: String::new(), path: "t.jsonl".into(), line: 1 }
    }

    /// The exported `tokenizer.json`, loaded by the `tokenizers` library `transformers` wraps,
    /// frames single texts and pairs exactly as pretune's tasks do, for BERT's and RoBERTa's
    /// conventions, with the token types BERT reads.
    #[test]
    fn the_exported_tokenizer_frames_texts_and_pairs_as_the_tasks_do() {
        let d = tempfile::tempdir().unwrap();
        let vocab = d.path().join("vocab.txt");
        std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\nis\nthis\nspam\n?\n").unwrap();
        let bert = TextTokenizer::load(&vocab, Some(true)).unwrap();
        // A cased vocabulary says so: `BertTokenizer` would lower-case it again otherwise.
        let cased = TextTokenizer::load(&vocab, Some(false)).unwrap();
        assert_eq!(hf_tokenizer_files(&cased, Inputs { model_type: "bert", max_length: 512, token_types: true }).1["do_lower_case"], false);
        // RoBERTa's names, a word-level model, no post-processor (as a vocabulary trained
        // with the `tokenizers` library alone is saved).
        let words = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "hello", "world", "is", "this", "spam?", "spam"];
        let vocab: Map<String, Value> = words.iter().enumerate().map(|(i, w)| ((*w).to_owned(), json!(i))).collect();
        let file = d.path().join("roberta.json");
        let roberta_json = json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}});
        std::fs::write(&file, roberta_json.to_string()).unwrap();
        let roberta = TextTokenizer::load(&file, None).unwrap();
        let cases = [("Hello world", None), ("Is this spam?", Some("hello world")), ("spam", Some("spam spam spam"))];
        for (tok, model_type, types, class) in [(&bert, "bert", true, "BertTokenizer"), (&roberta, "roberta", false, "PreTrainedTokenizerFast")] {
            let (framed, config) = hf_tokenizer_files(tok, Inputs { model_type, max_length: 128, token_types: types });
            assert_eq!(config["tokenizer_class"], class);
            assert_eq!(config["model_max_length"], 128);
            assert_eq!(config["mask_token"], tok.id_to_token(tok.special_ids().mask));
            assert_eq!(config["model_input_names"].as_array().unwrap().len(), if types { 3 } else { 2 });
            if types {
                assert_eq!(config["do_lower_case"], true);
            } else {
                assert_eq!((config["bos_token"].as_str(), config["eos_token"].as_str()), (Some("<s>"), Some("</s>")));
            }
            // As `transformers` reads it: from the saved file.
            let hf = tokenizers::Tokenizer::from_str(&framed.to_string(false).unwrap()).unwrap();
            for (text, pair) in cases {
                let ours = encode_classification(tok, &record(text, pair), None, 0.0, 128).unwrap();
                let theirs = match pair {
                    Some(p) => hf.encode((text, p), true).unwrap(),
                    None => hf.encode(text, true).unwrap(),
                };
                assert_eq!(theirs.get_ids(), ours.ids, "{model_type}: {text:?} / {pair:?}");
                if types {
                    let types: Vec<u8> = theirs.get_type_ids().iter().map(|&t| t as u8).collect();
                    assert_eq!(types, ours.types, "{text:?} / {pair:?}");
                }
            }
        }
    }
}
