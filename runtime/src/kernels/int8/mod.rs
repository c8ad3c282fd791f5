//! Int8 kernels: the integer network of `docs/int8.md`, bit for bit.
//!
//! An int8 model computes in integers from the quantized input to the logits:
//! int8 activations (`real = scale * (q - zero_point)`, one scale and zero
//! point per tensor), int8 weights in `[-127, 127]` (symmetric, one scale per
//! output channel), `i32` biases in accumulator units and `i32`
//! accumulators. Every rescale from an accumulator back to int8 goes through
//! the one requantization rule, which lives in
//! [`super::requant`](mod@super::requant): these kernels call its
//! [`requant`](super::requant::requant) and its row function
//! [`requant_i8`](super::requant::requant_i8) (NEON or AVX2 where the
//! target has them, bit-identical to its portable form) and never restate the rule. The oracle they must
//! reproduce exactly is `derm_codegen::reference::int8`.
//!
//! Layouts (the contract with `derm-codegen`):
//! - activations are int8 HWC (`[pixels][channels]`), except the quantized
//!   model input, which is CHW (`[3][H][W]`) and read only by
//!   [`conv_stem`](mod@conv_stem);
//! - stem weights are `[kh][kw][cin][cout]`, depthwise weights `[k][k][c]`,
//!   pointwise and linear weights `[n][k]` row-major (not packed);
//! - biases are `i32` per output channel; requantization multipliers come
//!   per output channel as `mult: &[i32]` (in `[2^30, 2^31)`) and
//!   `shift: &[u8]` (in `[1, 62]`), or as one [`Mult`] for per-tensor
//!   rescales.
//!
//! Accumulators add with `wrapping_add`: the oracle sums in `i64` and casts
//! the total `as i32` (codegen checks that the total fits), and wrapping
//! `i32` arithmetic gives that total modulo `2^32`, i.e. the same bits, in
//! any order and even where a partial sum would leave `i32`. Products of an
//! int8 weight and an input minus its zero point are at most `128 * 255` in
//! magnitude, so they are plain multiplies.
//!
//! Kernels never allocate: accumulator rows live in fixed arrays of
//! [`CHUNK`] channels on the stack, so wide layers go through in chunks.
//! Mismatched lengths are caught by `debug_assert!`.

pub mod add;
pub mod conv_stem;
pub mod depthwise;
pub mod linear;
pub mod pointwise;
pub mod pool;
pub mod quantize;
pub mod squeeze_excite;
mod window;

pub use add::{AddParams, add};
pub use conv_stem::{ConvShape, conv_stem};
pub use depthwise::{DepthwiseShape, depthwise};
pub use linear::{linear, linear_logits};
pub use pointwise::{PointwiseShape, pointwise};
pub use pool::global_avg_pool;
pub use quantize::{quantize, quantize_one};
pub use squeeze_excite::{SeParams, SeShape, squeeze_excite};

use super::requant;
use core::ops::Range;

/// Channels per stack accumulator row: wide layers are processed in chunks
/// of this many output channels, so no kernel needs a scratch argument
/// (256 bytes of `i32`, a comfortable stack footprint on any target).
pub const CHUNK: usize = 64;

/// How an i32 accumulator row becomes int8 output: channel `c` is rescaled
/// by `requant(acc, mult[c], shift[c])`, then `activation` maps it to int8.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// Per output channel multiplier, in `[2^30, 2^31)`.
    pub mult: &'a [i32],
    /// Per output channel right shift, in `[1, 62]`.
    pub shift: &'a [u8],
    /// When every shift exceeds 31 (as in every conv layer of the shipped
    /// models): `31 - shift[c]` per channel, which codegen writes beside the
    /// shifts, so that aarch64 requantizes in 32-bit lanes
    /// (`requant::neon::requant_i8_high`) with no per-row conversion or
    /// check of the shifts. The results are the same bits either way.
    pub high_shift: Option<&'a [i32]>,
    /// What follows the rescale.
    pub activation: Activation<'a>,
}

/// The step after the rescale in an [`Epilogue`].
#[derive(Clone, Copy, Debug)]
pub enum Activation<'a> {
    /// `y = clamp(zero_point + requant(acc), min, 127)`; `min = zero_point`
    /// for a fused ReLU (real 0), else -128.
    Clamp {
        /// Output zero point, in `[-128, 127]`.
        zero_point: i32,
        /// Lower clamp: the zero point for a fused ReLU, else -128.
        min: i8,
    },
    /// `a = clamp(pre_zero_point + requant(acc), -128, 127)`;
    /// `y = table[(a + 128) as usize]`.
    Hardswish {
        /// Zero point of the pre-activation, in `[-128, 127]`.
        pre_zero_point: i32,
        /// Hardswish of every pre-activation value `a`, at index `a + 128`,
        /// already in the output's scale (built by codegen in `f64`, so
        /// every machine uses the same bytes).
        table: &'a [i8; 256],
    },
    /// The hardswish in `f32` from the accumulator, with no int8
    /// pre-activation (the model file's `quantization.float_hardswish`):
    /// `f = f32(acc) * scale[c]`, `h = f * clamp(f + 3, 0, 6)`, then
    /// [`quantize_one`]`(h, inv_scale[c], zero_point)`.
    /// Each step is one IEEE `f32` operation, never fused, so every target
    /// gives the same bits. The epilogue's `mult` and `shift` are empty.
    FloatHardswish {
        /// Per output channel: the accumulator's real scale.
        scale: &'a [f32],
        /// Per output channel: `1 / (6 * output scale)` (one value repeated unless the
        /// output has a grid per channel).
        inv_scale: &'a [f32],
        /// Output zero point.
        zero_point: i32,
    },
}

