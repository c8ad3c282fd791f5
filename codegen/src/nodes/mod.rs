//! One emitter per kernel the generated code calls, each in its own file,
//! all listed once in [`nodes!`]. A node knows its values, its weights in the
//! kernel's packed layout, its scratch, its MACs and the call it emits.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use crate::CodegenError;
use crate::ir::{Activation, IrError, ModelFile, Op, ValueShapes};

/// What an emitter gets: token expressions for everything the call needs.
pub(crate) struct Emit<'a> {
    /// Path of the runtime crate (`crate` or `::derm_runtime`).
    pub rt: &'a TokenStream,
    /// `&[f32]` expressions, one per [`NodeCodegen::inputs`] entry (empty for
    /// in-place nodes, which read and write `output`).
    pub inputs: Vec<TokenStream>,
    /// A `&mut [f32]` expression of the output buffer.
    pub output: TokenStream,
    /// A `&mut [f32]` expression of the scratch buffer (empty tokens when
    /// [`NodeCodegen::scratch_len`] is 0).
    pub scratch: TokenStream,
    /// `&[f32]` expressions, one per [`NodeCodegen::weights`] entry.
    pub weights: Vec<TokenStream>,
}

/// The interface every node implements.
pub(crate) trait NodeCodegen {
    /// The IR op name (for comments, errors and layer function names).
    fn name(&self) -> &str;
    /// The runtime kernel called.
    fn kernel(&self) -> &'static str;
    /// Values read from the arena, in argument order.
    fn inputs(&self) -> Vec<&str>;
    /// The value written.
    fn output(&self) -> &str;
    /// Element count of the output.
    fn output_len(&self) -> usize;
    /// Whether the kernel transforms its single input in place.
    fn in_place(&self) -> bool {
        false
    }
    /// Scratch elements the kernel needs for the duration of the call.
    fn scratch_len(&self) -> usize {
        0
    }
    /// Weights in the kernel's layouts, in the order [`Emit::weights`] lists them.
    fn weights(&self, model: &ModelFile) -> Result<Vec<Vec<f32>>, IrError>;
    /// Multiply-accumulates per inference.
    fn macs(&self) -> u64;
    /// The kernel call.
    fn emit(&self, e: &Emit<'_>) -> TokenStream;
    /// The fused activation, for nodes that have one.
    fn activation(&self) -> Option<Activation> {
        None
    }
    /// How the node takes part in hardswish folding ([`scale`]): `None` for nodes that
    /// cannot read a scaled input (residual adds).
    fn fold_mut(&mut self) -> Option<&mut Fold> {
        None
    }
}

macro_rules! nodes {
    ($($variant:ident => $module:ident :: $ty:ident),* $(,)?) => {
        $(pub(crate) mod $module;)*
        pub(crate) mod scale;
        pub(crate) mod se_weights;

        /// A lowered op: exactly one kernel call.
        pub(crate) enum Node {
            $(
                #[allow(missing_docs)]
                $variant($module::$ty),
            )*
        }

        impl Node {
            /// The node as its trait object.
            pub(crate) fn get(&self) -> &dyn NodeCodegen {
                match self {
                    $(Node::$variant(n) => n,)*
                }
            }

            /// The node as its mutable trait object.
            pub(crate) fn get_mut(&mut self) -> &mut dyn NodeCodegen {
                match self {
                    $(Node::$variant(n) => n,)*
                }
            }
        }
    };
}

nodes! {
    ConvStem => conv_stem::ConvStem,
    Pointwise => pointwise::Pointwise,
    Depthwise => depthwise::Depthwise,
    SqueezeExcite => squeeze_excite::SqueezeExcite,
    GlobalAvgPool => pool::GlobalAvgPool,
    Linear => linear::Linear,
    Add => add::Add,
}

/// An unsigned literal without suffix, as the kernels take `usize`.
pub(crate) fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// What [`scale::fold_hardswish`] decided for one node; the default changes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fold {
    /// The node's hardswish is emitted as `ScaledHardswish` on a third of its pre-activation:
    /// its weights and bias take [`scale::PRE_SCALE`], and its output is
    /// [`scale::OUT_SCALE`] times the op's.
    pub scaled_hardswish: bool,
    /// Factor on the weights that multiply the node's main input: the inverse of
    /// [`scale::OUT_SCALE`] where that input is a `ScaledHardswish` output (directly or
    /// through squeeze-excite and pooling), else 1.
    pub input_scale: f32,
}

