//! The timed part of `pi-bench`: what one image's work is in each [`Mode`], and each
//! iteration's images split among worker threads, every worker with its own [`Arena`].
//!
//! [`run_batch`] is generic over the work and the per-worker state so the split can be tested
//! without the model; [`Input::work`] is the embedded model's work in each mode.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use derm_runtime::{Arena, CENTRE_CROP, INPUT_LEN, NUM_CLASSES, classify, run};

use crate::data;

/// What is timed for each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The network alone ([`derm_runtime::run`]) on preprocessed input tensors already in
    /// memory, as the paper times it.
    Model,
    /// From decoded RGB8 pixels in memory: crop, resize, normalize, network and softmax
    /// ([`derm_runtime::classify`]). What pi-bench has always timed, so the default.
    #[default]
    Classify,
    /// From the encoded image bytes in memory (JPEG for ESFair and HAM10000): decode, then
    /// [`derm_runtime::classify`].
    EndToEnd,
}

impl Mode {
    /// Every mode, in the order of their names in help texts.
    pub const ALL: [Mode; 3] = [Mode::Model, Mode::Classify, Mode::EndToEnd];

    /// The name `--mode` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Model => "model",
            Mode::Classify => "classify",
            Mode::EndToEnd => "end-to-end",
        }
    }

    /// The call timed per image, short: `run`, `classify` or `decode + classify` (the
    /// JSON's `protocol.stage`, which was always `classify` before there were modes).
    pub fn call(self) -> &'static str {
        match self {
            Mode::Model => "run",
            Mode::Classify => "classify",
            Mode::EndToEnd => "decode + classify",
        }
    }

    /// What one timed image includes, for headers and reports.
    pub fn stage(self) -> String {
        let crop = if CENTRE_CROP { "centre crop + " } else { "" };
        match self {
            Mode::Model => "preprocessed input tensor in memory -> network".into(),
            Mode::Classify => {
                format!("decoded RGB8 in memory -> {crop}resize + normalize + network + softmax")
            }
            Mode::EndToEnd => format!(
                "image bytes in memory -> decode + {crop}resize + normalize + network + softmax"
            ),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    /// A mode by name, ignoring ASCII case (`model`, `classify`, `end-to-end`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mode {s:?}: use one of {}", names.join(", "))
            })
    }
}

/// Splits `n` items into `workers` contiguous ranges whose lengths differ by at most one, in
/// order; empty when `workers` is 0. Contiguous so each worker walks its images in memory
/// order, as the single-threaded protocol does.
pub fn split(n: usize, workers: usize) -> Vec<Range<usize>> {
    (0..workers)
        .map(|w| w * n / workers..(w + 1) * n / workers)
        .collect()
}

/// One timed image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageTime {
    /// Index of the image in the batch.
    pub index: usize,
    /// The worker (and state) that ran it.
    pub worker: usize,
    /// Milliseconds of the work on this image alone.
    pub ms: f64,
}

/// One batch (one iteration of the protocol).
#[derive(Debug, Clone)]
pub struct Batch<R> {
    /// Wall time of the whole batch in seconds, from before the workers start to after the
    /// last one finishes.
    pub wall_s: f64,
    /// Each image's time, in worker order then image order.
    pub times: Vec<ImageTime>,
    /// Each image's result, indexed like the items.
    pub outputs: Vec<R>,
}

/// Runs `work` once on every item, `states.len()` workers in parallel (scoped threads; on
/// the calling thread when there is one, so one worker measures exactly what the
/// single-threaded protocol always did). Worker `w` owns `states[w]` and the items of
/// [`split`]`(items.len(), states.len())[w]`. With no state nothing runs and the batch is
/// empty. The first error of any worker is returned (the others finish their share first).
pub fn run_batch<I, S, R, E, F>(items: &[I], states: &mut [S], work: &F) -> Result<Batch<R>, E>
where
    I: Sync,
    S: Send,
    R: Send,
    E: Send,
    F: Fn(&mut S, &I) -> Result<R, E> + Sync,
{
    type Share<R> = Vec<(ImageTime, R)>;
    let worker = |w: usize, range: Range<usize>, state: &mut S| -> Result<Share<R>, E> {
        let mut out = Vec::with_capacity(range.len());
        for index in range {
            let t = Instant::now();
            let r = work(state, &items[index])?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            out.push((
                ImageTime {
                    index,
                    worker: w,
                    ms,
                },
                r,
            ));
        }
        Ok(out)
    };
    let ranges = split(items.len(), states.len());
    let start = Instant::now();
    let shares: Vec<Result<Share<R>, E>> = if states.len() == 1 {
        vec![worker(0, ranges[0].clone(), &mut states[0])]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = states
                .iter_mut()
                .zip(ranges)
                .enumerate()
                .map(|(w, (state, range))| s.spawn(move || worker(w, range, state)))
                .collect();
            handles
                .into_iter()
                // A panic in `work` is a bug, not bad input: pass it on unchanged.
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };
    let wall_s = start.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(items.len());
    let mut outputs = Vec::with_capacity(items.len());
    for share in shares {
        for (t, r) in share? {
            times.push(t);
            outputs.push(r);
        }
    }
    // Shares come back in worker order and ranges are in order, so outputs follow the items.
    Ok(Batch {
        wall_s,
        times,
        outputs,
    })
}

