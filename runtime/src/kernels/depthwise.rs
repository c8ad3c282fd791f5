//! Depthwise kxk convolution on HWC tensors, vectorized over channels.

use super::{Activation, DepthwiseShape};

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::depthwise;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as depthwise;

/// Portable depthwise convolution.
///
/// `input` is `[ih][iw][c]`, `w` is `[k][k][c]`, `bias` is `[c]`, `out` is
/// `[oh][ow][c]`; `stride` and the symmetric zero padding `pad` apply to
/// both axes. Taps that fall into the padding are skipped.
#[inline]
pub fn portable(
    input: &[f32],
    s: DepthwiseShape,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    let DepthwiseShape {
        ih,
        iw,
        c,
        k,
        stride,
        pad,
        oh,
        ow,
    } = s;
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

/// The outputs `lo..hi` (of `outs`) whose whole window of `k` taps lies inside `0..len`:
/// `o * stride >= pad` and `o * stride - pad + k <= len`; `lo == hi` when none does.
#[inline(always)]
pub(crate) fn inside_range(
    outs: usize,
    stride: usize,
    pad: usize,
    k: usize,
    len: usize,
) -> (usize, usize) {
    let lo = pad.div_ceil(stride).min(outs);
    let hi = if len + pad >= k {
        ((len + pad - k) / stride + 1).min(outs)
    } else {
        0
    };
    (lo, hi.max(lo))
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

/// NEON depthwise kernel for aarch64.
///
/// Each output row goes in groups of up to 8 pixels per block of 4 channels (`rows`,
/// `RowPlan`, `group`): the group's accumulators stay in registers over the kernel rows
/// inside the input, each input column is loaded once for all the group's pixels, and the
/// columns in the padding are left out at compile time (each group knows how many of its
/// columns fall before and after the input). 3x3 kernels keep their 9 weight vectors in
/// registers for the whole row; 5x5 kernels load each kernel row's 5 (25 beside 8
/// accumulators would spill). Kernel rows in the padding are skipped, so padded taps are
/// never multiplied.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::super::neon_util::{activate, ldp_fresh, opaque};
    use super::super::{Activation, DepthwiseShape};
    use super::tap_range;
    use core::arch::aarch64::*;

    /// NEON depthwise convolution with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    // Inlined with `rows` into each generated layer function, whose arguments are literals: the
    // channel stride becomes a constant, so input loads take immediate offsets instead of an
    // address `add` each (MobileNetV3-Small's depthwise layers: 6.48 M -> 4.67 M aarch64
    // instructions per image; the binary does not grow).
    #[inline(always)]
    pub fn depthwise(
        input: &[f32],
        s: DepthwiseShape,
        w: &[f32],
        bias: &[f32],
        act: Activation,
        out: &mut [f32],
    ) {
        let DepthwiseShape {
            k, stride, oh, ow, ..
        } = s;
        s.assert_fits("depthwise", input, w, bias, out);
        let g = Geom { s, act };
        match (k, stride) {
            (3, 1) => {
                if !pairs::<3, 1>(input, w, bias, &g, out) {
                    rows::<3, 1>(input, w, bias, &g, out)
                }
            }
            (3, 2) => {
                if !k3s2_pairs(input, w, bias, &g, out) {
                    rows::<3, 2>(input, w, bias, &g, out)
                }
            }
            // 5x5 stride 1 stays in 4-channel blocks: its whole-row groups of 14 load each
            // kernel row's weights once per 14 pixels, where `pairs` loads twice as many per
            // 7 and ends up no better (434 k against 418-433 k instructions per 240-channel
            // layer).
            (5, 1) => rows::<5, 1>(input, w, bias, &g, out),
            (5, 2) => {
                if !pairs::<5, 2>(input, w, bias, &g, out) {
                    rows::<5, 2>(input, w, bias, &g, out)
                }
            }
            _ => {
                for oy in 0..oh {
                    for ox in 0..ow {
                        pixel(input, w, bias, &g, oy, ox, 0, out);
                    }
                }
            }
        }
    }

    /// One call's shape and activation.
    struct Geom {
        s: DepthwiseShape,
        act: Activation,
    }

    /// All output rows of a `K x K`, stride `S` layer (inlined for constant shapes, see
    /// [`depthwise`]).
    ///
    /// Each output row goes in groups of up to [`GROUP`] pixels ([`group`]) per block of 4
    /// channels: the group's accumulators stay in registers over the kernel rows inside the
    /// input (rows in the padding are skipped, not multiplied by zero), and each input column
    /// is loaded once for all the group's pixels. 3x3 kernels keep their 9 weight vectors in
    /// registers for the whole row; 5x5 kernels load each kernel row's 5 (all 25 beside 8
    /// accumulators would spill, as the earlier form with 25 weights and 4 accumulators did).
    /// Columns in the padding are left out at compile time: a group knows how many of its
    /// columns fall before the input (`LEAD`) and after it (`TRAIL`).
    #[inline(always)]
    fn rows<const K: usize, const S: usize>(
        input: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Geom,
        out: &mut [f32],
    ) {
        let c = g.s.c;
        let c4 = c - c % 4;
        if g.s.pad > 2 {
            // Wider padding than the groups take (MobileNets pad 1 or 2): pixel by pixel.
            for oy in 0..g.s.oh {
                for ox in 0..g.s.ow {
                    pixel(input, w, bias, g, oy, ox, 0, out);
                }
            }
            return;
        }
        let plan = RowPlan::new::<K, S>(g);
        for oy in 0..g.s.oh {
            let (ky0, ky1) = tap_range(oy, S, g.s.pad, K, g.s.ih);
            let mut cb = 0;
            while cb < c4 {
                // SAFETY: cb + 4 <= c bounds the bias read and, for 3x3 kernels, the
                // weight reads below 9 * c (lengths asserted).
                let (bv, w3) = unsafe {
                    let bv = vld1q_f32(bias.as_ptr().add(cb));
                    let w3 = if K == 3 {
                        core::array::from_fn(|ky| {
                            core::array::from_fn(|kx| {
                                vld1q_f32(w.as_ptr().add((ky * 3 + kx) * c + cb))
                            })
                        })
                    } else {
                        [[vdupq_n_f32(0.0); 3]; 3]
                    };
                    (bv, w3)
                };
                let at = GroupAt {
                    input,
                    w,
                    bias,
                    g,
                    oy,
                    ky: (ky0, ky1),
                    cb,
                    bv,
                    w3,
                    out: out.as_mut_ptr(),
                };
                // SAFETY: the plan's groups cover columns 0..ow once each with the
                // LEAD/TRAIL counts of their own columns (`RowPlan::new`); kernel rows
                // ky0..ky1 are inside the input (tap_range); cb + 4 <= c.
                unsafe { plan.run::<K, S>(&at) };
                cb += 4;
            }
            if c4 < c {
                for ox in 0..g.s.ow {
                    pixel(input, w, bias, g, oy, ox, c4, out);
                }
            }
        }
    }

    /// Most pixels per [`group`]: 8 accumulators, 3x3 weights (9) or a kernel row of 5x5
    /// weights, and the streamed input column fit the 32 vector registers.
    const GROUP: usize = 8;

    /// Most pixels of a whole-row group ([`RowPlan::whole`]): 14 accumulators beside a
    /// kernel row of 5x5 weights and the streamed input column fit the 32 vector registers.
    const WHOLE: usize = 14;

    /// How one output row splits into [`group`]s: the first (`first` pixels, from column 0,
    /// with `lead` columns before the input and `first_trail` after it), `middle` full
    /// groups, a shorter one of `rem` pixels, then the `tail` pixels: those whose windows
    /// reach past the input (`trail` columns), joined by the short group's when they fit one
    /// group. Only the first and the tail touch the padding. Computed
    /// once per layer from the shape alone, so after inlining into a generated layer
    /// (constant shape) each dispatch in [`RowPlan::run`] folds to one call.
    struct RowPlan {
        first: usize,
        lead: usize,
        first_trail: usize,
        middle: usize,
        rem: usize,
        tail: usize,
        trail: usize,
    }

    impl RowPlan {
        /// The plan for `g` (padding at most 2, so only the first group starts before the
        /// input: it holds at least the first `ceil(pad / S)` pixels).
        #[inline(always)]
        fn new<const K: usize, const S: usize>(g: &Geom) -> Self {
            let (ow, iw, pad) = (g.s.ow, g.s.iw, g.s.pad);
            if Self::whole::<K, S>(g) {
                return Self {
                    first: ow,
                    lead: pad,
                    first_trail: pad,
                    middle: 0,
                    rem: 0,
                    tail: 0,
                    trail: 0,
                };
            }
            let n = GROUP;
            // Pixels ox < ox_hi have no window column past the input.
            let (_, ox_hi) = super::inside_range(ow, S, pad, K, iw);
            // Columns of pixels ox..ox + px: ox * S - pad ..= (ox + px - 1) * S - pad + K - 1.
            let trail_of = |ox: usize, px: usize| {
                if px == 0 {
                    0
                } else {
                    ((ox + px - 1) * S + K).saturating_sub(pad + iw)
                }
            };
            let first = if ow <= n { ow } else { n.min(ox_hi).max(1) };
            let mut ox = first;
            let middle = ox_hi.saturating_sub(ox) / n;
            ox += middle * n;
            let mut rem = ox_hi.saturating_sub(ox);
            if ow - ox <= n {
                // The short group and the border pixels fit one group.
                rem = 0;
            }
            ox += rem;
            let tail = ow - ox;
            Self {
                first,
                lead: pad,
                first_trail: trail_of(0, first),
                middle,
                rem,
                tail,
                trail: trail_of(ox, tail),
            }
        }

        /// Whether a whole output row goes as one group of more than [`GROUP`] pixels:
        /// 5x5, stride 1, "same" padding (2 columns before and after the input) and
        /// `GROUP < ow <= WHOLE` (MobileNets' 14x14 maps at 224 px). Each input column of a
        /// kernel row is then loaded once, where two groups load the columns they share
        /// twice, and each kernel row's weights once instead of once per group.
        #[inline(always)]
        fn whole<const K: usize, const S: usize>(g: &Geom) -> bool {
            K == 5
                && S == 1
                && g.s.pad == 2
                && g.s.iw == g.s.ow
                && g.s.ow > GROUP
                && g.s.ow <= WHOLE
        }

        /// Every group of one output row and channel block.
        ///
        /// # Safety
        /// As [`group`] for each group, which the plan's counts guarantee for `at`'s row.
        #[inline(always)]
        unsafe fn run<const K: usize, const S: usize>(&self, at: &GroupAt<'_>) {
            // SAFETY: each group gets the LEAD/TRAIL counts of its own columns.
            unsafe {
                macro_rules! go {
                    ($ox:expr, $px:expr, $lead:expr, $trail:expr) => {
                        go!(@px $ox, $px, $lead, $trail; 1 2 3 4 5 6 7 8)
                    };
                    (@px $ox:expr, $px:expr, $lead:expr, $trail:expr; $($p:literal)*) => {
                        match $px {
                            $( $p => go!(@lt $ox, $p, $lead, $trail), )*
                            _ => at.slow($ox, $px),
                        }
                    };
                    (@lt $ox:expr, $p:literal, $lead:expr, $trail:expr) => {
                        match ($lead, $trail) {
                            (0, 0) => group::<K, S, $p, 0, 0>(at, $ox),
                            (0, 1) => group::<K, S, $p, 0, 1>(at, $ox),
                            (0, 2) => group::<K, S, $p, 0, 2>(at, $ox),
                            (1, 0) => group::<K, S, $p, 1, 0>(at, $ox),
                            (1, 1) => group::<K, S, $p, 1, 1>(at, $ox),
                            (1, 2) => group::<K, S, $p, 1, 2>(at, $ox),
                            (2, 0) => group::<K, S, $p, 2, 0>(at, $ox),
                            (2, 1) => group::<K, S, $p, 2, 1>(at, $ox),
                            (2, 2) => group::<K, S, $p, 2, 2>(at, $ox),
                            _ => at.slow($ox, $p),
                        }
                    };
                }
                if self.first == 0 {
                    return;
                }
                // A whole row ([`RowPlan::whole`], lead and trail both 2). Under a constant
                // condition, so that only the 5x5 stride-1 instance compiles these groups.
                if K == 5 && S == 1 && self.first > GROUP {
                    match self.first {
                        9 => group::<K, S, 9, 2, 2>(at, 0),
                        10 => group::<K, S, 10, 2, 2>(at, 0),
                        11 => group::<K, S, 11, 2, 2>(at, 0),
                        12 => group::<K, S, 12, 2, 2>(at, 0),
                        13 => group::<K, S, 13, 2, 2>(at, 0),
                        14 => group::<K, S, 14, 2, 2>(at, 0),
                        _ => at.slow(0, self.first),
                    }
                    return;
                }
                go!(0, self.first, self.lead, self.first_trail);
                let mut ox = self.first;
                for _ in 0..self.middle {
                    group::<K, S, GROUP, 0, 0>(at, ox);
                    ox += GROUP;
                }
                if self.rem > 0 {
                    go!(ox, self.rem, 0, 0);
                    ox += self.rem;
                }
                if self.tail > 0 {
                    go!(ox, self.tail, 0, self.trail);
                }
            }
        }
    }

    /// 3x3 stride-2 layers in blocks of 8 channels (two vectors per pixel, one load
    /// instruction per input column), if the shape allows: padding 1, `c` a multiple of 8, an
    /// even input width of `2 * ow` and `ow` a multiple of 4 (MobileNets' two 3x3 stride-2
    /// layers at 224 px). Returns `false`, having done nothing, otherwise.
    ///
    /// At stride 2 each output pixel needs two new input columns per kernel row, so with
    /// 4-channel blocks the column loads were 2 per 3 `fmla`; two vectors per `ld1` halve
    /// that. 4 pixels per group keep 8 accumulators beside the 18 weight vectors of the block
    /// (in registers for the whole row) and the loaded column.
    #[inline(always)]
    fn k3s2_pairs(input: &[f32], w: &[f32], bias: &[f32], g: &Geom, out: &mut [f32]) -> bool {
        let s = g.s;
        let fits = s.k == 3
            && s.stride == 2
            && s.pad == 1
            && s.c.is_multiple_of(8)
            && s.iw == 2 * s.ow
            && s.ow.is_multiple_of(4);
        if !fits {
            return false;
        }
        for oy in 0..s.oh {
            let ky = tap_range(oy, 2, 1, 3, s.ih);
            for cb in (0..s.c).step_by(8) {
                // SAFETY: cb + 8 <= c bounds the weight and bias reads (lengths asserted by
                // `depthwise`); each group's columns 2 * ox - 1 + LEAD.. 2 * ox + 7 lie inside
                // 0..iw (iw = 2 * ow, ox + 4 <= ow), its kernel rows inside 0..ih
                // (tap_range), its outputs inside the row.
                unsafe {
                    let wv: [[[float32x4_t; 2]; 3]; 3] = core::array::from_fn(|ky| {
                        core::array::from_fn(|kx| {
                            let p = w.as_ptr().add((ky * 3 + kx) * s.c + cb);
                            [vld1q_f32(p), vld1q_f32(p.add(4))]
                        })
                    });
                    let at = PairAt {
                        input: input.as_ptr(),
                        g,
                        oy,
                        ky,
                        cb,
                        bias: bias.as_ptr().add(cb),
                        wv: &wv,
                        out: out.as_mut_ptr(),
                    };
                    pair_group::<1>(&at, 0);
                    for ox in (4..s.ow).step_by(4) {
                        pair_group::<0>(&at, ox);
                    }
                }
            }
        }
        true
    }

    /// Pixels per group of [`pairs`].
    const P7: usize = 7;

    /// `K x K`, stride `S` layers (3x3 stride 1, 5x5 stride 2) whose channels are a
    /// multiple of 8 and whose output rows are a multiple of 7 pixels wide (MobileNetV3 at
    /// 224x224: 28, 14 and 7), in 8-channel blocks: each input column of a group is one
    /// `ld1` of two vectors feeding every pixel whose window holds it in one `asm!` block
    /// (`column_1` .. `column_5`), where 4-channel blocks ([`rows`]) take one load per
    /// vector. Groups of 7 pixels keep 14 accumulators beside a kernel row's 2 K weight
    /// vectors. Returns false (nothing written) for other shapes, and for padding wider than
    /// two columns at a group's edge.
    #[inline(always)]
    fn pairs<const K: usize, const S: usize>(
        input: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Geom,
        out: &mut [f32],
    ) -> bool {
        let s = g.s;
        let cols = (P7 - 1) * S + K;
        // Padding columns before and after the group at output column ox.
        let lead = |ox: usize| s.pad.saturating_sub(ox * S);
        let trail = |ox: usize| (ox * S + cols).saturating_sub(s.pad + s.iw);
        let fits = s.k == K
            && s.stride == S
            && s.c.is_multiple_of(8)
            && s.ow.is_multiple_of(P7)
            && s.pad <= 2
            && s.iw + 2 * s.pad >= (s.ow - 1) * S + K
            && lead(0) <= 2
            && trail(s.ow - P7) <= 2
            && (0..s.ow).step_by(P7).all(|ox| lead(ox) + trail(ox) < cols);
        if !fits {
            return false;
        }
        for oy in 0..s.oh {
            let ky = tap_range(oy, S, s.pad, K, s.ih);
            for cb in (0..s.c).step_by(8) {
                let at = SevenAt {
                    input: input.as_ptr(),
                    w: w.as_ptr(),
                    g,
                    oy,
                    ky,
                    cb,
                    // SAFETY: cb + 8 <= c <= bias.len() (asserted by `depthwise`).
                    bias: unsafe { bias.as_ptr().add(cb) },
                    out: out.as_mut_ptr(),
                };
                for ox in (0..s.ow).step_by(P7) {
                    // SAFETY: columns LEAD..cols - TRAIL of the group lie inside 0..iw and
                    // the others in the padding (lead and trail as defined above, checked
                    // at most 2), kernel rows `ky` inside 0..ih (tap_range), channels cb..cb
                    // + 8 inside c, pixels ox..ox + 7 inside the row (ow % 7 == 0).
                    unsafe {
                        match (lead(ox), trail(ox)) {
                            (0, 0) => pair7::<K, S, 0, 0>(&at, ox),
                            (0, 1) => pair7::<K, S, 0, 1>(&at, ox),
                            (0, _) => pair7::<K, S, 0, 2>(&at, ox),
                            (1, 0) => pair7::<K, S, 1, 0>(&at, ox),
                            (1, 1) => pair7::<K, S, 1, 1>(&at, ox),
                            (1, _) => pair7::<K, S, 1, 2>(&at, ox),
                            (_, 0) => pair7::<K, S, 2, 0>(&at, ox),
                            (_, 1) => pair7::<K, S, 2, 1>(&at, ox),
                            (_, _) => pair7::<K, S, 2, 2>(&at, ox),
                        }
                    }
                }
            }
        }
        true
    }

    /// One output row and 8-channel block of [`pairs`].
    struct SevenAt<'a> {
        input: *const f32,
        w: *const f32,
        g: &'a Geom,
        oy: usize,
        /// Kernel rows inside the input.
        ky: (usize, usize),
        cb: usize,
        /// The block's 8 biases.
        bias: *const f32,
        out: *mut f32,
    }

    /// Output pixels `ox..ox + 7` of [`pairs`]: per kernel row inside the input, its `2 K`
    /// weight vectors, then input columns `ox * S - pad + j` for `j` in `LEAD..6 S + K -
    /// TRAIL` (the others are padding), each loaded once into every pixel `px` whose tap
    /// `kx = j - px * S` lies in `0..K`.
    ///
    /// # Safety
    /// As stated in [`pairs`].
    #[inline(always)]
    unsafe fn pair7<const K: usize, const S: usize, const LEAD: usize, const TRAIL: usize>(
        at: &SevenAt<'_>,
        ox: usize,
    ) {
        let s = at.g.s;
        let c = s.c;
        let cols = (P7 - 1) * S + K;
        let step = c * 4;
        // SAFETY: the caller's contract bounds every load and store.
        unsafe {
            let mut acc: [[float32x4_t; 2]; P7] = core::array::from_fn(|_| ldp_fresh(at.bias));
            for ky in at.ky.0..at.ky.1 {
                let iy = at.oy * S + ky - s.pad;
                let mut p = at
                    .input
                    .add((iy * s.iw + ox * S + LEAD - s.pad) * c + at.cb);
                let wr: [[float32x4_t; 2]; K] = core::array::from_fn(|kx| {
                    let q = at.w.add((ky * K + kx) * c + at.cb);
                    [vld1q_f32(q), vld1q_f32(q.add(4))]
                });
                // Written out (at most 17 columns: 5x5 at stride 2) so that each column's
                // pixels and taps are constants and its `match` folds to one asm block.
                macro_rules! columns {
                    ($($j:literal)*) => {$(
                        if $j >= LEAD && $j < cols - TRAIL {
                            // Pixels lo..=hi hold column j, through taps j - px * S.
                            let lo = if $j + 1 > K { ($j + 1 - K).div_ceil(S) } else { 0 };
                            let hi = ($j / S).min(P7 - 1);
                            let t = |i: usize| wr[$j - (lo + i) * S];
                            match hi + 1 - lo {
                                1 => column_1(&mut p, step, &mut acc, [lo], [t(0)]),
                                2 => column_2(&mut p, step, &mut acc, [lo, lo + 1], [t(0), t(1)]),
                                3 => column_3(
                                    &mut p, step, &mut acc, [lo, lo + 1, lo + 2],
                                    [t(0), t(1), t(2)],
                                ),
                                4 => column_4(
                                    &mut p, step, &mut acc, [lo, lo + 1, lo + 2, lo + 3],
                                    [t(0), t(1), t(2), t(3)],
                                ),
                                _ => column_5(
                                    &mut p, step, &mut acc, [lo, lo + 1, lo + 2, lo + 3, lo + 4],
                                    [t(0), t(1), t(2), t(3), t(4)],
                                ),
                            }
                        }
                    )*};
                }
                columns!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
            }
            let o = at.out.add((at.oy * s.ow + ox) * c + at.cb);
            for (px, a) in acc.iter().enumerate() {
                vst1q_f32(o.add(px * c), activate(at.g.act, a[0]));
                vst1q_f32(o.add(px * c + 4), activate(at.g.act, a[1]));
            }
        }
    }

    /// `column_N`: one input column of a group of `G` pixels ([`pair_group`], [`pair7`]):
    /// `ld1 {v24.4s, v25.4s}, [p], step` into N pixels' accumulator pairs `acc[px[i]]`
    /// through weight pairs `w[i]`, the load and its `2 N` `fmla` in one `asm!` block.
    ///
    /// In one block because `ld1` of two registers needs them consecutive: written as a load
    /// helper, LLVM hoisted the next column's load above the multiplies of this one and
    /// copied every pair out of the fixed registers (two `mov` per column).
    macro_rules! column_n {
        ($name:ident: $($i:literal $a0:ident $a1:ident $w0:ident $w1:ident),+) => {
            /// See [`column_n`].
            ///
            /// # Safety
            /// `*p` points at 8 readable `f32`; `*p + step / 4` stays inside (or one past)
            /// the same allocation.
            #[inline(always)]
            unsafe fn $name<const G: usize>(
                p: &mut *const f32,
                step: usize,
                acc: &mut [[float32x4_t; 2]; G],
                px: [usize; { [$($i),+].len() }],
                w: [[float32x4_t; 2]; { [$($i),+].len() }],
            ) {
                $(let [mut $a0, mut $a1] = acc[px[$i]]; let [$w0, $w1] = w[$i];)+
                // SAFETY: the caller guarantees the 32 bytes read; the asm touches nothing
                // else.
                unsafe {
                    core::arch::asm!(
                        "ld1 {{v24.4s, v25.4s}}, [{p}], {s}",
                        $(
                            concat!("fmla {", stringify!($a0), ":v}.4s, v24.4s, {", stringify!($w0), ":v}.4s"),
                            concat!("fmla {", stringify!($a1), ":v}.4s, v25.4s, {", stringify!($w1), ":v}.4s"),
                        )+
                        p = inout(reg) *p,
                        s = in(reg) step,
                        $(
                            $a0 = inout(vreg) $a0,
                            $a1 = inout(vreg) $a1,
                            $w0 = in(vreg) $w0,
                            $w1 = in(vreg) $w1,
                        )+
                        out("v24") _,
                        out("v25") _,
                        options(readonly, nostack, preserves_flags),
                    );
                }
                $(acc[px[$i]] = [$a0, $a1];)+
            }
        };
    }
    column_n!(column_1: 0 a0 b0 w0 x0);
    column_n!(column_2: 0 a0 b0 w0 x0, 1 a1 b1 w1 x1);
    column_n!(column_3: 0 a0 b0 w0 x0, 1 a1 b1 w1 x1, 2 a2 b2 w2 x2);
    column_n!(column_4: 0 a0 b0 w0 x0, 1 a1 b1 w1 x1, 2 a2 b2 w2 x2, 3 a3 b3 w3 x3);
    column_n!(column_5: 0 a0 b0 w0 x0, 1 a1 b1 w1 x1, 2 a2 b2 w2 x2, 3 a3 b3 w3 x3, 4 a4 b4 w4 x4);

    /// One output row and 8-channel block of [`k3s2_pairs`].
    struct PairAt<'a> {
        input: *const f32,
        g: &'a Geom,
        oy: usize,
        /// Kernel rows inside the input.
        ky: (usize, usize),
        cb: usize,
        /// The block's 8 biases.
        bias: *const f32,
        /// The block's weights, `[ky][kx]`, two vectors each.
        wv: &'a [[[float32x4_t; 2]; 3]; 3],
        out: *mut f32,
    }

    /// Output pixels `ox..ox + 4` of [`k3s2_pairs`]: input columns `2 * ox - 1 + j` for `j` in
    /// `LEAD..9` (`LEAD = 1` for the first group, whose column -1 is padding).
    ///
    /// # Safety
    /// As stated in [`k3s2_pairs`].
    #[inline(always)]
    unsafe fn pair_group<const LEAD: usize>(at: &PairAt<'_>, ox: usize) {
        let s = at.g.s;
        let c = s.c;
        // SAFETY: the caller's contract bounds every load and store.
        unsafe {
            let mut acc: [[float32x4_t; 2]; 4] = core::array::from_fn(|_| ldp_fresh(at.bias));
            for ky in 0..3 {
                if ky < at.ky.0 || ky >= at.ky.1 {
                    continue;
                }
                let iy = at.oy * 2 + ky - 1;
                let mut p = at.input.add((iy * s.iw + 2 * ox + LEAD - 1) * c + at.cb);
                let wr = &at.wv[ky];
                let step = c * 4;
                // Column j feeds pixel j / 2 through tap 0 and pixel j / 2 - 1 through tap 2
                // (j even), or pixel (j - 1) / 2 through tap 1 (j odd).
                if LEAD == 0 {
                    column_1(&mut p, step, &mut acc, [0], [wr[0]]);
                }
                column_1(&mut p, step, &mut acc, [0], [wr[1]]);
                column_2(&mut p, step, &mut acc, [1, 0], [wr[0], wr[2]]);
                column_1(&mut p, step, &mut acc, [1], [wr[1]]);
                column_2(&mut p, step, &mut acc, [2, 1], [wr[0], wr[2]]);
                column_1(&mut p, step, &mut acc, [2], [wr[1]]);
                column_2(&mut p, step, &mut acc, [3, 2], [wr[0], wr[2]]);
                column_1(&mut p, step, &mut acc, [3], [wr[1]]);
                column_1(&mut p, step, &mut acc, [3], [wr[2]]);
            }
            let o = at.out.add((at.oy * s.ow + ox) * c + at.cb);
            for (px, a) in acc.iter().enumerate() {
                vst1q_f32(o.add(px * c), activate(at.g.act, a[0]));
                vst1q_f32(o.add(px * c + 4), activate(at.g.act, a[1]));
            }
        }
    }

    /// One output row and channel block: what every [`group`] of it shares.
    struct GroupAt<'a> {
        input: &'a [f32],
        w: &'a [f32],
        bias: &'a [f32],
        g: &'a Geom,
        oy: usize,
        /// Kernel rows inside the input.
        ky: (usize, usize),
        cb: usize,
        bv: float32x4_t,
        /// For 3x3 kernels: the channel block's nine weight vectors, `[ky][kx]`.
        w3: [[float32x4_t; 3]; 3],
        out: *mut f32,
    }

    impl GroupAt<'_> {
        /// Pixels `ox..ox + px` one by one (shapes whose padding exceeds what [`group`]
        /// takes).
        #[inline(never)]
        fn slow(&self, ox: usize, px: usize) {
            for x in ox..ox + px {
                pixel_block(
                    self.input, self.w, self.bias, self.g, self.oy, x, self.cb, self.out,
                );
            }
        }
    }

    /// Output pixels `ox..ox + PX` of row `at.oy`, channels `at.cb..at.cb + 4`: kernel rows
    /// `at.ky`, input columns `ox * S - pad + j` for `j` in `LEAD..(PX - 1) * S + K - TRAIL`
    /// (the others are padding), each loaded once and multiplied into every pixel whose
    /// window holds it.
    ///
    /// # Safety
    /// Columns `LEAD..(PX - 1) * S + K - TRAIL` of the group are inside `0..iw` and the others
    /// outside; kernel rows `at.ky` are inside the input; `at.cb + 4 <= c`;
    /// `ox + PX <= ow`.
    #[inline(always)]
    unsafe fn group<
        const K: usize,
        const S: usize,
        const PX: usize,
        const LEAD: usize,
        const TRAIL: usize,
    >(
        at: &GroupAt<'_>,
        ox: usize,
    ) {
        let g = at.g;
        let c = g.s.c;
        let cols = (PX - 1) * S + K;
        debug_assert!(
            cols <= 19,
            "depthwise group: more columns than `columns!` lists"
        );
        // SAFETY: the contract keeps every load inside the input and the weights, and the
        // stores inside the output row.
        unsafe {
            let mut acc = [at.bv; PX];
            // Column j of kernel row ky is input (oy * S - pad + ky, ox * S - pad + j);
            // `base` is its column 0 offset by +pad so that it is never negative.
            let col = (ox * S + LEAD) as isize - g.s.pad as isize;
            if K == 3 {
                // 3x3: the nine weight vectors stay in registers for the whole row
                // (`GroupAt::w3`); the kernel rows are unrolled, each skipped if in the
                // padding.
                for ky in 0..K {
                    if ky >= at.ky.0 && ky < at.ky.1 {
                        let wr: [float32x4_t; K] = core::array::from_fn(|kx| at.w3[ky][kx]);
                        row_taps::<K, S, PX, LEAD, TRAIL>(&mut acc, at, ky, col, &wr);
                    }
                }
            } else {
                // 5x5: 25 weight vectors beside 8 accumulators would spill, so each kernel
                // row loads its own 5.
                // A pointer at the kernel row's first tap (`opaque`): positive offsets, one
                // `ldr` each.
                let mut wrow = opaque(at.w.as_ptr().add(at.ky.0 * K * c + at.cb));
                for ky in at.ky.0..at.ky.1 {
                    let wr: [float32x4_t; K] =
                        core::array::from_fn(|kx| vld1q_f32(wrow.add(kx * c)));
                    wrow = opaque(wrow.add(K * c));
                    row_taps::<K, S, PX, LEAD, TRAIL>(&mut acc, at, ky, col, &wr);
                }
            }
            let o = at.out.add((at.oy * g.s.ow + ox) * c + at.cb);
            for (px, a) in acc.iter().enumerate() {
                vst1q_f32(o.add(px * c), activate(g.act, *a));
            }
        }
    }

    /// Kernel row `ky`'s taps of a [`group`] into its accumulators: `col` is the group's
    /// column `LEAD` (`ox * S + LEAD - pad`), `wr` holds the kernel row's weights.
    ///
    /// # Safety
    /// As [`group`]'s, for kernel row `ky` inside the input.
    #[inline]
    unsafe fn row_taps<
        const K: usize,
        const S: usize,
        const PX: usize,
        const LEAD: usize,
        const TRAIL: usize,
    >(
        acc: &mut [float32x4_t; PX],
        at: &GroupAt<'_>,
        ky: usize,
        col: isize,
        wr: &[float32x4_t; K],
    ) {
        let (g, c) = (at.g, at.g.s.c);
        let cols = (PX - 1) * S + K;
        let iy = at.oy * S + ky - g.s.pad;
        // SAFETY: column LEAD of this kernel row is inside the input (the contract).
        let row = unsafe {
            at.input
                .as_ptr()
                .add((iy * g.s.iw) * c + at.cb)
                .offset(col * c as isize)
        };
        // Columns LEAD..cols - TRAIL, written out (at most 19: 8 pixels, stride 2, 5x5) so
        // that every one is straight-line code with constant indices: as a loop, the
        // compiler left groups of 7 or more stride-2 pixels rolled, with the accumulators in
        // memory (4-5x the instructions).
        // SAFETY: the contract covers every column loaded.
        unsafe {
            macro_rules! columns {
                ($($j:literal)*) => {$(
                    if $j >= LEAD && $j < cols - TRAIL {
                        let x = vld1q_f32(row.add(($j - LEAD) * c));
                        // The pixels whose window holds column j, by their tap
                        // kx = j - px * S.
                        for (kx, wv) in wr.iter().enumerate() {
                            if $j >= kx && ($j - kx) % S == 0 && ($j - kx) / S < PX {
                                let a = &mut acc[($j - kx) / S];
                                *a = vfmaq_f32(*a, x, *wv);
                            }
                        }
                    }
                )*};
            }
            columns!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18);
        }
    }

    /// One output pixel, channels `cb..cb + 4`, skipping padding taps.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn pixel_block(
        input: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Geom,
        oy: usize,
        ox: usize,
        cb: usize,
        out: *mut f32,
    ) {
        let (c, k) = (g.s.c, g.s.k);
        let (ky0, ky1) = tap_range(oy, g.s.stride, g.s.pad, k, g.s.ih);
        let (kx0, kx1) = tap_range(ox, g.s.stride, g.s.pad, k, g.s.iw);
        // SAFETY: tap_range keeps iy < ih and ix < iw; cb + 4 <= c; weights
        // below k * k * c; the output pixel (oy, ox) is below oh * ow, inside
        // the asserted output length.
        unsafe {
            let mut acc = vld1q_f32(bias.as_ptr().add(cb));
            for ky in ky0..ky1 {
                let iy = oy * g.s.stride + ky - g.s.pad;
                for kx in kx0..kx1 {
                    let ix = ox * g.s.stride + kx - g.s.pad;
                    let x = vld1q_f32(input.as_ptr().add((iy * g.s.iw + ix) * c + cb));
                    acc = vfmaq_f32(acc, x, vld1q_f32(w.as_ptr().add((ky * k + kx) * c + cb)));
                }
            }
            vst1q_f32(out.add((oy * g.s.ow + ox) * c + cb), activate(g.act, acc));
        }
    }

    /// One output pixel, channels `c0..c` (4 at a time, then scalar).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn pixel(
        input: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Geom,
        oy: usize,
        ox: usize,
        c0: usize,
        out: &mut [f32],
    ) {
        let (c, k) = (g.s.c, g.s.k);
        let mut cb = c0;
        while cb + 4 <= c {
            pixel_block(input, w, bias, g, oy, ox, cb, out.as_mut_ptr());
            cb += 4;
        }
        if cb == c {
            return;
        }
        let (ky0, ky1) = tap_range(oy, g.s.stride, g.s.pad, k, g.s.ih);
        let (kx0, kx1) = tap_range(ox, g.s.stride, g.s.pad, k, g.s.iw);
        for ch in cb..c {
            let mut acc = bias[ch];
            for ky in ky0..ky1 {
                let iy = oy * g.s.stride + ky - g.s.pad;
                for kx in kx0..kx1 {
                    let ix = ox * g.s.stride + kx - g.s.pad;
                    acc += input[(iy * g.s.iw + ix) * c + ch] * w[(ky * k + kx) * c + ch];
                }
            }
            out[(oy * g.s.ow + ox) * c + ch] = g.act.apply(acc);
        }
    }
}

