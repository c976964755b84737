//! Our BERT against Hugging Face `transformers`' `BertForMaskedLM` on the same weights and
//! batch (fixture made by `scripts/make_bert_mlm_fixture.py`).

use std::collections::HashMap;

use pretune::model::bert::{BertConfig, BertForMaskedLM};
use tch::{nn, Device, Kind, Tensor};

use crate::util::fixture;

fn max_diff_on_valid(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.to_kind(Kind::Bool).unsqueeze(-1);
    (a - b).abs().masked_fill(&m.logical_not(), 0.0).max().double_value(&[])
}

#[test]
fn bert_mlm_hidden_states_logits_and_loss_match_transformers() {
    let dir = fixture("bert_mlm");
    let cfg: BertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = BertForMaskedLM::new(&vs.root(), &cfg);
    vs.load(dir.join("weights.safetensors")).unwrap();
    let batch: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("batch.safetensors")).unwrap().into_iter().collect();
    let get = |k: &str| batch[k].shallow_clone();

    let _g = tch::no_grad_guard();
    let hidden = model.bert.forward(&get("input_ids"), &get("token_type_ids"), &get("lengths"), false);
    let mask = get("attention_mask");
    let dh = max_diff_on_valid(&hidden, &get("hidden"), &mask);
    assert!(dh < 1e-5, "hidden states differ by {dh}");
    let logits = model.predict(&hidden);
    let dl = max_diff_on_valid(&logits, &get("logits"), &mask);
    assert!(dl < 1e-5, "logits differ by {dl}");

    let labels = get("labels").view([-1]);
    let positions = labels.ne(-100).nonzero().view([-1]);
    let n = positions.size()[0] as usize;
    assert!(n > 5, "the fixture scores some tokens");
    let out = model.mlm_loss(&hidden, &positions, &labels.index_select(0, &positions), n);
    let want = get("loss").double_value(&[0]);
    let got = out.loss.double_value(&[]);
    assert!((got - want).abs() < 1e-5, "loss {got} vs transformers {want}");
}

/// Our AdamW against `torch.optim.AdamW` over six updates with a changing learning rate, one
/// decayed matrix and one undecayed bias (fixture: `scripts/make_adamw_fixture.py`).
#[test]
fn adamw_matches_torch_adamw_on_the_fixture() {
    use pretune::train::adamw::{AdamW, AdamWConfig};
    let dir = fixture("adamw");
    let f: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("batch.safetensors")).unwrap().into_iter().collect();
    let w = f["w0"].copy().set_requires_grad(true);
    let b = f["b0"].copy().set_requires_grad(true);
    // Our rule: ".bias" names take no weight decay.
    let mut opt = AdamW::new(
        vec![("layer.weight".into(), w.shallow_clone()), ("layer.bias".into(), b.shallow_clone())],
        AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.1 },
    );
    let lrs: Vec<f64> = Vec::<f64>::try_from(&f["lrs"]).unwrap();
    for (i, lr) in lrs.iter().enumerate() {
        // Gradients of (w * gw).sum() + (b * gb).sum() are exactly gw and gb.
        let loss = (&w * &f[&format!("grad_w.{i}")]).sum(Kind::Float) + (&b * &f[&format!("grad_b.{i}")]).sum(Kind::Float);
        loss.backward();
        opt.step(*lr);
        opt.zero_grad();
    }
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        let d = (a - b).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{what} differs from torch by {d}");
    };
    close(&w.detach(), &f["w"], "weight");
    close(&b.detach(), &f["b"], "bias");
    let state: HashMap<String, Tensor> = opt.state_tensors().into_iter().map(|(k, t)| (k, t.shallow_clone())).collect();
    close(&state["exp_avg.layer.weight"], &f["exp_avg.w"], "exp_avg of the weight");
    close(&state["exp_avg_sq.layer.weight"], &f["exp_avg_sq.w"], "exp_avg_sq of the weight");
    close(&state["exp_avg.layer.bias"], &f["exp_avg.b"], "exp_avg of the bias");
    close(&state["exp_avg_sq.layer.bias"], &f["exp_avg_sq.b"], "exp_avg_sq of the bias");
}

