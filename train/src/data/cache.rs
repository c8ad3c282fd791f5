//! The preprocessed cache: every image decoded once, stored as a square RGB8
//! tile, so training never touches a JPEG again.
//!
//! On disk a cache is a folder with two files:
//! - `images.u8`: sample `i` is `S*S*3` bytes (HWC, RGB8) at byte offset
//!   `i*S*S*3`; nothing else, so any tool can memory-map it;
//! - `index.json`: a [`CacheIndex`] (format version, size, class and group
//!   names, per-channel mean/std of the `[0,1]`-scaled pixels, and per sample
//!   the id, source file, label, group and lesion; plus the skipped files).
//!
//! [`Cache`] reads pixels with positioned reads, so opening a cache costs
//! only the index and concurrent readers need no lock.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use derm_codegen::ir::Crop;

use super::manifest::Problem;
use super::{CLASS_NAMES, NUM_CLASSES};

/// Name of the pixel file inside a cache folder.
pub const IMAGES_FILE: &str = "images.u8";
/// Name of the index file inside a cache folder.
pub const INDEX_FILE: &str = "index.json";
/// Value of [`CacheIndex::format`].
pub const FORMAT: &str = "derm-cache";
/// Current [`CacheIndex::version`].
pub const VERSION: u32 = 1;

/// One sample's metadata in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleMeta {
    /// Stable id (image id or file stem).
    pub id: String,
    /// The source file it was decoded from.
    pub source: String,
    /// Class index into `class_names`.
    pub label: usize,
    /// Group index into `group_names`.
    pub group: usize,
    /// Lesion id (the sample id when the data has none).
    pub lesion: String,
}

fn centre_crop() -> Crop {
    Crop::Centre
}

/// The name `derm-train prepare --crop` and the model file give `crop`.
pub fn crop_name(crop: Crop) -> &'static str {
    match crop {
        Crop::Centre => "centre",
        Crop::None => "none",
    }
}

/// The JSON index of a cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheIndex {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written.
    pub version: u32,
    /// Side of the square tiles in pixels.
    pub image_size: usize,
    /// Which part of each photo a tile holds: `centre` (the centred square of the shorter side)
    /// or `none` (the whole photo squashed to a square). Caches written before the field
    /// existed hold centre squares.
    #[serde(default = "centre_crop")]
    pub crop: Crop,
    /// Always 3 (RGB).
    pub channels: usize,
    /// Always `"HWC u8"`.
    pub layout: String,
    /// Class names, canonical order ([`CLASS_NAMES`]).
    pub class_names: Vec<String>,
    /// Group names, sorted.
    pub group_names: Vec<String>,
    /// Per-channel mean of the pixels scaled to `[0,1]`, over all samples.
    pub mean: [f32; 3],
    /// Per-channel (population) standard deviation of the same.
    pub std: [f32; 3],
    /// Per-sample metadata; position = sample index.
    pub samples: Vec<SampleMeta>,
    /// Files that were skipped when the cache was prepared.
    #[serde(default)]
    pub skipped: Vec<Problem>,
    /// Where the data came from.
    #[serde(default)]
    pub source: String,
}

/// An open cache.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    index: CacheIndex,
    file: File,
    labels: Vec<usize>,
    groups: Vec<usize>,
    lesion_idx: Vec<usize>,
    num_lesions: usize,
}

impl Cache {
    /// Opens the cache folder `path` (or its `index.json`) and checks that
    /// the pixel file holds exactly the samples the index lists.
    pub fn open(path: impl AsRef<Path>) -> Result<Cache> {
        let path = path.as_ref();
        let dir = if path.is_file() {
            path.parent().unwrap_or(Path::new("."))
        } else {
            path
        };
        let index_path = dir.join(INDEX_FILE);
        let text = fs::read_to_string(&index_path)
            .with_context(|| format!("reading cache index {}", index_path.display()))?;
        let index: CacheIndex = serde_json::from_str(&text)
            .with_context(|| format!("parsing cache index {}", index_path.display()))?;
        Self::from_index(dir, index)
    }

