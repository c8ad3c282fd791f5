//! Data pipeline tests: real HAM10000 metadata and a few real images, bad
//! files generated at test time, balancing counts and the loader's noise.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use derm_codegen::ir::Crop;
use derm_train::data::augment::{Augment, CropRange, Jitter};
use derm_train::data::balance::{BalanceConfig, BalancePlan, Preset};
use derm_train::data::cache::{Cache, CacheWriter, SampleMeta};
use derm_train::data::decode::{DecodeLimits, decode_bytes};
use derm_train::data::loader::{Batches, LoaderOptions, normalize_lut};
use derm_train::data::manifest::{ManifestColumns, read_manifest, scan_esfair, split_csv_line};
use derm_train::data::prepare::{PrepareOptions, prepare};
use derm_train::data::split::kfold_by;
use derm_train::data::{NUM_CLASSES, class_index};
use image::codecs::jpeg::JpegEncoder;
use image::{ImageBuffer, ImageEncoder, Luma, Rgb};

#[path = "common/data_dir.rs"]
mod data_dir;

fn ham() -> PathBuf {
    data_dir::ham_data().0
}

struct Meta {
    ids: Vec<String>,
    labels: Vec<usize>,
    groups: Vec<usize>,
    lesions: Vec<usize>,
}

fn ham_metadata() -> Meta {
    let text = std::fs::read_to_string(ham().join("metadata.csv")).unwrap();
    let mut lines = text.lines();
    let header = split_csv_line(lines.next().unwrap()).unwrap();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let (ci, cl, cg, cz) = (
        col("image_id"),
        col("paper_label"),
        col("group"),
        col("lesion_id"),
    );
    let (mut gmap, mut lmap) = (HashMap::new(), HashMap::new());
    let mut m = Meta {
        ids: vec![],
        labels: vec![],
        groups: vec![],
        lesions: vec![],
    };
    for line in lines {
        let f = split_csv_line(line).unwrap();
        m.ids.push(f[ci].clone());
        m.labels.push(class_index(&f[cl]).unwrap());
        let n = gmap.len();
        m.groups.push(*gmap.entry(f[cg].clone()).or_insert(n));
        let n = lmap.len();
        m.lesions.push(*lmap.entry(f[cz].clone()).or_insert(n));
    }
    m
}

#[test]
fn ham_folds_never_share_a_lesion_and_are_stratified() {
    let m = ham_metadata();
    // The data set's pinned size, or the fixture's.
    let want = if data_dir::ham_data().1 { 8077 } else { 48 };
    assert_eq!(m.labels.len(), want);
    let k = 5;
    for seed in [0, 1] {
        let folds = kfold_by(&m.labels, &m.groups, &m.lesions, k, seed).unwrap();
        let mut times_in_val = vec![0; m.labels.len()];
        for (f, fold) in folds.iter().enumerate() {
            let val: HashSet<usize> = fold.val.iter().map(|&i| m.lesions[i]).collect();
            let train: HashSet<usize> = fold.train.iter().map(|&i| m.lesions[i]).collect();
            assert!(
                val.is_disjoint(&train),
                "seed {seed} fold {f}: a lesion is on both sides"
            );
            assert_eq!(fold.train.len() + fold.val.len(), m.labels.len());
            fold.val.iter().for_each(|&i| times_in_val[i] += 1);
            // Each class within a few images of its fair share.
            for c in 0..NUM_CLASSES {
                let total = m.labels.iter().filter(|&&l| l == c).count() as f64;
                let here = fold.val.iter().filter(|&&i| m.labels[i] == c).count() as f64;
                let share = total / k as f64;
                assert!(
                    (here - share).abs() <= 4.0 + 0.02 * share,
                    "seed {seed} fold {f} class {c}: {here} vs {share:.1}"
                );
            }
        }
        assert!(
            times_in_val.iter().all(|&t| t == 1),
            "every image validates exactly once"
        );
    }
}