/// BERT with the NSP head against `BertForPreTraining`: total loss (MLM + NSP) and the
/// `seq_relationship` logits.
#[test]
fn bert_pretraining_with_nsp_matches_transformers() {
    use pretune::objective::{DeviceBatch, ModelSpec, PretrainModel};
    let dir = fixture("bert_mlm");
    let config: BertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = PretrainModel::new(&vs.root(), &ModelSpec::Bert { config, pair_head: true });
    vs.load(dir.join("pretraining_weights.safetensors")).unwrap();
    let batch: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("batch.safetensors")).unwrap().into_iter().collect();
    let want: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("pretraining_batch.safetensors")).unwrap().into_iter().collect();

    // The fixture batch as a HostBatch: our DeviceBatch carries the scored positions.
    let v = |k: &str| Vec::<i64>::try_from(&batch[k].view([-1])).unwrap();
    let labels = v("labels");
    let (b, t) = (3usize, 16usize);
    let scored: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != -100).collect();
    let hb = pretune::batch::HostBatch {
        seq: 0,
        cursor: Default::default(),
        batch_size: b,
        seq_len: t,
        input_ids: v("input_ids"),
        token_type_ids: v("token_type_ids"),
        lengths: v("lengths"),
        masked_positions: scored.iter().map(|&i| i as i64).collect(),
        masked_labels: scored.iter().map(|&i| labels[i]).collect(),
        labels: labels.clone(),
        position_ids: vec![],
        block_position_ids: vec![],
        prefix_len: vec![],
        pair_labels: Vec::<i64>::try_from(&want["next_sentence_label"]).unwrap(),
        n_tokens: 0,
        n_scored: scored.len(),
        n_examples: b,
        ..Default::default()
    };
    let _g = tch::no_grad_guard();
    let out = model.sums(&DeviceBatch::new(&hb, Device::Cpu), false);
    let (pair_sum, pair_logits) = out.pair.expect("a pair head");
    let d = (&pair_logits - &want["seq_relationship_logits"]).abs().max().double_value(&[]);
    assert!(d < 1e-5, "seq_relationship logits differ by {d}");
    let loss = out.lm.double_value(&[]) / scored.len() as f64 + pair_sum.double_value(&[]) / b as f64;
    let hf = want["loss"].double_value(&[0]);
    assert!((loss - hf).abs() < 1e-5, "MLM + NSP loss {loss} vs transformers {hf}");
}

/// GLM attention through the fused kernel equals a plain masked softmax, and Part A never
/// sees Part B: changing Part B tokens leaves Part A's hidden states unchanged.
#[test]
fn glm_prefix_causal_attention_matches_an_explicit_reference() {
    use pretune::masking::glm::{make_block_data, GlmIds, GlmSettings};
    use pretune::model::glm::{Glm, GlmConfig};
    use pretune::rng::{Rng, Purpose};
    let cfg = GlmConfig {
        vocab_size: 60,
        hidden_size: 32,
        num_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 128,
        max_sequence_length: 41,
        hidden_dropout: 0.0,
        attention_dropout: 0.0,
        layernorm_epsilon: 1e-5,
        init_method_std: 0.2,
        explicit_attention: false,
    };
    tch::manual_seed(3);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let fused = Glm::new(&vs.root(), &cfg);
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let explicit = Glm::new(&vs2.root(), &GlmConfig { explicit_attention: true, ..cfg.clone() });
    vs2.copy(&vs).unwrap();
    let _ = &mut vs;

    let ids = GlmIds { cls: 1, mask: 2, smask: 3, gmask: 4, sop: 5, eop: 6 };
    let s = GlmSettings { blanks: pretune::config::GlmObjectiveConfig::default(), ids };
    let x: Vec<u32> = std::iter::once(1).chain((0..30).map(|i| 10 + i % 50)).collect();
    let rows = [
        make_block_data(&x, &[(3, 6), (10, 12), (20, 25)], ids.mask, &s, &mut Rng::keyed(1, Purpose::Mask, &[])),
        make_block_data(&x, &[(15, 16)], ids.mask, &s, &mut Rng::keyed(2, Purpose::Mask, &[])),
    ];
    let t = rows.iter().map(|r| r.input_ids.len()).max().unwrap();
    let pad = |v: &Vec<i64>| { let mut v = v.clone(); v.resize(t, 0); v };
    let stack = |f: &dyn Fn(&pretune::masking::glm::GlmSample) -> Vec<i64>| {
        Tensor::from_slice(&rows.iter().flat_map(|r| pad(&f(r))).collect::<Vec<i64>>()).view([2, t as i64])
    };
    let input = stack(&|r| r.input_ids.iter().map(|&i| i as i64).collect());
    let pos = stack(&|r| r.position_ids.clone());
    let block = stack(&|r| r.block_position_ids.clone());
    let sep = Tensor::from_slice(&rows.iter().map(|r| r.sep as i64).collect::<Vec<_>>());

    let _g = tch::no_grad_guard();
    let a = fused.forward(&input, &pos, &block, &sep, false);
    let b = explicit.forward(&input, &pos, &block, &sep, false);
    let d = (&a - &b).abs().max().double_value(&[]);
    assert!(d < 1e-5, "fused and explicit attention differ by {d}");

    // Scramble every Part B token of row 0: its Part A outputs must not move.
    let sep0 = rows[0].sep as i64;
    let changed = input.copy();
    let _ = changed.get(0).narrow(0, sep0, t as i64 - sep0).fill_(7);
    let c = fused.forward(&changed, &pos, &block, &sep, false);
    let da = (a.get(0).narrow(0, 0, sep0) - c.get(0).narrow(0, 0, sep0)).abs().max().double_value(&[]);
    assert_eq!(da, 0.0, "Part A saw Part B");
    let db = (a.get(0).narrow(0, sep0, t as i64 - sep0) - c.get(0).narrow(0, sep0, t as i64 - sep0)).abs().max().double_value(&[]);
    assert!(db > 1e-3, "Part B depends on its own tokens");
}

