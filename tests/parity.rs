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
