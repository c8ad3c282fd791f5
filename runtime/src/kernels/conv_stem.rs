//! Dense kxk convolution from the planar (CHW) model input to HWC, used only
//! for the first layer (3 input channels).

use super::Activation;
use super::depthwise::tap_range;

/// Stem convolution; see [`portable`] for the argument contract.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn conv_stem(
    input: &[f32],
    ih: usize,
    iw: usize,
    cin: usize,
    w: &[f32],
    bias: &[f32],
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    act: Activation,
    out: &mut [f32],
) {
    portable(
        input, ih, iw, cin, w, bias, cout, kh, kw, stride, pad, oh, ow, act, out,
    )
}

/// Portable stem convolution.
///
/// `input` is `[cin][ih][iw]` (CHW), `w` is `[kh][kw][cin][cout]`, `bias` is
/// `[cout]`, `out` is `[oh][ow][cout]` (HWC); `stride` and the symmetric zero
/// padding `pad` apply to both axes.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn portable(
    input: &[f32],
    ih: usize,
    iw: usize,
    cin: usize,
    w: &[f32],
    bias: &[f32],
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    act: Activation,
    out: &mut [f32],
) {
    debug_assert_eq!(input.len(), cin * ih * iw);
    debug_assert_eq!(w.len(), kh * kw * cin * cout);
    debug_assert_eq!(bias.len(), cout);
    debug_assert_eq!(out.len(), oh * ow * cout);
    let plane = ih * iw;
    for oy in 0..oh {
        let (ky0, ky1) = tap_range(oy, stride, pad, kh, ih);
        for ox in 0..ow {
            let (kx0, kx1) = tap_range(ox, stride, pad, kw, iw);
            let o = (oy * ow + ox) * cout;
            let dst = &mut out[o..o + cout];
            dst.copy_from_slice(bias);
            for ky in ky0..ky1 {
                let iy = oy * stride + ky - pad;
                for kx in kx0..kx1 {
                    let ix = ox * stride + kx - pad;
                    for ci in 0..cin {
                        let a = input[ci * plane + iy * iw + ix];
                        let t = ((ky * kw + kx) * cin + ci) * cout;
                        for (d, &wv) in dst.iter_mut().zip(&w[t..t + cout]) {
                            *d += a * wv;
                        }
                    }
                }
            }
            act.apply_slice(dst);
        }
    }
}