    fn from_index(dir: &Path, index: CacheIndex) -> Result<Cache> {
        let at = dir.join(INDEX_FILE);
        ensure!(
            index.format == FORMAT,
            "{}: not a {FORMAT} index",
            at.display()
        );
        ensure!(
            index.version == VERSION,
            "{}: cache version {} (this build reads {VERSION}); re-run prepare",
            at.display(),
            index.version
        );
        ensure!(index.channels == 3, "{}: channels must be 3", at.display());
        ensure!(
            index.image_size > 0,
            "{}: image_size must be > 0",
            at.display()
        );
        ensure!(
            index.class_names.len() == NUM_CLASSES,
            "{}: expected {NUM_CLASSES} classes, found {}",
            at.display(),
            index.class_names.len()
        );
        for (i, s) in index.samples.iter().enumerate() {
            ensure!(
                s.label < index.class_names.len() && s.group < index.group_names.len(),
                "{}: sample {i} ({}) has label {} / group {} out of range",
                at.display(),
                s.id,
                s.label,
                s.group
            );
        }
        let images = dir.join(IMAGES_FILE);
        let file = File::open(&images).with_context(|| format!("opening {}", images.display()))?;
        let len = file.metadata()?.len();
        let per = (index.image_size * index.image_size * 3) as u64;
        let want = per * index.samples.len() as u64;
        ensure!(
            len == want,
            "{}: {len} bytes, expected {want} ({} samples x {per})",
            images.display(),
            index.samples.len()
        );
        let labels = index.samples.iter().map(|s| s.label).collect();
        let groups = index.samples.iter().map(|s| s.group).collect();
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let lesion_idx = index
            .samples
            .iter()
            .map(|s| {
                let n = ids.len();
                *ids.entry(s.lesion.as_str()).or_insert(n)
            })
            .collect();
        let num_lesions = ids.len();
        Ok(Cache {
            dir: dir.to_path_buf(),
            index,
            file,
            labels,
            groups,
            lesion_idx,
            num_lesions,
        })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The whole index.
    pub fn index(&self) -> &CacheIndex {
        &self.index
    }
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when the cache holds no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Side `S` of the square tiles.
    pub fn image_size(&self) -> usize {
        self.index.image_size
    }

    /// Which part of each photo a tile holds.
    pub fn crop(&self) -> Crop {
        self.index.crop
    }

    /// Refuses to run `model` (a student or model file that expects photos framed by
    /// `crop`) on these tiles when they are framed otherwise: a network trained on whole
    /// photos scored on centre squares, or the reverse, gives plausible but wrong numbers.
    pub fn check_crop(&self, crop: Crop, model: &Path) -> Result<()> {
        ensure!(
            crop == self.crop(),
            "{}: the model expects crop {:?}, but the tiles of {} have crop {:?} \
             (`derm-train prepare --crop`)",
            model.display(),
            crop_name(crop),
            self.dir.display(),
            crop_name(self.crop())
        );
        Ok(())
    }
    /// Bytes per sample (`S*S*3`).
    pub fn sample_bytes(&self) -> usize {
        self.index.image_size * self.index.image_size * 3
    }
    /// Class index of every sample.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }
    /// Group index of every sample.
    pub fn groups(&self) -> &[usize] {
        &self.groups
    }
    /// Class index of sample `i`.
    pub fn label(&self, i: usize) -> usize {
        self.labels[i]
    }
    /// Group index of sample `i`.
    pub fn group(&self, i: usize) -> usize {
        self.groups[i]
    }
    /// Lesion id of sample `i`.
    pub fn lesion(&self, i: usize) -> &str {
        &self.index.samples[i].lesion
    }
    /// Dense lesion number of sample `i` (`0..num_lesions()`), for grouping.
    pub fn lesion_index(&self, i: usize) -> usize {
        self.lesion_idx[i]
    }
    /// Number of distinct lesions.
    pub fn num_lesions(&self) -> usize {
        self.num_lesions
    }
    /// Id of sample `i`.
    pub fn id(&self, i: usize) -> &str {
        &self.index.samples[i].id
    }
    /// Class names (canonical order).
    pub fn class_names(&self) -> &[String] {
        &self.index.class_names
    }
    /// Group names.
    pub fn group_names(&self) -> &[String] {
        &self.index.group_names
    }
    /// Index of the group called `name`.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.index.group_names.iter().position(|g| g == name)
    }
    /// Per-channel mean of the `[0,1]` pixels.
    pub fn mean(&self) -> [f32; 3] {
        self.index.mean
    }
    /// Per-channel standard deviation of the `[0,1]` pixels.
    pub fn std(&self) -> [f32; 3] {
        self.index.std
    }

    /// Reads sample `i`'s HWC RGB8 bytes into `buf` (`sample_bytes()` long).
    pub fn read_image(&self, i: usize, buf: &mut [u8]) -> Result<()> {
        ensure!(
            i < self.len(),
            "sample {i} out of range (cache has {})",
            self.len()
        );
        ensure!(
            buf.len() == self.sample_bytes(),
            "buffer of {} bytes",
            buf.len()
        );
        let off = (i * self.sample_bytes()) as u64;
        self.file.read_exact_at(buf, off).with_context(|| {
            format!(
                "reading sample {i} from {}",
                self.dir.join(IMAGES_FILE).display()
            )
        })
    }