impl<'a> Epilogue<'a> {
    /// Requantization to an output with `zero_point`, clamped below at
    /// `min` ([`Activation::Clamp`]).
    #[inline]
    pub const fn requant(mult: &'a [i32], shift: &'a [u8], zero_point: i32, min: i8) -> Self {
        Self {
            mult,
            shift,
            high_shift: None,
            activation: Activation::Clamp { zero_point, min },
        }
    }

    /// Requantization into the pre-activation's scale, then the hardswish
    /// `table` ([`Activation::Hardswish`]).
    #[inline]
    pub const fn hardswish(
        mult: &'a [i32],
        shift: &'a [u8],
        pre_zero_point: i32,
        table: &'a [i8; 256],
    ) -> Self {
        Self {
            mult,
            shift,
            high_shift: None,
            activation: Activation::Hardswish {
                pre_zero_point,
                table,
            },
        }
    }

    /// The hardswish in `f32` from the accumulator
    /// ([`Activation::FloatHardswish`]): no integer rescale.
    #[inline]
    pub const fn float_hardswish(scale: &'a [f32], inv_scale: &'a [f32], zero_point: i32) -> Self {
        Self {
            mult: &[],
            shift: &[],
            high_shift: None,
            activation: Activation::FloatHardswish {
                scale,
                inv_scale,
                zero_point,
            },
        }
    }

    /// The same epilogue with `high_shift[c] = 31 - shift[c]` given (see
    /// [`Epilogue::high_shift`]). Every shift must exceed 31 and `high_shift`
    /// must be exactly those values: they are two forms of one constant.
    #[inline]
    pub const fn with_high_shifts(self, high_shift: &'a [i32]) -> Self {
        Self {
            high_shift: Some(high_shift),
            ..self
        }
    }

    /// Applies the epilogue to one row of `out.len()` channels: channel `c`
    /// is index `c` of `acc`, `out` and the multipliers, so `acc`, `mult`
    /// and `shift` all have `out.len()` values (see [`Epilogue::slice`] for
    /// part of a row).
    #[inline]
    pub fn apply(&self, acc: &[i32], out: &mut [i8]) {
        // SAFETY: the dispatching row function needs no CPU feature.
        unsafe { self.apply_with::<requant::Dispatch>(acc, out) }
    }

    /// [`Epilogue::apply`] with the row function `R` (see [`requant::Row`]).
    ///
    /// # Safety
    /// `R`'s CPU features are present.
    #[inline(always)]
    pub(crate) unsafe fn apply_with<R: requant::Row>(&self, acc: &[i32], out: &mut [i8]) {
        debug_assert_eq!(acc.len(), out.len());
        if let Activation::FloatHardswish {
            scale,
            inv_scale,
            zero_point,
        } = self.activation
        {
            // AVX-512: the same operations in 16 lanes (the portable loop's `as i32` keeps
            // the compiler from vectorizing it on x86_64: each lane went through a scalar
            // NaN test and conversion).
            #[cfg(target_arch = "x86_64")]
            if R::VBMI {
                // SAFETY: R has AVX-512 F, BW and VL (Row::VBMI's contract).
                unsafe { float_hardswish_avx512(acc, scale, inv_scale, zero_point, out) };
                return;
            }
            float_hardswish(acc, scale, inv_scale, zero_point, out);
            return;
        }
        // AVX-512: requantization and hardswish lookup in registers.
        #[cfg(target_arch = "x86_64")]
        if let (
            true,
            Some(t),
            Activation::Hardswish {
                pre_zero_point,
                table,
            },
        ) = (R::VBMI, self.high_shift, self.activation)
        {
            // SAFETY: R has AVX-512 VBMI, BW and VL (Row::VBMI's contract).
            unsafe {
                let q = vbmi_table(table);
                requant::avx512::requant_i8_high_then(
                    acc,
                    self.mult,
                    self.shift,
                    t,
                    pre_zero_point,
                    -128,
                    127,
                    out,
                    |b| vbmi_look16(&q, b),
                );
            }
            return;
        }
        let (zero_point, min) = match self.activation {
            Activation::Clamp { zero_point, min } => (zero_point, min),
            Activation::Hardswish { pre_zero_point, .. } => (pre_zero_point, -128),
            Activation::FloatHardswish { .. } => unreachable!("returned above"),
        };
        // SAFETY: R's features are the caller's contract.
        unsafe {
            match self.high_shift {
                Some(t) => {
                    debug_assert!(
                        self.shift
                            .iter()
                            .zip(t)
                            .all(|(&s, &t)| s > 31 && t == 31 - s as i32),
                        "high_shift is not 31 - shift with every shift above 31"
                    );
                    R::requant_i8_high(acc, self.mult, self.shift, t, zero_point, min, 127, out)
                }
                None => R::requant_i8(acc, self.mult, self.shift, zero_point, min, 127, out),
            }
        }
        if let Activation::Hardswish { table, .. } = self.activation {
            #[cfg(target_arch = "x86_64")]
            if R::VBMI {
                // SAFETY: R has AVX-512 VBMI, BW and VL (Row::VBMI's contract).
                unsafe { vbmi_lookup(table, out) };
                return;
            }
            lookup(table, out);
        }
    }