/// One image prepared for a [`Mode`]: everything before the timed part done.
pub enum Input {
    /// [`Mode::Model`]: the normalized planar input of the network.
    Tensor(Box<[f32; INPUT_LEN]>),
    /// [`Mode::Classify`]: RGB8 pixels, row-major.
    Pixels {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// `width * height * 3` bytes.
        pixels: Vec<u8>,
    },
    /// [`Mode::EndToEnd`]: an encoded image file's bytes.
    Encoded(Vec<u8>),
}

/// JPEG quality of the generated images in [`Mode::EndToEnd`] (a common camera setting).
pub const GENERATED_JPEG_QUALITY: u8 = 90;

impl Input {
    /// The input for `mode` from decoded pixels; `encoded` gives the image's file bytes for
    /// [`Mode::EndToEnd`] (without them the pixels are encoded as JPEG at
    /// [`GENERATED_JPEG_QUALITY`]).
    pub fn prepare(
        mode: Mode,
        width: usize,
        height: usize,
        pixels: Vec<u8>,
        encoded: Option<Vec<u8>>,
    ) -> Result<Self> {
        Ok(match mode {
            Mode::Model => Input::Tensor(tensor(width, height, &pixels)?),
            Mode::Classify => Input::Pixels {
                width,
                height,
                pixels,
            },
            Mode::EndToEnd => match encoded {
                Some(bytes) => Input::Encoded(bytes),
                None => Input::Encoded(jpeg(width, height, &pixels, GENERATED_JPEG_QUALITY)?),
            },
        })
    }

    /// The timed work: the image through the embedded model in `arena`; returns the
    /// predicted class. In [`Mode::Model`] that is the largest logit (a few nanoseconds on
    /// top of the network); otherwise `classify`'s answer.
    pub fn work(&self, arena: &mut Arena) -> Result<usize> {
        match self {
            Input::Tensor(x) => Ok(argmax(&run(x, arena))),
            Input::Pixels {
                width,
                height,
                pixels,
            } => Ok(classify(derm_runtime::Image::new(*width, *height, pixels)?, arena)?.class),
            Input::Encoded(bytes) => {
                let (w, h, px) = data::decode_bytes(bytes)?;
                Ok(classify(derm_runtime::Image::new(w, h, &px)?, arena)?.class)
            }
        }
    }
}

/// The first index of the largest value (NaN counts as smallest), as `classify` picks.
fn argmax(logits: &[f32; NUM_CLASSES]) -> usize {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if v.total_cmp(&logits[best]).is_gt() {
            best = i;
        }
    }
    best
}

/// The network input `classify` would build from these pixels: the same crop, bilinear
/// resize and normalization, into a heap tensor.
pub fn tensor(width: usize, height: usize, pixels: &[u8]) -> Result<Box<[f32; INPUT_LEN]>> {
    let image = derm_runtime::Image::new(width, height, pixels)?;
    let mut out: Box<[f32; INPUT_LEN]> = vec![0f32; INPUT_LEN]
        .into_boxed_slice()
        .try_into()
        .map_err(|_| anyhow!("preprocessing: input is not {INPUT_LEN} values"))?;
    derm_runtime::preprocess_input(image, &mut out).map_err(|e| anyhow!("preprocessing: {e}"))?;
    Ok(out)
}

