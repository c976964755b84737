//! Text to ids with the `tokenizers` crate, from a `tokenizer.json` or a WordPiece `vocab.txt`.
//!
//! Any padding or truncation stored in a `tokenizer.json` is switched off: packing decides the
//! lengths. Special tokens are not added here either; the Masker adds `[CLS]` / `[SEP]`.

use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

/// Errors while loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file could not be loaded.
    #[error("cannot load tokenizer {path}")]
    Load {
        /// The tokenizer file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tokenizers::Error,
    },
    /// A token BERT needs is absent from the vocabulary.
    #[error("tokenizer {path} has no `{token}` token")]
    MissingSpecial {
        /// The tokenizer file.
        path: PathBuf,
        /// The missing token.
        token: &'static str,
    },
    /// Encoding (or adding tokens) failed.
    #[error("tokenization failed")]
    Encode(#[source] tokenizers::Error),
}

/// The ids BERT-style objectives need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SpecialIds {
    /// `[CLS]`
    pub cls: u32,
    /// `[SEP]`
    pub sep: u32,
    /// `[PAD]`
    pub pad: u32,
    /// `[MASK]`
    pub mask: u32,
    /// `[UNK]`
    pub unk: u32,
}

/// A loaded tokenizer plus what the data plane needs to know about it. Cloning is cheap next
/// to tokenizing, and gives a thread its own regex caches (threads sharing one tokenizer
/// contend on them).
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Ids of every special token (never chosen for masking). `[UNK]` is not among them: it
    /// stands for real text, and BERT's own script masks it like any other token.
    special: Vec<bool>,
    ids: SpecialIds,
    vocab_size: usize,
    /// SHA-256 of the tokenizer as loaded (before any objective adds tokens).
    identity: String,
    /// RoBERTa's conventions (`<s>` opens a sequence): a pair is `<s> A </s></s> B </s>`.
    roberta_style: bool,
    /// A byte-level BPE (GPT-2 / RoBERTa): a word encoded alone gets the space that precedes it
    /// in running text (`Ġ`), as `transformers` does with `is_split_into_words`.
    byte_level: bool,
}

/// What a `tokenizer_config.json` beside a `vocab.txt` says about BERT's normalizer (each
/// unset when the file, or the key, is absent). Read key by key rather than derived, so one
/// key of another type leaves the others in force.
#[derive(Debug, Default)]
struct VocabSettings {
    do_lower_case: Option<bool>,
    strip_accents: Option<bool>,
    tokenize_chinese_chars: Option<bool>,
}

impl VocabSettings {
    /// The settings in `vocab`'s folder's `tokenizer_config.json`; an unreadable file or a key
    /// of another type is as if absent (`transformers` would fail on it; this keeps BERT's
    /// defaults).
    fn beside(vocab: &Path) -> Self {
        let Some(text) = vocab.parent().and_then(|d| std::fs::read_to_string(d.join("tokenizer_config.json")).ok()) else { return Self::default() };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return Self::default() };
        let flag = |k: &str| v.get(k).and_then(serde_json::Value::as_bool);
        VocabSettings { do_lower_case: flag("do_lower_case"), strip_accents: flag("strip_accents"), tokenize_chinese_chars: flag("tokenize_chinese_chars") }
    }
}

/// One sentence in ids, with a flag per token saying whether it starts a word (from the
/// tokenizer's word ids, so whole-word masking works for BPE and Unigram tokenizers too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokSentence {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `true` where a token starts a new word.
    pub word_start: Vec<bool>,
}

