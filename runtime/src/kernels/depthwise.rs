//! Depthwise kxk convolution on HWC tensors, vectorized over channels.

use super::Activation;

/// Depthwise convolution; see [`portable`] for the argument contract.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn depthwise(
    input: &[f32],
    ih: usize,
    iw: usize,
    c: usize,
    w: &[f32],
    bias: &[f32],
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    act: Activation,
    out: &mut [f32],
) {
    portable(input, ih, iw, c, w, bias, k, stride, pad, oh, ow, act, out)
}

/// Portable depthwise convolution.
///
/// `input` is `[ih][iw][c]`, `w` is `[k][k][c]`, `bias` is `[c]`, `out` is
/// `[oh][ow][c]`; `stride` and the symmetric zero padding `pad` apply to
/// both axes. Taps that fall into the padding are skipped.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn portable(
    input: &[f32],
    ih: usize,
    iw: usize,
    c: usize,
    w: &[f32],
    bias: &[f32],
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    act: Activation,
    out: &mut [f32],
) {
    debug_assert_eq!(input.len(), ih * iw * c);
    debug_assert_eq!(w.len(), k * k * c);
    debug_assert_eq!(bias.len(), c);
    debug_assert_eq!(out.len(), oh * ow * c);
    for oy in 0..oh {
        let (ky0, ky1) = tap_range(oy, stride, pad, k, ih);
        for ox in 0..ow {
            let (kx0, kx1) = tap_range(ox, stride, pad, k, iw);
            let o = (oy * ow + ox) * c;
            let dst = &mut out[o..o + c];
            dst.copy_from_slice(bias);
            for ky in ky0..ky1 {
                let iy = oy * stride + ky - pad;
                for kx in kx0..kx1 {
                    let ix = ox * stride + kx - pad;
                    let src = &input[(iy * iw + ix) * c..(iy * iw + ix + 1) * c];
                    let wt = &w[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                    for ((d, &s), &wv) in dst.iter_mut().zip(src).zip(wt) {
                        *d += s * wv;
                    }
                }
            }
            act.apply_slice(dst);
        }
    }
}

/// The taps `t` in `lo..hi` for which `o * stride + t - pad` lies in `0..len`.
#[inline(always)]
pub(crate) fn tap_range(
    o: usize,
    stride: usize,
    pad: usize,
    k: usize,
    len: usize,
) -> (usize, usize) {
    let start = o * stride;
    let lo = pad.saturating_sub(start);
    let hi = (len + pad).saturating_sub(start).min(k);
    (lo, hi.max(lo))
}