/// A manifest of `n` real HAM10000 images (every class represented).
fn ham_subset_manifest(dir: &Path, n_per_class: usize) -> (PathBuf, Vec<String>) {
    let m = ham_metadata();
    let text = std::fs::read_to_string(ham().join("metadata.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![lines[0].to_string()];
    let mut ids = vec![];
    for c in 0..NUM_CLASSES {
        for i in (0..m.labels.len())
            .filter(|&i| m.labels[i] == c)
            .take(n_per_class)
        {
            out.push(lines[i + 1].to_string());
            ids.push(m.ids[i].clone());
        }
    }
    let p = dir.join("subset.csv");
    std::fs::write(&p, out.join("\n")).unwrap();
    (p, ids)
}

#[test]
fn prepare_a_real_subset_then_load_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let (csv, ids) = ham_subset_manifest(tmp.path(), 4);
    let src = read_manifest(&csv, &ham().join("images"), &ManifestColumns::default()).unwrap();
    assert_eq!(src.records.len(), 24);
    assert!(src.problems.is_empty());
    let out = tmp.path().join("cache");
    let opts = PrepareOptions {
        size: 32,
        ..Default::default()
    };
    let (cache, summary) = prepare(src, &out, &opts).unwrap();
    assert_eq!(cache.len(), 24);
    assert!(summary.skipped.is_empty());
    assert_eq!(
        summary
            .counts
            .iter()
            .map(|g| g.iter().sum::<usize>())
            .sum::<usize>(),
        24
    );
    let cache = Cache::open(&out).unwrap();
    assert_eq!(cache.image_size(), 32);
    assert_eq!(
        (0..24).map(|i| cache.id(i).to_string()).collect::<Vec<_>>(),
        ids
    );
    for c in 0..NUM_CLASSES {
        assert_eq!(cache.labels().iter().filter(|&&l| l == c).count(), 4);
    }
    // Mean/std in the index agree with the stored bytes.
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    for i in 0..cache.len() {
        for px in cache.image(i).unwrap().chunks(3) {
            for c in 0..3 {
                let v = px[c] as f64 / 255.0;
                sum[c] += v;
                sq[c] += v * v;
            }
        }
    }
    let n = (24 * 32 * 32) as f64;
    for c in 0..3 {
        let mean = sum[c] / n;
        let std = (sq[c] / n - mean * mean).sqrt();
        assert!((cache.mean()[c] as f64 - mean).abs() < 1e-5);
        assert!((cache.std()[c] as f64 - std).abs() < 1e-5);
    }
    // Skin-coloured dermoscopy: red brighter than blue.
    assert!(cache.mean()[0] > cache.mean()[2]);
    assert_eq!(cache.crop(), Crop::Centre);

    // Loader: shapes, labels, normalization, resize, determinism, resume.
    let plan = BalancePlan::plain(&(0..24).collect::<Vec<_>>());
    let eval: Vec<_> = Batches::new(&cache, &plan, LoaderOptions::eval(10), 0)
        .unwrap()
        .collect();
    assert_eq!(eval.len(), 3);
    let b0 = eval[0].as_ref().unwrap();
    assert_eq!(b0.images.size(), [10, 3, 32, 32]);
    assert_eq!(
        Vec::<i64>::try_from(&b0.labels).unwrap(),
        cache.labels()[..10]
            .iter()
            .map(|&l| l as i64)
            .collect::<Vec<_>>()
    );
    let lut = normalize_lut(cache.mean(), cache.std());
    let px = cache.image(0).unwrap();
    let v = b0.images.double_value(&[0, 1, 2, 3]);
    assert!((v - lut[1][px[(2 * 32 + 3) * 3 + 1] as usize] as f64).abs() < 1e-6);

    let mut o = LoaderOptions::train(8, 42);
    o.train_size = Some(16);
    let run = |epoch| -> Vec<Vec<f32>> {
        Batches::new(&cache, &plan, o, epoch)
            .unwrap()
            .map(|b| Vec::<f32>::try_from(b.unwrap().images.flatten(0, -1)).unwrap())
            .collect()
    };
    let e0 = run(0);
    assert_eq!(e0.len(), 3);
    assert_eq!(e0[0].len(), 8 * 3 * 16 * 16);
    assert_eq!(e0, run(0), "same (seed, epoch), same batches");
    assert_ne!(e0, run(1), "a new epoch reshuffles");
    let mut it = Batches::new(&cache, &plan, o, 0).unwrap();
    it.next().unwrap().unwrap();
    let state = it.state();
    assert_eq!(state.position, 8);
    let resumed: Vec<Vec<f32>> = Batches::resume(&cache, &plan, o, state)
        .unwrap()
        .map(|b| Vec::<f32>::try_from(b.unwrap().images.flatten(0, -1)).unwrap())
        .collect();
    assert_eq!(resumed, e0[1..], "resume continues with identical batches");

    // Augmentation: same determinism and resume property, and it really changes the pixels.
    let mut a = o;
    a.augment = Augment {
        dihedral: true,
        crop: Some(CropRange {
            scale: (0.35, 1.0),
            ratio: (0.75, 4.0 / 3.0),
        }),
        jitter: Some(Jitter {
            brightness: 0.1,
            contrast: 0.1,
            saturation: 0.1,
        }),
    };
    let run_aug = |epoch| -> Vec<Vec<f32>> {
        Batches::new(&cache, &plan, a, epoch)
            .unwrap()
            .map(|b| Vec::<f32>::try_from(b.unwrap().images.flatten(0, -1)).unwrap())
            .collect()
    };
    let a0 = run_aug(0);
    assert_eq!(a0.len(), 3);
    assert_eq!(a0[0].len(), 8 * 3 * 16 * 16);
    assert!(a0.iter().flatten().all(|v| v.is_finite()));
    assert_eq!(a0, run_aug(0), "augmented batches are reproducible");
    assert_ne!(a0, e0, "augmentation changes the batches");
    let mut it = Batches::new(&cache, &plan, a, 0).unwrap();
    it.next().unwrap().unwrap();
    let resumed: Vec<Vec<f32>> = Batches::resume(&cache, &plan, a, it.state())
        .unwrap()
        .map(|b| Vec::<f32>::try_from(b.unwrap().images.flatten(0, -1)).unwrap())
        .collect();
    assert_eq!(resumed, a0[1..], "resume replays the same augmentation");
    let mut bad = a;
    bad.augment.crop = Some(CropRange {
        scale: (0.5, 2.0),
        ratio: (0.75, 1.33),
    });
    let err = Batches::new(&cache, &plan, bad, 0).unwrap_err().to_string();
    assert!(err.contains("crop scale"), "{err}");
}

/// `--crop none`: the tiles are the whole photos squashed, the index says so, and an index
/// written before the field existed reads as centre squares.
#[test]
fn prepare_whole_photos_records_the_crop() {
    let tmp = tempfile::tempdir().unwrap();
    let (csv, _) = ham_subset_manifest(tmp.path(), 1);
    let src = read_manifest(&csv, &ham().join("images"), &ManifestColumns::default()).unwrap();
    let out = tmp.path().join("whole");
    let opts = PrepareOptions {
        size: 32,
        crop: Crop::None,
        ..Default::default()
    };
    let (_, summary) = prepare(src.clone(), &out, &opts).unwrap();
    assert_eq!(summary.crop, Crop::None);
    let cache = Cache::open(&out).unwrap();
    assert_eq!(cache.crop(), Crop::None);
    assert_eq!(cache.len(), NUM_CLASSES);
    for (i, r) in src.records.iter().enumerate() {
        let bytes = std::fs::read(&r.path).unwrap();
        let whole = decode_bytes(&bytes, 32, Crop::None, DecodeLimits::default()).unwrap();
        let centre = decode_bytes(&bytes, 32, Crop::Centre, DecodeLimits::default()).unwrap();
        let tile = cache.image(i).unwrap();
        assert_eq!(tile, whole, "{}", r.id);
        // HAM10000 photos are 200x150: the centre square drops a quarter of the width.
        assert_ne!(tile, centre, "{}", r.id);
    }
    let index_path = out.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    assert_eq!(index["crop"], "none");
    index.as_object_mut().unwrap().remove("crop");
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    assert_eq!(Cache::open(&out).unwrap().crop(), Crop::Centre);
}

fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    let mut v = Vec::new();
    JpegEncoder::new_with_quality(&mut v, 90)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    v
}