/// RoBERTa is BERT's network with other names, positions from `padding_idx + 1`, one token
/// type and its own heads: each of `transformers`' `RobertaFor{MaskedLM, SequenceClassification,
/// TokenClassification, QuestionAnswering}` folders (random, perturbed, saved with
/// `save_pretrained`; fixture `scripts/make_roberta_fixture.py`) loads by name through the
/// `[init] hf` path with every tensor used, and the hidden states, logits and loss on a
/// right-padded batch equal `transformers`' within 1e-5.
#[test]
fn roberta_heads_match_transformers() {
    use pretune::model::heads::{BertForTask, HeadKind};
    let dir = fixture("roberta");
    let batch: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("batch.safetensors")).unwrap().into_iter().collect();
    let get = |k: &str| batch[k].shallow_clone();
    let (ids, lengths, mask) = (get("input_ids"), get("lengths"), get("attention_mask"));
    let types = ids.zeros_like();
    let valid = mask.to_kind(Kind::Bool);
    for head in ["mlm", "cls", "tag", "qa"] {
        let folder = dir.join(head);
        let text = std::fs::read_to_string(folder.join("config.json")).unwrap();
        let cfg: BertConfig = serde_json::from_str(&text).unwrap();
        assert_eq!((cfg.prefix(), cfg.position_offset()), ("roberta", 2), "{head}");
        let labels = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id2label"].as_object().map_or(2, |m| m.len()) as i64;
        let vs = nn::VarStore::new(Device::Cpu);
        let want: HashMap<String, Tensor> = Tensor::read_safetensors(folder.join("out.safetensors")).unwrap().into_iter().collect();
        let _g = tch::no_grad_guard();
        let (hidden, logits, loss) = if head == "mlm" {
            let model = BertForMaskedLM::new(&vs.root(), &cfg);
            let report = pretune::init::load_into(&vs, &folder.join("model.safetensors")).unwrap();
            assert!(report.missing.is_empty() && report.unused.is_empty(), "{head}: {report:?}");
            let hidden = model.bert.forward(&ids, &types, &lengths, false);
            let logits = model.predict(&hidden);
            let labels = get("mlm_labels").view([-1]);
            let positions = labels.ne(-100).nonzero().view([-1]);
            let n = positions.size()[0] as usize;
            let loss = model.mlm_loss(&hidden, &positions, &labels.index_select(0, &positions), n).loss;
            (hidden, logits, loss)
        } else {
            let kind = match head {
                "cls" => HeadKind::SequenceClassification,
                "tag" => HeadKind::TokenClassification,
                _ => HeadKind::QuestionAnswering,
            };
            let model = BertForTask::new(&vs.root(), &cfg, kind, labels);
            let report = pretune::init::load_into(&vs, &folder.join("model.safetensors")).unwrap();
            assert!(report.missing.is_empty() && report.unused.is_empty(), "{head}: {report:?}");
            let hidden = model.bert.forward(&ids, &types, &lengths, false);
            let logits = model.forward(&ids, &types, &lengths, false);
            let ce = |l: &Tensor, y: &Tensor| l.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, 0.0);
            let loss = match kind {
                HeadKind::SequenceClassification => ce(&logits, &get("class_labels")),
                HeadKind::TokenClassification => ce(&logits.view([-1, labels]), &get("tag_labels").view([-1])),
                HeadKind::QuestionAnswering => (ce(&logits.select(2, 0), &get("start_positions")) + ce(&logits.select(2, 1), &get("end_positions"))) / 2.0,
            };
            (hidden, logits, loss)
        };
        let dh = max_diff_on_valid(&hidden, &want["hidden"], &mask);
        assert!(dh < 1e-5, "{head}: hidden states differ by {dh}");
        let dl = if logits.dim() == 3 { max_diff_on_valid(&logits, &want["logits"], &valid) } else { (&logits - &want["logits"]).abs().max().double_value(&[]) };
        assert!(dl < 1e-5, "{head}: logits differ by {dl}");
        // `transformers`' QA loss reads the logits of padding too (whatever they hold); ours
        // never reads them: compare both sides' span loss with padding masked out.
        let (got, theirs) = if head == "qa" {
            let span_loss = |l: &Tensor| {
                let l = l.masked_fill(&valid.logical_not().unsqueeze(-1), f64::NEG_INFINITY);
                let ce = |x: Tensor, y: &Tensor| x.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, 0.0);
                ((ce(l.select(2, 0), &get("start_positions")) + ce(l.select(2, 1), &get("end_positions"))) / 2.0).double_value(&[])
            };
            (span_loss(&logits), span_loss(&want["logits"]))
        } else {
            (loss.double_value(&[]), want["loss"].double_value(&[0]))
        };
        assert!((got - theirs).abs() < 1e-5, "{head}: loss {got} vs transformers {theirs}");
    }
}

