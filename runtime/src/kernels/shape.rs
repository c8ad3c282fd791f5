//! The shapes of the convolution and squeeze-excite kernels, shared by the
//! `f32` kernels and the int8 ones in [`int8`](super::int8).
//!
//! Each generated layer passes its shape as a `const` built by its codegen node, so the
//! kernels inlined into that layer see every dimension as a constant, and a kernel takes
//! one `Copy` value instead of a long list of positional `usize` arguments.

/// Shape of a dense convolution: input `ih x iw x cin`, `cout` output
/// channels, a `kh x kw` kernel, `stride` and symmetric zero padding `pad` on
/// both axes, output `oh x ow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input height.
    pub ih: usize,
    /// Input width.
    pub iw: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride, both axes.
    pub stride: usize,
    /// Zero padding on each side, both axes.
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// Shape of a depthwise convolution: input `ih x iw x c`, a `k x k` kernel
/// per channel, `stride` and symmetric zero padding `pad` on both axes,
/// output `oh x ow x c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseShape {
    /// Input height.
    pub ih: usize,
    /// Input width.
    pub iw: usize,
    /// Channels (input and output).
    pub c: usize,
    /// Kernel size, both axes.
    pub k: usize,
    /// Stride, both axes.
    pub stride: usize,
    /// Zero padding on each side, both axes.
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// Shape of a pointwise convolution: `pixels` input rows of `k` channels,
/// `n` output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointwiseShape {
    /// Pixels (`h * w`).
    pub pixels: usize,
    /// Input channels.
    pub k: usize,
    /// Output channels.
    pub n: usize,
}

/// Shape of a squeeze-excite block: `pixels` rows of `c` channels, `squeeze`
/// hidden units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeShape {
    /// Pixels (`h * w`).
    pub pixels: usize,
    /// Channels of the input (and output, and the gate).
    pub c: usize,
    /// Hidden units of the squeeze (fc1's outputs).
    pub squeeze: usize,
}

// The slice-length contracts. The vector kernels read and write through raw pointers, so
// each variant checks its slices against its shape once, on entry, before any access; these
// are those checks, one per shape, for the variants of the `f32` and int8 kernels (the int8
// pointwise driver writes its own out; its comment says why). Inlined, the lengths a
// generated layer passes are constants and the checks fold away.

/// One slice of a kernel call: its name, its length and the length the shape needs.
type Need<'a> = (&'a str, usize, usize);

/// Panics (naming `op` and the shape) if a slice in `lens` is shorter than it needs to be.
/// Unused entries are `("", 0, 0)`.
#[inline(always)]
#[track_caller]
fn assert_lens<S: core::fmt::Debug + Copy>(op: &str, shape: S, lens: [Need<'_>; 5]) {
    for (_, len, need) in lens {
        if len < need {
            too_short(op, shape, lens);
        }
    }
}

/// The panic of [`assert_lens`]. Out of line and given a copy of the shape, so no kernel
/// lets its shape's address escape: with the shape passed by reference here, the f32
/// depthwise layers executed more instructions (MobileNetV3-Small at 224 px: 17.52 M
/// aarch64 instructions per image against 17.41 M).
#[cold]
#[inline(never)]
#[track_caller]
fn too_short<S: core::fmt::Debug>(op: &str, shape: S, lens: [Need<'_>; 5]) -> ! {
    /// `name len (needs n), ...` without allocating (`no_std`).
    struct Lens<'a>([Need<'a>; 5]);
    impl core::fmt::Display for Lens<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for (i, (name, len, need)) in self.0.iter().filter(|l| !l.0.is_empty()).enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{name} {len} (needs {need})")?;
            }
            Ok(())
        }
    }
    panic!("{op}: a slice is too short for {shape:?}: {}", Lens(lens))
}

/// Panics with `op` and the shape whose stride is 0.
#[cold]
#[inline(never)]
#[track_caller]
fn zero_stride<S: core::fmt::Debug>(op: &str, shape: S) -> ! {
    panic!("{op}: stride 0 in {shape:?}")
}

impl ConvShape {
    /// Panics, naming `op`, unless `input` holds `cin * ih * iw` values, `w` `kh * kw * cin
    /// * cout`, `bias` `cout` and `out` `oh * ow * cout`, and the stride is not 0.
    #[inline(always)]
    #[track_caller]
    pub fn assert_fits<I, W, B, O>(&self, op: &str, input: &[I], w: &[W], bias: &[B], out: &[O]) {
        let s = *self;
        let lens = [
            ("input", input.len(), s.cin * s.ih * s.iw),
            ("weights", w.len(), s.kh * s.kw * s.cin * s.cout),
            ("bias", bias.len(), s.cout),
            ("out", out.len(), s.oh * s.ow * s.cout),
            ("", 0, 0),
        ];
        assert_lens(op, s, lens);
        if s.stride == 0 {
            zero_stride(op, s);
        }
    }
}

impl DepthwiseShape {
    /// Panics, naming `op`, unless `input` holds `ih * iw * c` values, `w` `k * k * c`, `bias`
    /// `c` and `out` `oh * ow * c`, and the stride is not 0.
    #[inline(always)]
    #[track_caller]
    pub fn assert_fits<I, W, B, O>(&self, op: &str, input: &[I], w: &[W], bias: &[B], out: &[O]) {
        let s = *self;
        let lens = [
            ("input", input.len(), s.ih * s.iw * s.c),
            ("weights", w.len(), s.k * s.k * s.c),
            ("bias", bias.len(), s.c),
            ("out", out.len(), s.oh * s.ow * s.c),
            ("", 0, 0),
        ];
        assert_lens(op, s, lens);
        if s.stride == 0 {
            zero_stride(op, s);
        }
    }
}

impl PointwiseShape {
    /// Panics, naming `op`, unless `input` holds `pixels * k` values, `w` `weights` (the
    /// kernel's layout decides: `f32` panels of [`NR`](super::NR) channels, int8 `n * k`),
    /// `bias` `n`, `out` and the `residual`, if any, `pixels * n`.
    #[inline(always)]
    #[track_caller]
    pub fn assert_fits<I, W, B, O>(
        &self,
        op: &str,
        input: &[I],
        (w, weights): (&[W], usize),
        bias: &[B],
        out: &[O],
        residual: Option<&[O]>,
    ) {
        let s = *self;
        let lens = [
            ("input", input.len(), s.pixels * s.k),
            ("weights", w.len(), weights),
            ("bias", bias.len(), s.n),
            ("out", out.len(), s.pixels * s.n),
            residual.map_or(("", 0, 0), |r| ("residual", r.len(), s.pixels * s.n)),
        ];
        assert_lens(op, s, lens);
    }
}
