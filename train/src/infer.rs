//! Inference with any model file `derm-train` writes, over the images of a cache: one model
//! or an ensemble (logits averaged), optionally with test-time augmentation (logits averaged
//! over flipped / transposed views). `evaluate` scores the result and `teacher-logits`
//! stores it as a distillation target, so any trained student or teacher, or a mix of them,
//! can serve as a teacher.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use derm_codegen::ir::Crop;
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::data::balance::BalancePlan;
use crate::data::cache::Cache;
use crate::data::loader::{Batches, LoaderOptions};
use crate::export::TchGraph;
use crate::student_file;
use crate::train::fit::InputMap;
use crate::train::progress::EpochProgress;
use crate::train::teacher_file;

/// Test-time augmentation: which views of each image are averaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// The image as it is.
    #[default]
    None,
    /// The image and its horizontal mirror (2 views).
    Flip,
    /// The 8 symmetries of the square: 4 rotations, each also mirrored (8 views).
    Dihedral,
}

impl Tta {
    /// Views as `(transpose, flip_h, flip_v)`, the identity first.
    pub fn views(self) -> &'static [(bool, bool, bool)] {
        const ALL: [(bool, bool, bool); 8] = [
            (false, false, false),
            (false, true, false),
            (false, false, true),
            (false, true, true),
            (true, false, false),
            (true, true, false),
            (true, false, true),
            (true, true, true),
        ];
        match self {
            Tta::None => &ALL[..1],
            Tta::Flip => &ALL[..2],
            Tta::Dihedral => &ALL,
        }
    }
}

impl fmt::Display for Tta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::Dihedral => "dihedral",
        })
    }
}

/// Applies one view `(transpose, flip_h, flip_v)` to an `[N, C, H, W]` batch.
pub fn view(x: &Tensor, (transpose, flip_h, flip_v): (bool, bool, bool)) -> Tensor {
    let mut y = if transpose {
        x.transpose(2, 3)
    } else {
        x.shallow_clone()
    };
    if flip_h {
        y = y.flip([3]);
    }
    if flip_v {
        y = y.flip([2]);
    }
    y
}

/// What kind of network a model file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A MobileNetV3 student file.
    Student,
    /// A Swin V2 teacher file.
    Teacher,
    /// An exported model file (`derm-train export`: f32, f16 or int8), run as the runtime
    /// computes it: float files by [`crate::export::TchGraph`], int8 files by the int8
    /// reference interpreter (`docs/int8.md`).
    ModelFile,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelKind::Student => "student",
            ModelKind::Teacher => "teacher",
            ModelKind::ModelFile => "model file",
        })
    }
}

/// A trained model loaded for inference.
pub struct LoadedModel {
    /// The file it came from.
    pub path: PathBuf,
    /// Student or teacher.
    pub kind: ModelKind,
    /// Input side it was trained at.
    pub input_size: usize,
    /// Class names in logit order.
    pub class_names: Vec<String>,
    /// Per-channel mean its inputs are normalized with.
    pub mean: [f32; 3],
    /// Per-channel std of the same.
    pub std: [f32; 3],
    /// The part of a photo it expects.
    pub crop: Crop,
    net: Box<dyn ModuleT>,
    // Owns the tensors `net` reads (kept for clarity; the network holds references too).
    _vs: nn::VarStore,
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("input_size", &self.input_size)
            .finish_non_exhaustive()
    }
}

/// An exported model file as a network: float files run through [`TchGraph`] (libtorch),
/// int8 files through `derm_codegen::reference::int8` one image at a time, with the
/// quantization plan built once.
#[derive(Debug)]
pub struct ModelFileNet {
    model: derm_codegen::ir::ModelFile,
    inner: FileNet,
}

#[derive(Debug)]
enum FileNet {
    Float(Box<TchGraph>),
    Int8 {
        shapes: derm_codegen::ir::ValueShapes,
        plan: derm_codegen::quant::QuantPlan,
    },
}