    /// Sample `i`'s HWC RGB8 bytes.
    pub fn image(&self, i: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; self.sample_bytes()];
        self.read_image(i, &mut v)?;
        Ok(v)
    }

    /// Counts per `[group][class]` over `indices` (all samples if `None`).
    pub fn counts(&self, indices: Option<&[usize]>) -> Vec<[usize; NUM_CLASSES]> {
        let mut c = vec![[0usize; NUM_CLASSES]; self.group_names().len()];
        let mut add = |i: usize| c[self.groups[i]][self.labels[i]] += 1;
        match indices {
            Some(ix) => ix.iter().for_each(|&i| add(i)),
            None => (0..self.len()).for_each(add),
        }
        c
    }
}

/// Writes a cache sample by sample, accumulating the channel statistics.
/// Files are written under temporary names and renamed by [`Self::finish`],
/// so a half-written cache is never mistaken for a complete one.
#[derive(Debug)]
pub struct CacheWriter {
    dir: PathBuf,
    size: usize,
    crop: Crop,
    out: BufWriter<File>,
    samples: Vec<SampleMeta>,
    sum: [u64; 3],
    sum_sq: [u64; 3],
}

impl CacheWriter {
    /// Starts a cache of `size x size` tiles in folder `dir` (created).
    pub fn create(dir: impl AsRef<Path>, size: usize) -> Result<CacheWriter> {
        let dir = dir.as_ref().to_path_buf();
        ensure!(size > 0, "image size must be > 0");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!("{IMAGES_FILE}.tmp"));
        let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(CacheWriter {
            dir,
            size,
            crop: Crop::Centre,
            out: BufWriter::with_capacity(1 << 20, f),
            samples: Vec::new(),
            sum: [0; 3],
            sum_sq: [0; 3],
        })
    }

    /// Records which part of each photo the tiles hold (default [`Crop::Centre`]).
    pub fn with_crop(mut self, crop: Crop) -> CacheWriter {
        self.crop = crop;
        self
    }

    /// Appends one sample (`pixels` HWC RGB8, `size*size*3` bytes).
    pub fn push(&mut self, meta: SampleMeta, pixels: &[u8]) -> Result<()> {
        ensure!(
            pixels.len() == self.size * self.size * 3,
            "sample {}: {} bytes, expected {}",
            meta.id,
            pixels.len(),
            self.size * self.size * 3
        );
        // A per-channel histogram keeps the inner loop to one increment.
        let mut hist = [[0u32; 256]; 3];
        for px in pixels.chunks_exact(3) {
            hist[0][px[0] as usize] += 1;
            hist[1][px[1] as usize] += 1;
            hist[2][px[2] as usize] += 1;
        }
        for (c, h) in hist.iter().enumerate() {
            for (v, &n) in h.iter().enumerate() {
                self.sum[c] += n as u64 * v as u64;
                self.sum_sq[c] += n as u64 * (v * v) as u64;
            }
        }
        self.out.write_all(pixels)?;
        self.samples.push(meta);
        Ok(())
    }

    /// Number of samples pushed so far.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Writes the index and renames both files into place.
    pub fn finish(
        mut self,
        group_names: Vec<String>,
        skipped: Vec<Problem>,
        source: String,
    ) -> Result<Cache> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        drop(self.out);
        let n = (self.samples.len() * self.size * self.size) as f64;
        let (mut mean, mut std) = ([0f32; 3], [0f32; 3]);
        if n > 0.0 {
            for c in 0..3 {
                // Exact integer sums, so the only rounding is this division.
                let m = self.sum[c] as f64 / n / 255.0;
                let m2 = self.sum_sq[c] as f64 / n / (255.0 * 255.0);
                mean[c] = m as f32;
                std[c] = (m2 - m * m).max(0.0).sqrt() as f32;
            }
        }
        let index = CacheIndex {
            format: FORMAT.into(),
            version: VERSION,
            image_size: self.size,
            crop: self.crop,
            channels: 3,
            layout: "HWC u8".into(),
            class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            group_names,
            mean,
            std,
            samples: self.samples,
            skipped,
            source,
        };
        for (i, s) in index.samples.iter().enumerate() {
            if s.group >= index.group_names.len() || s.label >= NUM_CLASSES {
                bail!("sample {i} ({}): label/group out of range", s.id);
            }
        }
        let tmp_index = self.dir.join(format!("{INDEX_FILE}.tmp"));
        fs::write(&tmp_index, serde_json::to_vec(&index)?)
            .with_context(|| format!("writing {}", tmp_index.display()))?;
        fs::rename(
            self.dir.join(format!("{IMAGES_FILE}.tmp")),
            self.dir.join(IMAGES_FILE),
        )?;
        fs::rename(&tmp_index, self.dir.join(INDEX_FILE))?;
        Cache::open(&self.dir)
    }
}
