//! `prepare`: decode every listed image once (in parallel), write the cache
//! and summarize it (the paper's Table I: classes x groups).

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use derm_codegen::ir::Crop;

use super::cache::{Cache, CacheWriter, SampleMeta};
use super::decode::{DecodeLimits, decode_file};
use super::manifest::{Problem, Source};
use super::{CLASS_NAMES, NUM_CLASSES};
use crate::report::Table;

/// Options of [`prepare`].
#[derive(Debug, Clone, Copy)]
pub struct PrepareOptions {
    /// Side of the square tiles.
    pub size: u32,
    /// Which part of each photo becomes the tile.
    pub crop: Crop,
    /// Any skipped file is an error (and no cache is written).
    pub strict: bool,
    /// Decoder limits.
    pub limits: DecodeLimits,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            size: 224,
            crop: Crop::Centre,
            strict: false,
            limits: DecodeLimits::default(),
            progress: false,
        }
    }
}

/// What [`prepare`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareSummary {
    /// The cache folder.
    pub out: String,
    /// Where the images came from.
    pub source: String,
    /// Images in the cache.
    pub images: usize,
    /// Tile side.
    pub size: usize,
    /// Which part of each photo a tile holds.
    pub crop: Crop,
    /// Per-channel mean of the `[0,1]` pixels.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
    /// Class names.
    pub class_names: Vec<String>,
    /// Group names.
    pub group_names: Vec<String>,
    /// Counts `[group][class]` (Table I).
    pub counts: Vec<[usize; NUM_CLASSES]>,
    /// Distinct lesions.
    pub lesions: usize,
    /// Every skipped row or file, with the reason.
    pub skipped: Vec<Problem>,
    /// Wall-clock seconds (decode + write).
    pub seconds: f64,
    /// Decoder threads.
    pub threads: usize,
}

fn strict_error(problems: &[Problem]) -> anyhow::Error {
    let list: Vec<String> = problems
        .iter()
        .map(|p| format!("  {}: {}", p.path, p.reason))
        .collect();
    anyhow::anyhow!(
        "--strict: {} file(s) would be skipped:\n{}",
        problems.len(),
        list.join("\n")
    )
}

/// Decodes `source` into a cache at `out` (a folder).
pub fn prepare(
    source: Source,
    out: &Path,
    opts: &PrepareOptions,
) -> Result<(Cache, PrepareSummary)> {
    let t0 = Instant::now();
    if opts.strict && !source.problems.is_empty() {
        return Err(strict_error(&source.problems));
    }
    if source.records.is_empty() {
        bail!("no images found in {}", source.description);
    }
    let mut group_names: Vec<String> = source.records.iter().map(|r| r.group.clone()).collect();
    group_names.sort();
    group_names.dedup();
    let bar = if opts.progress {
        let b = ProgressBar::new(source.records.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "decoding {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec}",
            )
            .expect("static template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut writer = CacheWriter::create(out, opts.size as usize)?.with_crop(opts.crop);
    let mut skipped = source.problems.clone();
    // Chunks bound memory to one chunk of tiles while keeping file order.
    for chunk in source.records.chunks(512) {
        let decoded: Vec<Result<Vec<u8>>> = chunk
            .par_iter()
            .map(|r| {
                let d = decode_file(&r.path, opts.size, opts.crop, opts.limits);
                bar.inc(1);
                d
            })
            .collect();
        for (r, d) in chunk.iter().zip(decoded) {
            match d {
                Ok(px) => {
                    let group = group_names.binary_search(&r.group).expect("group listed");
                    let meta = SampleMeta {
                        id: r.id.clone(),
                        source: r.path.display().to_string(),
                        label: r.label,
                        group,
                        lesion: r.lesion.clone().unwrap_or_else(|| r.id.clone()),
                    };
                    writer.push(meta, &px)?;
                }
                Err(e) => skipped.push(Problem {
                    path: r.path.display().to_string(),
                    reason: format!("{e:#}"),
                }),
            }
        }
    }
    bar.finish_and_clear();
    if opts.strict && skipped.len() > source.problems.len() {
        let _ = std::fs::remove_file(out.join(format!("{}.tmp", super::cache::IMAGES_FILE)));
        return Err(strict_error(&skipped));
    }
    if writer.is_empty() {
        bail!(
            "none of the {} images could be decoded",
            source.records.len()
        );
    }
    let cache = writer.finish(group_names, skipped.clone(), source.description.clone())?;
    let summary = PrepareSummary {
        out: out.display().to_string(),
        source: source.description,
        images: cache.len(),
        size: cache.image_size(),
        crop: cache.crop(),
        mean: cache.mean(),
        std: cache.std(),
        class_names: cache.class_names().to_vec(),
        group_names: cache.group_names().to_vec(),
        counts: cache.counts(None),
        lesions: cache.num_lesions(),
        skipped,
        seconds: t0.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
    };
    Ok((cache, summary))
}

/// Table I: one row per class, one column per group, with totals.
pub fn table_one(group_names: &[String], counts: &[[usize; NUM_CLASSES]]) -> Table {
    let mut header = vec!["class \\ group".to_string()];
    header.extend(group_names.iter().cloned());
    header.push("total".into());
    let mut t = Table::new(header);
    for (c, name) in CLASS_NAMES.iter().enumerate() {
        let mut row = vec![name.to_string()];
        row.extend(counts.iter().map(|g| g[c].to_string()));
        row.push(counts.iter().map(|g| g[c]).sum::<usize>().to_string());
        t.row(row);
    }
    let mut row = vec!["total".to_string()];
    row.extend(counts.iter().map(|g| g.iter().sum::<usize>().to_string()));
    row.push(counts.iter().flatten().sum::<usize>().to_string());
    t.row(row);
    t
}
