//! `derm-train teacher-logits`: runs a trained teacher (or an ensemble of trained models,
//! optionally with test-time augmentation) once over every image of a cache and stores its
//! logits, so `distill --teacher-logits` costs about what training the student alone costs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use clap::Args;
use tch::{Kind, Tensor};

use crate::args::CacheFoldArgs;
use crate::infer::{self, InferOptions, Tta};
use crate::train::cli::train_indices;
use crate::train::teacher_file::{self, LogitsMeta};

/// Arguments of `derm-train teacher-logits`.
#[derive(Debug, Clone, Args)]
pub struct TeacherLogitsArgs {
    /// Teacher: any model file derm-train trains (`teacher.safetensors` of `derm-train
    /// teacher`, `student.safetensors` of `student` or `distill`). Give it several times for
    /// an ensemble: the logits are averaged.
    #[arg(long = "teacher", required = true)]
    pub teachers: Vec<PathBuf>,
    /// Test-time augmentation: logits averaged over none, a mirror, or the 8 dihedral views.
    #[arg(long, value_enum, default_value_t = Tta::None)]
    pub tta: Tta,
    /// The cache; with `--fold`, only the training images of that fold (after `--max-train`
    /// with `--seed`), i.e. exactly the rows a `distill` run with the same flags reads.
    #[command(flatten)]
    pub data: CacheFoldArgs,
    /// Output file (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Image side for every model (default: the side each was trained at).
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// libtorch intra-op threads.
    #[arg(long)]
    pub threads: Option<i32>,
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
    let models = a
        .teachers
        .iter()
        .map(|p| infer::load_model(p))
        .collect::<Result<Vec<_>>>()?;
    let (cache, rows) = a.data.open(|f| train_indices(f, a.max_train, a.seed))?;
    infer::check_against_cache(&models, &cache)?;
    let start = Instant::now();
    let opts = InferOptions {
        batch_size: a.batch_size,
        size: a.train_size,
        tta: a.tta,
        progress: true,
    };
    let computed = infer::ensemble_logits(&models, &cache, &rows, &opts)?;
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
    let sizes: Vec<usize> = models
        .iter()
        .map(|m| a.train_size.unwrap_or(m.input_size))
        .collect();
    let lm = LogitsMeta {
        teacher: a
            .teachers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
        cache: a.data.cache.display().to_string(),
        samples: cache.len(),
        computed: rows.len(),
        input_size: sizes[0],
        seconds,
    };
    teacher_file::save_logits(&a.out, &logits, &present, &lm)?;
    println!(
        "wrote {} ({} of {} rows x {} logits; {} model(s) at {sizes:?} px, TTA {}) in {seconds:.1} s ({:.1} images/s)",
        a.out.display(),
        rows.len(),
        cache.len(),
        logits.size()[1],
        models.len(),
        a.tta,
        rows.len() as f64 / seconds
    );
    Ok(())
}