    /// The same epilogue restricted to the output channels in `range` (its
    /// multipliers and shifts sliced, the activation kept), for rows
    /// processed in chunks.
    #[inline]
    pub fn slice(&self, range: Range<usize>) -> Epilogue<'a> {
        if let Activation::FloatHardswish {
            scale,
            inv_scale,
            zero_point,
        } = self.activation
        {
            return Self::float_hardswish(&scale[range.clone()], &inv_scale[range], zero_point);
        }
        Epilogue {
            mult: &self.mult[range.clone()],
            shift: &self.shift[range.clone()],
            high_shift: self.high_shift.map(|t| &t[range]),
            activation: self.activation,
        }
    }

    /// The number of output channels the epilogue has multipliers (or, for
    /// a float hardswish, scales) for.
    #[inline]
    pub fn channels(&self) -> usize {
        if let Activation::FloatHardswish { scale, .. } = self.activation {
            return scale.len();
        }
        debug_assert_eq!(self.mult.len(), self.shift.len());
        self.mult.len()
    }
}

/// [`Activation::FloatHardswish`] on one row: `out[i]` from `acc[i]` with
/// channel scale `scale[i]` and inverse output scale `inv_scale[i]`.
///
/// Written without branches so that the compiler vectorizes it on every
/// target (the `f32` operations are the same in any lane width, so the bits
/// are too). [`quantize::quantize_one`]'s NaN test is left out: a NaN `v`
/// passes `clamp`, stays NaN through the rounding and converts to 0, the
/// same result.
#[inline(always)]
fn float_hardswish(acc: &[i32], scale: &[f32], inv_scale: &[f32], zero_point: i32, out: &mut [i8]) {
    const ROUND_MAGIC: f32 = 12_582_912.0;
    for (((o, &a), &s), &inv) in out.iter_mut().zip(acc).zip(scale).zip(inv_scale) {
        let f = a as f32 * s;
        let h = f * (f + 3.0).clamp(0.0, 6.0);
        let v = (h * inv).clamp(-1024.0, 1024.0);
        let q = ((v + ROUND_MAGIC) - ROUND_MAGIC) as i32;
        *o = zero_point.saturating_add(q).clamp(-128, 127) as i8;
    }
}

/// [`float_hardswish`] with AVX-512, 16 lanes per step and a masked tail. Each operation is
/// the portable one: `min`/`max` take the constant first so that a NaN operand comes through
/// as Rust's `clamp` passes it; after the clamp and the rounding every ordered value is an
/// integer in [-1024, 1024], which the truncating conversion keeps, and NaN lanes convert to
/// 0 as `as i32` does (zero-masked); the zero point is added in 32 bits (no overflow at these
/// magnitudes) and the narrowing saturates to [-128, 127] like the final clamp.
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn float_hardswish_avx512(
    acc: &[i32],
    scale: &[f32],
    inv_scale: &[f32],
    zero_point: i32,
    out: &mut [i8],
) {
    use core::arch::x86_64::*;
    let n = out
        .len()
        .min(acc.len())
        .min(scale.len())
        .min(inv_scale.len());
    let zp = _mm512_set1_epi32(zero_point);
    let mut i = 0;
    while i < n {
        let left = n - i;
        let mask: __mmask16 = if left >= 16 {
            0xffff
        } else {
            (1u16 << left) - 1
        };
        // SAFETY: the masked lanes are below n, inside acc, scale, inv_scale and out.
        unsafe {
            let a = _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(i));
            let sc = _mm512_maskz_loadu_ps(mask, scale.as_ptr().add(i));
            let inv = _mm512_maskz_loadu_ps(mask, inv_scale.as_ptr().add(i));
            let q = float_hardswish16(a, sc, inv, zp);
            _mm512_mask_cvtsepi32_storeu_epi8(out.as_mut_ptr().add(i).cast(), mask, q);
        }
        i += 16;
    }
}

/// The 16 lanes of [`float_hardswish_avx512`] before the narrowing: `zero_point + q` per
/// lane as `i32` (the caller narrows with signed saturation), from accumulators `a`,
/// channel scales `sc` and inverse output scales `inv`.
///
/// # Safety
/// The CPU supports AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn float_hardswish16(
    a: core::arch::x86_64::__m512i,
    sc: core::arch::x86_64::__m512,
    inv: core::arch::x86_64::__m512,
    zp: core::arch::x86_64::__m512i,
) -> core::arch::x86_64::__m512i {
    use core::arch::x86_64::*;
    const ROUND_MAGIC: f32 = 12_582_912.0;
    // SAFETY: register-only AVX-512 F, the caller's contract.
    unsafe {
        let (zero, three, six) = (
            _mm512_setzero_ps(),
            _mm512_set1_ps(3.0),
            _mm512_set1_ps(6.0),
        );
        let (lo, hi, magic) = (
            _mm512_set1_ps(-1024.0),
            _mm512_set1_ps(1024.0),
            _mm512_set1_ps(ROUND_MAGIC),
        );
        let f = _mm512_mul_ps(_mm512_cvtepi32_ps(a), sc);
        let r6 = _mm512_min_ps(six, _mm512_max_ps(zero, _mm512_add_ps(f, three)));
        let h = _mm512_mul_ps(f, r6);
        let v = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(h, inv)));
        let r = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
        let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r);
        _mm512_add_epi32(_mm512_maskz_cvttps_epi32(ordered, r), zp)
    }
}

/// An [`Epilogue`] applied on vector registers (aarch64): the one implementation the fused
/// paths of the NEON pointwise tiles and depthwise interior pixels share. It performs the
/// operations of `requant::neon::requant_i8_high` and [`lookup`] in the same order
/// (SQDMULH, SRSHL by `31 - s`, the zero point added saturating, the ReLU bound, the
/// saturating narrows, the table), so the same bits as the row path.
#[cfg(target_arch = "aarch64")]
pub(crate) struct NeonEpilogue<'a> {
    mult: &'a [i32],
    high_shift: &'a [i32],
    zero_point: core::arch::aarch64::int32x4_t,
    /// The ReLU's lower bound, if any (the narrows already clamp to `[-128, 127]`).
    min: Option<core::arch::aarch64::int32x4_t>,
    table: Option<[core::arch::aarch64::int8x16x4_t; 4]>,
}

