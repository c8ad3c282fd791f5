//! The distillation loss and the class-weighted cross-entropy against hand-computed values.

use derm_train::train::loss::{
    KdConfig, cross_entropy, distillation_loss, kl_batchmean, kl_class_weighted, teacher_shift,
};
use tch::{Kind, Tensor};

fn inputs() -> (Tensor, Tensor, Tensor) {
    let s = Tensor::from_slice(&[1.0f32, 2.0, 0.5, 0.0, -1.0, 3.0]).view([2, 3]);
    let t = Tensor::from_slice(&[2.0f32, 0.0, 1.0, 1.0, 1.0, 1.0]).view([2, 3]);
    let y = Tensor::from_slice(&[1i64, 2]);
    (s, t, y)
}

// Values from plain Python (math module), mirroring PyTorch's definitions:
//   lsm = log_softmax
//   ce  = mean_i -lsm(s_i)[y_i]
//   kl  = sum_i sum_c softmax(t_i/T)_c * (lsm(t_i/T)_c - lsm(s_i/T)_c) / B   (batchmean)
//   kd  = (1 - a) * ce + a * T^2 * kl,  a = 0.8, T = 4
//   wce = sum_i w[y_i] * -lsm(s_i)[y_i] / sum_i w[y_i],  w = [1, 2, 3]
//   wkl = sum_i w[y_i] * kl_i / sum_i w[y_i]   (kl_i: sample i's KL, before the batch mean)
//   wskd = (1 - a) * wce + a * T^2 * wkl       (`soft_class_weights`)
const CE: f64 = 0.2651263439326872;
const KL: f64 = 0.07319887594103044;
const KD: f64 = 0.9899708808317272;
const WCE: f64 = 0.2252778558976356;
const WKD: f64 = 0.9820011832247169;
const WKL: f64 = 0.07748316069158827;
const WSKD: f64 = 1.036840028031857;

fn close(a: &Tensor, b: f64) {
    let a = a.double_value(&[]);
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
}

#[test]
fn kd_loss_matches_hand_computed_values() {
    let (s, t, y) = inputs();
    close(&cross_entropy(&s, &y, None), CE);
    close(&kl_batchmean(&s, &t, 4.0), KL);
    assert_eq!(
        KdConfig::default(),
        KdConfig {
            alpha: 0.8,
            temperature: 4.0,
            soft_class_weights: false,
            teacher_adjust: 0.0,
        }
    );
    close(
        &distillation_loss(&s, &t, &y, None, KdConfig::default()),
        KD,
    );
    let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    close(&cross_entropy(&s, &y, Some(&w)), WCE);
    close(
        &distillation_loss(&s, &t, &y, Some(&w), KdConfig::default()),
        WKD,
    );
}

#[test]
fn class_weighted_soft_term_matches_hand_computed_values() {
    let (s, t, y) = inputs();
    let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    close(&kl_class_weighted(&s, &t, &y, &w, 4.0), WKL);
    let cfg = KdConfig {
        soft_class_weights: true,
        ..KdConfig::default()
    };
    close(&distillation_loss(&s, &t, &y, Some(&w), cfg), WSKD);
    // Equal weights are the batch mean; without weights the flag changes nothing.
    let ones = Tensor::from_slice(&[2.0f32, 2.0, 2.0]);
    close(&kl_class_weighted(&s, &t, &y, &ones, 4.0), KL);
    close(&distillation_loss(&s, &t, &y, None, cfg), KD);
}

#[test]
fn kd_loss_limits_and_gradients() {
    let (s, t, y) = inputs();
    // alpha 0 is plain cross-entropy; a student equal to its teacher has zero KL.
    close(
        &distillation_loss(
            &s,
            &t,
            &y,
            None,
            KdConfig {
                alpha: 0.0,
                temperature: 4.0,
                ..KdConfig::default()
            },
        ),
        CE,
    );
    close(&kl_batchmean(&t, &t, 4.0), 0.0);
    // The gradient reaches the student only.
    let s = s.set_requires_grad(true);
    let t = t.set_requires_grad(true);
    distillation_loss(&s, &t, &y, None, KdConfig::default()).backward();
    assert!(s.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(!t.grad().defined());
    assert!(
        KdConfig {
            alpha: 1.5,
            ..KdConfig::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        KdConfig {
            alpha: 0.5,
            temperature: 0.0,
            ..KdConfig::default()
        }
        .validate()
        .is_err()
    );
}

#[test]
fn teacher_adjustment_divides_by_the_prior() {
    // Training slots 10 / 30 / 60: -ln(prior) = [ln 10, ln(10/3), ln(10/6)].
    let counts = [10usize, 30, 60];
    let shift = teacher_shift(&counts, 1.0);
    let want = [10f64.ln(), (10.0f64 / 3.0).ln(), (10.0f64 / 6.0).ln()];
    for (c, w) in want.iter().enumerate() {
        close(&shift.get(c as i64), *w);
    }
    // A teacher that knows only the prior (logits ln prior) becomes uniform at tau 1, and
    // half-way (probabilities proportional to sqrt(prior)) at tau 0.5.
    let prior = Tensor::from_slice(&[0.1f32, 0.3, 0.6]);
    let t = prior.log().view([1, 3]);
    let uniform = (&t + &shift).softmax(-1, Kind::Float);
    for c in 0..3 {
        close(&uniform.get(0).get(c), 1.0 / 3.0);
    }
    let half = (&t + teacher_shift(&counts, 0.5)).softmax(-1, Kind::Float);
    let sqrt_sum = 0.1f64.sqrt() + 0.3f64.sqrt() + 0.6f64.sqrt();
    close(&half.get(0).get(2), 0.6f64.sqrt() / sqrt_sum);
    // An empty class counts as one slot: finite.
    let empty = teacher_shift(&[0, 5, 5], 1.0);
    assert!(empty.isfinite().all().int64_value(&[]) == 1);
    close(&empty.get(0), 11f64.ln());
    // Negative or non-finite tau is refused by name.
    for bad in [-0.5, f64::NAN, f64::INFINITY] {
        let err = KdConfig {
            teacher_adjust: bad,
            ..KdConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("--teacher-adjust"), "{err}");
    }
}
