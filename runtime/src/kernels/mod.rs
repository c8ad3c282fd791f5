//! Compute kernels called by the generated model code.
//!
//! Every op lives in its own file with a `portable` function (plain Rust,
//! written so LLVM vectorizes it) and, on aarch64, a `neon` module holding a
//! hand-written NEON version with the same signature. The top-level function
//! named after the op picks one at compile time, so the generated code calls
//! a single direct, inlinable function and no kernel table exists at run time.
//!
//! Layouts (the contract with `derm-codegen`):
//! - activations are `f32`, HWC (batch 1, channels contiguous); only
//!   [`conv_stem`](mod@conv_stem) reads the planar CHW model input;
//! - 1x1 convolution and linear weights are packed in panels of [`NR`] output
//!   channels: `w[(j / NR) * k * NR + i * NR + j % NR] = W[j][i]`, the last
//!   panel zero-padded, so `w.len() == n.div_ceil(NR) * NR * k`;
//! - depthwise weights are `[kh][kw][c]`, stem weights `[kh][kw][cin][cout]`;
//! - BatchNorm is already folded into the weights and biases.
//! - int8 models use the kernels of [`int8`](mod@int8) instead: int8 HWC
//!   activations, unpacked `[n][k]` 1x1 and linear weights (see its docs).
//!
//! Int8 requantization (the one `i32` to `i8` rounding rule every int8
//! kernel follows) lives in [`requant`](mod@requant).
//!
//! The convolution and squeeze-excite kernels, `f32` and int8, take their
//! dimensions as one `Copy` value from [`shape`](mod@shape), which each
//! generated layer declares as a `const`.
//!
//! Kernels never allocate. Mismatched lengths are caught by `debug_assert!`
//! and indexing in the portable kernels, and by an `assert!` on entry in the
//! NEON, AVX2 and AVX-512 ones, whose raw pointer accesses rely on it: for the
//! convolutions and linear layers that is the shape's `assert_fits`
//! ([`ConvShape::assert_fits`] and its siblings), one check for every variant.

pub mod add;
pub mod conv_stem;
pub mod depthwise;
pub mod int8;
pub mod linear;
pub mod pointwise;
pub mod pool;
pub mod requant;
pub mod shape;
pub mod softmax;
pub mod squeeze_excite;

pub use add::add;
pub use conv_stem::conv_stem;
pub use depthwise::depthwise;
pub use linear::linear;
pub use pointwise::pointwise;
pub use pool::global_avg_pool;
pub use requant::{requant, requant_i8};
pub use shape::{ConvShape, DepthwiseShape, PointwiseShape, SeShape};
pub use softmax::softmax;
pub use squeeze_excite::{squeeze_excite, squeeze_excite_weights};

/// Output channels per packed weight panel (the pointwise register tile width).
pub const NR: usize = 8;

/// The activation fused into a convolution or linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `x * relu6(x + 3) / 6`, as PyTorch's `Hardswish`.
    Hardswish,
    /// `z + z * clamp(z, -1, 1)` ([`scaled_hardswish`]): for `z = x / 3` this is two thirds
    /// of `hardswish(x)`, in three vector instructions (max, min, one fused multiply-add)
    /// where hardswish takes five. Code generation uses it where the layer's weights and
    /// bias can take the 1/3 and every layer that reads the result is linear in it and takes
    /// the 3/2 into its weights (derm-codegen's `nodes::scale`).
    ScaledHardswish,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => relu(x),
            Activation::Hardswish => hardswish(x),
            Activation::ScaledHardswish => scaled_hardswish(x),
        }
    }

    /// Applies the activation to every value of `x` in place.
    #[inline(always)]
    pub fn apply_slice(self, x: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Relu => x.iter_mut().for_each(|v| *v = relu(*v)),
            Activation::Hardswish => x.iter_mut().for_each(|v| *v = hardswish(*v)),
            Activation::ScaledHardswish => x.iter_mut().for_each(|v| *v = scaled_hardswish(*v)),
        }
    }
}

