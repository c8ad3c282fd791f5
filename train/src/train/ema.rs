//! An exponential moving average of the weights (`--ema DECAY`).
//!
//! Every float variable of the model is averaged, BatchNorm running statistics included (as
//! the recipe of the shipped model does, `scripts/oof_teachers.py --ema`). After optimizer
//! step `n` (counted from 1) the average moves towards the live weights by `1 - d`, with
//! `d = min(decay, (1 + n) / (10 + n))`: the usual warm-up, so the random start does not
//! linger in the average. Evaluation, the kept weights and the student file use the average;
//! training continues from the live weights. Both are in the checkpoint, so a resumed run
//! ends with the same average.

use anyhow::{Result, ensure};
use tch::{Tensor, nn};

/// The averaged copies of a model's float variables.
pub struct Ema {
    decay: f64,
    /// `(name, live variable, average)`, sorted by name.
    vars: Vec<(String, Tensor, Tensor)>,
}

impl std::fmt::Debug for Ema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ema")
            .field("decay", &self.decay)
            .field("variables", &self.vars.len())
            .finish()
    }
}

impl Ema {
    /// Starts the average at the current weights of `vs`. `decay` must be in `(0, 1)`.
    pub fn new(vs: &nn::VarStore, decay: f64) -> Result<Self> {
        ensure!(
            decay > 0.0 && decay < 1.0,
            "the weight average's decay must be in (0, 1), got {decay}"
        );
        let mut vars: Vec<(String, Tensor, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.is_floating_point())
            .map(|(n, t)| {
                let avg = tch::no_grad(|| t.detach().copy());
                (n, t, avg)
            })
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Ema { decay, vars })
    }

    /// The decay used after optimizer step `step` (counted from 1).
    pub fn decay_at(&self, step: u64) -> f64 {
        self.decay.min((1 + step) as f64 / (10 + step) as f64)
    }

    /// Moves the average towards the live weights after optimizer step `step` (from 1).
    pub fn update(&mut self, step: u64) {
        let w = 1.0 - self.decay_at(step);
        tch::no_grad(|| {
            for (_, live, avg) in &mut self.vars {
                let _ = avg.lerp_(&*live, w);
            }
        });
    }

    /// Exchanges the live weights and the average: call it once to evaluate or save the
    /// average, and again to go on training. Copies are exact, so two calls restore both.
    pub fn swap(&mut self) {
        tch::no_grad(|| {
            for (_, live, avg) in &mut self.vars {
                let held = live.copy();
                live.copy_(avg);
                avg.copy_(&held);
            }
        });
    }

    /// The averages by variable name (for the checkpoint).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.vars
            .iter()
            .map(|(n, _, a)| (n.clone(), a.shallow_clone()))
            .collect()
    }

    /// Restores the averages from `get(name)` (a checkpoint's tensors); every variable must
    /// be there with its shape and kind.
    pub fn load(&mut self, mut get: impl FnMut(&str) -> Result<Tensor>) -> Result<()> {
        tch::no_grad(|| {
            for (n, _, avg) in &mut self.vars {
                let t = get(n)?;
                ensure!(
                    t.size() == avg.size() && t.kind() == avg.kind(),
                    "the weight average of {n} is {:?} {:?}, the model has {:?} {:?}",
                    t.kind(),
                    t.size(),
                    avg.kind(),
                    avg.size()
                );
                avg.f_copy_(&t)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn averages_with_the_warm_up_and_swaps_exactly() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut w = vs.root().zeros("w", &[3]);
        // A buffer that is not trained (like BatchNorm's running statistics) is averaged too.
        let _running = vs.root().zeros_no_train("running", &[1]);
        let mut ema = Ema::new(&vs, 0.9).unwrap();
        let names: Vec<String> = ema.tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["running", "w"]);
        // Step 1: d = min(0.9, 2/11); step 100: d = 0.9.
        assert!((ema.decay_at(1) - 2.0 / 11.0).abs() < 1e-12);
        assert_eq!(ema.decay_at(100), 0.9);
        tch::no_grad(|| w.copy_(&Tensor::from_slice(&[1.0f32, 2.0, 3.0])));
        ema.update(1);
        let want = 1.0 - 2.0 / 11.0;
        let avg = ema.tensors()[1].1.copy();
        for (i, &x) in [1.0f64, 2.0, 3.0].iter().enumerate() {
            assert!((avg.double_value(&[i as i64]) - want * x).abs() < 1e-6);
        }
        let live = w.copy();
        ema.swap();
        assert!(w.equal(&avg));
        ema.swap();
        assert!(w.equal(&live));
        assert!(ema.tensors()[1].1.equal(&avg));
        assert!(Ema::new(&vs, 1.0).is_err());
        assert!(Ema::new(&vs, 0.0).is_err());
    }
}