/// A baseline 8x8 four-component (Adobe CMYK) JPEG with one flat colour:
/// image's encoder cannot write CMYK, so the bitstream is built here (quant
/// table of ones, DC-only blocks).
fn cmyk_jpeg(cmyk: [u8; 4]) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    v.extend([0xFF, 0xEE, 0, 14]);
    v.extend(b"Adobe");
    v.extend([0, 100, 0, 0, 0, 0, 0]);
    v.extend([0xFF, 0xDB, 0, 67, 0]);
    v.extend([1u8; 64]);
    v.extend([0xFF, 0xC0, 0, 20, 8, 0, 8, 0, 8, 4]);
    for id in 1..=4 {
        v.extend([id, 0x11, 0]);
    }
    // DC table: categories 0..=11, all 4-bit codes (code = category).
    v.extend([0xFF, 0xC4, 0, 31, 0x00, 0, 0, 0, 12]);
    v.extend([0u8; 12]);
    v.extend(0u8..12);
    // AC table: only end-of-block, code "0".
    v.extend([0xFF, 0xC4, 0, 20, 0x10, 1]);
    v.extend([0u8; 15]);
    v.push(0x00);
    v.extend([0xFF, 0xDA, 0, 14, 4]);
    for id in 1..=4 {
        v.extend([id, 0x00]);
    }
    v.extend([0, 63, 0]);
    let mut bits: Vec<bool> = vec![];
    let put = |val: u32, n: u32, bits: &mut Vec<bool>| {
        for k in (0..n).rev() {
            bits.push(val >> k & 1 == 1);
        }
    };
    for &c in &cmyk {
        let diff = 8 * (c as i32 - 128);
        let cat = 32 - diff.unsigned_abs().leading_zeros();
        put(cat, 4, &mut bits);
        let extra = if diff >= 0 {
            diff as u32
        } else {
            (diff + (1 << cat) - 1) as u32
        };
        put(extra, cat, &mut bits);
        put(0, 1, &mut bits);
    }
    while !bits.len().is_multiple_of(8) {
        bits.push(true);
    }
    for byte in bits.chunks(8) {
        let b = byte.iter().fold(0u8, |a, &x| a << 1 | x as u8);
        v.push(b);
        if b == 0xFF {
            v.push(0);
        }
    }
    v.extend([0xFF, 0xD9]);
    v
}