/// ELECTRA's discriminator is BERT's network with narrower embeddings projected to the width
/// (`electra.embeddings_project`) and a GELU classification head: `transformers`'
/// `ElectraFor{SequenceClassification, TokenClassification, QuestionAnswering}` folders (random,
/// perturbed, embeddings 16 wide under blocks 32 wide; fixture
/// `scripts/make_electra_fixture.py`) load by name with every tensor used, and the hidden
/// states, logits and loss on a right-padded batch with token types equal `transformers'`
/// within 1e-5.
#[test]
fn electra_heads_match_transformers() {
    use pretune::model::heads::{BertForTask, HeadKind};
    let dir = fixture("electra");
    let batch: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("batch.safetensors")).unwrap().into_iter().collect();
    let get = |k: &str| batch[k].shallow_clone();
    let (ids, types, lengths, mask) = (get("input_ids"), get("token_type_ids"), get("lengths"), get("attention_mask"));
    let valid = mask.to_kind(Kind::Bool);
    for (head, kind, labels) in [("cls", HeadKind::SequenceClassification, 3), ("tag", HeadKind::TokenClassification, 3), ("qa", HeadKind::QuestionAnswering, 2)] {
        let folder = dir.join(head);
        let cfg: BertConfig = serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap();
        assert_eq!((cfg.prefix(), cfg.embedding_width(), cfg.hidden_size), ("electra", 16, 32), "{head}");
        let vs = nn::VarStore::new(Device::Cpu);
        let model = BertForTask::new(&vs.root(), &cfg, kind, labels);
        let report = pretune::init::load_into(&vs, &folder.join("model.safetensors")).unwrap();
        assert!(report.missing.is_empty() && report.unused.is_empty(), "{head}: {report:?}");
        let want: HashMap<String, Tensor> = Tensor::read_safetensors(folder.join("out.safetensors")).unwrap().into_iter().collect();
        let _g = tch::no_grad_guard();
        let hidden = model.bert.forward(&ids, &types, &lengths, false);
        let dh = max_diff_on_valid(&hidden, &want["hidden"], &mask);
        assert!(dh < 1e-5, "{head}: hidden states differ by {dh}");
        let logits = model.forward(&ids, &types, &lengths, false);
        let dl = if logits.dim() == 3 { max_diff_on_valid(&logits, &want["logits"], &valid) } else { (&logits - &want["logits"]).abs().max().double_value(&[]) };
        assert!(dl < 1e-5, "{head}: logits differ by {dl}");
        let ce = |l: &Tensor, y: &Tensor| l.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, 0.0).double_value(&[]);
        let (got, theirs) = match kind {
            HeadKind::SequenceClassification => (ce(&logits, &get("class_labels")), want["loss"].double_value(&[0])),
            HeadKind::TokenClassification => (ce(&logits.view([-1, labels]), &get("tag_labels").view([-1])), want["loss"].double_value(&[0])),
            // As for RoBERTa: both sides' span loss with padding masked out.
            HeadKind::QuestionAnswering => {
                let span = |l: &Tensor| {
                    let l = l.masked_fill(&valid.logical_not().unsqueeze(-1), f64::NEG_INFINITY);
                    (ce(&l.select(2, 0), &get("start_positions")) + ce(&l.select(2, 1), &get("end_positions"))) / 2.0
                };
                (span(&logits), span(&want["logits"]))
            }
        };
        assert!((got - theirs).abs() < 1e-5, "{head}: loss {got} vs transformers {theirs}");
    }
}

