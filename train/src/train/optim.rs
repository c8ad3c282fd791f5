//! SGD with momentum and AdamW written over a VarStore's tensors, so their state (momentum
//! buffers, moments, step counts) can be saved in a checkpoint and restored exactly; tch's
//! `nn::Optimizer` keeps that state inside libtorch where it cannot be read. Updates follow
//! PyTorch's `torch.optim.SGD` and `torch.optim.AdamW` formulas.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with (heavy-ball) momentum.
    Sgd,
    /// Adam with decoupled weight decay.
    AdamW,
}

impl FromStr for OptimizerKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "adamw" => Ok(Self::AdamW),
            other => bail!("unknown optimizer {other:?} (use sgd or adamw)"),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sgd => "sgd",
            Self::AdamW => "adamw",
        })
    }
}

/// Hyper-parameters of the optimizer (the learning rate comes from the schedule each step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay: L2 added to the gradient for SGD, decoupled for AdamW. Applied only to
    /// weight matrices and kernels (tensors of rank >= 2), never to biases, norm parameters
    /// or Swin's logit scales, as is usual for these architectures.
    pub weight_decay: f64,
    /// AdamW's first-moment decay.
    pub beta1: f64,
    /// AdamW's second-moment decay.
    pub beta2: f64,
    /// AdamW's denominator epsilon.
    pub eps: f64,
}

impl OptimConfig {
    /// SGD, momentum 0.9, no weight decay.
    pub fn sgd() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// AdamW, betas (0.9, 0.999), eps 1e-8, weight decay 0.05.
    pub fn adamw() -> Self {
        Self {
            kind: OptimizerKind::AdamW,
            momentum: 0.0,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// The defaults of `kind`.
    pub fn for_kind(kind: OptimizerKind) -> Self {
        match kind {
            OptimizerKind::Sgd => Self::sgd(),
            OptimizerKind::AdamW => Self::adamw(),
        }
    }
}

#[derive(Debug)]
struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
}

/// Per-parameter state. SGD uses `m` as its momentum buffer; AdamW uses `m`, `v` and `step`.
#[derive(Debug)]
struct State {
    m: Tensor,
    v: Option<Tensor>,
    step: i64,
}

/// An optimizer over the trainable variables of one VarStore.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    params: Vec<Param>,
    state: BTreeMap<String, State>,
    steps: u64,
}

impl Optimizer {
    /// Takes every trainable variable of `vs` (sorted by name, so the update order and the
    /// saved state do not depend on hash order).
    pub fn new(vs: &nn::VarStore, cfg: OptimConfig) -> Result<Self> {
        ensure!(
            cfg.weight_decay >= 0.0,
            "weight decay {} must be >= 0",
            cfg.weight_decay
        );
        ensure!(
            (0.0..1.0).contains(&cfg.momentum),
            "momentum {} must be in [0, 1)",
            cfg.momentum
        );
        ensure!(
            (0.0..1.0).contains(&cfg.beta1) && (0.0..1.0).contains(&cfg.beta2),
            "betas ({}, {}) must be in [0, 1)",
            cfg.beta1,
            cfg.beta2
        );
        let mut params: Vec<Param> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, tensor)| {
                let decay = tensor.dim() >= 2 && !name.ends_with("logit_scale");
                Param {
                    name,
                    tensor,
                    decay,
                }
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        ensure!(!params.is_empty(), "the model has no trainable variable");
        Ok(Self {
            cfg,
            params,
            state: BTreeMap::new(),
            steps: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Number of `step` calls so far (restored by [`Self::load_state`]).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone
    /// (PyTorch skips `p.grad is None`).
    pub fn step(&mut self, lr: f64) {
        let c = self.cfg;
        tch::no_grad(|| {
            for p in &self.params {
                let g = p.tensor.grad();
                if !g.defined() {
                    continue;
                }
                let wd = if p.decay { c.weight_decay } else { 0.0 };
                let mut w = p.tensor.shallow_clone();
                match c.kind {
                    OptimizerKind::Sgd => {
                        let d = if wd > 0.0 {
                            &g + &w * wd
                        } else {
                            g.shallow_clone()
                        };
                        let upd = if c.momentum > 0.0 {
                            let st = self.state.entry(p.name.clone()).or_insert_with(|| State {
                                m: d.zeros_like(),
                                v: None,
                                step: 0,
                            });
                            // PyTorch: the first buffer is the gradient itself.
                            if st.step == 0 {
                                st.m.copy_(&d);
                            } else {
                                st.m *= c.momentum;
                                st.m += &d;
                            }
                            st.step += 1;
                            st.m.shallow_clone()
                        } else {
                            d
                        };
                        w -= upd * lr;
                    }
                    OptimizerKind::AdamW => {
                        let st = self.state.entry(p.name.clone()).or_insert_with(|| State {
                            m: g.zeros_like(),
                            v: Some(g.zeros_like()),
                            step: 0,
                        });
                        st.step += 1;
                        if wd > 0.0 {
                            w *= 1.0 - lr * wd;
                        }
                        st.m *= c.beta1;
                        st.m += &g * (1.0 - c.beta1);
                        let v = st.v.as_mut().expect("adamw state has v");
                        *v *= c.beta2;
                        *v += &g * &g * (1.0 - c.beta2);
                        let bc1 = 1.0 - c.beta1.powi(st.step as i32);
                        let bc2 = 1.0 - c.beta2.powi(st.step as i32);
                        let denom = v.sqrt() / bc2.sqrt() + c.eps;
                        w -= &st.m / denom * (lr / bc1);
                    }
                }
            }
        });
        self.steps += 1;
    }

    /// The state as named tensors (`<param>.m`, `<param>.v`, `<param>.step`), for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, st) in &self.state {
            out.push((format!("{name}.m"), st.m.shallow_clone()));
            if let Some(v) = &st.v {
                out.push((format!("{name}.v"), v.shallow_clone()));
            }
            out.push((format!("{name}.step"), Tensor::from_slice(&[st.step])));
        }
        out
    }

    /// Restores what [`Self::state_tensors`] produced (looked up through `get`) and the step
    /// count. Every saved entry must name a parameter of this optimizer with the same shape.
    pub fn load_state(
        &mut self,
        names: &[String],
        get: impl Fn(&str) -> Result<Tensor>,
        steps: u64,
    ) -> Result<()> {
        let mut state = BTreeMap::new();
        for name in names {
            let Some(param) = name.strip_suffix(".step") else {
                continue;
            };
            let p = self
                .params
                .iter()
                .find(|p| p.name == param)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "optimizer state for {param:?}, which is not a trainable variable"
                    )
                })?;
            let step = get(name)?;
            ensure!(
                step.numel() == 1 && step.kind() == Kind::Int64,
                "optimizer {name}: expected one int64"
            );
            let step = step.int64_value(&[0]);
            let m = get(&format!("{param}.m"))?;
            ensure!(
                m.size() == p.tensor.size(),
                "optimizer {param}.m: shape {:?}, parameter {:?}",
                m.size(),
                p.tensor.size()
            );
            let v = match self.cfg.kind {
                OptimizerKind::AdamW => {
                    let v = get(&format!("{param}.v"))?;
                    ensure!(
                        v.size() == p.tensor.size(),
                        "optimizer {param}.v: shape {:?}, parameter {:?}",
                        v.size(),
                        p.tensor.size()
                    );
                    Some(v.to_kind(p.tensor.kind()))
                }
                OptimizerKind::Sgd => None,
            };
            state.insert(
                param.to_owned(),
                State {
                    m: m.to_kind(p.tensor.kind()),
                    v,
                    step,
                },
            );
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

/// Linear warmup then cosine decay to `min_lr_ratio * base_lr`; `constant` keeps the base
/// rate after the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Steps of linear warmup from `base_lr / warmup_steps`.
    pub warmup_steps: u64,
    /// Total steps of the run (the cosine reaches its floor there).
    pub total_steps: u64,
    /// Floor of the cosine as a fraction of `base_lr`.
    pub min_lr_ratio: f64,
    /// No cosine decay after the warmup.
    pub constant: bool,
}