/// Inserts an EXIF APP1 segment with the given orientation after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes());
    tiff.extend(1u16.to_le_bytes());
    tiff.extend(0x0112u16.to_le_bytes());
    tiff.extend(3u16.to_le_bytes());
    tiff.extend(1u32.to_le_bytes());
    tiff.extend((orientation as u32).to_le_bytes());
    tiff.extend(0u32.to_le_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut v = jpeg[..2].to_vec();
    v.extend([0xFF, 0xE1]);
    v.extend(((app1.len() + 2) as u16).to_be_bytes());
    v.extend(app1);
    v.extend(&jpeg[2..]);
    v
}

#[test]
fn bad_files_are_reported_by_name_and_good_ones_load() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("esfair");
    let nv = root.join("groupA").join("NV");
    let mel = root.join("groupB").join("MEL");
    std::fs::create_dir_all(&nv).unwrap();
    std::fs::create_dir_all(&mel).unwrap();
    let real = std::fs::read(ham().join("images/ISIC_0024306.jpg")).unwrap();
    std::fs::write(nv.join("good.jpg"), &real).unwrap();
    std::fs::write(nv.join("truncated.jpg"), &real[..real.len() / 2]).unwrap();
    std::fs::write(nv.join("zero.jpg"), b"").unwrap();
    std::fs::write(nv.join("text.jpg"), b"this is a text file, not a JPEG\n").unwrap();
    std::fs::write(mel.join("cmyk.jpg"), cmyk_jpeg([200, 50, 50, 128])).unwrap();
    let png16: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(40, 30, |x, _| Rgb([(x * 1600) as u16, 30_000, 65_535]));
    png16.save(mel.join("deep.png")).unwrap();
    let big: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_pixel(6000, 4000, Luma([90]));
    let mut big_jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut big_jpeg, 50)
        .write_image(big.as_raw(), 6000, 4000, image::ExtendedColorType::L8)
        .unwrap();
    std::fs::write(mel.join("big.jpg"), big_jpeg).unwrap();
    std::fs::write(mel.join("notes.txt"), b"not an image extension").unwrap();

    let src = scan_esfair(&root).unwrap();
    assert_eq!(src.records.len(), 7);
    let out = tmp.path().join("cache");
    let strict = PrepareOptions {
        size: 24,
        strict: true,
        ..Default::default()
    };
    let err = format!("{:#}", prepare(src.clone(), &out, &strict).unwrap_err());
    assert!(err.contains("notes.txt"), "{err}");

    let opts = PrepareOptions {
        size: 24,
        ..Default::default()
    };
    let (cache, summary) = prepare(src.clone(), &out, &opts).unwrap();
    let ids: HashSet<&str> = (0..cache.len()).map(|i| cache.id(i)).collect();
    assert_eq!(ids, HashSet::from(["good", "cmyk", "deep", "big"]));
    let skipped: HashMap<String, String> = summary
        .skipped
        .iter()
        .map(|p| {
            (
                Path::new(&p.path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                p.reason.clone(),
            )
        })
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert!(
        skipped["truncated.jpg"].contains("truncated"),
        "{skipped:?}"
    );
    assert!(skipped["zero.jpg"].contains("empty"), "{skipped:?}");
    assert!(skipped["text.jpg"].contains("not an image"), "{skipped:?}");
    assert!(skipped.contains_key("notes.txt"));
    let at = |id: &str| (0..cache.len()).find(|&i| cache.id(i) == id).unwrap();
    // CMYK became a non-grey RGB colour; the grey 6000x4000 stayed grey.
    let c = cache.image(at("cmyk")).unwrap();
    assert!(
        c[0] != c[1] || c[1] != c[2],
        "CMYK decoded to grey {:?}",
        &c[..3]
    );
    let b = cache.image(at("big")).unwrap();
    assert!(b.iter().all(|&v| (85..=95).contains(&v)));
    // 16-bit 65535 blue -> 255; 30000 green -> 30000/257.
    let d = cache.image(at("deep")).unwrap();
    assert_eq!(d[2], 255);
    assert!((d[1] as i32 - 117).abs() <= 1, "{}", d[1]);

    // Strict without the non-image file still fails, naming every bad file.
    std::fs::remove_file(mel.join("notes.txt")).unwrap();
    let err = format!(
        "{:#}",
        prepare(scan_esfair(&root).unwrap(), &tmp.path().join("c2"), &strict).unwrap_err()
    );
    for f in ["truncated.jpg", "zero.jpg", "text.jpg"] {
        assert!(err.contains(f), "{f} missing from: {err}");
    }
    assert!(!tmp.path().join("c2/index.json").exists());
}

