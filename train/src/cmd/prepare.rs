//! `derm-train prepare`: decode a dataset once into a cache.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use derm_codegen::ir::Crop;

use crate::data::cache::crop_name;
use crate::data::manifest::{ManifestColumns, read_manifest, scan_esfair};
use crate::data::prepare::{PrepareOptions, prepare, table_one};
use crate::report::write_report;

/// Decode every image once (EXIF orientation, any colour type -> RGB8),
/// resize the shorter side + centre crop to `--size` (or, with `--crop none`,
/// the whole photo squashed to `--size x --size`), compute the dataset
/// mean/std and write the cache (`images.u8` + `index.json`).
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// CSV manifest (columns: image id or path, label, group, optional lesion_id).
    #[arg(long, requires = "images", conflicts_with = "data")]
    pub manifest: Option<PathBuf>,
    /// Folder the manifest's images are relative to.
    #[arg(long, requires = "manifest")]
    pub images: Option<PathBuf>,
    /// ESFair layout root: `<root>/<group>/<class>/*.{jpg,jpeg,png}`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Cache folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Side of the square tiles.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Which part of each photo becomes the tile: `centre` (the centred square of the shorter
    /// side) or `none` (the whole photo, squashed to a square: the paper's "resize to
    /// 224x224"). Models trained on the cache record it, and the runtime crops the same way.
    #[arg(long, default_value = "centre", value_parser = parse_crop)]
    pub crop: Crop,
    /// Fail if any file would be skipped.
    #[arg(long)]
    pub strict: bool,
    /// Manifest column holding the image id or path (default: image_id, image, path, ...).
    #[arg(long)]
    pub image_column: Option<String>,
    /// Manifest column holding the class (default: paper_label, label, class, dx).
    #[arg(long)]
    pub label_column: Option<String>,
    /// Manifest column holding the group (default: group).
    #[arg(long)]
    pub group_column: Option<String>,
    /// Manifest column holding the lesion id (default: lesion_id, if present).
    #[arg(long)]
    pub lesion_column: Option<String>,
    /// JSON report path (default: `<out>/prepare-report.json`).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Runs `prepare`.
pub fn run(args: PrepareArgs) -> Result<()> {
    if args.size == 0 || args.size > 4096 {
        bail!("--size must be in 1..=4096 (got {})", args.size);
    }
    let source = match (&args.manifest, &args.images, &args.data) {
        (Some(m), Some(i), None) => read_manifest(
            m,
            i,
            &ManifestColumns {
                image: args.image_column.clone(),
                label: args.label_column.clone(),
                group: args.group_column.clone(),
                lesion: args.lesion_column.clone(),
            },
        )?,
        (None, None, Some(d)) => scan_esfair(d)?,
        _ => bail!("give either --manifest FILE --images DIR, or --data ROOT"),
    };
    eprintln!(
        "{}: {} images listed",
        source.description,
        source.records.len()
    );
    let opts = PrepareOptions {
        size: args.size,
        strict: args.strict,
        crop: args.crop,
        progress: std::io::stderr().is_terminal(),
        ..Default::default()
    };
    let (_cache, summary) = prepare(source, &args.out, &opts)?;
    for p in &summary.skipped {
        eprintln!("warning: skipped {}: {}", p.path, p.reason);
    }
    println!(
        "Table I ({} images, {} lesions):",
        summary.images, summary.lesions
    );
    print!("{}", table_one(&summary.group_names, &summary.counts));
    println!(
        "mean {:.4?}  std {:.4?}  (RGB, pixels in [0,1], {}x{}, crop {})",
        summary.mean,
        summary.std,
        summary.size,
        summary.size,
        crop_name(summary.crop)
    );
    println!(
        "skipped {} file(s); {:.1} s with {} threads; cache in {}",
        summary.skipped.len(),
        summary.seconds,
        summary.threads,
        args.out.display()
    );
    let report = args
        .report
        .unwrap_or_else(|| args.out.join("prepare-report.json"));
    write_report(&report, "prepare", &summary)?;
    println!("report: {}", report.display());
    Ok(())
}

/// `--crop`'s values, the model file's names for them.
fn parse_crop(s: &str) -> Result<Crop, String> {
    match s {
        "centre" | "center" => Ok(Crop::Centre),
        "none" => Ok(Crop::None),
        _ => Err(format!("unknown crop {s:?}: expected centre or none")),
    }
}