#[cfg(target_arch = "aarch64")]
impl<'a> NeonEpilogue<'a> {
    /// The register form of `e` for `channels` output channels, when every shift exceeds 31
    /// (`high_shift` given, as in every conv layer of the shipped models) and the activation
    /// is a clamp or a hardswish table; `None` leaves the layer to the row path.
    ///
    /// # Panics
    /// If `e`'s multipliers or shifts hold fewer than `channels` values.
    #[inline(always)]
    pub(crate) fn new(e: &Epilogue<'a>, channels: usize) -> Option<Self> {
        use core::arch::aarch64::*;
        let high_shift = e.high_shift?;
        let (zero_point, min, table) = match e.activation {
            Activation::Clamp { zero_point, min } => (zero_point, min, None),
            Activation::Hardswish {
                pre_zero_point,
                table,
            } => (pre_zero_point, i8::MIN, Some(table)),
            Activation::FloatHardswish { .. } => return None,
        };
        assert!(
            e.mult.len() >= channels && high_shift.len() >= channels,
            "int8 epilogue: fewer multipliers or shifts than the {channels} channels"
        );
        // SAFETY: register-only NEON (aarch64 baseline).
        let (zp, lo) = unsafe { (vdupq_n_s32(zero_point), vdupq_n_s32(min as i32)) };
        Some(Self {
            mult: e.mult,
            high_shift,
            zero_point: zp,
            min: (min > i8::MIN).then_some(lo),
            table: table.map(neon_table),
        })
    }
}

/// [`Activation::FloatHardswish`] on vector registers (aarch64): the operations of
/// [`float_hardswish`] four lanes at a time, each one IEEE `f32` operation as there
/// (SCVTF rounds to nearest as `as f32` does; the rounding to an integer as explained in
/// `quad`; the zero point added saturating; the narrows clamp to `[-128, 127]`), so the
/// same bits as the row path. FMAX and FMIN differ from `clamp` only on a signed zero, which the
/// rounding step maps to the same integer.
#[cfg(target_arch = "aarch64")]
pub(crate) struct NeonFloatHardswish<'a> {
    scale: &'a [f32],
    inv_scale: &'a [f32],
    zero_point: core::arch::aarch64::int32x4_t,
}

#[cfg(target_arch = "aarch64")]
impl<'a> NeonFloatHardswish<'a> {
    /// The register form of `e` for `channels` output channels, when its activation is
    /// [`Activation::FloatHardswish`].
    ///
    /// # Panics
    /// If `e` has scales for fewer than `channels` channels.
    #[inline(always)]
    pub(crate) fn new(e: &Epilogue<'a>, channels: usize) -> Option<Self> {
        use core::arch::aarch64::*;
        let Activation::FloatHardswish {
            scale,
            inv_scale,
            zero_point,
        } = e.activation
        else {
            return None;
        };
        assert!(
            scale.len() >= channels && inv_scale.len() >= channels,
            "int8 epilogue: fewer scales than the {channels} channels"
        );
        // SAFETY: register-only NEON (aarch64 baseline).
        let zero_point = unsafe { vdupq_n_s32(zero_point) };
        Some(Self {
            scale,
            inv_scale,
            zero_point,
        })
    }
}

/// A register epilogue: how the fused NEON paths turn accumulators into int8 outputs
/// ([`NeonEpilogue`] for the integer requantization, [`NeonFloatHardswish`] for the float
/// hardswish).
#[cfg(target_arch = "aarch64")]
pub(crate) trait QuadEpilogue {
    /// Channels `j..j + 4` of the accumulators `a`, mapped and saturated to `i16`.
    ///
    /// # Safety
    /// `j + 4` is at most the channels the epilogue was made for.
    unsafe fn quad(
        &self,
        a: core::arch::aarch64::int32x4_t,
        j: usize,
    ) -> core::arch::aarch64::int16x4_t;

    /// Sixteen outputs from four [`QuadEpilogue::quad`]s.
    fn bytes(&self, q: [core::arch::aarch64::int16x4_t; 4]) -> core::arch::aarch64::int8x16_t;
}

#[cfg(target_arch = "aarch64")]
impl QuadEpilogue for NeonEpilogue<'_> {
    /// Requantized: SQDMULH, SRSHL by `31 - s`, the zero point added saturating, the ReLU
    /// bound, the narrow to `i16`.
    #[inline(always)]
    unsafe fn quad(
        &self,
        a: core::arch::aarch64::int32x4_t,
        j: usize,
    ) -> core::arch::aarch64::int16x4_t {
        use core::arch::aarch64::*;
        // SAFETY: j + 4 values of mult and high_shift exist (the contract and `new`).
        unsafe {
            let m = vld1q_s32(self.mult.as_ptr().add(j));
            let t = vld1q_s32(self.high_shift.as_ptr().add(j));
            let v = vqaddq_s32(vrshlq_s32(vqdmulhq_s32(a, m), t), self.zero_point);
            vqmovn_s32(match self.min {
                Some(lo) => vmaxq_s32(v, lo),
                None => v,
            })
        }
    }

    /// Narrowed to int8, then looked up in the hardswish table if there is one.
    #[inline(always)]
    fn bytes(&self, q: [core::arch::aarch64::int16x4_t; 4]) -> core::arch::aarch64::int8x16_t {
        let v = narrow16(q);
        match &self.table {
            Some(t) => look16(t, v),
            None => v,
        }
    }
}

