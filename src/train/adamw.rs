//! AdamW written in the project, with its state as named tensors.
//!
//! tch's optimizer wraps the C++ one and cannot save its moments, and exact resume needs them,
//! so the update is ours. It follows `torch.optim.AdamW` (single-tensor path): decoupled weight
//! decay applied to the parameter first, `exp_avg.lerp_(grad, 1 - beta1)`, bias corrections,
//! and `eps` added *after* dividing `sqrt(exp_avg_sq)` by `sqrt(bias_correction2)`.
//!
//! The update runs as libtorch's fused kernel (`torch.optim.AdamW(fused=True)`, through the
//! shim): one pass over each parameter, its gradient and both moments, where the tensor-by-tensor
//! form makes eight passes and four temporaries. Same arithmetic; the tensor-by-tensor form
//! stays as the reference the tests hold the kernel to.

use tch::{Kind, Tensor};

/// One parameter and its moments.
struct Slot {
    name: String,
    param: Tensor,
    decay: bool,
    /// Multiplies the learning rate (layer-wise decay); 1 for a flat rate.
    lr_scale: f64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay for parameters that take it.
    pub weight_decay: f64,
}

/// AdamW with decoupled weight decay and fp32 moments (also under bf16 autocast), one slot
/// per trainable parameter.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Updates taken so far (the bias-correction exponent).
    step: u64,
    /// libtorch's fused kernel (else the tensor-by-tensor reference).
    fused: bool,
}