#[test]
fn exif_orientation_is_applied() {
    // Left half red, right half blue, 40x20. Rotated 90 degrees clockwise
    // (orientation 6) it is 20x40 with red on top, so the centre crop has
    // red on top and blue below; unrotated it is red left, blue right.
    let img = ImageBuffer::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let plain = jpeg(&img);
    let s = 20usize;
    let px = |v: &[u8], x: usize, y: usize| [v[(y * s + x) * 3], v[(y * s + x) * 3 + 2]];
    let upright = decode_bytes(&plain, 20, Crop::Centre, DecodeLimits::default()).unwrap();
    assert!(px(&upright, 2, 10)[0] > 200 && px(&upright, 17, 10)[1] > 200);
    let rotated = decode_bytes(
        &with_exif_orientation(&plain, 6),
        20,
        Crop::Centre,
        DecodeLimits::default(),
    )
    .unwrap();
    assert!(px(&rotated, 10, 2)[0] > 200, "top should be red");
    assert!(px(&rotated, 10, 17)[1] > 200, "bottom should be blue");
}

#[test]
fn oversized_images_are_refused_not_allocated() {
    let big: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_pixel(300, 200, Luma([0]));
    let mut v = Vec::new();
    JpegEncoder::new(&mut v)
        .write_image(big.as_raw(), 300, 200, image::ExtendedColorType::L8)
        .unwrap();
    let tight = DecodeLimits {
        max_side: 256,
        max_alloc: 1 << 30,
    };
    let e = decode_bytes(&v, 16, Crop::Centre, tight)
        .unwrap_err()
        .to_string();
    assert!(e.contains("limit") || e.contains("large"), "{e}");
}

