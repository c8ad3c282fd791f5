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
