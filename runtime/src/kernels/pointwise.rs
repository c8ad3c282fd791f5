//! 1x1 convolution as a GEMM: `out[p][n] = act(in[p][k] * W^T + bias) (+ residual)`.
//!
//! The weights are packed in panels of [`NR`] output channels (see the
//! module docs of [`crate::kernels`]), so the inner loop reads one contiguous
//! row of `NR` weights per input channel and broadcasts one activation.

use super::{Activation, NR, PointwiseShape};

/// Pixels per register tile in the portable kernel.
const MR: usize = 4;

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::pointwise;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as pointwise;

/// Portable pointwise convolution.
///
/// `input` is `[p][k]` (HWC pixels), `w` is packed (`n.div_ceil(8) * 8 * k`
/// values), `bias` is `[n]`, `residual` (if any) is `[p][n]` and is added
/// after the activation, `out` is `[p][n]`.
#[inline]
pub fn portable(
    input: &[f32],
    s: PointwiseShape,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let PointwiseShape { pixels: p, k, n } = s;
    debug_assert_eq!(input.len(), p * k);
    debug_assert_eq!(w.len(), super::packed_len(k, n));
    debug_assert_eq!(bias.len(), n);
    debug_assert_eq!(out.len(), p * n);
    debug_assert!(residual.is_none_or(|r| r.len() == p * n));
    let c = Operands {
        input,
        s,
        w,
        bias,
        act,
        residual,
    };
    let mut p0 = 0;
    while p0 + MR <= p {
        tile::<MR>(&c, p0, out);
        p0 += MR;
    }
    while p0 < p {
        tile::<1>(&c, p0, out);
        p0 += 1;
    }
}

/// The read-only operands of one [`portable`] call, shared by its tiles.
struct Operands<'a> {
    input: &'a [f32],
    s: PointwiseShape,
    w: &'a [f32],
    bias: &'a [f32],
    act: Activation,
    residual: Option<&'a [f32]>,
}

