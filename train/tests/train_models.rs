//! Each model (the Swin V2-T teacher, MobileNetV3 Small and Large students) trains a few steps
//! on real HAM10000 images with the project's optimizer, loss and loader, and its loss falls.

mod train_support;

use derm_train::data::balance::BalancePlan;
use derm_train::data::loader::{Batches, LoaderOptions};
use derm_train::models::mobilenet_v3::{Arch, Head, MobileNetV3, MobileNetV3Config};
use derm_train::models::swin_v2::{SwinV2, SwinV2Config};
use derm_train::train::loss::{KdConfig, cross_entropy, distillation_loss};
use derm_train::train::optim::{OptimConfig, Optimizer};
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};
use train_support::ham::ham_cache;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Loss of `net` on one fixed batch of `batch` real images, before and after `steps` AdamW
/// steps on it. Measured in training mode (BatchNorm uses the batch's statistics) with a fixed
/// seed, so stochastic depth and dropout draw the same masks both times.
fn loss_before_after(
    build: &dyn Fn(&nn::Path<'_>) -> Box<dyn ModuleT>,
    batch: usize,
    lr: f64,
    steps: usize,
    teacher: Option<&Tensor>,
) -> (f64, f64) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let cache = ham_cache(tmp.path(), 4, 32);
    let all: Vec<usize> = (0..cache.len()).collect();
    let plan = BalancePlan::plain(&all);
    let mut opts = LoaderOptions::train(batch, 3);
    opts.flip = false;
    let batch = Batches::new(&cache, &plan, opts, 0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build(&vs.root());
    let mut opt = Optimizer::new(&vs, OptimConfig::adamw()).unwrap();
    let loss = |net: &dyn ModuleT| {
        let y = net.forward_t(&batch.images, true);
        match teacher {
            None => cross_entropy(&y, &batch.labels, None),
            Some(t) => distillation_loss(&y, t, &batch.labels, None, KdConfig::default()),
        }
    };
    let measure = |net: &dyn ModuleT| {
        tch::manual_seed(1);
        tch::no_grad(|| loss(net).double_value(&[]))
    };
    let before = measure(net.as_ref());
    for s in 0..steps {
        tch::manual_seed(100 + s as i64);
        let l = loss(net.as_ref());
        opt.zero_grad();
        l.backward();
        opt.step(lr);
    }
    (before, measure(net.as_ref()))
}

fn assert_falls(name: &str, (before, after): (f64, f64)) {
    assert!(
        before.is_finite() && after.is_finite(),
        "{name}: {before} -> {after}"
    );
    assert!(
        after < 0.7 * before,
        "{name}: loss {before:.4} -> {after:.4} did not fall by 30%"
    );
}

#[test]
fn swin_v2_t_loss_falls_on_real_images() {
    let r = loss_before_after(
        &|p| Box::new(SwinV2::new(p, SwinV2Config::swin_v2_t(6)).unwrap()),
        // At 32x32 the last three stages run on zero-padded 8x8 windows (torchvision's rule),
        // so the teacher is the slow one even here: keep its batch small.
        8,
        3e-4,
        6,
        None,
    );
    assert_falls("swin_v2_t", r);
}

#[test]
fn mobilenet_v3_small_and_large_losses_fall_on_real_images() {
    for (arch, head) in [(Arch::Small, Head::Paper), (Arch::Large, Head::Torchvision)] {
        let r = loss_before_after(
            &move |p| Box::new(MobileNetV3::new(p, MobileNetV3Config::new(arch, head, 6)).unwrap()),
            24,
            3e-3,
            8,
            None,
        );
        assert_falls(&format!("mobilenet_v3 {arch} {head}"), r);
    }
}

#[test]
fn distillation_loss_falls_for_the_student() {
    // A confident "teacher" that knows the labels: distillation pulls the student toward it.
    let tmp = tempfile::tempdir().unwrap();
    let cache = ham_cache(tmp.path(), 4, 32);
    let all: Vec<usize> = (0..cache.len()).collect();
    let mut opts = LoaderOptions::train(24, 3);
    opts.flip = false;
    let batch = Batches::new(&cache, &BalancePlan::plain(&all), opts, 0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let teacher = batch.labels.one_hot(6).to_kind(tch::Kind::Float) * 8.0;
    let r = loss_before_after(
        &|p| {
            Box::new(
                MobileNetV3::new(p, MobileNetV3Config::new(Arch::Small, Head::Paper, 6)).unwrap(),
            )
        },
        24,
        3e-3,
        8,
        Some(&teacher),
    );
    assert_falls("distilled mobilenet_v3_small", r);
}
