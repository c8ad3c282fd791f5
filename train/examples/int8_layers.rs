//! Where an int8 model loses accuracy: every layer's error against the float model it was
//! quantized from, on real images of one fold.
//!
//! ```sh
//! cargo run --release -p derm-train --example int8_layers -- \
//!     F32_MODEL INT8_MODEL CACHE FOLD [IMAGES]
//! ```
//!
//! Runs both files with `derm_codegen::reference` on `IMAGES` (default 16) validation images
//! of fold `FOLD` (5 folds, split seed 0), preprocessed as `derm-train evaluate` does, and
//! prints per layer the RMS difference divided by the float output's standard deviation
//! (mean over the images), and the float standard deviation.

use anyhow::{Context, Result, bail};
use derm_codegen::ir::ModelFile;
use derm_codegen::reference;
use derm_train::args::FoldArgs;
use derm_train::data::balance::BalancePlan;
use derm_train::data::loader::{Batches, LoaderOptions};

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        bail!("usage: int8_layers F32_MODEL INT8_MODEL CACHE FOLD [IMAGES]");
    }
    let f = ModelFile::read(&a[0])?;
    let q = ModelFile::read(&a[1])?;
    let fold: usize = a[3].parse().context("FOLD")?;
    let n: usize = a.get(4).map_or(Ok(16), |s| s.parse()).context("IMAGES")?;
    let fold = FoldArgs {
        cache: a[2].clone().into(),
        k: 5,
        fold,
        split_seed: 0,
    };
    let (cache, rows) = derm_train::train::cli::val_indices(&fold, Some(n), 0)?;
    let g = &f.graph;
    let map = derm_train::train::fit::InputMap::new(
        cache.mean(),
        cache.std(),
        g.preprocess.mean,
        g.preprocess.std,
    );
    let mut lo = LoaderOptions::eval(n);
    lo.train_size = Some(g.input.shape[2]);
    let plan = BalancePlan::plain(&rows);
    let mut stats: Vec<(String, &str, f64, f64)> = Vec::new();
    let mut images = 0usize;
    for b in Batches::new(&cache, &plan, lo, 0)? {
        let x = map.apply(&b?.images).contiguous();
        let flat = Vec::<f32>::try_from(x.view(-1))?;
        let per = flat.len() / x.size()[0] as usize;
        for img in flat.chunks(per) {
            let (lf, lq) = (reference::run(&f, img)?, reference::run(&q, img)?);
            for (i, (u, v)) in lf.iter().zip(&lq).enumerate() {
                let len = u.data.len() as f64;
                let mean = u.data.iter().map(|&x| f64::from(x)).sum::<f64>() / len;
                let var = u
                    .data
                    .iter()
                    .map(|&x| (f64::from(x) - mean).powi(2))
                    .sum::<f64>()
                    / len;
                let err = u
                    .data
                    .iter()
                    .zip(&v.data)
                    .map(|(&x, &y)| f64::from(x - y).powi(2))
                    .sum::<f64>()
                    / len;
                if stats.len() <= i {
                    stats.push((u.name.clone(), g.ops[i].kind(), 0.0, 0.0));
                }
                stats[i].2 += (err / var.max(1e-20)).sqrt();
                stats[i].3 += var.sqrt();
            }
            images += 1;
        }
    }
    println!("{images} images; per layer: RMS(int8 - f32) / std(f32), std(f32)");
    for (name, kind, rel, std) in stats {
        let k = images.max(1) as f64;
        println!("{kind:>16} {name:<30} {:8.4} {:10.4}", rel / k, std / k);
    }
    Ok(())
}
