//! `--resume` semantics: a run stopped after any step and resumed from its last checkpoint
//! ends with exactly the weights (and BatchNorm statistics, and history) of an uninterrupted
//! run with the same seed.

mod train_support;

use derm_train::data::balance::BalancePlan;
use derm_train::train::checkpoint::CheckpointFile;
use derm_train::train::ema::Ema;
use derm_train::train::fit::{self, Criterion, FitData, RunControl, Teacher};
use derm_train::train::optim::OptimizerKind;
use tch::Device;
use tch::nn;
use train_support::{TinyNet, snapshot, tiny_cache, tiny_options};

/// libtorch's generator and thread count are process-wide: the tests of this file must not
/// interleave their steps.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(kind: OptimizerKind, stop_after: &[u64]) {
    run_with(kind, stop_after, None);
}

fn run_with(kind: OptimizerKind, stop_after: &[u64], ema: Option<f64>) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tiny_cache(&tmp.path().join("cache"), 36);
    let train: Vec<usize> = (0..24).collect();
    let val: Vec<usize> = (24..36).collect();
    let plan = BalancePlan::plain(&train);
    let data = FitData {
        cache: &cache,
        plan: &plan,
        val: &val,
    };
    let mut opts = tiny_options(&cache, kind, 3);
    opts.ema = ema;
    if ema.is_some() {
        // The final epoch is kept, so the kept weights are the final average.
        opts.criterion = Criterion::Last;
    }

    // Uninterrupted.
    tch::manual_seed(1);
    let vs_a = nn::VarStore::new(Device::Cpu);
    let net_a = TinyNet::new(&vs_a.root());
    let out_a = tmp.path().join("a");
    let control = RunControl::default();
    let a = fit::fit(
        &net_a,
        &vs_a,
        &data,
        Teacher::None,
        None,
        &opts,
        &out_a,
        &control,
    )
    .unwrap();
    assert!(a.state.finished && !a.stopped);
    assert_eq!(a.state.history.len(), 3);
    // With a weight average each epoch also records the live weights' scores.
    assert!(
        a.state
            .history
            .iter()
            .all(|r| r.val_live.is_some() == ema.is_some())
    );

    // Interrupted after each of `stop_after` steps, every time in a fresh process-like state:
    // new VarStore and optimizer; the first run starts from the same initialization as the
    // uninterrupted one, later ones from different weights that the checkpoint must replace.
    let out_b = tmp.path().join("b");
    for (i, &k) in stop_after.iter().enumerate() {
        tch::manual_seed(if i == 0 { 1 } else { 100 + i as i64 });
        let vs = nn::VarStore::new(Device::Cpu);
        let net = TinyNet::new(&vs.root());
        let c = RunControl {
            resume: true,
            stop_after_steps: Some(k),
            ..Default::default()
        };
        let r = fit::fit(&net, &vs, &data, Teacher::None, None, &opts, &out_b, &c).unwrap();
        assert!(r.stopped, "stop at {k}");
    }
    tch::manual_seed(999);
    let vs_b = nn::VarStore::new(Device::Cpu);
    let net_b = TinyNet::new(&vs_b.root());
    let c = RunControl {
        resume: true,
        ..Default::default()
    };
    let b = fit::fit(&net_b, &vs_b, &data, Teacher::None, None, &opts, &out_b, &c).unwrap();
    assert!(b.state.finished);

    let (sa, sb) = (snapshot(&vs_a), snapshot(&vs_b));
    assert_eq!(sa.len(), sb.len());
    for ((na, va), (nb, vb)) in sa.iter().zip(&sb) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na} differs after resume");
    }
    // The weights did move, so the equality above is not trivially true.
    let vs_init = nn::VarStore::new(Device::Cpu);
    tch::manual_seed(1);
    let _ = TinyNet::new(&vs_init.root());
    assert_ne!(snapshot(&vs_init), sa);
    // Everything but the timing is reproduced.
    let untimed = |h: &[fit::EpochRecord]| {
        h.iter()
            .map(|r| fit::EpochRecord {
                images_per_s: 0.0,
                ..r.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(untimed(&a.state.history), untimed(&b.state.history));
    assert_eq!(a.state.best, b.state.best);
    assert_eq!(
        std::fs::read(&a.best_weights).unwrap(),
        std::fs::read(&b.best_weights).unwrap()
    );
    if let Some(decay) = ema {
        // The kept weights are the average the checkpoint holds, not the live weights.
        let kept = nn::VarStore::new(Device::Cpu);
        let _ = TinyNet::new(&kept.root());
        fit::load_weights(&a.best_weights, &kept).unwrap();
        assert_ne!(snapshot(&kept), sa);
        let avg = nn::VarStore::new(Device::Cpu);
        let _ = TinyNet::new(&avg.root());
        let mut e = Ema::new(&avg, decay).unwrap();
        CheckpointFile::open(&out_a.join(fit::CHECKPOINT_FILE))
            .unwrap()
            .load_ema(&mut e)
            .unwrap();
        e.swap();
        assert_eq!(snapshot(&avg), snapshot(&kept));
    }
}

#[test]
fn sgd_resume_after_crashes_mid_epoch_and_at_epoch_end_is_bit_exact() {
    // 24 samples / batch 4 = 6 steps per epoch, checkpoints every 3 steps: stop at 4 (resumes
    // from 3, replays a step), at 6 (an epoch end before its evaluation), then at 11.
    run(OptimizerKind::Sgd, &[4, 6, 11]);
}

#[test]
fn adamw_resume_is_bit_exact() {
    run(OptimizerKind::AdamW, &[5, 13]);
}

#[test]
fn weight_average_resumes_bit_exact_and_is_what_is_kept() {
    // Stops mid-epoch (5: resumes from the checkpoint at 3) and at an epoch end (12).
    run_with(OptimizerKind::AdamW, &[5, 12], Some(0.9));
}

#[test]
fn resume_with_changed_options_is_refused_and_a_torn_checkpoint_is_an_error() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tiny_cache(&tmp.path().join("cache"), 18);
    let train: Vec<usize> = (0..12).collect();
    let val: Vec<usize> = (12..18).collect();
    let plan = BalancePlan::plain(&train);
    let data = FitData {
        cache: &cache,
        plan: &plan,
        val: &val,
    };
    let opts = tiny_options(&cache, OptimizerKind::Sgd, 2);
    let out = tmp.path().join("run");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = TinyNet::new(&vs.root());
    let c = RunControl {
        resume: true,
        stop_after_steps: Some(3),
        ..Default::default()
    };
    fit::fit(&net, &vs, &data, Teacher::None, None, &opts, &out, &c).unwrap();

    let mut other = opts.clone();
    other.lr *= 2.0;
    let c = RunControl {
        resume: true,
        ..Default::default()
    };
    let err = fit::fit(&net, &vs, &data, Teacher::None, None, &other, &out, &c).unwrap_err();
    assert!(format!("{err:#}").contains("different options"), "{err:#}");

    let ckpt = out.join(fit::CHECKPOINT_FILE);
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let err = fit::fit(&net, &vs, &data, Teacher::None, None, &opts, &out, &c).unwrap_err();
    assert!(
        format!("{err:#}").contains("checkpoint.safetensors"),
        "{err:#}"
    );
}

#[test]
fn weight_average_with_precise_bn_is_refused() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let cache = tiny_cache(&tmp.path().join("cache"), 12);
    let train: Vec<usize> = (0..8).collect();
    let val: Vec<usize> = (8..12).collect();
    let plan = BalancePlan::plain(&train);
    let data = FitData {
        cache: &cache,
        plan: &plan,
        val: &val,
    };
    let mut opts = tiny_options(&cache, OptimizerKind::AdamW, 1);
    opts.ema = Some(0.9);
    opts.bn_recalibrate = Some(fit::BnRecalibrate {
        batches: 1,
        momentum: 0.1,
    });
    let vs = nn::VarStore::new(Device::Cpu);
    let net = TinyNet::new(&vs.root());
    let out = tmp.path().join("run");
    let control = RunControl::default();
    let e = fit::fit(&net, &vs, &data, Teacher::None, None, &opts, &out, &control)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ema") && e.contains("bn_recalibrate"), "{e}");
}