impl TextTokenizer {
    /// Loads `path`: a `vocab.txt` (by name) builds BERT's WordPiece pipeline, anything else is
    /// read as a `tokenizer.json`. `lowercase` applies to `vocab.txt` only; unset, the
    /// `tokenizer_config.json` beside it decides (`do_lower_case`, `strip_accents`,
    /// `tokenize_chinese_chars`, as `transformers` reads them: a cased BERT folder such as
    /// `bert-base-cased` says `do_lower_case: false`), else true.
    ///
    /// # Errors
    /// [`TokenizerError`] when the file cannot be loaded or lacks `[CLS]`, `[SEP]`, `[PAD]`,
    /// `[MASK]` or `[UNK]`.
    pub fn load(path: &Path, lowercase: Option<bool>) -> Result<Self, TokenizerError> {
        let load_err = |source| TokenizerError::Load { path: path.to_owned(), source };
        let is_vocab = path.extension().is_some_and(|e| e == "txt");
        let mut inner = if is_vocab {
            let file = path.to_str().ok_or_else(|| load_err("path is not UTF-8".into()))?;
            let wp = WordPiece::from_file(file).unk_token("[UNK]".into()).build().map_err(load_err)?;
            let mut t = Tokenizer::new(wp);
            let beside = VocabSettings::beside(path);
            let lowercase = lowercase.or(beside.do_lower_case).unwrap_or(true);
            t.with_normalizer(Some(BertNormalizer::new(true, beside.tokenize_chinese_chars.unwrap_or(true), beside.strip_accents, lowercase))).map_err(load_err)?;
            t.with_pre_tokenizer(Some(BertPreTokenizer));
            t.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
            t
        } else {
            Tokenizer::from_file(path).map_err(load_err)?
        };
        inner.with_padding(None);
        inner.with_truncation(None).map_err(load_err)?;
        // BERT's names, else RoBERTa's / XLM-R's (`<s>`, `</s>`, `<pad>`, `<mask>`, `<unk>`).
        let id = |token: &'static str, or: &str| {
            inner.token_to_id(token).or_else(|| inner.token_to_id(or)).ok_or(TokenizerError::MissingSpecial { path: path.to_owned(), token })
        };
        let ids = SpecialIds { cls: id("[CLS]", "<s>")?, sep: id("[SEP]", "</s>")?, pad: id("[PAD]", "<pad>")?, mask: id("[MASK]", "<mask>")?, unk: id("[UNK]", "<unk>")? };
        let roberta_style = inner.token_to_id("[CLS]").is_none();
        let byte_level = matches!(inner.get_pre_tokenizer(), Some(tokenizers::PreTokenizerWrapper::ByteLevel(_)));
        if is_vocab {
            inner.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), ids.sep), ("[CLS]".into(), ids.cls))));
        }
        let vocab_size = inner.get_vocab_size(true);
        let mut special = vec![false; vocab_size];
        for (id, tok) in inner.get_added_tokens_decoder() {
            if tok.special && (id as usize) < vocab_size {
                special[id as usize] = true;
            }
        }
        for s in [ids.cls, ids.sep, ids.pad, ids.mask] {
            special[s as usize] = true;
        }
        special[ids.unk as usize] = false;
        let serialized = inner.to_string(false).map_err(load_err)?;
        let identity = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(serialized.as_bytes()));
        Ok(TextTokenizer { inner, special, ids, vocab_size, identity, roberta_style, byte_level })
    }

    /// Adds `tokens` as special tokens where the vocabulary lacks them (GLM's `[sop]`,
    /// `[eop]`, `[sMASK]`, `[gMASK]`); the vocabulary grows by the number added. Returns the id
    /// of each token.
    ///
    /// # Errors
    /// [`TokenizerError::Encode`] when the tokenizer refuses the tokens.
    pub fn ensure_special(&mut self, tokens: &[&str]) -> Result<Vec<u32>, TokenizerError> {
        let missing: Vec<tokenizers::AddedToken> =
            tokens.iter().filter(|t| self.inner.token_to_id(t).is_none()).map(|t| tokenizers::AddedToken::from(*t, true)).collect();
        if !missing.is_empty() {
            self.inner.add_special_tokens(missing).map_err(TokenizerError::Encode)?;
        }
        self.vocab_size = self.inner.get_vocab_size(true);
        self.special.resize(self.vocab_size, false);
        Ok(tokens
            .iter()
            .map(|t| {
                let id = self.inner.token_to_id(t).expect("the token was just added");
                self.special[id as usize] = true;
                id
            })
            .collect())
    }

    /// Separators between the two texts of a pair: 2 for RoBERTa's `</s></s>`, 1 for BERT's
    /// `[SEP]`.
    pub fn pair_separators(&self) -> usize {
        if self.roberta_style {
            2
        } else {
            1
        }
    }

    /// Encodes one word of a pre-split sentence (tagging): with a byte-level BPE the word gets
    /// the space before it, so its pieces are the ones it has in running text (`Ġword`).
    ///
    /// # Errors
    /// [`TokenizerError::Encode`].
    pub fn encode_word(&self, word: &str) -> Result<TokSentence, TokenizerError> {
        if self.byte_level && !word.starts_with(' ') {
            self.encode(&format!(" {word}"))
        } else {
            self.encode(word)
        }
    }

    /// SHA-256 of the tokenizer's serialized form as loaded (vocabulary, normalizer,
    /// pre-tokenizer, added tokens; before an objective adds its own): what a prepared dataset
    /// records, so data tokenized by another tokenizer is never read as this one's ids.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// SHA-256 of the tokenizer as it is now (the tokens an objective added included): what a
    /// checkpoint records beside its own copy, so a resume or a start from it with another
    /// tokenizer is caught.
    pub fn fingerprint(&self) -> String {
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(self.serialized().as_bytes()))
    }

    /// The tokenizer as a `tokenizer.json` (the tokens an objective added included).
    pub fn serialized(&self) -> String {
        self.inner.to_string(false).unwrap_or_default()
    }

    /// The id of `token`, if the vocabulary (added tokens included) has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of the BERT special tokens.
    pub fn special_ids(&self) -> SpecialIds {
        self.ids
    }

    /// Vocabulary size, added tokens included: the size of the embedding table.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// One flag per id: never choose this token for masking.
    pub fn special_mask(&self) -> &[bool] {
        &self.special
    }

    /// Encodes one sentence without special tokens.
    ///
    /// # Errors
    /// [`TokenizerError::Encode`].
    pub fn encode(&self, text: &str) -> Result<TokSentence, TokenizerError> {
        let enc = self.inner.encode(text, false).map_err(TokenizerError::Encode)?;
        let words = enc.get_word_ids();
        let mut word_start = Vec::with_capacity(words.len());
        let mut prev = None;
        for (i, w) in words.iter().enumerate() {
            word_start.push(i == 0 || w.is_none() || *w != prev);
            prev = *w;
        }
        Ok(TokSentence { ids: enc.get_ids().to_vec(), word_start })
    }

    /// Encodes one sentence whose word segmentation is given (`starts`: per character, whether
    /// a word starts there): a token starts a word when the segmentation says its first
    /// character does and the tokenizer did not split it off the word before (a `##` piece).
    /// Chinese text is tokenized character by character, so this is what makes whole-word
    /// masking mask every character of a segmented word together.
    ///
    /// # Errors
    /// [`TokenizerError::Encode`].
    pub fn encode_segmented(&self, text: &str, starts: &[bool]) -> Result<TokSentence, TokenizerError> {
        let enc = self.inner.encode_char_offsets(text, false).map_err(TokenizerError::Encode)?;
        let words = enc.get_word_ids();
        let mut word_start = Vec::with_capacity(words.len());
        for (i, (w, &(a, _))) in words.iter().zip(enc.get_offsets()).enumerate() {
            let piece = i > 0 && w.is_some() && *w == words[i - 1];
            word_start.push(i == 0 || (!piece && starts.get(a).copied().unwrap_or(true)));
        }
        Ok(TokSentence { ids: enc.get_ids().to_vec(), word_start })
    }

    /// The text of `ids`, special tokens left out (generated text; WordPiece pieces joined).
    ///
    /// # Errors
    /// [`TokenizerError::Encode`] when the tokenizer cannot decode them.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, true).map_err(TokenizerError::Encode)
    }

    /// The string of one id (for `pretune preview`).
    pub fn id_to_token(&self, id: u32) -> String {
        self.inner.id_to_token(id).unwrap_or_else(|| format!("<{id}>"))
    }

    /// The wrapped tokenizer (to save it beside an exported model).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vocab.txt");
        let words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##aff", "##able", "cat", "."];
        std::fs::write(&p, words.join("\n")).unwrap();
        (d, p)
    }

    #[test]
    fn vocab_txt_builds_bert_wordpiece_with_word_starts() {
        let (_d, p) = vocab();
        let t = TextTokenizer::load(&p, None).unwrap();
        let s = t.encode("The unaffable cat.").unwrap();
        let toks: Vec<String> = s.ids.iter().map(|&i| t.id_to_token(i)).collect();
        assert_eq!(toks, vec!["the", "un", "##aff", "##able", "cat", "."]);
        assert_eq!(s.word_start, vec![true, true, false, false, true, true]);
        assert!(t.special_mask()[t.special_ids().cls as usize]);
        assert!(!t.special_mask()[t.special_ids().unk as usize]);
        assert_eq!(t.vocab_size(), 11);
    }

    /// A `vocab.txt` follows the `tokenizer_config.json` beside it as `transformers` does (a
    /// cased folder stays cased; accents kept when it says so); `tokenizer.lowercase` given in
    /// the config wins; no file, or a broken one, keeps BERT's uncased default.
    #[test]
    fn vocab_txt_follows_the_tokenizer_config_beside_it() {
        let (d, p) = vocab();
        std::fs::write(&p, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "The", "the", "café", "cafe"].join("\n")).unwrap();
        let tokens = |t: &TextTokenizer, text: &str| t.encode(text).unwrap().ids.iter().map(|&i| t.id_to_token(i)).collect::<Vec<_>>();
        assert_eq!(tokens(&TextTokenizer::load(&p, None).unwrap(), "The café"), vec!["the", "cafe"]);
        let config = d.path().join("tokenizer_config.json");
        std::fs::write(&config, r#"{"do_lower_case": false, "tokenizer_class": "BertTokenizer"}"#).unwrap();
        assert_eq!(tokens(&TextTokenizer::load(&p, None).unwrap(), "The café"), vec!["The", "café"]);
        assert_eq!(tokens(&TextTokenizer::load(&p, Some(true)).unwrap(), "The café"), vec!["the", "cafe"]);
        std::fs::write(&config, r#"{"do_lower_case": true, "strip_accents": false}"#).unwrap();
        assert_eq!(tokens(&TextTokenizer::load(&p, None).unwrap(), "The café"), vec!["the", "café"]);
        std::fs::write(&config, "{not json").unwrap();
        assert_eq!(tokens(&TextTokenizer::load(&p, None).unwrap(), "The café"), vec!["the", "cafe"]);
    }
}