/// ModernBERT (`src/model/modernbert.rs`) on `transformers`' `ModernBertForMaskedLM`
/// (`scripts/make_modernbert_fixture.py`: random perturbed weights, global attention at layers 0
/// and 3, a sliding window of 4 on each side at layers 1 and 2, rows of 24, 17 and 9 tokens, so
/// the window cuts the longer rows): every tensor of the folder loads by name, and the last
/// hidden states, the MLM logits and the MLM loss (through the pre-training objective's own
/// `PretrainModel::sums`, on 30 % of the tokens) equal `transformers`' within 1e-5; so do the
/// sequence (both poolings), token and span heads' logits and losses.
#[test]
fn modernbert_mlm_matches_transformers_with_its_sliding_window() {
    use pretune::model::modernbert::{ModernBertConfig, ModernBertForMaskedLM};
    let dir = fixture("modernbert").join("mlm");
    let cfg: ModernBertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(cfg.is_global(0) && !cfg.is_global(1) && !cfg.is_global(2) && cfg.is_global(3) && cfg.sliding_window() == 4, "{cfg:?}");
    assert_eq!((cfg.rope_theta(true), cfg.rope_theta(false)), (160_000.0, 10_000.0));
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ModernBertForMaskedLM::new(&vs.root(), &cfg);
    let report = pretune::init::load_into(&vs, &dir.join("model.safetensors")).unwrap();
    assert!(report.missing.is_empty() && report.unused.is_empty(), "{report:?}");
    let out: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("out.safetensors")).unwrap().into_iter().collect();
    let (ids, lengths) = (&out["input_ids"], &out["lengths"]);
    let t = ids.size()[1];
    let valid = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).lt_tensor(&lengths.unsqueeze(1));
    let hidden = tch::no_grad(|| model.model.forward(ids, lengths, false));
    let d = max_diff_on_valid(&hidden, &out["hidden"], &valid);
    assert!(d < 1e-5, "hidden states differ by {d}");
    let logits = tch::no_grad(|| model.predict(&hidden));
    let d = max_diff_on_valid(&logits, &out["logits"], &valid);
    assert!(d < 1e-5, "logits differ by {d}");
    // The MLM loss as pre-training computes it: the scored positions' sum over their count.
    {
        use pretune::objective::{DeviceBatch, ModelSpec, PretrainModel};
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ModelSpec::ModernBert { config: cfg.clone() };
        let net = PretrainModel::new(&vs.root(), &spec);
        pretune::init::load_into(&vs, &dir.join("model.safetensors")).unwrap();
        let v = |k: &str| Vec::<i64>::try_from(&out[k].view([-1])).unwrap();
        let labels = v("mlm_labels");
        let scored: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != -100).collect();
        let hb = pretune::batch::HostBatch {
            batch_size: 3,
            seq_len: t as usize,
            input_ids: v("input_ids"),
            token_type_ids: vec![0; labels.len()],
            lengths: v("lengths"),
            masked_positions: scored.iter().map(|&i| i as i64).collect(),
            masked_labels: scored.iter().map(|&i| labels[i]).collect(),
            n_scored: scored.len(),
            n_examples: 3,
            ..Default::default()
        };
        let sums = tch::no_grad(|| net.sums(&DeviceBatch::new(&hb, Device::Cpu), false));
        let got = sums.lm.double_value(&[]) / scored.len() as f64;
        let theirs = out["loss"].double_value(&[0]);
        assert!(scored.len() > 5 && (got - theirs).abs() < 1e-5, "MLM loss {got} vs transformers {theirs}");
        assert_eq!(spec.model_type(), "modernbert");
    }
    let ce = |l: &Tensor, y: &Tensor| l.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, 0.0).double_value(&[]);
    // The window matters: the same weights with global attention everywhere differ.
    let global = ModernBertConfig { layer_types: Some(vec!["full_attention".into(); 4]), ..cfg.clone() };
    let vs2 = nn::VarStore::new(Device::Cpu);
    let all_global = ModernBertForMaskedLM::new(&vs2.root(), &global);
    pretune::init::load_into(&vs2, &dir.join("model.safetensors")).unwrap();
    let d = max_diff_on_valid(&tch::no_grad(|| all_global.model.forward(ids, lengths, false)), &out["hidden"], &valid);
    assert!(d > 1e-3, "a sliding window that changes nothing is not exercised ({d})");

    // Sequence classification, pooling the first token and the mean of the real ones.
    use pretune::model::heads::HeadKind;
    use pretune::model::heads::ModernBertForTask;
    for pooling in ["cls", "mean"] {
        let dir = fixture("modernbert").join(format!("cls-{pooling}"));
        let cfg: ModernBertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg.classifier_pooling, pooling);
        let vs = nn::VarStore::new(Device::Cpu);
        let clf = ModernBertForTask::new(&vs.root(), &cfg, HeadKind::SequenceClassification, 3);
        let report = pretune::init::load_into(&vs, &dir.join("model.safetensors")).unwrap();
        assert!(report.missing.is_empty() && report.unused.is_empty(), "{pooling}: {report:?}");
        let want: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("out.safetensors")).unwrap().into_iter().collect();
        let logits = tch::no_grad(|| clf.forward(ids, lengths, false));
        let d = (&logits - &want["logits"]).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{pooling} pooling: logits differ by {d}");
        let (got, theirs) = (ce(&logits, &out["class_labels"]), want["loss"].double_value(&[0]));
        assert!((got - theirs).abs() < 1e-5, "{pooling} pooling: loss {got} vs transformers {theirs}");
    }
    // Token classification and question answering: a classifier on every token.
    for (name, kind, labels) in [("tag", HeadKind::TokenClassification, 3), ("qa", HeadKind::QuestionAnswering, 2)] {
        let dir = fixture("modernbert").join(name);
        let cfg: ModernBertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ModernBertForTask::new(&vs.root(), &cfg, kind, labels);
        let report = pretune::init::load_into(&vs, &dir.join("model.safetensors")).unwrap();
        assert!(report.missing.is_empty() && report.unused.is_empty(), "{name}: {report:?}");
        let want: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("out.safetensors")).unwrap().into_iter().collect();
        let logits = tch::no_grad(|| net.forward(ids, lengths, false));
        let d = max_diff_on_valid(&logits, &want["logits"], &valid);
        assert!(d < 1e-5, "{name}: logits differ by {d}");
        let (got, theirs) = if kind == HeadKind::QuestionAnswering {
            // As for RoBERTa: both sides' span loss with padding masked out (`transformers`
            // reads the logits of padding too; ours never do).
            let span = |l: &Tensor| {
                let l = l.masked_fill(&valid.logical_not().unsqueeze(-1), f64::NEG_INFINITY);
                (ce(&l.select(2, 0), &out["start_positions"]) + ce(&l.select(2, 1), &out["end_positions"])) / 2.0
            };
            (span(&logits), span(&want["logits"]))
        } else {
            (ce(&logits.view([-1, labels]), &out["tag_labels"].view([-1])), want["loss"].double_value(&[0]))
        };
        assert!((got - theirs).abs() < 1e-5, "{name}: loss {got} vs transformers {theirs}");
    }
}