/// Four quads of `i16` narrowed, saturating, to sixteen int8 values.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn narrow16(q: [core::arch::aarch64::int16x4_t; 4]) -> core::arch::aarch64::int8x16_t {
    use core::arch::aarch64::*;
    // SAFETY: register-only NEON (aarch64 baseline).
    unsafe {
        vcombine_s8(
            vqmovn_s16(vcombine_s16(q[0], q[1])),
            vqmovn_s16(vcombine_s16(q[2], q[3])),
        )
    }
}

#[cfg(target_arch = "aarch64")]
impl QuadEpilogue for NeonFloatHardswish<'_> {
    #[inline(always)]
    unsafe fn quad(
        &self,
        a: core::arch::aarch64::int32x4_t,
        j: usize,
    ) -> core::arch::aarch64::int16x4_t {
        use core::arch::aarch64::*;
        // SAFETY: j + 4 scales and inverse scales exist (the contract and `new`).
        unsafe {
            let f = vmulq_f32(vcvtq_f32_s32(a), vld1q_f32(self.scale.as_ptr().add(j)));
            let inv = vld1q_f32(self.inv_scale.as_ptr().add(j));
            let r = vminq_f32(
                vmaxq_f32(vaddq_f32(f, vdupq_n_f32(3.0)), vdupq_n_f32(0.0)),
                vdupq_n_f32(6.0),
            );
            let v = vmulq_f32(vmulq_f32(f, r), inv);
            // FCVTNS rounds to nearest, ties to even, as the row path's magic-number
            // rounding of the value clamped to [-1024, 1024] does; beyond that range both
            // saturate to the same output once the zero point is added (|zero point| <=
            // 128), and a NaN becomes 0 in both. So the clamp and the two additions go.
            vqmovn_s32(vqaddq_s32(vcvtnq_s32_f32(v), self.zero_point))
        }
    }

    #[inline(always)]
    fn bytes(&self, q: [core::arch::aarch64::int16x4_t; 4]) -> core::arch::aarch64::int8x16_t {
        narrow16(q)
    }
}

/// The hardswish table as four 64-byte quarters in registers, for [`look16`].
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn neon_table(table: &[i8; 256]) -> [core::arch::aarch64::int8x16x4_t; 4] {
    use core::arch::aarch64::*;
    let t = table.as_ptr();
    // SAFETY: the four loads read the table's 256 bytes; NEON is part of every aarch64 target.
    unsafe {
        [
            vld1q_s8_x4(t),
            vld1q_s8_x4(t.add(64)),
            vld1q_s8_x4(t.add(128)),
            vld1q_s8_x4(t.add(192)),
        ]
    }
}

/// `table[a + 128]` for 16 int8 values `a` at once, with the quarters of [`neon_table`]:
/// TBL/TBX over each 64-byte quarter (an index outside a quarter leaves the lane to the
/// others).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn look16(
    q: &[core::arch::aarch64::int8x16x4_t; 4],
    a: core::arch::aarch64::int8x16_t,
) -> core::arch::aarch64::int8x16_t {
    use core::arch::aarch64::*;
    // SAFETY: register-only NEON (aarch64 baseline).
    unsafe {
        let quarter = vdupq_n_u8(64);
        // a + 128 for an i8 a is its bit pattern with the sign flipped, read as u8.
        let idx = veorq_u8(vreinterpretq_u8_s8(a), vdupq_n_u8(0x80));
        let mut v = vqtbl4q_s8(q[0], idx);
        let idx = vsubq_u8(idx, quarter);
        v = vqtbx4q_s8(v, q[1], idx);
        let idx = vsubq_u8(idx, quarter);
        v = vqtbx4q_s8(v, q[2], idx);
        let idx = vsubq_u8(idx, quarter);
        vqtbx4q_s8(v, q[3], idx)
    }
}

/// `v = table[v + 128]` for every value of `out` (the hardswish tables of
/// [`Activation::Hardswish`]).
///
/// aarch64 looks up 16 values at a time with TBL/TBX over the table's four
/// 64-byte quarters (an index outside a quarter leaves the lane to the
/// others); the rest one by one.
#[inline(always)]
fn lookup(table: &[i8; 256], out: &mut [i8]) {
    #[allow(unused_mut)]
    let mut i = 0;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: every load of the table reads its 256 bytes, and every load
    // and store of `out` reads i..i + 16 with i + 16 <= out.len(); NEON is
    // part of every aarch64 target.
    unsafe {
        use core::arch::aarch64::*;
        if out.len() >= 16 {
            let q = neon_table(table);
            while i + 16 <= out.len() {
                let p = out.as_mut_ptr().add(i);
                vst1q_s8(p, look16(&q, vld1q_s8(p)));
                i += 16;
            }
        }
    }
    for o in &mut out[i..] {
        // a is an i8, so a + 128 always indexes the 256 entries: no bounds
        // failure is possible.
        *o = table[(i32::from(*o) + 128) as usize];
    }
}

