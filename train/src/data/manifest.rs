//! Finding the images and their labels: a CSV manifest (HAM10000 style) or
//! the ESFair folder layout `<root>/<group>/<class>/*.{jpg,jpeg,png}`.
//!
//! Ingest never decodes; it lists [`SourceRecord`]s and the [`Problem`]s of
//! rows or files it had to skip, so `prepare` can report every skipped file
//! by name (or refuse them all under `--strict`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::class_index;

/// Image file extensions the ingest accepts (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// One image to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// A stable id (the manifest's image id, or the file stem).
    pub id: String,
    /// The image file.
    pub path: PathBuf,
    /// Class index into [`super::CLASS_NAMES`].
    pub label: usize,
    /// Group (sensitive attribute) name.
    pub group: String,
    /// Lesion id; images of one lesion never straddle a split. `None` means
    /// the image is its own lesion.
    pub lesion: Option<String>,
}

/// A skipped row or file, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The file (or `manifest:line N`) concerned.
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// What ingest found: records to decode plus skipped entries.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Images to decode, in a deterministic order.
    pub records: Vec<SourceRecord>,
    /// Rows or files skipped before decoding.
    pub problems: Vec<Problem>,
    /// Human-readable description of where the data came from.
    pub description: String,
}

/// Which manifest columns hold what; `None` picks the first present of the
/// usual names (see [`read_manifest`]).
#[derive(Debug, Clone, Default)]
pub struct ManifestColumns {
    /// Image id or relative path column.
    pub image: Option<String>,
    /// Class label column.
    pub label: Option<String>,
    /// Group column.
    pub group: Option<String>,
    /// Lesion id column (optional in the file too).
    pub lesion: Option<String>,
}

const IMAGE_COLUMNS: [&str; 6] = ["image_id", "image", "path", "file", "filename", "id"];
// `paper_label` first: HAM10000's `label` holds the seven raw diagnoses.
const LABEL_COLUMNS: [&str; 4] = ["paper_label", "label", "class", "dx"];
const GROUP_COLUMNS: [&str; 1] = ["group"];
const LESION_COLUMNS: [&str; 1] = ["lesion_id"];