impl ModelFileNet {
    /// Prepares `model` (validated again: it may have been built in memory).
    pub fn new(model: derm_codegen::ir::ModelFile) -> Result<Self> {
        let shapes = model.validate()?;
        let inner = if model.graph.quantization.is_some() {
            let plan = derm_codegen::quant::QuantPlan::new(&model, &shapes)?;
            FileNet::Int8 { shapes, plan }
        } else {
            FileNet::Float(Box::new(TchGraph::new(&model)?))
        };
        Ok(Self { model, inner })
    }

    /// Logits `[N, C]` of a preprocessed batch `[N, 3, H, W]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        match &self.inner {
            FileNet::Float(g) => g.forward(x),
            FileNet::Int8 { shapes, plan } => {
                let n = x.size().first().copied().unwrap_or(0);
                let flat = Vec::<f32>::try_from(x.to_kind(Kind::Float).contiguous().view(-1))?;
                let per = flat.len() / n.max(1) as usize;
                let mut out = Vec::with_capacity(n as usize * self.model.num_classes());
                for img in flat.chunks(per.max(1)) {
                    let layers =
                        derm_codegen::reference::int8::run(&self.model, shapes, plan, img)?;
                    let last = layers.last().context("the graph has no ops")?;
                    out.extend_from_slice(&last.data);
                }
                Ok(Tensor::from_slice(&out).view([n, self.model.num_classes() as i64]))
            }
        }
    }
}

impl ModuleT for ModelFileNet {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        // Shapes were checked when the file was loaded and the loader produces the model's
        // input size, so an error here is a bug, not bad input.
        self.logits(xs)
            .unwrap_or_else(|e| panic!("model file inference failed: {e:#}"))
    }
}

/// Which metadata key a model file carries. Reads only the safetensors header (8-byte
/// length, then JSON), not the tensors: the loader reads the file again, and a teacher is
/// about 110 MB.
fn file_kind(path: &Path) -> Result<ModelKind> {
    use std::io::Read;
    let not_st = |why: &str| anyhow::anyhow!("{} is not a safetensors file: {why}", path.display());
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| not_st("shorter than 8 bytes"))?;
    let n = u64::from_le_bytes(len);
    let file_len = f.metadata()?.len();
    ensure!(n <= file_len.saturating_sub(8), not_st("header too large"));
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|_| not_st("truncated header"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| not_st(&e.to_string()))?;
    let meta = header.get("__metadata__");
    let has = |k: &str| meta.is_some_and(|m| m.get(k).is_some());
    if has(student_file::METADATA_KEY) {
        Ok(ModelKind::Student)
    } else if has(teacher_file::METADATA_KEY) {
        Ok(ModelKind::Teacher)
    } else if has(derm_codegen::ir::GRAPH_KEY) {
        Ok(ModelKind::ModelFile)
    } else {
        bail!(
            "{}: neither a student ({}), a teacher ({}) nor an exported model file ({})",
            path.display(),
            student_file::METADATA_KEY,
            teacher_file::METADATA_KEY,
            derm_codegen::ir::GRAPH_KEY
        )
    }
}

/// Loads a student or teacher file (detected from its metadata).
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    Ok(match file_kind(path)? {
        ModelKind::Student => {
            let s = student_file::load(path)?;
            ensure!(
                s.meta.input_size[0] == s.meta.input_size[1],
                "{}: non-square input {:?} is not supported here",
                path.display(),
                s.meta.input_size
            );
            LoadedModel {
                path: path.to_owned(),
                kind: ModelKind::Student,
                input_size: s.meta.input_size[0] as usize,
                class_names: s.meta.class_names.clone(),
                mean: s.meta.mean,
                std: s.meta.std,
                crop: s.meta.crop,
                net: Box::new(s.model),
                _vs: s.vs,
            }
        }
        ModelKind::ModelFile => {
            let model = derm_codegen::ir::ModelFile::read(path)?;
            let g = &model.graph;
            let [_, _, h, w] = g.input.shape;
            ensure!(
                h == w,
                "{}: non-square input {h}x{w} is not supported here",
                path.display()
            );
            LoadedModel {
                path: path.to_owned(),
                kind: ModelKind::ModelFile,
                input_size: h,
                class_names: g.classes.clone(),
                mean: g.preprocess.mean,
                std: g.preprocess.std,
                crop: g.preprocess.crop,
                net: Box::new(ModelFileNet::new(model)?),
                _vs: nn::VarStore::new(tch::Device::Cpu),
            }
        }
        ModelKind::Teacher => {
            let (meta, vs, net) = teacher_file::load(path)?;
            LoadedModel {
                path: path.to_owned(),
                kind: ModelKind::Teacher,
                input_size: meta.input_size,
                class_names: meta.class_names.clone(),
                mean: meta.mean,
                std: meta.std,
                crop: meta.crop,
                net: Box::new(net),
                _vs: vs,
            }
        }
    })
}