/// `max(x, 0)`.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// `min(max(x + 3, 0), 6) / 6`, as PyTorch's `Hardsigmoid`.
#[inline(always)]
pub fn hardsigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0)
}

/// `x * min(max(x + 3, 0), 6) / 6`, as PyTorch's `Hardswish`.
#[inline(always)]
pub fn hardswish(x: f32) -> f32 {
    x * hardsigmoid(x)
}

/// `z + z * clamp(z, -1, 1)` ([`Activation::ScaledHardswish`]): `2/3 * hardswish(3 z)`, since
/// `hardswish(3 z) = 3 z * clamp(3 z + 3, 0, 6) / 6 = 3/2 * z * (1 + clamp(z, -1, 1))`.
#[inline(always)]
pub fn scaled_hardswish(z: f32) -> f32 {
    z + z * z.clamp(-1.0, 1.0)
}

/// Number of packed weights for `n` outputs and `k` inputs.
#[inline(always)]
pub const fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * NR * k
}

/// NEON helpers shared by the aarch64 kernels.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon_util {
    use super::Activation;
    use core::arch::aarch64::*;

    /// The 16 values at `*p` as four vectors from one `ld1 {v28-v31}` that advances `*p`
    /// past them.
    ///
    /// LLVM splits `vld1q_f32_x4` into two `ldp`, and `ld1` of four registers has no
    /// immediate offset, so it is written out with its post-increment: one load instruction
    /// for four vectors where `ldp` takes two, and no separate pointer `add`. The fixed
    /// registers are what the instruction's consecutive-register list needs.
    ///
    /// # Safety
    /// `*p` points at 16 readable `f32`.
    #[inline(always)]
    pub(crate) unsafe fn ld1x4_post(p: &mut *const f32) -> [float32x4_t; 4] {
        let (a, b, c, d): (float32x4_t, float32x4_t, float32x4_t, float32x4_t);
        // SAFETY: the caller guarantees 64 readable bytes at *p; the asm reads only those
        // and writes only its outputs and the advanced pointer.
        unsafe {
            core::arch::asm!(
                "ld1 {{v28.4s, v29.4s, v30.4s, v31.4s}}, [{p}], #64",
                p = inout(reg) *p,
                out("v28") a,
                out("v29") b,
                out("v30") c,
                out("v31") d,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        [a, b, c, d]
    }

    /// [`ld1x4_post`] advancing `*p` by `step` values instead of 16 (`step >= 16` for
    /// rows of a wider matrix, read one 16-value block per row).
    ///
    /// # Safety
    /// `*p` points at 16 readable `f32`, and `*p + step` stays inside (or one past) the
    /// same allocation.
    #[inline(always)]
    pub(crate) unsafe fn ld1x4_post_by(p: &mut *const f32, step: usize) -> [float32x4_t; 4] {
        let (a, b, c, d): (float32x4_t, float32x4_t, float32x4_t, float32x4_t);
        // SAFETY: as in `ld1x4_post`; the pointer advances by `step * 4` bytes.
        unsafe {
            core::arch::asm!(
                "ld1 {{v28.4s, v29.4s, v30.4s, v31.4s}}, [{p}], {s}",
                p = inout(reg) *p,
                s = in(reg) step * 4,
                out("v28") a,
                out("v29") b,
                out("v30") c,
                out("v31") d,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        [a, b, c, d]
    }

    /// Stores four vectors to the 16 values at `*p` with one `st1 {v28-v31}` and advances
    /// `*p` by `step` values (the store's counterpart of [`ld1x4_post_by`]).
    ///
    /// # Safety
    /// `*p` points at 16 writable `f32` that nothing else references.
    #[inline(always)]
    pub(crate) unsafe fn st1x4_post_by(p: &mut *mut f32, v: [float32x4_t; 4], step: usize) {
        // SAFETY: the caller guarantees 64 writable bytes at *p; the asm writes only those
        // and advances the pointer by `step * 4` bytes.
        unsafe {
            core::arch::asm!(
                "st1 {{v28.4s, v29.4s, v30.4s, v31.4s}}, [{p}], {s}",
                p = inout(reg) *p,
                s = in(reg) step * 4,
                in("v28") v[0],
                in("v29") v[1],
                in("v30") v[2],
                in("v31") v[3],
                options(nostack, preserves_flags),
            );
        }
    }

    /// Returns `p` unchanged, hidden from LLVM's loop strength reduction.
    ///
    /// Without it LLVM rewrites pointers that step together as one base plus multiples of a
    /// stride: in the pointwise kernel's rows that costs an `add` per load (about 10% more
    /// instructions in the hot loop), where separate pointers use post-indexed loads; in the
    /// depthwise kernel's 5x5 weight rows the base ended up at the last tap, and the
    /// negative offsets (which `ldr q` cannot encode) took a `sub` per load.
    #[inline(always)]
    pub(crate) fn opaque(p: *const f32) -> *const f32 {
        let mut addr = p.addr();
        // SAFETY: the empty asm block only passes the register through; it
        // touches no memory, and the pointer keeps its provenance.
        unsafe {
            core::arch::asm!("/* {0} */", inout(reg) addr, options(pure, nomem, nostack, preserves_flags))
        };
        p.with_addr(addr)
    }

    /// The 8 values at `p` as two vectors from one `ldp`, loaded anew at every call: the
    /// asm is not `pure`, so LLVM neither merges two calls nor hoists one out of a loop.
    ///
    /// # Safety
    /// `p` points at 8 readable `f32`.
    #[inline(always)]
    pub(crate) unsafe fn ldp_fresh(p: *const f32) -> [float32x4_t; 2] {
        let (a, b): (float32x4_t, float32x4_t);
        // SAFETY: the caller guarantees 32 readable bytes at p; the asm reads only those.
        unsafe {
            core::arch::asm!(
                "ldp {a:q}, {b:q}, [{p}]",
                p = in(reg) p,
                a = out(vreg) a,
                b = out(vreg) b,
                options(readonly, nostack, preserves_flags),
            );
        }
        [a, b]
    }

    /// Applies `act` to four lanes (hardswish as `v * hardsigmoid(v)`).
    #[inline(always)]
    pub(crate) fn activate(act: Activation, v: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is part of the aarch64 baseline, so these register-only
        // intrinsics are always available; no memory is touched.
        unsafe {
            match act {
                Activation::None => v,
                Activation::Relu => vmaxq_f32(v, vdupq_n_f32(0.0)),
                Activation::Hardswish => vmulq_f32(v, hardsigmoid(v)),
                // Three instructions (max, min, multiply-add) where hardswish takes five.
                Activation::ScaledHardswish => {
                    let c = vminq_f32(vmaxq_f32(v, vdupq_n_f32(-1.0)), vdupq_n_f32(1.0));
                    vfmaq_f32(v, v, c)
                }
            }
        }
    }

    /// `min(max(v / 6 + 1/2, 0), 1)` on four lanes: [`super::hardsigmoid`] up to rounding.
    #[inline(always)]
    pub(crate) fn hardsigmoid(v: float32x4_t) -> float32x4_t {
        // x / 6 + 1/2 in one fused multiply-add, then the clamp: 3
        // instructions instead of 4. At the breakpoints -3, 0, 3 it gives
        // exactly 0, 0.5, 1 (the fused rounding of 3 * f32(1/6) + 0.5 is 1.0).
        // SAFETY: register-only NEON intrinsics (aarch64 baseline).
        unsafe {
            let t = vfmaq_f32(vdupq_n_f32(0.5), v, vdupq_n_f32(1.0 / 6.0));
            vminq_f32(vmaxq_f32(t, vdupq_n_f32(0.0)), vdupq_n_f32(1.0))
        }
    }
}

/// Whether this x86_64 CPU (and OS) supports AVX2 and FMA, which the
/// `avx2` kernel variants need. Detected once with `cpuid`/`xgetbv` (no
/// `std` needed) and cached.
#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = detect_avx2_fma();
            STATE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_avx2_fma() -> bool {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    #[target_feature(enable = "xsave")]
    fn xcr0() -> u64 {
        // SAFETY: only called after cpuid reported OSXSAVE, so xgetbv exists.
        unsafe { core::arch::x86_64::_xgetbv(0) }
    }
    let (max_leaf, l1) = (__cpuid(0).eax, __cpuid(1));
    let fma = l1.ecx & (1 << 12) != 0;
    let osxsave = l1.ecx & (1 << 27) != 0;
    let avx = l1.ecx & (1 << 28) != 0;
    if max_leaf < 7 || !(fma && osxsave && avx) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so the xsave feature (xgetbv) is present.
    let os_saves_ymm = unsafe { xcr0() } & 0b110 == 0b110;
    let avx2 = __cpuid_count(7, 0).ebx & (1 << 5) != 0;
    os_saves_ymm && avx2
}

/// Whether this x86_64 CPU (and OS) supports AVX-512 F, DQ, BW, VL, VBMI and VNNI beside
/// AVX2 and FMA, which the `avx512vnni` int8 kernel variants need
/// (`vpdpbusd`: four int8 products summed into each 32-bit lane in one
/// instruction). Detected once with `cpuid`/`xgetbv` and cached.
#[cfg(target_arch = "x86_64")]
pub fn has_avx512_vnni() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = has_avx2_fma() && detect_avx512_vnni();
            STATE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// The AVX-512 half of [`has_avx512_vnni`]; only called once AVX2 (and so
/// leaf 7 and XGETBV) is known to be there.
#[cfg(target_arch = "x86_64")]
fn detect_avx512_vnni() -> bool {
    use core::arch::x86_64::__cpuid_count;
    #[target_feature(enable = "xsave")]
    fn xcr0() -> u64 {
        // SAFETY: the caller checked OSXSAVE (through has_avx2_fma).
        unsafe { core::arch::x86_64::_xgetbv(0) }
    }
    let l7 = __cpuid_count(7, 0);
    let f = l7.ebx & (1 << 16) != 0;
    let bw = l7.ebx & (1 << 30) != 0;
    let vl = l7.ebx & (1 << 31) != 0;
    let dq = l7.ebx & (1 << 17) != 0;
    let vbmi = l7.ecx & (1 << 1) != 0;
    let vnni = l7.ecx & (1 << 11) != 0;
    // The OS must save the opmask registers and all of ZMM0-31 (XCR0 bits
    // 5-7) as well as XMM and YMM (bits 1-2).
    // SAFETY: the xsave feature is present (OSXSAVE, checked by has_avx2_fma).
    let os_saves_zmm = unsafe { xcr0() } & 0xE6 == 0xE6;
    f && dq && bw && vl && vbmi && vnni && os_saves_zmm
}

/// AVX2 helpers shared by the x86_64 kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2_util {
    use super::Activation;
    use core::arch::x86_64::*;

    /// Applies `act` to eight lanes (same formulas as [`super::hardswish`]).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn activate(act: Activation, v: __m256) -> __m256 {
        match act {
            Activation::None => v,
            Activation::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
            Activation::Hardswish => {
                let r6 = _mm256_min_ps(
                    _mm256_max_ps(_mm256_add_ps(v, _mm256_set1_ps(3.0)), _mm256_setzero_ps()),
                    _mm256_set1_ps(6.0),
                );
                _mm256_mul_ps(v, _mm256_mul_ps(r6, _mm256_set1_ps(1.0 / 6.0)))
            }
            Activation::ScaledHardswish => {
                let c = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-1.0)), _mm256_set1_ps(1.0));
                _mm256_fmadd_ps(v, c, v)
            }
        }
    }
}