/// x86_64 with AVX-512 VBMI: [`lookup`] 32 values at a time (the rest
/// through a byte mask). The table's
/// four 64-byte quarters are looked up with `vpermi2b` (two 32-byte
/// registers per quarter, indexed by the low 6 bits of `v + 128`), and bits
/// 6 and 7 of the index choose among the four results.
///
/// # Safety
/// The CPU supports AVX-512 VBMI, BW and VL.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2")]
unsafe fn vbmi_lookup(table: &[i8; 256], out: &mut [i8]) {
    use core::arch::x86_64::*;
    let mut i = 0;
    // SAFETY: the table loads read its 256 bytes; every load and store of
    // out covers i..i + 32 with i + 32 <= out.len(), or is masked to the
    // rest of out.
    unsafe {
        let t = table.as_ptr().cast::<__m256i>();
        let q: [__m256i; 8] = core::array::from_fn(|j| _mm256_loadu_si256(t.add(j)));
        let (sign, b6) = (_mm256_set1_epi8(i8::MIN), _mm256_set1_epi8(0x40));
        let look = |v: __m256i| {
            // a + 128 for an i8 a is its bit pattern with the sign flipped.
            let idx = _mm256_xor_si256(v, sign);
            let r0 = _mm256_permutex2var_epi8(q[0], idx, q[1]);
            let r1 = _mm256_permutex2var_epi8(q[2], idx, q[3]);
            let r2 = _mm256_permutex2var_epi8(q[4], idx, q[5]);
            let r3 = _mm256_permutex2var_epi8(q[6], idx, q[7]);
            let m6 = _mm256_test_epi8_mask(idx, b6);
            let m7 = _mm256_test_epi8_mask(idx, sign);
            let lo = _mm256_mask_blend_epi8(m6, r0, r1);
            let hi = _mm256_mask_blend_epi8(m6, r2, r3);
            _mm256_mask_blend_epi8(m7, lo, hi)
        };
        while i + 32 <= out.len() {
            let p = out.as_mut_ptr().add(i).cast::<__m256i>();
            _mm256_storeu_si256(p, look(_mm256_loadu_si256(p)));
            i += 32;
        }
        // The rest (rows of 8 or 16 channels are common) through a byte
        // mask: masked-off bytes are neither read nor written.
        let rest = out.len() - i;
        if rest > 0 {
            let k: __mmask32 = (1u32 << rest) - 1;
            let p = out.as_mut_ptr().add(i);
            _mm256_mask_storeu_epi8(p, k, look(_mm256_maskz_loadu_epi8(k, p)));
        }
    }
}

/// An [`Epilogue`] for 16 channels held in AVX-512 registers, for kernels
/// that keep a tile's accumulators in registers: the multipliers, the
/// `31 - shift` values and the hardswish table (or the float hardswish's
/// scales) are loaded once per tile of pixels instead of once per pixel, and
/// the accumulators are never stored and reloaded (see
/// [`Epilogue::avx512_16`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
// Built once per block and kept in registers; the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Epilogue16 {
    /// The integer requantization ([`Activation::Clamp`] or
    /// [`Activation::Hardswish`]) with the shifts in their high form.
    Int {
        m: core::arch::x86_64::__m512i,
        t: core::arch::x86_64::__m512i,
        zp: core::arch::x86_64::__m512i,
        min: core::arch::x86_64::__m128i,
        table: Option<[core::arch::x86_64::__m512i; 4]>,
    },
    /// [`Activation::FloatHardswish`]: the operations of the row function
    /// ([`float_hardswish16`]).
    Float {
        scale: core::arch::x86_64::__m512,
        inv: core::arch::x86_64::__m512,
        zp: core::arch::x86_64::__m512i,
    },
}

#[cfg(target_arch = "x86_64")]
impl Epilogue16 {
    /// The epilogue's 16 output bytes for 16 accumulators (channels past
    /// the prepared count give bytes the caller does not store).
    ///
    /// # Safety
    /// The CPU supports AVX-512 F, BW, VL and VBMI.
    #[inline(always)]
    pub(crate) unsafe fn apply(
        &self,
        acc: core::arch::x86_64::__m512i,
    ) -> core::arch::x86_64::__m128i {
        use core::arch::x86_64::*;
        // SAFETY: register-only AVX-512, the caller's contract.
        unsafe {
            match self {
                Self::Int {
                    m,
                    t,
                    zp,
                    min,
                    table,
                } => {
                    let q = requant::avx512::high16(acc, *m, *t);
                    // Signed saturation to [-128, 127], then the ReLU floor: the
                    // clamp of `requant::portable` with max = 127 (see
                    // `requant::avx512::requant_i8_high`).
                    let b = _mm_max_epi8(_mm512_cvtsepi32_epi8(_mm512_add_epi32(q, *zp)), *min);
                    match table {
                        Some(q) => vbmi_look16(q, b),
                        None => b,
                    }
                }
                // The row function's masked store saturates the same way.
                Self::Float { scale, inv, zp } => {
                    _mm512_cvtsepi32_epi8(float_hardswish16(acc, *scale, *inv, *zp))
                }
            }
        }
    }

    /// [`Self::apply`] of four accumulator vectors (four pixels' 16 channels) at once: lane
    /// `j` (bytes `16 j..16 j + 16`) of the result is `self.apply(acc[j])`. The four `i32`
    /// vectors are narrowed together ([`pack4`]) and the floor and the table lookup run once
    /// on 64 bytes, where four [`Self::apply`] calls narrow (`vpmovsdb`, two micro-ops each)
    /// and look up 16 bytes at a time: about a quarter fewer instructions per pixel.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F, BW, VL and VBMI.
    #[inline(always)]
    pub(crate) unsafe fn apply4(
        &self,
        acc: [core::arch::x86_64::__m512i; 4],
    ) -> core::arch::x86_64::__m512i {
        use core::arch::x86_64::*;
        // SAFETY: register-only AVX-512, the caller's contract.
        unsafe {
            match self {
                Self::Int {
                    m,
                    t,
                    zp,
                    min,
                    table,
                } => {
                    // Written out: in a closure (`acc.map`) the intrinsics lose the
                    // caller's features and became calls in some callers.
                    let q = [
                        _mm512_add_epi32(requant::avx512::high16(acc[0], *m, *t), *zp),
                        _mm512_add_epi32(requant::avx512::high16(acc[1], *m, *t), *zp),
                        _mm512_add_epi32(requant::avx512::high16(acc[2], *m, *t), *zp),
                        _mm512_add_epi32(requant::avx512::high16(acc[3], *m, *t), *zp),
                    ];
                    let b = _mm512_max_epi8(pack4(q), _mm512_broadcast_i32x4(*min));
                    match table {
                        Some(q) => vbmi_look64(q, b),
                        None => b,
                    }
                }
                Self::Float { scale, inv, zp } => pack4([
                    float_hardswish16(acc[0], *scale, *inv, *zp),
                    float_hardswish16(acc[1], *scale, *inv, *zp),
                    float_hardswish16(acc[2], *scale, *inv, *zp),
                    float_hardswish16(acc[3], *scale, *inv, *zp),
                ]),
            }
        }
    }
}