#[test]
fn balancing_counts_for_each_preset() {
    // Two groups; group 0 has every class (NV large), group 1 lacks VASC.
    let mut labels = vec![];
    let mut groups = vec![];
    let g0 = [30, 20, 10, 5000, 3, 1];
    let g1 = [2, 2, 2, 100, 2600, 0];
    for (g, counts) in [g0, g1].iter().enumerate() {
        for (c, &n) in counts.iter().enumerate() {
            labels.extend(std::iter::repeat_n(c, n));
            groups.extend(std::iter::repeat_n(g, n));
        }
    }
    let train: Vec<usize> = (0..labels.len()).collect();
    let cell_count = |plan: &BalancePlan, g: usize, c: usize, noise: bool| {
        plan.slots
            .iter()
            .filter(|s| groups[s.index] == g && labels[s.index] == c && s.noise == noise)
            .count()
    };
    for preset in Preset::ALL {
        let cfg = preset.config();
        let plan = BalancePlan::new_by(&labels, &groups, 2, &train, &cfg, 9);
        let targets: Option<[usize; 6]> = match preset {
            Preset::S1 => None,
            Preset::S2 | Preset::S3 => Some([2500; 6]),
            Preset::S4 | Preset::S5 => Some([4000, 4000, 4000, 4000, 2500, 2500]),
        };
        let sigma = match preset {
            Preset::S1 => 0.0,
            Preset::S2 | Preset::S4 => 0.03,
            Preset::S3 | Preset::S5 => 0.05,
        };
        assert_eq!(plan.sigma, sigma, "{preset}");
        for (g, counts) in [g0, g1].iter().enumerate() {
            for c in 0..NUM_CLASSES {
                let n = counts[c];
                assert_eq!(cell_count(&plan, g, c, false), n, "{preset} originals kept");
                let want = match targets {
                    Some(t) if n > 0 => t[c].saturating_sub(n),
                    _ => 0,
                };
                assert_eq!(
                    cell_count(&plan, g, c, true),
                    want,
                    "{preset} g{g} c{c} copies"
                );
            }
        }
    }
    // --scale and custom targets.
    let cfg = BalanceConfig::new(Preset::S4, None, None, 0.01).unwrap();
    let plan = BalancePlan::new_by(&labels, &groups, 2, &train, &cfg, 9);
    assert_eq!(cell_count(&plan, 0, 0, true), 40 - 30);
    assert_eq!(cell_count(&plan, 0, 5, true), 25 - 1);
    assert_eq!(cell_count(&plan, 1, 4, true), 0);
    let cfg = BalanceConfig::new(Preset::S1, Some([10, 0, 0, 0, 0, 7]), Some(0.1), 1.0).unwrap();
    let plan = BalancePlan::new_by(&labels, &groups, 2, &train, &cfg, 9);
    assert_eq!(plan.num_copies(), (10 - 2) + (7 - 1));
    assert!(
        BalanceConfig::new(Preset::S1, Some([1; 6]), None, 1.0).is_err(),
        "custom targets need a sigma"
    );
    // Copies are spread: 8 copies of 2 originals = 4 each.
    let copies: Vec<usize> = plan
        .slots
        .iter()
        .filter(|s| s.noise && groups[s.index] == 1)
        .map(|s| s.index)
        .collect();
    assert_eq!(copies.len(), 8);
    let distinct: HashSet<usize> = copies.iter().copied().collect();
    assert_eq!(distinct.len(), 2);
    assert!(
        distinct
            .iter()
            .all(|d| copies.iter().filter(|&&x| x == *d).count() == 4)
    );
}

