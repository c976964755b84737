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