/// How [`ensemble_logits`] runs.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// Batch size.
    pub batch_size: usize,
    /// Image side for every model (`None`: each model's own training side).
    pub size: Option<usize>,
    /// Test-time augmentation.
    pub tta: Tta,
    /// Show a progress bar.
    pub progress: bool,
}

/// Checks that every model predicts the cache's classes in the cache's order and expects
/// the cache's tiles ([`Cache::check_crop`]).
pub fn check_against_cache(models: &[LoadedModel], cache: &Cache) -> Result<()> {
    ensure!(!models.is_empty(), "no model given");
    for m in models {
        ensure!(
            m.class_names == cache.class_names(),
            "{}: classes {:?} differ from the cache's {:?}",
            m.path.display(),
            m.class_names,
            cache.class_names()
        );
        cache.check_crop(m.crop, &m.path)?;
    }
    Ok(())
}

/// Logits `[rows.len(), C]` (row `i` = cache sample `rows[i]`), averaged over `models` and
/// the TTA views. Students get the cache-to-student input normalization; a teacher must have
/// been trained on the cache's normalization.
pub fn ensemble_logits(
    models: &[LoadedModel],
    cache: &Cache,
    rows: &[usize],
    opts: &InferOptions,
) -> Result<Tensor> {
    check_against_cache(models, cache)?;
    ensure!(opts.batch_size > 0, "batch size must be > 0");
    ensure!(!rows.is_empty(), "no image to run");
    let position: HashMap<usize, usize> = rows.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let classes = cache.class_names().len() as i64;
    let mut sum = Tensor::zeros(
        [rows.len() as i64, classes],
        (Kind::Float, tch::Device::Cpu),
    );
    let plan = BalancePlan::plain(rows);
    let views = opts.tta.views();
    for m in models {
        let input = match m.kind {
            ModelKind::Student | ModelKind::ModelFile => {
                Some(InputMap::new(cache.mean(), cache.std(), m.mean, m.std))
            }
            ModelKind::Teacher => {
                ensure!(
                    m.mean == cache.mean() && m.std == cache.std(),
                    "{}: the teacher was trained with mean {:?} / std {:?}, {} has {:?} / {:?}",
                    m.path.display(),
                    m.mean,
                    m.std,
                    cache.dir().display(),
                    cache.mean(),
                    cache.std()
                );
                None
            }
        };
        let mut lo = LoaderOptions::eval(opts.batch_size);
        lo.train_size = Some(opts.size.unwrap_or(m.input_size));
        let batches = Batches::new(cache, &plan, lo, 0)?;
        let label = format!(
            "{} {}",
            m.kind,
            m.path.file_name().unwrap_or_default().to_string_lossy()
        );
        let mut progress = EpochProgress::new(&label, batches.num_batches() as u64, opts.progress);
        for b in batches {
            let b = b?;
            let x = match &input {
                Some(map) => map.apply(&b.images),
                None => b.images.shallow_clone(),
            };
            let y = tch::no_grad(|| {
                views
                    .iter()
                    .map(|&v| m.net.forward_t(&view(&x, v), false).to_kind(Kind::Float))
                    .reduce(|a, b| a + b)
                    .expect("at least one view")
            });
            let pos: Vec<i64> = b
                .indices
                .iter()
                .map(|i| position.get(i).map(|&p| p as i64))
                .collect::<Option<_>>()
                .context("the loader returned a sample that was not asked for")?;
            let _ = sum.index_add_(0, &Tensor::from_slice(&pos), &y);
            progress.step(b.indices.len() as u64, 0.0);
        }
        progress.finish();
    }
    sum /= (models.len() * views.len()) as f64;
    Ok(sum)
}