/// Hugging Face's rule: no weight decay on biases and LayerNorm weights.
pub fn takes_weight_decay(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

impl AdamW {
    /// An optimizer over `params` (name, variable), in the given order.
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamWConfig) -> Self {
        Self::with_lr_scales(params.into_iter().map(|(n, t)| (n, t, 1.0)).collect(), cfg)
    }

    /// An optimizer whose parameters each scale the learning rate (layer-wise decay).
    pub fn with_lr_scales(params: Vec<(String, Tensor, f64)>, cfg: AdamWConfig) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, param, lr_scale)| {
                let exp_avg = param.zeros_like().detach();
                let exp_avg_sq = param.zeros_like().detach();
                Slot { decay: takes_weight_decay(&name), name, param, lr_scale, exp_avg, exp_avg_sq }
            })
            .collect();
        AdamW { cfg, slots, step: 0, fused: true }
    }

    /// Tensor-by-tensor updates (`false`) instead of the fused kernel: the reference.
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.param.zero_grad();
        }
    }

    /// Clips the global L2 norm of the gradients to `max_norm` (0: no clipping) and returns the
    /// norm before clipping, as a device scalar: reading it is a sync point the caller chooses.
    /// Like `torch.nn.utils.clip_grad_norm_`, it multiplies by a clamped coefficient instead of
    /// branching, so it never syncs.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = self.slots.iter().map(|s| s.param.grad()).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return Tensor::from(0f32);
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_kind(Kind::Float)).collect();
        let total = Tensor::stack(&norms, 0).norm();
        if max_norm > 0.0 {
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            for mut g in grads {
                let _ = g.g_mul_(&coef.to_kind(g.kind()));
            }
        }
        total
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        if self.fused && self.fused_step(lr) {
            return;
        }
        self.reference_step(lr);
    }

    /// The fused kernel, one call per (learning-rate scale, weight decay) group of parameters
    /// with gradients. `false` when the kernel refused (nothing was changed: it checks its
    /// inputs before writing), so the caller falls back to the reference.
    fn fused_step(&mut self, lr: f64) -> bool {
        let AdamWConfig { beta1, beta2, eps, weight_decay } = self.cfg;
        let mut groups: Vec<((u64, bool), Vec<usize>)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if !s.param.grad().defined() {
                continue;
            }
            let key = (s.lr_scale.to_bits(), s.decay && weight_decay != 0.0);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        for ((scale, decay), idx) in groups {
            let grads: Vec<Tensor> = idx.iter().map(|&i| self.slots[i].param.grad()).collect();
            let ptrs = |f: &dyn Fn(&Slot) -> &Tensor| -> Vec<*mut torch_sys::C_tensor> {
                // The kernel updates the tensors in place through their handles, as tch's
                // in-place ops do through `&Tensor`.
                idx.iter().map(|&i| f(&self.slots[i]).as_ptr().cast_mut()).collect()
            };
            let (p, m, v) = (ptrs(&|s| &s.param), ptrs(&|s| &s.exp_avg), ptrs(&|s| &s.exp_avg_sq));
            let g: Vec<*mut torch_sys::C_tensor> = grads.iter().map(|t| t.as_ptr().cast_mut()).collect();
            let lr = lr * f64::from_bits(scale);
            let wd = if decay { weight_decay } else { 0.0 };
            // SAFETY: every pointer is a live tensor owned by `self.slots` or `grads` for the
            // duration of the call; the shim only reads the handles.
            let rc = unsafe {
                crate::ffi::pt_fused_adamw(p.as_ptr(), g.as_ptr(), m.as_ptr(), v.as_ptr(), idx.len() as i32, self.step as f64, lr, beta1, beta2, wd, eps)
            };
            if rc != 0 {
                tracing::warn!(error = %crate::ffi::last_error(), "fused AdamW unavailable: tensor-by-tensor updates");
                self.fused = false;
                return false;
            }
        }
        true
    }

    fn reference_step(&mut self, lr: f64) {
        let AdamWConfig { beta1, beta2, eps, weight_decay } = self.cfg;
        let bias_correction1 = 1.0 - beta1.powi(self.step as i32);
        let bias_correction2 = 1.0 - beta2.powi(self.step as i32);
        let bc2_sqrt = bias_correction2.sqrt();
        for s in &mut self.slots {
            let grad = s.param.grad();
            if !grad.defined() {
                continue;
            }
            let lr = lr * s.lr_scale;
            let step_size = lr / bias_correction1;
            if s.decay && weight_decay != 0.0 {
                let _ = s.param.g_mul_scalar_(1.0 - lr * weight_decay);
            }
            let _ = s.exp_avg.lerp_(&grad, 1.0 - beta1);
            let _ = s.exp_avg_sq.g_mul_scalar_(beta2);
            let _ = s.exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
            let denom = (s.exp_avg_sq.sqrt() / bc2_sqrt) + eps;
            let _ = s.param.g_add_(&((&s.exp_avg / &denom) * (-step_size)));
        }
    }

    /// Restores moments (named as [`AdamW::state_tensors`] names them) and the update count.
    ///
    /// # Errors
    /// [`StateError`] naming the first missing or mis-shaped tensor.
    pub fn load_state(&mut self, named: &std::collections::HashMap<String, Tensor>, step: u64) -> Result<(), StateError> {
        let _guard = tch::no_grad_guard();
        for s in &mut self.slots {
            for (prefix, dst) in [("exp_avg", &mut s.exp_avg), ("exp_avg_sq", &mut s.exp_avg_sq)] {
                let name = format!("{prefix}.{}", s.name);
                let src = named.get(&name).ok_or_else(|| StateError::Missing(name.clone()))?;
                if src.size() != dst.size() {
                    return Err(StateError::Shape { name, got: src.size(), want: dst.size() });
                }
                dst.copy_(src);
            }
        }
        self.step = step;
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`), shallow
    /// references: copy them before the next step if they must outlive it.
    pub fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut out = Vec::with_capacity(self.slots.len() * 2);
        for s in &self.slots {
            out.push((format!("exp_avg.{}", s.name), &s.exp_avg));
            out.push((format!("exp_avg_sq.{}", s.name), &s.exp_avg_sq));
        }
        out
    }
}

/// Saved optimizer state that does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A moment is missing.
    #[error("optimizer state has no `{0}`")]
    Missing(String),
    /// A moment's shape differs from its parameter's.
    #[error("optimizer state `{name}` has shape {got:?}, the model needs {want:?}")]
    Shape {
        /// The moment.
        name: String,
        /// The saved shape.
        got: Vec<i64>,
        /// The parameter's.
        want: Vec<i64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_decay_on_biases_and_layer_norms() {
        assert!(takes_weight_decay("bert.encoder.layer.0.attention.self.query.weight"));
        assert!(takes_weight_decay("bert.embeddings.word_embeddings.weight"));
        assert!(!takes_weight_decay("bert.encoder.layer.0.attention.self.query.bias"));
        assert!(!takes_weight_decay("bert.embeddings.LayerNorm.weight"));
        assert!(!takes_weight_decay("cls.predictions.bias"));
    }

    /// Reference from torch 2.x:
    /// ```python
    /// p = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    /// opt = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    /// for g in ([0.5, -1.0, 2.0], [0.1, 0.2, -0.3]):
    ///     p.grad = torch.tensor(g); opt.step()
    /// print(p.tolist())  # [0.8177969455718994, -1.8449994325637817, 2.8388831615448]
    /// ```
    #[test]
    fn matches_torch_adamw_on_two_steps() {
        let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("w".into(), p.shallow_clone())], AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 });
        for g in [[0.5f32, -1.0, 2.0], [0.1, 0.2, -0.3]] {
            let mut grad = p.grad();
            if !grad.defined() {
                (&p * Tensor::from_slice(&g)).sum(None).backward();
            } else {
                tch::no_grad(|| {
                    grad.copy_(&Tensor::from_slice(&g));
                });
            }
            opt.step(0.1);
        }
        let got: Vec<f32> = Vec::<f32>::try_from(&p.detach()).unwrap();
        let want = [0.817_796_95f32, -1.844_999_4, 2.838_883_2];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    /// The fused kernel against the tensor-by-tensor reference: layer-wise scales, parameters
    /// with and without decay, one without a gradient, five updates.
    #[test]
    fn the_fused_kernel_equals_the_reference() {
        tch::manual_seed(7);
        let shapes: [&[i64]; 4] = [&[16, 8], &[8], &[3, 5, 7], &[4]];
        let names = ["layer.0.weight", "layer.0.bias", "layer.1.weight", "frozen.weight"];
        let make = || -> Vec<(String, Tensor, f64)> {
            tch::manual_seed(7);
            names.iter().zip(shapes).enumerate().map(|(i, (n, s))| (n.to_string(), Tensor::randn(s, (Kind::Float, tch::Device::Cpu)).set_requires_grad(true), 1.0 / (i + 1) as f64)).collect()
        };
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.05 };
        let (a, b) = (make(), make());
        let mut fused = AdamW::with_lr_scales(a.iter().map(|(n, t, s)| (n.clone(), t.shallow_clone(), *s)).collect(), cfg);
        let mut reference = AdamW::with_lr_scales(b.iter().map(|(n, t, s)| (n.clone(), t.shallow_clone(), *s)).collect(), cfg);
        reference.set_fused(false);
        for step in 0..5 {
            for (opt, params) in [(&mut fused, &a), (&mut reference, &b)] {
                opt.zero_grad();
                tch::manual_seed(100 + step);
                // Every parameter but the last gets a gradient.
                let loss = params[..3].iter().map(|(_, t, _)| (t * Tensor::randn(t.size(), (Kind::Float, tch::Device::Cpu))).sum(Kind::Float)).fold(Tensor::from(0f32), |x, y| x + y);
                loss.backward();
                opt.step(1e-2);
            }
        }
        assert!(fused.fused, "the kernel ran");
        for ((n, x, _), (_, y, _)) in a.iter().zip(&b) {
            let d = (x - y).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{n}: {d}");
        }
        for ((n, x), (_, y)) in fused.state_tensors().into_iter().zip(reference.state_tensors()) {
            let d = (x - y).abs().max().double_value(&[]);
            assert!(d < 1e-7, "{n}: {d}");
        }
        assert_eq!(Vec::<f32>::try_from(&a[3].1.detach().flatten(0, -1)).unwrap(), Vec::<f32>::try_from(&b[3].1.detach().flatten(0, -1)).unwrap(), "no gradient, no update");
    }
}