/// AVX2 + FMA depthwise kernel for x86_64 hosts: 8 channels per `__m256`.
///
/// Each output row goes block of 8 channels by block, in groups of 8 pixels whose 8
/// accumulators are independent: one weight load serves the group's 8 FMAs, and no FMA
/// waits for the one before it (one accumulator per pixel would chain 9 or 25 dependent
/// FMAs, each waiting out the FMA latency). Groups whose windows all lie inside the input
/// run without checks; the others (the row's ends, rows narrower than a group) test each
/// tap per pixel and skip those in the padding, so padding reads nothing.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::super::avx2_util::activate;
    use super::super::{Activation, DepthwiseShape};
    use super::{inside_range, tap_range};
    use core::arch::x86_64::*;

    /// Pixels per group: 8 accumulators, one weight and one input register out of 16.
    const GROUP: usize = 8;

    /// One layer's shape and buffers, shared by its groups.
    struct Layer {
        input: *const f32,
        iw: usize,
        c: usize,
        w: *const f32,
        k: usize,
        stride: usize,
        pad: usize,
        act: Activation,
        out: *mut f32,
        ow: usize,
    }

    /// AVX2 depthwise convolution with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`super::super::has_avx2_fma`]).
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn depthwise(
        input: &[f32],
        s: DepthwiseShape,
        w: &[f32],
        bias: &[f32],
        act: Activation,
        out: &mut [f32],
    ) {
        let DepthwiseShape {
            ih,
            iw,
            c,
            k,
            stride,
            pad,
            oh,
            ow,
        } = s;
        s.assert_fits("depthwise", input, w, bias, out);
        let c8 = c - c % 8;
        // Output columns whose whole window lies inside the input: x_lo..x_hi.
        let (x_lo, x_hi) = inside_range(ow, stride, pad, k, iw);
        let l = Layer {
            input: input.as_ptr(),
            iw,
            c,
            w: w.as_ptr(),
            k,
            stride,
            pad,
            act,
            out: out.as_mut_ptr(),
            ow,
        };
        for oy in 0..oh {
            let (ky0, ky1) = tap_range(oy, stride, pad, k, ih);
            for cb in (0..c8).step_by(8) {
                // SAFETY: cb + 8 <= c <= bias.len().
                let b = unsafe { _mm256_loadu_ps(bias.as_ptr().add(cb)) };
                let mut ox = 0;
                while ox < ow {
                    let n = GROUP.min(ow - ox);
                    // SAFETY: tap_range keeps every input row inside 0..ih; the
                    // unchecked groups' columns are inside 0..iw (x_lo..x_hi), the
                    // checked ones test each; cb + 8 <= c bounds the channels, and
                    // ox + n <= ow the output pixels; lengths asserted above.
                    unsafe {
                        if n == GROUP && ox >= x_lo && ox + GROUP <= x_hi {
                            group::<false>(&l, oy, ky0, ky1, ox, GROUP, cb, b);
                        } else {
                            group::<true>(&l, oy, ky0, ky1, ox, n, cb, b);
                        }
                    }
                    ox += n;
                }
            }
            // Channels past the last block of 8, one by one (none in MobileNetV3).
            if c8 < c {
                for ox in 0..ow {
                    let (kx0, kx1) = tap_range(ox, stride, pad, k, iw);
                    let o = (oy * ow + ox) * c;
                    for ch in c8..c {
                        let mut acc = bias[ch];
                        for ky in ky0..ky1 {
                            let iy = oy * stride + ky - pad;
                            for kx in kx0..kx1 {
                                let ix = ox * stride + kx - pad;
                                acc += input[(iy * iw + ix) * c + ch] * w[(ky * k + kx) * c + ch];
                            }
                        }
                        out[o + ch] = act.apply(acc);
                    }
                }
            }
        }
    }

    /// Output pixels `ox..ox + n` (n <= [`GROUP`]) of row `oy`, channels `cb..cb + 8`,
    /// over kernel rows `ky0..ky1`. `CHECK`: test each tap's column against the input and
    /// skip it in the padding; without, every column must be inside.
    ///
    /// # Safety
    /// AVX2 + FMA; kernel rows `ky0..ky1` of row `oy` inside the input; without `CHECK`,
    /// every tap column of the `n` pixels inside `0..iw`; `cb + 8 <= c`; `ox + n <= ow`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group<const CHECK: bool>(
        l: &Layer,
        oy: usize,
        ky0: usize,
        ky1: usize,
        ox: usize,
        n: usize,
        cb: usize,
        bias: __m256,
    ) {
        let (iw, c, k, s) = (l.iw, l.c, l.k, l.stride);
        let mut acc = [bias; GROUP];
        // Column of pixel 0's tap kx is x0 + kx (may be negative: in the padding).
        let x0 = (ox * s) as isize - l.pad as isize;
        // SAFETY: see the function contract; checked columns satisfy 0 <= ix < iw.
        unsafe {
            for ky in ky0..ky1 {
                let iy = oy * s + ky - l.pad;
                let row = l.input.add(iy * iw * c + cb);
                let wr = l.w.add(ky * k * c + cb);
                for kx in 0..k {
                    let wv = _mm256_loadu_ps(wr.add(kx * c));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let ix = x0 + (r * s + kx) as isize;
                        if CHECK && (r >= n || ix < 0 || ix >= iw as isize) {
                            continue;
                        }
                        let v = _mm256_loadu_ps(row.offset(ix * c as isize));
                        *a = _mm256_fmadd_ps(v, wv, *a);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(n) {
                let o = (oy * l.ow + ox + r) * c + cb;
                _mm256_storeu_ps(l.out.add(o), activate(l.act, *a));
            }
        }
    }
}

/// The variant this target uses: AVX2 + FMA when the CPU has them, else
/// [`portable`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn depthwise(
    input: &[f32],
    s: DepthwiseShape,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx2::depthwise(input, s, w, bias, act, out) }
    } else {
        portable(input, s, w, bias, act, out)
    }
}
