//! In-place edits of a student before it is exported: a per-class logit bias
//! (`export --logit-bias`) and the random BatchNorm statistics that parity tests need.

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::student_file::Student;

/// Adds `bias[c]` to the output bias of the student's last Linear (`classifier.0` for the
/// paper head, `classifier.3` for torchvision's), so every logit `c` moves by `bias[c]`.
pub fn add_logit_bias(student: &Student, bias: &[f32]) -> Result<()> {
    let name = match student.meta.head {
        crate::models::mobilenet_v3::Head::Paper => "classifier.0.bias",
        crate::models::mobilenet_v3::Head::Torchvision => "classifier.3.bias",
    };
    let vars = student.vs.variables();
    let b = vars
        .get(name)
        .with_context(|| format!("student has no {name}"))?;
    anyhow::ensure!(
        b.size() == [bias.len() as i64],
        "--logit-bias has {} numbers, the classifier has {:?} outputs",
        bias.len(),
        b.size()
    );
    anyhow::ensure!(
        bias.iter().all(|v| v.is_finite()),
        "--logit-bias must be finite: {bias:?}"
    );
    tch::no_grad(|| {
        let mut b = b.shallow_clone();
        let _ = b.g_add_(&Tensor::from_slice(bias));
    });
    Ok(())
}

/// Gives every BatchNorm of a student random running statistics and affine parameters (as
/// after training) and widens the classifier, from `seed`. A fresh init has mean 0, var 1,
/// gamma 1, beta 0 and near-equal logits, which would let a wrong BatchNorm fold or a
/// dropped bias pass a parity test; tests of the export path call this first.
pub fn perturb_for_parity_tests(student: &Student, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        let all = student.vs.variables();
        let mut vars: Vec<(&String, &Tensor)> = all.iter().collect();
        // HashMap order is random; a fixed order makes the draws reproducible.
        vars.sort_by(|a, b| a.0.cmp(b.0));
        for (name, v) in vars {
            let mut v = v.shallow_clone();
            let n = v.size();
            let r = |lo: f64, hi: f64| {
                Tensor::rand(&n, (Kind::Float, tch::Device::Cpu)) * (hi - lo) + lo
            };
            let is_bn = all.contains_key(
                &name
                    .rsplit_once('.')
                    .map(|(p, _)| format!("{p}.running_var"))
                    .unwrap_or_default(),
            );
            if name.ends_with(".running_var") {
                v.copy_(&r(0.5, 2.0));
            } else if name.ends_with(".running_mean") {
                v.copy_(&r(-0.2, 0.2));
            } else if is_bn && name.ends_with(".weight") {
                v.copy_(&r(0.5, 1.5));
            } else if is_bn && name.ends_with(".bias") {
                v.copy_(&r(-0.1, 0.1));
            } else if name.starts_with("classifier") && name.ends_with(".bias") {
                v.copy_(&r(-0.5, 0.5));
            } else if name.starts_with("classifier") {
                v.copy_(&(v.shallow_clone() * 20.0));
            }
        }
    });
}