#[test]
fn noise_copies_get_fresh_gaussian_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let s = 16;
    let mut w = CacheWriter::create(tmp.path(), s).unwrap();
    for i in 0..8 {
        let v = if i % 2 == 0 { 60u8 } else { 200 };
        let meta = SampleMeta {
            id: format!("s{i}"),
            source: String::new(),
            label: 5,
            group: 0,
            lesion: format!("l{i}"),
        };
        w.push(meta, &vec![v; s * s * 3]).unwrap();
    }
    let cache = w
        .finish(vec!["g".into()], vec![], "synthetic".into())
        .unwrap();
    let sigma = 0.05f32;
    let cfg = BalanceConfig::new(Preset::S1, Some([0, 0, 0, 0, 0, 72]), Some(sigma), 1.0).unwrap();
    let plan = BalancePlan::new(&cache, &(0..8).collect::<Vec<_>>(), &cfg, 1);
    assert_eq!((plan.len(), plan.num_copies()), (72, 64));
    let lut = normalize_lut(cache.mean(), cache.std());
    let mut opts = LoaderOptions::train(12, 5);
    opts.flip = false;
    let (mut added, mut zero_rows) = (Vec::<f64>::new(), 0);
    let mut first_copy_values = HashSet::new();
    for epoch in 0..2 {
        for b in Batches::new(&cache, &plan, opts, epoch).unwrap() {
            let b = b.unwrap();
            let imgs = Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap();
            for (k, chunk) in imgs.chunks(3 * s * s).enumerate() {
                let v = cache.image(b.indices[k]).unwrap()[0] as usize;
                let diff: Vec<f64> = chunk.iter().map(|&x| (x - lut[0][v]) as f64).collect();
                if b.noise[k] {
                    // Per-channel clean values differ; channel 0 is enough.
                    added.extend(&diff[..s * s]);
                    first_copy_values.insert(chunk[0].to_bits());
                } else {
                    assert!(
                        diff[..s * s].iter().all(|d| d.abs() < 1e-6),
                        "originals get no noise"
                    );
                    zero_rows += 1;
                }
            }
        }
    }
    assert_eq!(zero_rows, 16);
    let n = added.len() as f64;
    let mean = added.iter().sum::<f64>() / n;
    let std = (added.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.003, "noise mean {mean}");
    assert!((std - sigma as f64).abs() < 0.002, "noise std {std}");
    // Every draw of a copy is fresh noise, not a stored pattern.
    assert_eq!(first_copy_values.len(), 128);
}

#[test]
fn manifest_problems_name_the_row() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("m.csv");
    std::fs::write(
        &csv,
        "image_id,paper_label,group,lesion_id\nISIC_0024306,NV,g1,L1\nISIC_0024306,NV,g1,L1\nmissing_img,NV,g1,L2\nISIC_0024307,akiec,g1,L3\nISIC_0024310,MEL,,L4\n",
    )
    .unwrap();
    let src = read_manifest(&csv, &ham().join("images"), &ManifestColumns::default()).unwrap();
    assert_eq!(src.records.len(), 1);
    let reasons: Vec<String> = src
        .problems
        .iter()
        .map(|p| format!("{} {}", p.path, p.reason))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("listed twice"));
    assert!(reasons[1].contains("missing_img") && reasons[1].contains("not found"));
    assert!(reasons[2].contains("akiec") && reasons[2].contains("line 5"));
    assert!(reasons[3].contains("empty group"));
    let cols = ManifestColumns {
        label: Some("nope".into()),
        ..Default::default()
    };
    assert!(
        read_manifest(&csv, &ham().join("images"), &cols)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}

#[test]
fn holdout_refuses_shared_lesions_and_maps_groups() {
    use derm_train::data::split::holdout;
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str, lesions: &[&str], groups: Vec<String>| {
        let mut w = CacheWriter::create(tmp.path().join(name), 2).unwrap();
        for (i, l) in lesions.iter().enumerate() {
            let meta = SampleMeta {
                id: format!("{name}{i}"),
                source: String::new(),
                label: i % NUM_CLASSES,
                group: i % groups.len(),
                lesion: l.to_string(),
            };
            w.push(meta, &[0; 12]).unwrap();
        }
        w.finish(groups, vec![], name.into()).unwrap()
    };
    let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let train = make("train", &["L1", "L2", "L2", "L3"], g(&["a", "b"]));
    let test = make("test", &["L4", "L5"], g(&["b", "c"]));
    let h = holdout(&train, &test).unwrap();
    assert_eq!(h.train, [0, 1, 2, 3]);
    assert_eq!(h.test, [0, 1]);
    assert_eq!(h.test_group_in_train, [Some(1), None]);
    let leaky = make("leaky", &["L9", "L2"], g(&["a"]));
    let e = holdout(&train, &leaky).unwrap_err().to_string();
    assert!(e.contains("L2") && e.contains("both"), "{e}");
}