impl LrSchedule {
    /// Warmup + cosine over `total_steps`.
    pub fn cosine(base_lr: f64, warmup_steps: u64, total_steps: u64) -> Self {
        Self {
            base_lr,
            warmup_steps,
            total_steps,
            min_lr_ratio: 0.0,
            constant: false,
        }
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if self.constant {
            return self.base_lr;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        self.base_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = LrSchedule::cosine(1.0, 4, 14);
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        assert_eq!(s.lr(4), 1.0);
        assert!((s.lr(9) - 0.5).abs() < 1e-12);
        assert!(s.lr(14).abs() < 1e-12);
        assert!(s.lr(100).abs() < 1e-12);
    }

    fn one_param(v: &[f32]) -> (nn::VarStore, Tensor) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(v).view([1, v.len() as i64]));
        (vs, w)
    }

    #[test]
    fn sgd_momentum_matches_pytorch_by_hand() {
        // loss = sum(w * [1, 2]): gradient [1, 2] each step.
        let (vs, w) = one_param(&[0.0, 0.0]);
        let mut opt = Optimizer::new(&vs, OptimConfig::sgd()).unwrap();
        let x = Tensor::from_slice(&[1f32, 2.0]).view([1, 2]);
        for _ in 0..2 {
            opt.zero_grad();
            (&w * &x).sum(Kind::Float).backward();
            opt.step(0.1);
        }
        // buf1 = g, w1 = -0.1 g; buf2 = 0.9 g + g = 1.9 g, w2 = -0.1 g - 0.19 g = -0.29 g.
        let got = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
        assert!(
            (got[0] + 0.29).abs() < 1e-6 && (got[1] + 0.58).abs() < 1e-6,
            "{got:?}"
        );
    }

    #[test]
    fn adamw_first_step_moves_by_lr_and_decays() {
        let (vs, w) = one_param(&[1.0, -1.0]);
        let mut opt = Optimizer::new(&vs, OptimConfig::adamw()).unwrap();
        opt.zero_grad();
        (&w * Tensor::from_slice(&[3f32, -0.5]).view([1, 2]))
            .sum(Kind::Float)
            .backward();
        opt.step(0.01);
        // Bias-corrected first step is lr * sign(g) (up to eps); decay multiplies by 1 - lr*wd.
        let got = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
        let d = 1.0 - 0.01 * 0.05;
        assert!((got[0] - (d - 0.01)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - (-d + 0.01)).abs() < 1e-6, "{got:?}");
    }
}
