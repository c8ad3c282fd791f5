//! The distillation loss and the class-weighted cross-entropy against hand-computed values.

use derm_train::train::loss::{KdConfig, cross_entropy, distillation_loss, kl_batchmean};
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
const CE: f64 = 0.2651263439326872;
const KL: f64 = 0.07319887594103044;
const KD: f64 = 0.9899708808317272;
const WCE: f64 = 0.2252778558976356;
const WKD: f64 = 0.9820011832247169;

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
            temperature: 4.0
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
            temperature: 4.0
        }
        .validate()
        .is_err()
    );
    assert!(
        KdConfig {
            alpha: 0.5,
            temperature: 0.0
        }
        .validate()
        .is_err()
    );
}