/// Four vectors of 16 `i32` each saturated to `i8` (as `vpmovsdb` does), vector `j` in
/// 128-bit lane `j`: `vpackssdw` and `vpacksswb` saturate through `i16` (which changes no
/// value's `i8` saturation) but work within 128-bit lanes, leaving 32-bit group `4 L + j`
/// with channels `4 L..4 L + 4` of vector `j`; one `vpermd` transposes those groups.
///
/// # Safety
/// The CPU supports AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pack4(q: [core::arch::x86_64::__m512i; 4]) -> core::arch::x86_64::__m512i {
    use core::arch::x86_64::*;
    // Output group 4 j + L takes input group 4 L + j.
    const IDX: [i32; 16] = {
        let mut t = [0i32; 16];
        let mut i = 0;
        while i < 16 {
            t[i] = (4 * (i % 4) + i / 4) as i32;
            i += 1;
        }
        t
    };
    // SAFETY: register-only AVX-512 and a 64-byte load of IDX, the caller's contract.
    unsafe {
        let w01 = _mm512_packs_epi32(q[0], q[1]);
        let w23 = _mm512_packs_epi32(q[2], q[3]);
        let b = _mm512_packs_epi16(w01, w23);
        _mm512_permutexvar_epi32(_mm512_loadu_si512(IDX.as_ptr().cast()), b)
    }
}

impl Epilogue<'_> {
    /// The epilogue of channels `c0..c0 + n` (`n <= 16`) as an
    /// [`Epilogue16`]: always for a float hardswish, and for the integer
    /// activations when the shifts come in their high form (as in every
    /// conv layer of the shipped models); `None` otherwise, and the caller
    /// takes [`Epilogue::apply_with`].
    ///
    /// # Safety
    /// The CPU supports AVX-512 F, BW, VL and VBMI.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) unsafe fn avx512_16(&self, c0: usize, n: usize) -> Option<Epilogue16> {
        use core::arch::x86_64::*;
        let k: __mmask16 = if n == 16 { !0 } else { (1u16 << n) - 1 };
        if let Activation::FloatHardswish {
            scale,
            inv_scale,
            zero_point,
        } = self.activation
        {
            assert!(n <= 16 && c0 + n <= scale.len() && c0 + n <= inv_scale.len());
            // SAFETY: the loads are masked to channels c0..c0 + n, inside the
            // scales (asserted above); AVX-512 is the caller's contract.
            return unsafe {
                Some(Epilogue16::Float {
                    scale: _mm512_maskz_loadu_ps(k, scale.as_ptr().add(c0)),
                    inv: _mm512_maskz_loadu_ps(k, inv_scale.as_ptr().add(c0)),
                    zp: _mm512_set1_epi32(zero_point),
                })
            };
        }
        let t = self.high_shift?;
        assert!(n <= 16 && c0 + n <= self.mult.len() && c0 + n <= t.len());
        let (zero_point, min, table) = match self.activation {
            Activation::Clamp { zero_point, min } => (zero_point, min, None),
            Activation::Hardswish {
                pre_zero_point,
                table,
            } => (pre_zero_point, -128, Some(table)),
            Activation::FloatHardswish { .. } => unreachable!("returned above"),
        };
        // SAFETY: the loads are masked to channels c0..c0 + n, inside the
        // multipliers and shifts (asserted above); AVX-512 is the caller's
        // contract.
        unsafe {
            Some(Epilogue16::Int {
                m: _mm512_maskz_loadu_epi32(k, self.mult.as_ptr().add(c0)),
                t: _mm512_maskz_loadu_epi32(k, t.as_ptr().add(c0)),
                zp: _mm512_set1_epi32(zero_point),
                min: _mm_set1_epi8(min),
                table: table.map(|t| vbmi_table(t)),
            })
        }
    }
}

/// The 256 bytes of a hardswish table as two pairs of 64-byte registers,
/// for [`vbmi_look16`].
///
/// # Safety
/// The CPU supports AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn vbmi_table(table: &[i8; 256]) -> [core::arch::x86_64::__m512i; 4] {
    use core::arch::x86_64::*;
    // SAFETY: four 64-byte loads inside the table's 256 bytes; AVX-512 F is
    // the caller's contract.
    unsafe {
        let t = table.as_ptr();
        core::array::from_fn(|j| _mm512_loadu_si512(t.add(64 * j).cast()))
    }
}

