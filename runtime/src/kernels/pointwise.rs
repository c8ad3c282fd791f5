//! 1x1 convolution as a GEMM: `out[p][n] = act(in[p][k] * W^T + bias) (+ residual)`.
//!
//! The weights are packed in panels of [`NR`] output channels (see the
//! module docs of [`crate::kernels`]), so the inner loop reads one contiguous
//! row of `NR` weights per input channel and broadcasts one activation.

use super::{Activation, NR};

/// Pixels per register tile in the portable kernel.
const MR: usize = 4;

/// Pointwise (1x1) convolution; see [`portable`] for the argument contract.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn pointwise(
    input: &[f32],
    p: usize,
    k: usize,
    n: usize,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    portable(input, p, k, n, w, bias, act, residual, out)
}

/// Portable pointwise convolution.
///
/// `input` is `[p][k]` (HWC pixels), `w` is packed (`n.div_ceil(8) * 8 * k`
/// values), `bias` is `[n]`, `residual` (if any) is `[p][n]` and is added
/// after the activation, `out` is `[p][n]`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn portable(
    input: &[f32],
    p: usize,
    k: usize,
    n: usize,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    debug_assert_eq!(input.len(), p * k);
    debug_assert_eq!(w.len(), super::packed_len(k, n));
    debug_assert_eq!(bias.len(), n);
    debug_assert_eq!(out.len(), p * n);
    debug_assert!(residual.is_none_or(|r| r.len() == p * n));
    let panels = n.div_ceil(NR);
    let mut p0 = 0;
    while p0 + MR <= p {
        tile::<MR>(input, p0, k, n, w, bias, act, residual, out, panels);
        p0 += MR;
    }
    while p0 < p {
        tile::<1>(input, p0, k, n, w, bias, act, residual, out, panels);
        p0 += 1;
    }
}

/// Computes pixels `p0..p0 + R` for every output channel.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile<const R: usize>(
    input: &[f32],
    p0: usize,
    k: usize,
    n: usize,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
    panels: usize,
) {
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
