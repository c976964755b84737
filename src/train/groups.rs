//! Parameter groups, pure: which parameters are frozen and what learning-rate scale each gets
//! (layer-wise decay), from their Hugging Face names. Used in both phases.

/// Freezing and layer-wise learning-rate decay, from `[train]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamGroups {
    /// Keep the embeddings fixed.
    pub freeze_embeddings: bool,
    /// Keep the first K encoder layers fixed.
    pub freeze_layers: i64,
    /// Learning-rate scale per layer below the top (1: off).
    pub layerwise_lr_decay: f64,
}

impl Default for ParamGroups {
    fn default() -> Self {
        ParamGroups { freeze_embeddings: false, freeze_layers: 0, layerwise_lr_decay: 1.0 }
    }
}

impl ParamGroups {
    /// Whether `name` is frozen in a model of `layers` encoder layers.
    pub fn frozen(&self, name: &str, layers: i64) -> bool {
        frozen(name, self.freeze_embeddings, self.freeze_layers, layers)
    }

    /// Learning-rate scale of `name`.
    pub fn lr_scale(&self, name: &str, layers: i64) -> f64 {
        lr_scale(name, layers, self.layerwise_lr_decay)
    }
}

/// A BERT-family parameter's name below its encoder's prefix (`bert.`, `roberta.`, `electra.`).
fn in_encoder(name: &str) -> Option<&str> {
    name.strip_prefix("bert.").or_else(|| name.strip_prefix("roberta.")).or_else(|| name.strip_prefix("electra."))
}

/// Depth of a BERT-family parameter: 0 for embeddings, `l + 1` for encoder layer `l`,
/// `layers + 1` for everything above the encoder (pooler, heads).
pub fn depth(name: &str, layers: i64) -> i64 {
    let inner = in_encoder(name).unwrap_or("");
    // `embeddings.*`, and ELECTRA's `embeddings_project.*` with them.
    if inner.starts_with("embeddings") {
        return 0;
    }
    if let Some(rest) = inner.strip_prefix("encoder.layer.") {
        if let Some(l) = rest.split('.').next().and_then(|s| s.parse::<i64>().ok()) {
            return l + 1;
        }
    }
    layers + 1
}

/// Layer-wise decay: the learning-rate scale `decay^(layers + 1 - depth)`.
pub fn lr_scale(name: &str, layers: i64, decay: f64) -> f64 {
    decay.powi((layers + 1 - depth(name, layers)) as i32)
}

/// Whether a parameter is frozen: the embeddings (if asked) and the first `layers` layers.
pub fn frozen(name: &str, freeze_embeddings: bool, freeze_layers: i64, layers: i64) -> bool {
    let d = depth(name, layers);
    (freeze_embeddings && d == 0) || (d >= 1 && d <= freeze_layers && d <= layers)
}

/// Encoder layers of a model, from its variable names (`bert.encoder.layer.N.`).
pub fn count_layers<'a>(names: impl Iterator<Item = &'a str>) -> i64 {
    names.filter_map(|n| in_encoder(n)?.strip_prefix("encoder.layer.")?.split('.').next()?.parse::<i64>().ok()).max().map_or(0, |l| l + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_wise_decay_and_freezing_pick_the_intended_groups() {
        let l = 4;
        assert_eq!(lr_scale("classifier.weight", l, 0.5), 1.0);
        assert_eq!(lr_scale("bert.pooler.dense.weight", l, 0.5), 1.0);
        assert_eq!(lr_scale("bert.encoder.layer.3.output.dense.weight", l, 0.5), 0.5);
        assert_eq!(lr_scale("bert.encoder.layer.0.attention.self.query.weight", l, 0.5), 0.0625);
        assert_eq!(lr_scale("bert.embeddings.word_embeddings.weight", l, 0.5), 0.03125);
        assert_eq!(lr_scale("roberta.embeddings.word_embeddings.weight", l, 0.5), 0.03125);
        assert_eq!(lr_scale("roberta.encoder.layer.3.output.dense.weight", l, 0.5), 0.5);
        assert_eq!(count_layers(["roberta.encoder.layer.5.output.dense.bias", "classifier.out_proj.weight"].into_iter()), 6);
        assert!(frozen("bert.embeddings.LayerNorm.weight", true, 0, l));
        assert!(!frozen("bert.embeddings.LayerNorm.weight", false, 2, l));
        assert!(frozen("bert.encoder.layer.1.output.dense.bias", false, 2, l));
        assert!(!frozen("bert.encoder.layer.2.output.dense.bias", false, 2, l));
        assert!(!frozen("classifier.weight", true, 99, l));
    }
}