/// Computes pixels `p0..p0 + R` for every output channel.
#[inline(always)]
fn tile<const R: usize>(c: &Operands<'_>, p0: usize, out: &mut [f32]) {
    let Operands {
        input,
        s,
        w,
        bias,
        act,
        residual,
    } = *c;
    let (k, n) = (s.k, s.n);
    let panels = n.div_ceil(NR);
    let rows: [&[f32]; R] = core::array::from_fn(|r| &input[(p0 + r) * k..(p0 + r + 1) * k]);
    for panel in 0..panels {
        let j0 = panel * NR;
        let width = NR.min(n - j0);
        let mut b = [0.0f32; NR];
        b[..width].copy_from_slice(&bias[j0..j0 + width]);
        let mut acc = [b; R];
        let wp = &w[panel * k * NR..(panel + 1) * k * NR];
        for (i, wrow) in wp.chunks_exact(NR).enumerate() {
            let wrow: &[f32; NR] = wrow.try_into().unwrap_or(&[0.0; NR]);
            for r in 0..R {
                let a = rows[r][i];
                for c in 0..NR {
                    acc[r][c] += a * wrow[c];
                }
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            let o = (p0 + r) * n + j0;
            let dst = &mut out[o..o + width];
            for (d, &v) in dst.iter_mut().zip(accr.iter()) {
                *d = act.apply(v);
            }
            if let Some(res) = residual {
                for (d, &v) in dst.iter_mut().zip(&res[o..o + width]) {
                    *d += v;
                }
            }
        }
    }
}

/// Hand-written NEON pointwise kernel for aarch64 (Cortex-A72).
///
/// Register tile: 8 pixels x 8 output channels = 16 `float32x4_t`
/// accumulators. Each step loads four input channels of every pixel (8
/// registers, post-incremented row pointers) and, per two input channels, two
/// packed weight rows (4 registers, one `ld1`), then issues 16
/// `fmla v.4s, v.4s, v.s[lane]` per channel: 64 FMAs per 10 loads, with 28 of
/// the 32 vector registers live; 7-pixel tiles step 8 channels at a time. The activation and the residual add are compile-time
/// parameters of the tile, so the epilogue is straight-line code on the
/// accumulators. Pixel tails use 4- and 1-pixel tiles; channel tails compute
/// the zero-padded panel and store only `n % 8` lanes.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::super::neon_util::{activate, ld1x4_post, ldp_fresh, opaque};
    use super::super::{Activation, NR, PointwiseShape, packed_len};
    use core::arch::aarch64::*;

    /// NEON pointwise convolution with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If a slice is shorter than the shape says (the raw-pointer loop relies
    /// on these checks).
    // Inlined with `layer` into each generated layer function (literal arguments): `k` and `n`
    // become constants, so the k loop has no remainder test and the panel loop a fixed count
    // (14.89 M -> 14.22 M aarch64 instructions per image on MobileNetV3-Small).
    #[inline(always)]
    pub fn pointwise(
        input: &[f32],
        s: PointwiseShape,
        w: &[f32],
        bias: &[f32],
        act: Activation,
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let PointwiseShape { pixels: p, k, n } = s;
        s.assert_fits(
            "pointwise",
            input,
            (w, packed_len(k, n)),
            bias,
            out,
            residual,
        );
        let res = residual.map_or(core::ptr::null(), <[f32]>::as_ptr);
        let s = Shape { p, k, n, res };
        let (i, w, o) = (input.as_ptr(), w.as_ptr(), out.as_mut_ptr());
        // SAFETY: the lengths were asserted above; `layer` documents what it
        // relies on.
        unsafe {
            match (act, residual.is_some()) {
                (Activation::None, false) => layer::<0, false>(i, w, bias, &s, o),
                (Activation::None, true) => layer::<0, true>(i, w, bias, &s, o),
                (Activation::Relu, false) => layer::<1, false>(i, w, bias, &s, o),
                (Activation::Relu, true) => layer::<1, true>(i, w, bias, &s, o),
                (Activation::Hardswish, false) => layer::<2, false>(i, w, bias, &s, o),
                (Activation::Hardswish, true) => layer::<2, true>(i, w, bias, &s, o),
                (Activation::ScaledHardswish, false) => layer::<3, false>(i, w, bias, &s, o),
                (Activation::ScaledHardswish, true) => layer::<3, true>(i, w, bias, &s, o),
            }
        }
    }

    /// Per-call constants of a pointwise layer.
    struct Shape {
        p: usize,
        k: usize,
        n: usize,
        /// Residual `[p][n]`, or null.
        res: *const f32,
    }

    const fn act_of(a: u8) -> Activation {
        match a {
            0 => Activation::None,
            1 => Activation::Relu,
            2 => Activation::Hardswish,
            _ => Activation::ScaledHardswish,
        }
    }

    /// The whole layer for one activation (`A`) and residual choice (`RES`); inlined, see
    /// [`pointwise`].
    ///
    /// # Safety
    /// `input` holds `p * k` values, `w` `packed_len(k, n)`, `out` (and the
    /// residual when `RES`) `p * n`; `bias` holds `n`.
    #[inline(always)]
    unsafe fn layer<const A: u8, const RES: bool>(
        input: *const f32,
        w: *const f32,
        bias: &[f32],
        s: &Shape,
        out: *mut f32,
    ) {
        // Inputs held in registers across panels pay off from three panels on (two, at
        // 16 -> 16 channels, came out even).
        // SAFETY: as below, with k == 4 * KV.
        unsafe {
            match s.k {
                16 if s.n > 2 * NR => {
                    return resident_layer::<4, 4, A, RES>(input, w, bias, s, out);
                }
                24 if s.n > 2 * NR => {
                    return resident_layer::<3, 6, A, RES>(input, w, bias, s, out);
                }
                _ => {}
            }
        }
        let mut p0 = 0;
        // SAFETY (all three loops): pixels p0..p0 + R <= p, so row reads lie
        // in input[..p * k] and stores in out[..p * n] (and the residual);
        // see `row_tile`.
        unsafe {
            if s.p.is_multiple_of(7) {
                // Tiles of 7 pixels leave registers for 8 input channels per row at once
                // ([`gemm_tile`]); 224x224 MobileNets' maps (112^2 .. 7^2) all divide by 7.
                while p0 + 7 <= s.p {
                    row_tile::<7, A, RES>(input, p0, w, bias, s, out);
                    p0 += 7;
                }
            }
            while p0 + 8 <= s.p {
                row_tile::<8, A, RES>(input, p0, w, bias, s, out);
                p0 += 8;
            }
            if p0 + 4 <= s.p {
                row_tile::<4, A, RES>(input, p0, w, bias, s, out);
                p0 += 4;
            }
            while p0 < s.p {
                row_tile::<1, A, RES>(input, p0, w, bias, s, out);
                p0 += 1;
            }
        }
    }

    /// The whole layer when each pixel's `k = 4 KV` inputs fit in registers beside the tile
    /// (`k` 16 or 24: MobileNetV3's first expansions): tiles of `R` pixels whose inputs are
    /// loaded once for every panel ([`resident_tile`]), then single pixels.
    ///
    /// # Safety
    /// As [`layer`], with `s.k == 4 * KV`.
    #[inline(always)]
    unsafe fn resident_layer<const R: usize, const KV: usize, const A: u8, const RES: bool>(
        input: *const f32,
        w: *const f32,
        bias: &[f32],
        s: &Shape,
        out: *mut f32,
    ) {
        let mut p0 = 0;
        // SAFETY: pixels p0..p0 + R <= p (then p0 < p) stay inside the extents of `layer`.
        unsafe {
            while p0 + R <= s.p {
                resident_tile::<R, KV, A, RES>(input, p0, w, bias, s, out);
                p0 += R;
            }
            while p0 < s.p {
                row_tile::<1, A, RES>(input, p0, w, bias, s, out);
                p0 += 1;
            }
        }
    }

    /// Pixels `p0..p0 + R` for every panel, their `4 KV` input channels loaded into
    /// registers once (`R * KV` vectors: 16 for 4 pixels of 16 channels, 18 for 3 of 24)
    /// and used by every panel, where [`row_tile`]'s 7-pixel tiles load them again for each
    /// panel (14 loads per 224 `fmla` at `k = 16`). Per panel: `2 KV` weight loads, `8 KV R`
    /// `fmla`, the biases and the epilogue.
    ///
    /// # Safety
    /// `input` holds `(p0 + R) * 4 KV` values, `w` `packed_len(4 KV, n)`, `out` (and the
    /// residual when `RES`) `(p0 + R) * n`; `bias` holds `n`.
    #[inline(always)]
    unsafe fn resident_tile<const R: usize, const KV: usize, const A: u8, const RES: bool>(
        input: *const f32,
        p0: usize,
        w: *const f32,
        bias: &[f32],
        s: &Shape,
        out: *mut f32,
    ) {
        let (k, n) = (4 * KV, s.n);
        // SAFETY: the contract bounds every read and write below; each panel's weights are
        // the next `8 k` values of `w`.
        unsafe {
            // Loaded pixel by pixel (neighbouring vectors pair into `ldp`), then indexed
            // x[v][r]: input channels 4 v..4 v + 4 of pixel p0 + r.
            let rows: [[float32x4_t; KV]; R] = core::array::from_fn(|r| {
                core::array::from_fn(|v| vld1q_f32(input.add((p0 + r) * k + 4 * v)))
            });
            let x: [[float32x4_t; R]; KV] =
                core::array::from_fn(|v| core::array::from_fn(|r| rows[r][v]));
            let mut wp = w;
            for panel in 0..n.div_ceil(NR) {
                let j0 = panel * NR;
                let width = NR.min(n - j0);
                let mut t = [0.0f32; NR];
                let b = panel_bias(bias, j0, width, &mut t);
                let mut acc: [[float32x4_t; 2]; R] = core::array::from_fn(|_| ldp_fresh(b));
                for xv in &x {
                    // Two input channels' weight rows per load, lanes (0, 1) then (2, 3).
                    lane_pair::<R, 0, 1>(&mut acc, &mut wp, xv);
                    lane_pair::<R, 2, 3>(&mut acc, &mut wp, xv);
                }
                store_tile::<R, A, RES>(acc, s, out, p0 * n + j0, width);
            }
        }
    }

    /// The 8 biases of the panel starting at output channel `j0`: in `bias` itself, or for a
    /// last panel of `width < 8` channels copied into `t` and zero-padded.
    #[inline(always)]
    fn panel_bias(bias: &[f32], j0: usize, width: usize, t: &mut [f32; NR]) -> *const f32 {
        if width == NR {
            bias[j0..j0 + NR].as_ptr()
        } else {
            t[..width].copy_from_slice(&bias[j0..j0 + width]);
            t.as_ptr()
        }
    }

    /// [`store_full`] for a full panel, [`store_part`] for the last `width < 8` channels.
    ///
    /// # Safety
    /// As [`store_part`].
    #[inline(always)]
    unsafe fn store_tile<const R: usize, const A: u8, const RES: bool>(
        acc: [[float32x4_t; 2]; R],
        s: &Shape,
        out: *mut f32,
        at: usize,
        width: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            if width == NR {
                store_full::<R, A, RES>(acc, s, out, at);
            } else {
                store_part::<R, A, RES>(acc, s, out, at, width);
            }
        }
    }

    /// Pixels `p0..p0 + R` for every panel of output channels.
    ///
    /// # Safety
    /// `input` holds `(p0 + R) * k` values, `w` `n.div_ceil(8) * 8 * k`, `out`
    /// (and the residual when `RES`) `(p0 + R) * n`; `bias` holds `n`.
    #[inline(always)]
    unsafe fn row_tile<const R: usize, const A: u8, const RES: bool>(
        input: *const f32,
        p0: usize,
        w: *const f32,
        bias: &[f32],
        s: &Shape,
        out: *mut f32,
    ) {
        let (k, n) = (s.k, s.n);
        let panels = n.div_ceil(NR);
        for panel in 0..panels {
            let j0 = panel * NR;
            let width = NR.min(n - j0);
            // SAFETY: the caller guarantees the extents documented above;
            // panel < n.div_ceil(8) keeps weight and bias reads in bounds.
            unsafe {
                let mut t = [0.0f32; NR];
                let b = panel_bias(bias, j0, width, &mut t);
                let acc = gemm_tile::<R>(input.add(p0 * k), k, w.add(panel * k * NR), b);
                store_tile::<R, A, RES>(acc, s, out, p0 * n + j0, width);
            }
        }
    }

    /// Accumulates `R` pixels x 8 channels over all `k` input channels.
    ///
    /// # Safety
    /// `a` points at `R` rows of `k` values (row stride `k`); `wp` at a packed
    /// panel of `k * 8` values; `b` at the panel's 8 biases.
    #[inline(always)]
    unsafe fn gemm_tile<const R: usize>(
        a: *const f32,
        k: usize,
        wp: *const f32,
        b: *const f32,
    ) -> [[float32x4_t; 2]; R] {
        // Each accumulator pair loads the biases itself: one `ldp` per pixel, where copying
        // one loaded pair takes two `mov`.
        // SAFETY: `b` points at 8 readable values (the contract).
        let mut acc: [[float32x4_t; 2]; R] = core::array::from_fn(|_| unsafe { ldp_fresh(b) });
        // SAFETY: each row pointer advances through its own k values and the
        // weight pointer through the panel's k * 8; the loops stop at k.
        unsafe {
            let mut rows = [a; R];
            // Short rows (the tile's R rows within the 1008 bytes an `ldp` offset reaches):
            // one pointer for the whole tile, each row at a constant offset from it, so no
            // per-row pointers to set up per panel (MobileNetV3's expansions from 16 and 24
            // channels). Longer rows keep a post-incremented pointer each (`opaque`).
            let short = R * k * 4 <= 1008;
            if !short {
                for (r, p) in rows.iter_mut().enumerate() {
                    *p = opaque(a.add(r * k));
                }
            }
            let mut base = a;
            let mut wp = wp;
            let mut i = 0;
            if R == 7 && !short && k >= 16 {
                // The k loop of the 7-pixel tile as one `asm!` block, four 8-channel steps per
                // iteration ([`k_loop7`]).
                let steps = k / 8;
                // R == 7, so both conversions succeed (and fold away).
                if let (Ok(acc7), Ok(rows7)) = (
                    <&mut [_; 7]>::try_from(&mut acc[..]),
                    <&mut [_; 7]>::try_from(&mut rows[..]),
                ) {
                    k_loop7(acc7, rows7, &mut wp, steps);
                    i = steps * 8;
                    base = base.add(i);
                }
            }
            if R <= 7 {
                // Eight input channels per row and step: each row's two vectors come from
                // one load instruction, and the loop's bookkeeping is shared by 8 steps (7
                // rows: 14 input, 14 accumulator and 4 weight registers of the 32).
                while i + 8 <= k {
                    let mut av = [vdupq_n_f32(0.0); R];
                    let mut bv = [vdupq_n_f32(0.0); R];
                    for r in 0..R {
                        let v = if short {
                            vld1q_f32_x2(base.add(r * k))
                        } else {
                            let v = vld1q_f32_x2(rows[r]);
                            rows[r] = opaque(rows[r].add(8));
                            v
                        };
                        (av[r], bv[r]) = (v.0, v.1);
                    }
                    base = base.add(8);
                    // Two input channels' weight rows (16 values) per load instruction,
                    // which also advances `wp`: 4 `ld1` instead of 8 `ldp` and an `add`.
                    lane_pair::<R, 0, 1>(&mut acc, &mut wp, &av);
                    lane_pair::<R, 2, 3>(&mut acc, &mut wp, &av);
                    lane_pair::<R, 0, 1>(&mut acc, &mut wp, &bv);
                    lane_pair::<R, 2, 3>(&mut acc, &mut wp, &bv);
                    i += 8;
                }
            }
            while i + 4 <= k {
                let mut av = [vdupq_n_f32(0.0); R];
                for r in 0..R {
                    if short {
                        av[r] = vld1q_f32(base.add(r * k));
                    } else {
                        av[r] = vld1q_f32(rows[r]);
                        // Opaque per step too, or LLVM hoists a shared offset
                        // out of the loop and pays an add per row pointer.
                        rows[r] = opaque(rows[r].add(4));
                    }
                }
                base = base.add(4);
                lane_pair::<R, 0, 1>(&mut acc, &mut wp, &av);
                lane_pair::<R, 2, 3>(&mut acc, &mut wp, &av);
                i += 4;
            }
            while i < k {
                let w0 = vld1q_f32(wp);
                let w1 = vld1q_f32(wp.add(4));
                for r in 0..R {
                    let x = if short {
                        *base.add(r * k)
                    } else {
                        let x = *rows[r];
                        rows[r] = rows[r].add(1);
                        x
                    };
                    acc[r][0] = vfmaq_n_f32(acc[r][0], w0, x);
                    acc[r][1] = vfmaq_n_f32(acc[r][1], w1, x);
                }
                base = base.add(1);
                wp = wp.add(NR);
                i += 1;
            }
        }
        acc
    }

    /// Two `fmla` of one tile row: accumulators `{$a}` and `{$b}` (named operands) plus
    /// weight registers `v$w0` / `v$w1` times lane `$l` of input register `v$x`.
    macro_rules! fmla2 {
        ($a:literal, $b:literal, $w0:literal, $w1:literal, $x:literal, $l:literal) => {
            concat!(
                "fmla {",
                $a,
                ":v}.4s, v",
                $w0,
                ".4s, v",
                $x,
                ".s[",
                $l,
                "]\n",
                "fmla {",
                $b,
                ":v}.4s, v",
                $w1,
                ".4s, v",
                $x,
                ".s[",
                $l,
                "]\n",
            )
        };
    }

    /// Two input channels of the 7-row tile: one weight load (`v14`..`v17`: 8 output
    /// channels of lane `$l`, then of lane `$m`) and 28 `fmla` over the rows' input
    /// registers `v$x0`..`v$x6`.
    macro_rules! half_step7 {
        ($x0:literal, $x1:literal, $x2:literal, $x3:literal, $x4:literal, $x5:literal,
         $x6:literal, $l:literal, $m:literal) => {
            concat!(
                "ld1 {{v14.4s, v15.4s, v16.4s, v17.4s}}, [{wp}], #64\n",
                fmla2!("a0", "b0", 14, 15, $x0, $l),
                fmla2!("a1", "b1", 14, 15, $x1, $l),
                fmla2!("a2", "b2", 14, 15, $x2, $l),
                fmla2!("a3", "b3", 14, 15, $x3, $l),
                fmla2!("a4", "b4", 14, 15, $x4, $l),
                fmla2!("a5", "b5", 14, 15, $x5, $l),
                fmla2!("a6", "b6", 14, 15, $x6, $l),
                fmla2!("a0", "b0", 16, 17, $x0, $m),
                fmla2!("a1", "b1", 16, 17, $x1, $m),
                fmla2!("a2", "b2", 16, 17, $x2, $m),
                fmla2!("a3", "b3", 16, 17, $x3, $m),
                fmla2!("a4", "b4", 16, 17, $x4, $m),
                fmla2!("a5", "b5", 16, 17, $x5, $m),
                fmla2!("a6", "b6", 16, 17, $x6, $m),
            )
        };
    }

    /// Eight input channels of the 7-row tile: each row's two input vectors in one `ld1`
    /// (`v18`..`v31`, post-incremented row pointers), then four [`half_step7`]s.
    macro_rules! step7 {
        () => {
            concat!(
                "ld1 {{v18.4s, v19.4s}}, [{r0}], #32\n",
                "ld1 {{v20.4s, v21.4s}}, [{r1}], #32\n",
                "ld1 {{v22.4s, v23.4s}}, [{r2}], #32\n",
                "ld1 {{v24.4s, v25.4s}}, [{r3}], #32\n",
                "ld1 {{v26.4s, v27.4s}}, [{r4}], #32\n",
                "ld1 {{v28.4s, v29.4s}}, [{r5}], #32\n",
                "ld1 {{v30.4s, v31.4s}}, [{r6}], #32\n",
                half_step7!(18, 20, 22, 24, 26, 28, 30, 0, 1),
                half_step7!(18, 20, 22, 24, 26, 28, 30, 2, 3),
                half_step7!(19, 21, 23, 25, 27, 29, 31, 0, 1),
                half_step7!(19, 21, 23, 25, 27, 29, 31, 2, 3),
            )
        };
    }

    /// The k loop of a 7-pixel x 8-channel tile for `steps` (>= 2) steps of 8 input
    /// channels, written out: four steps per iteration, so the loop's counter and branch
    /// (2 instructions) are paid once per 448 `fmla`, where a loop of intrinsics pays 3 per
    /// step (LLVM's own unrolling of it hoists the next step's loads and spills: all 32
    /// registers are taken by 14 accumulators, 14 input and 4 weight vectors). A count that
    /// is not a multiple of four enters the first iteration part way.
    ///
    /// # Safety
    /// Each `rows[r]` points at `steps * 8` readable values and `*wp` at `steps * 64`; all
    /// are advanced past them.
    #[inline(always)]
    unsafe fn k_loop7(
        acc: &mut [[float32x4_t; 2]; 7],
        rows: &mut [*const f32; 7],
        wp: &mut *const f32,
        steps: usize,
    ) {
        let iters = steps.div_ceil(4);
        macro_rules! run {
            ($entry:literal) => {
                // SAFETY: the loads stay within the extents of the contract; the asm
                // writes no memory and only the declared registers.
                unsafe {
                    core::arch::asm!(
                        $entry,
                        "2:",
                        step7!(),
                        "3:",
                        step7!(),
                        "4:",
                        step7!(),
                        "5:",
                        step7!(),
                        "subs {n}, {n}, #1",
                        "b.ne 2b",
                        a0 = inout(vreg) acc[0][0], b0 = inout(vreg) acc[0][1],
                        a1 = inout(vreg) acc[1][0], b1 = inout(vreg) acc[1][1],
                        a2 = inout(vreg) acc[2][0], b2 = inout(vreg) acc[2][1],
                        a3 = inout(vreg) acc[3][0], b3 = inout(vreg) acc[3][1],
                        a4 = inout(vreg) acc[4][0], b4 = inout(vreg) acc[4][1],
                        a5 = inout(vreg) acc[5][0], b5 = inout(vreg) acc[5][1],
                        a6 = inout(vreg) acc[6][0], b6 = inout(vreg) acc[6][1],
                        r0 = inout(reg) rows[0], r1 = inout(reg) rows[1],
                        r2 = inout(reg) rows[2], r3 = inout(reg) rows[3],
                        r4 = inout(reg) rows[4], r5 = inout(reg) rows[5],
                        r6 = inout(reg) rows[6],
                        wp = inout(reg) *wp,
                        n = inout(reg) iters => _,
                        out("v14") _, out("v15") _, out("v16") _, out("v17") _,
                        out("v18") _, out("v19") _, out("v20") _, out("v21") _,
                        out("v22") _, out("v23") _, out("v24") _, out("v25") _,
                        out("v26") _, out("v27") _, out("v28") _, out("v29") _,
                        out("v30") _, out("v31") _,
                        options(readonly, nostack),
                    )
                }
            };
        }
        match steps % 4 {
            0 => run!(""),
            3 => run!("b 3f"),
            2 => run!("b 4f"),
            _ => run!("b 5f"),
        }
    }

    /// Two input channels into an `R`-pixel x 8-channel tile: one `ld1` of their two packed
    /// weight rows (16 values, advancing `*wp`), then lane `L` of each pixel's input vector
    /// times the first row and lane `M` times the second: `4 R` `fmla`.
    ///
    /// # Safety
    /// `*wp` points at 16 readable values.
    #[inline(always)]
    unsafe fn lane_pair<const R: usize, const L: i32, const M: i32>(
        acc: &mut [[float32x4_t; 2]; R],
        wp: &mut *const f32,
        x: &[float32x4_t; R],
    ) {
        // SAFETY: the contract covers the load; the rest is register arithmetic.
        unsafe {
            let [w0, w1, w2, w3] = ld1x4_post(wp);
            for r in 0..R {
                acc[r][0] = vfmaq_laneq_f32::<L>(acc[r][0], w0, x[r]);
                acc[r][1] = vfmaq_laneq_f32::<L>(acc[r][1], w1, x[r]);
            }
            for r in 0..R {
                acc[r][0] = vfmaq_laneq_f32::<M>(acc[r][0], w2, x[r]);
                acc[r][1] = vfmaq_laneq_f32::<M>(acc[r][1], w3, x[r]);
            }
        }
    }

    /// Activation, residual add and store of a full 8-channel tile.
    ///
    /// # Safety
    /// `out` (and the residual when `RES`) hold `at + (R - 1) * n + 8` values.
    #[inline(always)]
    unsafe fn store_full<const R: usize, const A: u8, const RES: bool>(
        acc: [[float32x4_t; 2]; R],
        s: &Shape,
        out: *mut f32,
        at: usize,
    ) {
        // Rows further apart than a pair `stp` reaches (1008 bytes) would take two `str`
        // each: there the epilogue is `Row::store`'s asm, one `st1` per row. Not for k = 16
        // (two 8-channel steps in all), where its fixed registers made LLVM spill in the
        // k loop (MobileNetV3's first expansion: +41 k instructions).
        if R > 1 && (R - 1) * s.n * 4 > 992 && s.k > 16 && Row::<A, RES>::ASM {
            let row = Row::<A, RES>::new();
            // SAFETY: the rows at + r * n + 0..8 (and the residual's) lie inside the
            // guaranteed extent, and the pointers step through exactly those.
            unsafe {
                let mut op = out.add(at);
                let mut rp = s.res.wrapping_add(at);
                for accr in &acc {
                    row.store(*accr, &mut op, &mut rp, s.n);
                }
            }
            return;
        }
        // SAFETY: offsets at + r * n + 0..8 lie inside the guaranteed extent.
        unsafe {
            for (r, accr) in acc.iter().enumerate() {
                let o = at + r * s.n;
                let mut v0 = activate(act_of(A), accr[0]);
                let mut v1 = activate(act_of(A), accr[1]);
                if RES {
                    v0 = vaddq_f32(v0, vld1q_f32(s.res.add(o)));
                    v1 = vaddq_f32(v1, vld1q_f32(s.res.add(o + 4)));
                }
                vst1q_f32(out.add(o), v0);
                vst1q_f32(out.add(o + 4), v1);
            }
        }
    }

    /// One output row of a tile (8 channels, two accumulators): activation, residual and
    /// `st1 {v26, v27}, [out], n` in one asm block, for activation `A` and residual `RES`.
    ///
    /// Written out because `st1` of two registers needs them consecutive: with intrinsics
    /// LLVM computes every row's activation first and then copies each pair into the
    /// store's registers (two `mov` per row, more than the `str` they save). The constants
    /// live in registers for the whole layer.
    struct Row<const A: u8, const RES: bool> {
        zero: float32x4_t,
        minus_one: float32x4_t,
        one: float32x4_t,
    }

    impl<const A: u8, const RES: bool> Row<A, RES> {
        /// Whether [`Row::store`] has this combination: ReLU and scaled hardswish
        /// without a residual, the identity with one (what MobileNetV3 has).
        const ASM: bool = matches!((A, RES), (1, false) | (3, false) | (0, true));

        #[inline(always)]
        fn new() -> Self {
            // SAFETY: register-only NEON intrinsics (aarch64 baseline).
            unsafe {
                Self {
                    zero: vdupq_n_f32(0.0),
                    minus_one: vdupq_n_f32(-1.0),
                    one: vdupq_n_f32(1.0),
                }
            }
        }

        /// Stores `act(acc) (+ residual)` at `*out` and advances `*out` (and `*res` when
        /// `RES`) by `n` values.
        ///
        /// # Safety
        /// `*out` points at 8 writable values (`*res` at 8 readable ones when `RES`), and
        /// both stay inside their allocations after the step; `Self::ASM`.
        #[inline(always)]
        unsafe fn store(
            &self,
            acc: [float32x4_t; 2],
            out: &mut *mut f32,
            res: &mut *const f32,
            n: usize,
        ) {
            let step = n * 4;
            let [a0, a1] = acc;
            // SAFETY: each asm writes the 32 bytes at *out (reads those at *res) and
            // advances the pointers by `step` bytes; it touches no other memory.
            unsafe {
                match (A, RES) {
                    (1, false) => core::arch::asm!(
                        "fmax v26.4s, {a0:v}.4s, {z:v}.4s",
                        "fmax v27.4s, {a1:v}.4s, {z:v}.4s",
                        "st1 {{v26.4s, v27.4s}}, [{o}], {s}",
                        a0 = in(vreg) a0, a1 = in(vreg) a1, z = in(vreg) self.zero,
                        o = inout(reg) *out, s = in(reg) step,
                        out("v26") _, out("v27") _,
                        options(nostack, preserves_flags),
                    ),
                    (3, false) => core::arch::asm!(
                        "fmax v26.4s, {a0:v}.4s, {m:v}.4s",
                        "fmax v27.4s, {a1:v}.4s, {m:v}.4s",
                        "fmin v26.4s, v26.4s, {p:v}.4s",
                        "fmin v27.4s, v27.4s, {p:v}.4s",
                        "fmla {a0:v}.4s, {a0:v}.4s, v26.4s",
                        "fmla {a1:v}.4s, {a1:v}.4s, v27.4s",
                        "stp {a0:q}, {a1:q}, [{o}]",
                        "add {o}, {o}, {s}",
                        a0 = inout(vreg) a0 => _, a1 = inout(vreg) a1 => _,
                        m = in(vreg) self.minus_one, p = in(vreg) self.one,
                        o = inout(reg) *out, s = in(reg) step,
                        out("v26") _, out("v27") _,
                        options(nostack, preserves_flags),
                    ),
                    (0, true) => core::arch::asm!(
                        "ld1 {{v24.4s, v25.4s}}, [{r}], {s}",
                        "fadd v26.4s, {a0:v}.4s, v24.4s",
                        "fadd v27.4s, {a1:v}.4s, v25.4s",
                        "st1 {{v26.4s, v27.4s}}, [{o}], {s}",
                        a0 = in(vreg) a0, a1 = in(vreg) a1,
                        o = inout(reg) *out, r = inout(reg) *res, s = in(reg) step,
                        out("v24") _, out("v25") _, out("v26") _, out("v27") _,
                        options(nostack, preserves_flags),
                    ),
                    _ => unreachable!("Row::store without an asm form (Row::ASM is false)"),
                }
            }
        }
    }

    /// Like [`store_full`] for the last, partial panel (`width < 8`).
    ///
    /// # Safety
    /// `out` (and the residual when `RES`) hold `at + (R - 1) * n + width`.
    #[inline(never)]
    unsafe fn store_part<const R: usize, const A: u8, const RES: bool>(
        acc: [[float32x4_t; 2]; R],
        s: &Shape,
        out: *mut f32,
        at: usize,
        width: usize,
    ) {
        for (r, accr) in acc.iter().enumerate() {
            let o = at + r * s.n;
            let mut t = [0.0f32; NR];
            // SAFETY: t holds 8 values; out/residual offsets o + c with
            // c < width lie inside the guaranteed extent.
            unsafe {
                vst1q_f32(t.as_mut_ptr(), activate(act_of(A), accr[0]));
                vst1q_f32(t.as_mut_ptr().add(4), activate(act_of(A), accr[1]));
                for (c, &v) in t.iter().enumerate().take(width) {
                    let extra = if RES { *s.res.add(o + c) } else { 0.0 };
                    *out.add(o + c) = v + extra;
                }
            }
        }
    }
}

