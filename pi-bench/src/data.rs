//! Labelled test images: an ESFair-layout folder (`<group>/<class>/*.jpg`) or a CSV manifest
//! (HAM10000's `metadata.csv` columns), decoded to RGB8 in memory.
//!
//! A file that does not decode, an unknown class, a stray file or a manifest row without its
//! image is named and skipped ([`Skipped`]), or an error with `strict`. Hidden files (a leading
//! dot, e.g. `.DS_Store`) are ignored silently. Nothing here panics on bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One decoded, labelled image.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Where it came from.
    pub path: PathBuf,
    /// Class index (in the model's class order).
    pub class: usize,
    /// Group index (into [`Dataset::groups`]).
    pub group: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB8, row-major.
    pub pixels: Vec<u8>,
}

/// A file or row that was left out, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// The file (or `manifest:line`).
    pub what: String,
    /// Why.
    pub reason: String,
}

/// Labelled images with their group names (naturally sorted: G6, G7, G10).
#[derive(Debug, Default)]
pub struct Dataset {
    /// Group names, naturally sorted.
    pub groups: Vec<String>,
    /// Decoded images.
    pub samples: Vec<Sample>,
    /// What was left out.
    pub skipped: Vec<Skipped>,
}

/// Orders strings with their digit runs compared as numbers (`G6 < G7 < G10`).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, x), (db, y)) in ca.iter().zip(&cb) {
        let o = if *da && *db {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn class_index(classes: &[&str], name: &str) -> Option<usize> {
    classes.iter().position(|c| c.eq_ignore_ascii_case(name))
}

/// Decodes an image file to RGB8 under size limits (a lying header is an error).
pub fn decode(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode_bytes(&bytes)
}

/// Decodes image file bytes (format sniffed from the content) to RGB8 under size limits; the
/// step `--mode end-to-end` times.
pub fn decode_bytes(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>)> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .context("sniffing the format")?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(512 << 20);
    reader.limits(limits);
    // into_rgb8 keeps an RGB8 decode (every JPEG photo) without a copy.
    let img = reader.decode().context("decoding")?.into_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    Ok((w, h, img.into_raw()))
}

struct Pending {
    path: PathBuf,
    class: usize,
    group: String,
}

fn finish(pending: Vec<Pending>, mut skipped: Vec<Skipped>, strict: bool) -> Result<Dataset> {
    let mut groups: Vec<String> = pending.iter().map(|p| p.group.clone()).collect();
    groups.sort_by(|a, b| natural_cmp(a, b));
    groups.dedup();
    let gi: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let mut samples = Vec::with_capacity(pending.len());
    for p in &pending {
        match decode(&p.path) {
            Ok((width, height, pixels)) => samples.push(Sample {
                path: p.path.clone(),
                class: p.class,
                group: gi[p.group.as_str()],
                width,
                height,
                pixels,
            }),
            Err(e) => skipped.push(Skipped {
                what: p.path.display().to_string(),
                reason: format!("{e:#}"),
            }),
        }
    }
    if strict && !skipped.is_empty() {
        let list: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.what, s.reason))
            .collect();
        bail!(
            "{} file(s) or row(s) unusable (--strict):\n  {}",
            skipped.len(),
            list.join("\n  ")
        );
    }
    if samples.is_empty() {
        bail!("no usable labelled image ({} skipped)", skipped.len());
    }
    Ok(Dataset {
        groups,
        samples,
        skipped,
    })
}

/// Reads an ESFair-layout folder `root/<group>/<class>/<image>`.
pub fn load_folder(root: &Path, classes: &[&str], strict: bool) -> Result<Dataset> {
    let mut pending = Vec::new();
    let mut skipped = Vec::new();
    let read = |p: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading folder {}", p.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", p.display()))?;
        v.retain(|p| !is_hidden(p));
        v.sort();
        Ok(v)
    };
    for gdir in read(root)? {
        let Some(group) = gdir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !gdir.is_dir() {
            skipped.push(Skipped {
                what: gdir.display().to_string(),
                reason: "stray file where a group folder belongs".into(),
            });
            continue;
        }
        for cdir in read(&gdir)? {
            let cname = cdir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !cdir.is_dir() {
                skipped.push(Skipped {
                    what: cdir.display().to_string(),
                    reason: "stray file where a class folder belongs".into(),
                });
                continue;
            }
            let Some(class) = class_index(classes, cname) else {
                skipped.push(Skipped {
                    what: cdir.display().to_string(),
                    reason: format!("unknown class folder {cname:?} (classes: {classes:?})"),
                });
                continue;
            };
            for f in read(&cdir)? {
                if f.is_dir() {
                    skipped.push(Skipped {
                        what: f.display().to_string(),
                        reason: "folder inside a class folder".into(),
                    });
                    continue;
                }
                pending.push(Pending {
                    path: f,
                    class,
                    group: group.clone(),
                });
            }
        }
    }
    finish(pending, skipped, strict)
}