/// Splits one CSV line into fields (RFC 4180 quoting, `""` escapes). Quoted
/// fields spanning lines are not supported and give an error.
pub fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && cur.is_empty() {
            in_quotes = true;
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if in_quotes {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

fn pick_column(
    header: &[String],
    wanted: Option<&str>,
    defaults: &[&str],
    what: &str,
    csv: &Path,
) -> Result<Option<usize>> {
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    match wanted {
        Some(name) => match find(name) {
            Some(i) => Ok(Some(i)),
            None => bail!(
                "{}: no {what} column named {name:?} (columns: {})",
                csv.display(),
                header.join(", ")
            ),
        },
        None => Ok(defaults.iter().find_map(|d| find(d))),
    }
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Resolves a manifest image entry: a relative path with an image extension
/// is used as is; a bare id tries `<id>.jpg`, `.jpeg`, `.png` (either case).
fn resolve_image(images: &Path, entry: &str) -> Option<PathBuf> {
    let direct = images.join(entry);
    if has_image_extension(Path::new(entry)) {
        return direct.is_file().then_some(direct);
    }
    for ext in IMAGE_EXTENSIONS {
        for e in [ext.to_string(), ext.to_ascii_uppercase()] {
            let p = images.join(format!("{entry}.{e}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Reads a CSV manifest whose rows name an image (id or path relative to
/// `images`), a label (one of [`super::CLASS_NAMES`], any case), a group and
/// optionally a lesion id. Default columns: image `image_id|image|path|file|
/// filename|id`, label `paper_label|label|class|dx`, group `group`, lesion
/// `lesion_id`. Rows with a missing file, an unknown label or an empty group
/// become [`Problem`]s; a missing column is an error.
pub fn read_manifest(csv: &Path, images: &Path, cols: &ManifestColumns) -> Result<Source> {
    let text =
        fs::read_to_string(csv).with_context(|| format!("reading manifest {}", csv.display()))?;
    if !images.is_dir() {
        bail!("image folder {} does not exist", images.display());
    }
    let mut lines = text.lines().enumerate();
    let header = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((i, l)) => {
                break split_csv_line(l.trim_start_matches('\u{feff}'))
                    .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", csv.display(), i + 1))?;
            }
            None => bail!("{}: empty manifest", csv.display()),
        }
    };
    let need = |c: Option<usize>, what: &str, defaults: &[&str]| {
        c.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no {what} column (looked for {}; columns: {})",
                csv.display(),
                defaults.join(", "),
                header.join(", ")
            )
        })
    };
    let ci = need(
        pick_column(&header, cols.image.as_deref(), &IMAGE_COLUMNS, "image", csv)?,
        "image",
        &IMAGE_COLUMNS,
    )?;
    let cl = need(
        pick_column(&header, cols.label.as_deref(), &LABEL_COLUMNS, "label", csv)?,
        "label",
        &LABEL_COLUMNS,
    )?;
    let cg = need(
        pick_column(&header, cols.group.as_deref(), &GROUP_COLUMNS, "group", csv)?,
        "group",
        &GROUP_COLUMNS,
    )?;
    let clz = pick_column(
        &header,
        cols.lesion.as_deref(),
        &LESION_COLUMNS,
        "lesion",
        csv,
    )?;

    let mut src = Source {
        description: format!(
            "manifest {} with images in {}",
            csv.display(),
            images.display()
        ),
        ..Default::default()
    };
    let mut seen = BTreeSet::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:line {}", csv.display(), i + 1);
        let fields = match split_csv_line(line) {
            Ok(f) => f,
            Err(e) => {
                src.problems.push(Problem {
                    path: at,
                    reason: e,
                });
                continue;
            }
        };
        let get = |c: usize| fields.get(c).map(|s| s.trim()).unwrap_or("");
        let (entry, label, group) = (get(ci), get(cl), get(cg));
        if entry.is_empty() {
            src.problems.push(Problem {
                path: at,
                reason: "empty image field".into(),
            });
            continue;
        }
        let Some(label_idx) = class_index(label) else {
            src.problems.push(Problem {
                path: at,
                reason: format!("unknown label {label:?} for image {entry:?}"),
            });
            continue;
        };
        if group.is_empty() {
            src.problems.push(Problem {
                path: at,
                reason: format!("empty group for image {entry:?}"),
            });
            continue;
        }
        let Some(path) = resolve_image(images, entry) else {
            src.problems.push(Problem {
                path: images.join(entry).display().to_string(),
                reason: format!("image file not found ({at})"),
            });
            continue;
        };
        if !seen.insert(path.clone()) {
            src.problems.push(Problem {
                path: path.display().to_string(),
                reason: format!("listed twice ({at})"),
            });
            continue;
        }
        let lesion = clz.map(get).filter(|s| !s.is_empty()).map(str::to_string);
        let id = Path::new(entry)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| entry.to_string());
        src.records.push(SourceRecord {
            id,
            path,
            label: label_idx,
            group: group.to_string(),
            lesion,
        });
    }
    Ok(src)
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        v.push(
            e.with_context(|| format!("listing {}", dir.display()))?
                .path(),
        );
    }
    v.sort();
    Ok(v)
}

/// Scans the ESFair layout `<root>/<group>/<class>/<image>`. Group folders
/// are any sub-folders; class folders must be one of [`super::CLASS_NAMES`]
/// (any case). Files without a `.jpg/.jpeg/.png` extension and unknown class
/// folders become [`Problem`]s; each image is its own lesion.
pub fn scan_esfair(root: &Path) -> Result<Source> {
    if !root.is_dir() {
        bail!("data root {} is not a folder", root.display());
    }
    let mut src = Source {
        description: format!("ESFair folders under {}", root.display()),
        ..Default::default()
    };
    for gdir in sorted_dir(root)? {
        if !gdir.is_dir() {
            continue;
        }
        let group = gdir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for cdir in sorted_dir(&gdir)? {
            if !cdir.is_dir() {
                src.problems.push(Problem {
                    path: cdir.display().to_string(),
                    reason: "file directly in a group folder (expected <group>/<class>/<image>)"
                        .into(),
                });
                continue;
            }
            let cname = cdir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Some(label) = class_index(&cname) else {
                src.problems.push(Problem {
                    path: cdir.display().to_string(),
                    reason: format!("unknown class folder {cname:?}"),
                });
                continue;
            };
            for f in sorted_dir(&cdir)? {
                if !f.is_file() {
                    continue;
                }
                if !has_image_extension(&f) {
                    src.problems.push(Problem {
                        path: f.display().to_string(),
                        reason: "not a .jpg/.jpeg/.png file".into(),
                    });
                    continue;
                }
                let id = f
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                src.records.push(SourceRecord {
                    id,
                    path: f,
                    label,
                    group: group.clone(),
                    lesion: None,
                });
            }
        }
    }
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(
            split_csv_line(r#"a,"b,c","d""e",,"#).unwrap(),
            ["a", "b,c", "d\"e", "", ""]
        );
        assert!(split_csv_line(r#"a,"b"#).is_err());
    }
}