/// `table[v + 128]` for 16 bytes `v` in a register: `v + 128` (the bit
/// pattern with the sign flipped) indexes the table's first or second half
/// with its low 7 bits (`vpermi2b` over two 64-byte registers each), and its
/// bit 7 picks the half.
///
/// # Safety
/// The CPU supports AVX-512 VBMI, BW and VL.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn vbmi_look16(
    q: &[core::arch::x86_64::__m512i; 4],
    v: core::arch::x86_64::__m128i,
) -> core::arch::x86_64::__m128i {
    use core::arch::x86_64::*;
    // SAFETY: register-only AVX-512 VBMI, BW and VL, the caller's contract.
    unsafe {
        let idx = _mm_xor_si128(v, _mm_set1_epi8(i8::MIN));
        let wide = _mm512_castsi128_si512(idx);
        let lo = _mm512_castsi512_si128(_mm512_permutex2var_epi8(q[0], wide, q[1]));
        let hi = _mm512_castsi512_si128(_mm512_permutex2var_epi8(q[2], wide, q[3]));
        _mm_mask_blend_epi8(_mm_movepi8_mask(idx), lo, hi)
    }
}

/// [`vbmi_look16`] for 64 bytes.
///
/// # Safety
/// The CPU supports AVX-512 VBMI and BW.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn vbmi_look64(
    q: &[core::arch::x86_64::__m512i; 4],
    v: core::arch::x86_64::__m512i,
) -> core::arch::x86_64::__m512i {
    use core::arch::x86_64::*;
    // SAFETY: register-only AVX-512 VBMI and BW, the caller's contract.
    unsafe {
        let idx = _mm512_xor_si512(v, _mm512_set1_epi8(i8::MIN));
        let lo = _mm512_permutex2var_epi8(q[0], idx, q[1]);
        let hi = _mm512_permutex2var_epi8(q[2], idx, q[3]);
        _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi)
    }
}

/// A multiplier m * 2^-shift as the requantization rule takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mult {
    /// Fixed-point multiplier, in `[2^30, 2^31)`.
    pub m: i32,
    /// Right shift, in `[1, 62]`.
    pub shift: u8,
}

impl Mult {
    /// [`requant`](super::requant::requant)`(x, self.m, self.shift)`.
    #[inline(always)]
    pub const fn requant(self, x: i32) -> i32 {
        requant::requant(x, self.m, self.shift as u32)
    }
}

/// One [`Mult`] broadcast over a chunk, so that per-tensor rescales go
/// through the same row function ([`requant::requant_i8`]) as per-channel ones.
struct Uniform {
    mult: [i32; CHUNK],
    shift: [u8; CHUNK],
    /// `31 - shift` when the shift exceeds 31 (see [`Epilogue::high_shift`]).
    high_shift: Option<[i32; CHUNK]>,
}

impl Uniform {
    #[inline]
    fn new(m: Mult) -> Self {
        Self {
            mult: [m.m; CHUNK],
            shift: [m.shift; CHUNK],
            high_shift: (m.shift > 31).then_some([31 - i32::from(m.shift); CHUNK]),
        }
    }

    /// `out[i] = clamp(zero_point + requant(acc[i], m), min, max)` for a row
    /// of at most [`CHUNK`] values.
    #[inline]
    fn apply(&self, acc: &[i32], zero_point: i32, min: i8, max: i8, out: &mut [i8]) {
        // SAFETY: the dispatching row functions need no CPU feature.
        unsafe { self.apply_with::<requant::Dispatch>(acc, zero_point, min, max, out) }
    }

    /// [`Uniform::apply`] with the row function `R` (see [`requant::Row`]).
    ///
    /// # Safety
    /// `R`'s CPU features are present.
    #[inline(always)]
    unsafe fn apply_with<R: requant::Row>(
        &self,
        acc: &[i32],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        let n = acc.len();
        let (mult, shift) = (&self.mult[..n], &self.shift[..n]);
        // SAFETY: R's features are the caller's contract.
        unsafe {
            match &self.high_shift {
                Some(t) => R::requant_i8_high(acc, mult, shift, &t[..n], zero_point, min, max, out),
                None => R::requant_i8(acc, mult, shift, zero_point, min, max, out),
            }
        }
    }
}

/// `acc[j] += sum_i w[j * k + i] * v[i]` (wrapping) for an `[acc.len()][k]`
/// int8 matrix and a vector `v` of `k` values that `widen` maps into `i16`
/// (int8 values, or offsets of int8 values from a zero point, in `[-255,
/// 255]`): the GEMV of the fully connected layers (linear, squeeze-excite).
///
/// The vector goes through a stack copy in `i16`, a chunk of inputs at a
/// time: products of two values known to fit 16 bits are what x86_64
/// compiles into `vpmaddwd` (32 products a step) and aarch64 into widening
/// multiply-adds, where `i32` operands took a 32-bit multiply per product.
/// Each product is below `2^15 * 2^8` in magnitude, and the sums wrap
/// modulo `2^32` like the oracle's `i64` sum `as i32` (see the module
/// docs), in whatever order the compiler adds them.
#[inline(always)]
fn gemv_acc<T: Copy>(w: &[i8], k: usize, v: &[T], widen: impl Fn(T) -> i16, acc: &mut [i32]) {
    const KC: usize = 256;
    debug_assert_eq!(v.len(), k);
    debug_assert_eq!(w.len(), acc.len() * k);
    let mut v16 = [0i16; KC];
    for i0 in (0..k).step_by(KC) {
        let kc = KC.min(k - i0);
        for (d, &x) in v16.iter_mut().zip(&v[i0..i0 + kc]) {
            *d = widen(x);
        }
        let v16 = &v16[..kc];
        for (j, a) in acc.iter_mut().enumerate() {
            let row = &w[j * k + i0..j * k + i0 + kc];
            let dot = row.iter().zip(v16).fold(0i32, |s, (&wv, &x)| {
                s.wrapping_add(i32::from(wv) * i32::from(x))
            });
            *a = a.wrapping_add(dot);
        }
    }
}