/// Splits one CSV line, honouring double quotes (`""` inside quotes is a quote).
pub fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Reads a CSV manifest with an image column (`image_id|image|path|file|filename|id`, looked
/// up as `<images>/<id>` or `<images>/<id>.jpg|.jpeg|.png`), a label column
/// (`paper_label|label|class`) and a `group` column.
pub fn load_manifest(csv: &Path, images: &Path, classes: &[&str], strict: bool) -> Result<Dataset> {
    let text = std::fs::read_to_string(csv)
        .with_context(|| format!("reading manifest {}", csv.display()))?;
    let mut lines = text.lines();
    let header = split_csv(lines.next().unwrap_or(""));
    let col = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| header.iter().position(|h| h.trim().eq_ignore_ascii_case(n)))
    };
    let (Some(ic), Some(lc), Some(gc)) = (
        col(&["image_id", "image", "path", "file", "filename", "id"]),
        col(&["paper_label", "label", "class"]),
        col(&["group"]),
    ) else {
        bail!(
            "{}: needs an image, a label and a group column; header is {header:?}",
            csv.display()
        );
    };
    let mut pending = Vec::new();
    let mut skipped = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let what = format!("{}:{}", csv.display(), n + 2);
        let f = split_csv(line);
        let (Some(id), Some(label), Some(group)) = (f.get(ic), f.get(lc), f.get(gc)) else {
            skipped.push(Skipped {
                what,
                reason: "too few columns".into(),
            });
            continue;
        };
        let Some(class) = class_index(classes, label.trim()) else {
            skipped.push(Skipped {
                what,
                reason: format!("unknown label {label:?} (classes: {classes:?})"),
            });
            continue;
        };
        if group.trim().is_empty() {
            skipped.push(Skipped {
                what,
                reason: "empty group".into(),
            });
            continue;
        }
        let id = id.trim();
        let found = [
            images.join(id),
            images.join(format!("{id}.jpg")),
            images.join(format!("{id}.jpeg")),
            images.join(format!("{id}.png")),
        ]
        .into_iter()
        .find(|p| p.is_file());
        let Some(path) = found else {
            skipped.push(Skipped {
                what,
                reason: format!("no image {id:?} in {}", images.display()),
            });
            continue;
        };
        pending.push(Pending {
            path,
            class,
            group: group.trim().to_owned(),
        });
    }
    finish(pending, skipped, strict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_sort_naturally() {
        let mut g = vec!["G10", "G7", "G6", "G8", "age40-54", "age00-39"];
        g.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(g, ["G6", "G7", "G8", "G10", "age00-39", "age40-54"]);
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(split_csv(r#"a,"b,c",d"#), ["a", "b,c", "d"]);
        assert_eq!(split_csv(r#""x""y",,"#), ["x\"y", "", ""]);
    }

    #[test]
    fn bad_files_are_named_and_skipped() {
        let dir = std::env::temp_dir().join(format!("pi-bench-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nv = dir.join("G10").join("NV");
        std::fs::create_dir_all(&nv).unwrap();
        std::fs::create_dir_all(dir.join("G6").join("dog")).unwrap();
        let img = image::RgbImage::from_pixel(4, 3, image::Rgb([200, 100, 50]));
        img.save(nv.join("ok.png")).unwrap();
        std::fs::write(nv.join("broken.jpg"), b"not a jpeg").unwrap();
        std::fs::write(nv.join(".DS_Store"), b"junk").unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
        let classes = ["BCC", "NV"];
        let d = load_folder(&dir, &classes, false).unwrap();
        assert_eq!(d.samples.len(), 1);
        assert_eq!((d.samples[0].width, d.samples[0].class), (4, 1));
        let reasons: Vec<&str> = d.skipped.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(d.skipped.len(), 3, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.ends_with("broken.jpg")));
        assert!(reasons.iter().any(|r| r.ends_with("dog")));
        assert!(reasons.iter().any(|r| r.ends_with("notes.txt")));
        let err = load_folder(&dir, &classes, true).unwrap_err().to_string();
        assert!(
            err.contains("broken.jpg") && err.contains("--strict"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