impl Default for Fold {
    fn default() -> Self {
        Self {
            scaled_hardswish: false,
            input_scale: 1.0,
        }
    }
}

impl Fold {
    /// Factor on the node's own output before its activation: [`scale::PRE_SCALE`] for a
    /// scaled hardswish, else 1.
    fn output_scale(&self) -> f32 {
        if self.scaled_hardswish {
            scale::PRE_SCALE
        } else {
            1.0
        }
    }

    /// `w` times [`Fold::input_scale`] and the output scale (`w` itself when both are 1).
    pub(crate) fn scale_weights(&self, mut w: Vec<f32>) -> Vec<f32> {
        let f = self.input_scale * self.output_scale();
        if f != 1.0 {
            w.iter_mut().for_each(|v| *v *= f);
        }
        w
    }

    /// The bias times the output scale (the bias does not multiply the input).
    pub(crate) fn scale_bias(&self, mut b: Vec<f32>) -> Vec<f32> {
        let f = self.output_scale();
        if f != 1.0 {
            b.iter_mut().for_each(|v| *v *= f);
        }
        b
    }
}

/// The runtime's `Activation` variant for `a` as `fold` emits it.
pub(crate) fn act_tokens(rt: &TokenStream, a: Activation, fold: Fold) -> TokenStream {
    match a {
        Activation::None => quote!(#rt::kernels::Activation::None),
        Activation::Relu => quote!(#rt::kernels::Activation::Relu),
        Activation::Hardswish if fold.scaled_hardswish => {
            quote!(#rt::kernels::Activation::ScaledHardswish)
        }
        Activation::Hardswish => quote!(#rt::kernels::Activation::Hardswish),
    }
}

/// Output panel width of the packed weight layout (`kernels::NR`).
pub(crate) const NR: usize = 8;

/// Length of `k x n` weights packed by [`pack_panels`] (`kernels::packed_len`).
pub(crate) fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * NR * k
}

/// Packs `w` (`[n][k]`, row-major) into panels of [`NR`] output channels:
/// `out[(j / NR) * k * NR + i * NR + j % NR] = w[j][i]`, zero-padded.
pub(crate) fn pack_panels(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; packed_len(k, n)];
    for j in 0..n {
        for i in 0..k {
            out[(j / NR) * k * NR + i * NR + j % NR] = w[j * k + i];
        }
    }
    out
}

/// Dense conv weights `[cout][cin][kh][kw]` (PyTorch's) as the stem kernels'
/// `[kh][kw][cin][cout]`: one output pixel's channels are one contiguous run
/// per tap and input channel. Float and int8 stems share this layout.
pub(crate) fn stem_layout<T: Copy + Default>(
    w: &[T],
    cout: usize,
    cin: usize,
    kh: usize,
    kw: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); w.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for y in 0..kh {
                for x in 0..kw {
                    out[((y * kw + x) * cin + ci) * cout + co] =
                        w[((co * cin + ci) * kh + y) * kw + x];
                }
            }
        }
    }
    out
}

/// Depthwise weights `[c][1][k][k]` (PyTorch's) as the depthwise kernels'
/// `[k][k][c]`: each tap is a contiguous channel vector. Float and int8
/// depthwise convolutions share this layout.
pub(crate) fn depthwise_layout<T: Copy + Default>(w: &[T], c: usize, k: usize) -> Vec<T> {
    let mut out = vec![T::default(); w.len()];
    for ch in 0..c {
        for t in 0..k * k {
            out[t * c + ch] = w[ch * k * k + t];
        }
    }
    out
}

