//! A tiny real-data cache: the first images of each class of HAM10000 (the data set or the
//! in-repo fixture),
//! decoded at a small side so that every model trains a few steps in seconds.

use std::path::{Path, PathBuf};

use derm_codegen::ir::Crop;
use derm_train::data::cache::{Cache, CacheWriter, SampleMeta};
use derm_train::data::class_index;
use derm_train::data::decode::{DecodeLimits, decode_file};

#[path = "../common/data_dir.rs"]
mod data_dir;

/// The HAM10000 folder: the data set beside the workspace, or the in-repo fixture.
pub fn ham_dir() -> PathBuf {
    data_dir::ham_data().0
}

/// Builds a cache of `per_class` images of each of the six classes at `size` px in `dir`.
pub fn ham_cache(dir: &Path, per_class: usize, size: usize) -> Cache {
    let root = ham_dir();
    let text = std::fs::read_to_string(root.join("metadata.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| *h == n)
            .unwrap_or_else(|| panic!("no column {n}"))
    };
    let (ci, cl, cg, cles) = (
        col("image_id"),
        col("paper_label"),
        col("group"),
        col("lesion_id"),
    );
    let mut groups: Vec<String> = Vec::new();
    let mut picked: Vec<(String, usize, String, String)> = Vec::new();
    let mut counts = [0usize; 6];
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let label = class_index(f[cl]).unwrap();
        if counts[label] == per_class {
            continue;
        }
        counts[label] += 1;
        if !groups.iter().any(|g| g == f[cg]) {
            groups.push(f[cg].to_owned());
        }
        picked.push((
            f[ci].to_owned(),
            label,
            f[cg].to_owned(),
            f[cles].to_owned(),
        ));
        if counts.iter().all(|&c| c == per_class) {
            break;
        }
    }
    groups.sort();
    let mut w = CacheWriter::create(dir, size).unwrap();
    for (id, label, group, lesion) in picked {
        let path = root.join("images").join(format!("{id}.jpg"));
        let px = decode_file(&path, size as u32, Crop::Centre, DecodeLimits::default()).unwrap();
        let group = groups.iter().position(|g| *g == group).unwrap();
        w.push(
            SampleMeta {
                id: id.clone(),
                source: path.display().to_string(),
                label,
                group,
                lesion,
            },
            &px,
        )
        .unwrap();
    }
    w.finish(groups, Vec::new(), root.display().to_string())
        .unwrap()
}