/// AVX2 + FMA pointwise kernel for x86_64 hosts: one packed panel of 8
/// output channels is one `__m256`; 8 pixels give 8 accumulators, and each
/// input channel costs one weight load plus 8 broadcast-FMAs.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::super::avx2_util::activate;
    use super::super::{Activation, NR, PointwiseShape, packed_len};
    use core::arch::x86_64::*;

    /// AVX2 pointwise convolution with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`super::super::has_avx2_fma`]).
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pointwise(
        input: &[f32],
        s: PointwiseShape,
        w: &[f32],
        bias: &[f32],
        act: Activation,
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let PointwiseShape { pixels: p, k, n } = s;
        s.assert_fits(
            "pointwise",
            input,
            (w, packed_len(k, n)),
            bias,
            out,
            residual,
        );
        let res = residual.map_or(core::ptr::null(), <[f32]>::as_ptr);
        let t = Tile {
            input: input.as_ptr(),
            k,
            n,
            w: w.as_ptr(),
            bias,
            act,
            res,
            out: out.as_mut_ptr(),
        };
        let mut p0 = 0;
        // SAFETY (all loops): pixels p0..p0 + R <= p keep every read and
        // write inside the asserted lengths; see `tile`.
        unsafe {
            while p0 + 6 <= p {
                tile::<6>(&t, p0);
                p0 += 6;
            }
            if p0 + 4 <= p {
                tile::<4>(&t, p0);
                p0 += 4;
            }
            while p0 < p {
                tile::<1>(&t, p0);
                p0 += 1;
            }
        }
    }

    /// One call's operands, shared by its tiles.
    struct Tile<'a> {
        input: *const f32,
        k: usize,
        n: usize,
        w: *const f32,
        bias: &'a [f32],
        act: Activation,
        res: *const f32,
        out: *mut f32,
    }

    /// Pixels `p0..p0 + R`, every panel: two panels (16 channels) at a time, so R = 6
    /// pixels keep 12 accumulators in registers and each input channel costs 2 weight
    /// loads and 6 broadcasts for 12 FMAs; an odd last panel alone.
    ///
    /// # Safety
    /// AVX2 + FMA; `input` holds `(p0 + R) * k` values, `w`
    /// `packed_len(k, n)`, `out` (and `res` if not null) `(p0 + R) * n`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(t: &Tile<'_>, p0: usize) {
        let panels = t.n.div_ceil(NR);
        let mut panel = 0;
        // SAFETY: see the function contract; every panel < panels.
        unsafe {
            while panel + 2 <= panels {
                block::<R, 2>(t, p0, panel);
                panel += 2;
            }
            if panel < panels {
                block::<R, 1>(t, p0, panel);
            }
        }
    }

    /// Pixels `p0..p0 + R`, panels `panel..panel + P`.
    ///
    /// # Safety
    /// As [`tile`], and `panel + P <= n.div_ceil(NR)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize, const P: usize>(t: &Tile<'_>, p0: usize, panel: usize) {
        let (k, n) = (t.k, t.n);
        let mut width = [0usize; P];
        let mut acc = [[_mm256_setzero_ps(); P]; R];
        for (q, wq) in width.iter_mut().enumerate() {
            let j0 = (panel + q) * NR;
            *wq = NR.min(n - j0);
            let mut b = [0.0f32; NR];
            b[..*wq].copy_from_slice(&t.bias[j0..j0 + *wq]);
            // SAFETY: `b` holds NR values.
            let bv = unsafe { _mm256_loadu_ps(b.as_ptr()) };
            for a in acc.iter_mut() {
                a[q] = bv;
            }
        }
        // SAFETY: see the function contract.
        unsafe {
            let a = t.input.add(p0 * k);
            let wp = t.w.add(panel * k * NR);
            for i in 0..k {
                let mut wv = [_mm256_setzero_ps(); P];
                for (q, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(wp.add((q * k + i) * NR));
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(*a.add(r * k + i));
                    for (q, v) in accr.iter_mut().enumerate() {
                        *v = _mm256_fmadd_ps(x, wv[q], *v);
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                for (q, v) in accr.iter().enumerate() {
                    let o = (p0 + r) * n + (panel + q) * NR;
                    let mut v = activate(t.act, *v);
                    if width[q] == NR {
                        if !t.res.is_null() {
                            v = _mm256_add_ps(v, _mm256_loadu_ps(t.res.add(o)));
                        }
                        _mm256_storeu_ps(t.out.add(o), v);
                    } else {
                        let mut tmp = [0.0f32; NR];
                        _mm256_storeu_ps(tmp.as_mut_ptr(), v);
                        for (c, &x) in tmp.iter().enumerate().take(width[q]) {
                            let extra = if t.res.is_null() {
                                0.0
                            } else {
                                *t.res.add(o + c)
                            };
                            *t.out.add(o + c) = x + extra;
                        }
                    }
                }
            }
        }
    }
}

/// The variant this target uses: AVX2 + FMA when the CPU has them, else
/// [`portable`] (checked once, then one cached load per call).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn pointwise(
    input: &[f32],
    s: PointwiseShape,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx2::pointwise(input, s, w, bias, act, residual, out) }
    } else {
        portable(input, s, w, bias, act, residual, out)
    }
}
