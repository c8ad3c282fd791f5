//! `derm-train teacher-logits`: runs a trained teacher once over every image of a cache and
//! stores its logits, so `distill --teacher-logits` costs about what training the student
//! alone costs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use clap::Args;
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::args::FoldArgs;
use crate::data::balance::BalancePlan;
use crate::data::cache::Cache;
use crate::data::loader::{Batches, LoaderOptions};
use crate::train::cli::train_indices;
use crate::train::progress::EpochProgress;
use crate::train::teacher_file::{self, LogitsMeta};

/// Arguments of `derm-train teacher-logits`.
#[derive(Debug, Clone, Args)]
pub struct TeacherLogitsArgs {
    /// Teacher file (`OUT/teacher.safetensors` of `derm-train teacher`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Cache folder.
    #[arg(long)]
    pub cache: PathBuf,
    /// Output file (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Image side (default: the side the teacher was trained at).
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// libtorch intra-op threads.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Only the training images of fold `--fold` of `--k` (after `--max-train` with
    /// `--seed`), i.e. exactly the rows a `distill` run with the same flags reads.
    #[arg(long)]
    pub fold: Option<usize>,
    /// Folds (with `--fold`).
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Seed of the fold assignment (with `--fold`).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// As `distill --max-train` (with `--fold`).
    #[arg(long)]
    pub max_train: Option<usize>,
    /// As `distill --seed` (with `--fold`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `derm-train teacher-logits`.
pub fn run(a: TeacherLogitsArgs) -> Result<()> {
    if let Some(t) = a.threads {
        ensure!(t > 0, "--threads {t} must be > 0");
        tch::set_num_threads(t);
    }
    ensure!(a.batch_size > 0, "--batch-size must be > 0");
    let (meta, _vs, net) = teacher_file::load(&a.teacher)?;
    let cache = Cache::open(&a.cache)?;
    ensure!(
        meta.mean == cache.mean() && meta.std == cache.std(),
        "{}: the teacher was trained with mean {:?} / std {:?}, {} has {:?} / {:?}",
        a.teacher.display(),
        meta.mean,
        meta.std,
        a.cache.display(),
        cache.mean(),
        cache.std()
    );
    let size = a.train_size.unwrap_or(meta.input_size);
    meta.config()?.check_input_size(size as i64, size as i64)?;
    let rows: Vec<usize> = match a.fold {
        Some(fold) => {
            let f = FoldArgs {
                cache: a.cache.clone(),
                k: a.k,
                fold,
                split_seed: a.split_seed,
            };
            train_indices(&f, a.max_train, a.seed)?.1
        }
        None => (0..cache.len()).collect(),
    };
    let plan = BalancePlan::plain(&rows);
    let mut opts = LoaderOptions::eval(a.batch_size);
    opts.train_size = Some(size);
    let batches = Batches::new(&cache, &plan, opts, 0)?;
    let mut progress = EpochProgress::new("teacher-logits", batches.num_batches() as u64, true);
    let start = Instant::now();
    let mut out_rows = Vec::new();
    for b in batches {
        let b = b?;
        let y = tch::no_grad(|| net.forward_t(&b.images, false));
        progress.step(b.indices.len() as u64, 0.0);
        out_rows.push(y.to_kind(Kind::Float));
    }
    progress.finish();
    let computed = Tensor::cat(&out_rows, 0);
    let logits = Tensor::zeros(
        [cache.len() as i64, computed.size()[1]],
        (Kind::Float, tch::Device::Cpu),
    );
    let idx: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
    let logits = logits.index_copy(0, &Tensor::from_slice(&idx), &computed);
    let mut present = vec![false; cache.len()];
    for &i in &rows {
        present[i] = true;
    }
    let seconds = start.elapsed().as_secs_f64();
    let lm = LogitsMeta {
        teacher: a.teacher.display().to_string(),
        cache: a.cache.display().to_string(),
        samples: cache.len(),
        computed: rows.len(),
        input_size: size,
        seconds,
    };
    teacher_file::save_logits(&a.out, &logits, &present, &lm)?;
    println!(
        "wrote {} ({} of {} rows x {} logits at {size}x{size}) in {seconds:.1} s ({:.1} images/s)",
        a.out.display(),
        rows.len(),
        cache.len(),
        logits.size()[1],
        rows.len() as f64 / seconds
    );
    Ok(())
}