/// RGB8 pixels encoded as a baseline JPEG at `quality` (1-100).
pub fn jpeg(width: usize, height: usize, pixels: &[u8], quality: u8) -> Result<Vec<u8>> {
    let (w, h) = (
        u32::try_from(width).context("width")?,
        u32::try_from(height).context("height")?,
    );
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode(pixels, w, h, image::ExtendedColorType::Rgb8)
        .context("encoding JPEG")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name_and_reject_others() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!("End-To-End".parse::<Mode>(), Ok(Mode::EndToEnd));
        assert_eq!(" model ".parse::<Mode>(), Ok(Mode::Model));
        assert_eq!(Mode::default(), Mode::Classify);
        for bad in ["", "e2e", "network", "end to end", "classify,model"] {
            let err = bad.parse::<Mode>().unwrap_err();
            assert!(err.contains("model, classify, end-to-end"), "{err}");
        }
    }

    #[test]
    fn split_covers_every_index_once_in_balanced_ranges() {
        for n in [0, 1, 7, 100] {
            for workers in 1..=9 {
                let r = split(n, workers);
                assert_eq!(r.len(), workers);
                let flat: Vec<usize> = r.iter().cloned().flatten().collect();
                assert_eq!(flat, (0..n).collect::<Vec<_>>(), "n={n} workers={workers}");
                let (lo, hi) = (
                    r.iter().map(|x| x.len()).min().unwrap(),
                    r.iter().map(|x| x.len()).max().unwrap(),
                );
                assert!(hi - lo <= 1, "n={n} workers={workers}: {r:?}");
            }
        }
        assert!(split(5, 0).is_empty());
    }

    #[test]
    fn every_image_is_timed_once_by_its_worker_with_its_own_arena() {
        let items: Vec<usize> = (0..23).collect();
        for workers in [1, 2, 3, 8] {
            let mut arenas: Vec<Box<Arena>> =
                (0..workers).map(|_| Box::new(Arena::new())).collect();
            let addrs: Vec<usize> = arenas
                .iter()
                .map(|a| &**a as *const Arena as usize)
                .collect();
            // Each call reports the arena it was given and the thread it ran on.
            let work = |a: &mut Box<Arena>,
                        &i: &usize|
             -> Result<(usize, usize, std::thread::ThreadId), ()> {
                Ok((
                    i,
                    &**a as *const Arena as usize,
                    std::thread::current().id(),
                ))
            };
            let b = run_batch(&items, &mut arenas, &work).unwrap();
            assert!(b.wall_s >= 0.0);
            assert_eq!(b.times.len(), items.len());
            assert_eq!(b.outputs.len(), items.len());
            let mut seen = vec![0; items.len()];
            for (t, (i, arena, _)) in b.times.iter().zip(&b.outputs) {
                assert_eq!(t.index, *i);
                seen[t.index] += 1;
                assert!(split(items.len(), workers)[t.worker].contains(&t.index));
                assert_eq!(
                    *arena, addrs[t.worker],
                    "worker {} used another arena",
                    t.worker
                );
                assert!(t.ms >= 0.0);
            }
            assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
            for (k, (i, _, _)) in b.outputs.iter().enumerate() {
                assert_eq!(k, *i, "outputs follow the items");
            }
            let mut distinct = addrs.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), workers, "arenas are distinct");
            let mut threads: Vec<_> = b.outputs.iter().map(|(_, _, t)| format!("{t:?}")).collect();
            threads.sort_unstable();
            threads.dedup();
            assert_eq!(threads.len(), workers, "one thread per worker");
        }
    }

    #[test]
    fn a_worker_error_is_returned() {
        let items: Vec<i32> = (0..10).collect();
        let mut states = vec![(); 3];
        let work = |_: &mut (), &i: &i32| {
            if i == 7 {
                Err(format!("bad {i}"))
            } else {
                Ok(i)
            }
        };
        assert_eq!(run_batch(&items, &mut states, &work).unwrap_err(), "bad 7");
        let mut none: Vec<()> = Vec::new();
        let b = run_batch(&items, &mut none, &work).unwrap();
        assert!(b.times.is_empty() && b.outputs.is_empty());
    }

    #[test]
    fn the_three_modes_agree_on_an_image() {
        let (w, h) = (64usize, 48usize);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut arena = Box::new(Arena::new());
        let classify_class = Input::prepare(Mode::Classify, w, h, pixels.clone(), None)
            .unwrap()
            .work(&mut arena)
            .unwrap();
        let model_class = Input::prepare(Mode::Model, w, h, pixels.clone(), None)
            .unwrap()
            .work(&mut arena)
            .unwrap();
        assert_eq!(model_class, classify_class);
        // Lossless input: a PNG decodes to the same pixels, so end-to-end agrees too.
        let mut png = Vec::new();
        image::RgbImage::from_raw(w as u32, h as u32, pixels.clone())
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let e2e = Input::prepare(Mode::EndToEnd, w, h, pixels.clone(), Some(png)).unwrap();
        assert_eq!(e2e.work(&mut arena).unwrap(), classify_class);
        // Generated JPEG bytes decode; garbage bytes are an error, not a panic.
        let jpg = Input::prepare(Mode::EndToEnd, w, h, pixels, None).unwrap();
        assert!(jpg.work(&mut arena).unwrap() < NUM_CLASSES);
        assert!(
            Input::Encoded(b"not an image".to_vec())
                .work(&mut arena)
                .is_err()
        );
        assert!(Input::prepare(Mode::Model, w, h, vec![0; 5], None).is_err());
    }
}
