//! Helpers shared by the training tests: a tiny synthetic cache, a tiny real-data cache
//! ([`ham`]) and a tiny network with
//! every kind of state the loop must carry (BatchNorm statistics, dropout randomness).

#![allow(dead_code)]

pub mod ham;

use std::path::Path;

use derm_train::data::cache::{Cache, CacheWriter, SampleMeta};
use derm_train::metrics::EvalOptions;
use derm_train::train::fit::{Criterion, FitOptions};
use derm_train::train::loss::KdConfig;
use derm_train::train::optim::{OptimConfig, OptimizerKind};
use tch::nn::{self, ModuleT};

/// `n` 16x16 images whose mean colour depends on the class (so a tiny net can learn them),
/// 6 classes, 2 groups, one lesion per image.
pub fn tiny_cache(dir: &Path, n: usize) -> Cache {
    let s = 16;
    let mut w = CacheWriter::create(dir, s).unwrap();
    let mut x = 12345u64;
    for i in 0..n {
        let label = i % 6;
        let mut px = vec![0u8; s * s * 3];
        for (k, p) in px.iter_mut().enumerate() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (x >> 58) as u8; // 0..63
            let base = [40u8, 80, 120, 160, 200, 20][(label + k % 3) % 6];
            *p = base.saturating_add(noise);
        }
        let meta = SampleMeta {
            id: format!("img{i:03}"),
            source: format!("img{i:03}.png"),
            label,
            group: (i / 6) % 2,
            lesion: format!("L{i:03}"),
        };
        w.push(meta, &px).unwrap();
    }
    w.finish(
        vec!["g0".into(), "g1".into()],
        Vec::new(),
        "synthetic".into(),
    )
    .unwrap()
}

/// A small conv net: conv - BN - ReLU - pool - dropout - linear.
#[derive(Debug)]
pub struct TinyNet {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    fc: nn::Linear,
}

impl TinyNet {
    pub fn new(p: &nn::Path<'_>) -> Self {
        let cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Self {
            conv: nn::conv2d(p / "conv", 3, 8, 3, cfg),
            bn: nn::batch_norm2d(p / "bn", 8, Default::default()),
            fc: nn::linear(p / "fc", 8, 6, Default::default()),
        }
    }
}

impl ModuleT for TinyNet {
    fn forward_t(&self, xs: &tch::Tensor, train: bool) -> tch::Tensor {
        xs.apply(&self.conv)
            .apply_t(&self.bn, train)
            .relu()
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
            .dropout(0.3, train)
            .apply(&self.fc)
    }
}

/// Options for a few quick epochs on the tiny cache.
pub fn tiny_options(cache: &Cache, kind: OptimizerKind, epochs: u64) -> FitOptions {
    FitOptions {
        epochs,
        batch_size: 4,
        eval_batch_size: 8,
        seed: 7,
        train_size: None,
        flip: true,
        augment: Default::default(),
        lr: if kind == OptimizerKind::Sgd {
            0.05
        } else {
            0.01
        },
        warmup_steps: Some(2),
        constant_lr: false,
        optim: OptimConfig::for_kind(kind),
        checkpoint_every: 3,
        criterion: Criterion::Balanced,
        kd: KdConfig::default(),
        class_weights: Some(vec![1.0, 2.0, 1.0, 0.5, 1.0, 3.0]),
        eval: EvalOptions {
            class_names: cache.class_names().to_vec(),
            group_names: cache.group_names().to_vec(),
            ..Default::default()
        },
        bn_recalibrate: None,
        label_smoothing: 0.0,
        ema: None,
    }
}

/// Every variable of `vs`, sorted by name, as raw f64 values (for exact comparison).
pub fn snapshot(vs: &nn::VarStore) -> Vec<(String, Vec<f64>)> {
    let mut v: Vec<(String, Vec<f64>)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