/// Lowers the validated graph to kernel calls, fusing each residual add
/// into the pointwise conv that produces one of its operands when allowed, then folding
/// hardswish's 1/6 ([`scale`]) and squeeze-excite gates ([`se_weights`]) into the weights
/// of the layers that read them, when asked.
pub(crate) fn lower(
    model: &ModelFile,
    shapes: &ValueShapes,
    fuse_residual: bool,
    fold_hardswish: bool,
    fold_se: bool,
) -> Result<Vec<Node>, CodegenError> {
    let g = &model.graph;
    let mut uses: std::collections::HashMap<&str, usize> = Default::default();
    for op in &g.ops {
        for v in op.inputs() {
            *uses.entry(v).or_default() += 1;
        }
    }
    *uses.entry(g.output.as_str()).or_default() += 1;
    let unsupported = |op: &str, reason: String| CodegenError::Unsupported {
        op: op.to_owned(),
        reason,
    };

    let mut nodes: Vec<Node> = Vec::new();
    for op in &g.ops {
        let name = op.name();
        if !matches!(op, Op::Conv2d(_)) && op.inputs().contains(&g.input.name.as_str()) {
            return Err(unsupported(
                name,
                "only a conv2d may read the model input (it is planar CHW; everything else is HWC)"
                    .into(),
            ));
        }
        let node = match op {
            Op::Conv2d(c) => {
                let (x, y) = (&shapes[&c.input], &shapes[&c.output]);
                if c.input == g.input.name {
                    Node::ConvStem(
                        conv_stem::ConvStem::new(c, x, y).map_err(|r| unsupported(name, r))?,
                    )
                } else if let Some(p) = pointwise::Pointwise::new(c, x) {
                    Node::Pointwise(p)
                } else {
                    Node::Depthwise(
                        depthwise::Depthwise::new(c, x, y).map_err(|r| unsupported(name, r))?,
                    )
                }
            }
            Op::SqueezeExcite(s) => {
                Node::SqueezeExcite(squeeze_excite::SqueezeExcite::new(s, &shapes[&s.input]))
            }
            Op::GlobalAvgPool(p) => {
                Node::GlobalAvgPool(pool::GlobalAvgPool::new(p, &shapes[&p.input]))
            }
            Op::Linear(l) => Node::Linear(linear::Linear::new(l)),
            Op::Add(a) => {
                if fuse_residual && let Some(()) = try_fuse(&mut nodes, a, &uses, g) {
                    continue;
                }
                Node::Add(add::Add::new(a, shapes[&a.output].iter().product()))
            }
        };
        nodes.push(node);
    }
    if fold_hardswish {
        scale::fold_hardswish(&mut nodes, &g.output);
    }
    // After the hardswish folding: the weights the gates scale carry its factor already.
    if fold_se {
        se_weights::fold_se_into_weights(&mut nodes, &g.output);
    }
    Ok(nodes)
}

/// Turns `add(p, r)` into the residual of the pointwise node producing `p`
/// when `p` has no other reader and `r` exists before that node runs.
fn try_fuse(
    nodes: &mut [Node],
    a: &crate::ir::Add,
    uses: &std::collections::HashMap<&str, usize>,
    g: &crate::ir::Graph,
) -> Option<()> {
    for (p, r) in [(&a.inputs[0], &a.inputs[1]), (&a.inputs[1], &a.inputs[0])] {
        if p == r || uses.get(p.as_str()) != Some(&1) || *p == g.output || *r == g.input.name {
            continue;
        }
        let Some(i) = nodes.iter().position(|n| n.get().output() == p) else {
            continue;
        };
        let defined_before = nodes[..i].iter().any(|n| n.get().output() == r);
        if let Node::Pointwise(pw) = &mut nodes[i]
            && pw.residual.is_none()
            && defined_before
        {
            pw.residual = Some(r.clone());
            pw.output = a.output.clone();
            return Some(());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_matches_the_contract_formula() {
        let (n, k) = (11, 3);
        let w: Vec<f32> = (0..n * k).map(|v| v as f32 + 1.0).collect();
        let p = pack_panels(&w, n, k);
        assert_eq!(p.len(), 16 * k);
        for j in 0..n {
            for i in 0..k {
                assert_eq!(p[(j / 8) * k * 8 + i * 8 + j % 8], w[j * k + i]);
            }
        }
        // Padding lanes of the last panel are zero.
        assert_eq!(p[8 * k + 2 * 8 + 7], 0.0);
    }
}
