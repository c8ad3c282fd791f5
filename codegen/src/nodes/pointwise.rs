//! 1x1 convolution (a GEMM over pixels), with an optional fused residual add.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Emit, Fold, NodeCodegen, act_tokens, lit, pack_panels};
use crate::ir::{Activation, Conv2d, IrError, ModelFile};

/// `kernels::pointwise`.
pub(crate) struct Pointwise {
    op: Conv2d,
    pixels: usize,
    /// Value added after the activation (a fused `add`).
    pub(crate) residual: Option<String>,
    /// The value written: the conv's own output, or the fused add's.
    pub(crate) output: String,
    /// Hardswish folding ([`super::scale`]).
    pub(crate) fold: Fold,
    /// The arena value holding this layer's packed weights, when a squeeze-excite before it
    /// scales them per image instead of scaling its input ([`super::se_weights`]); `None`:
    /// the weights are constants.
    pub(crate) weights_from: Option<String>,
}

impl Pointwise {
    /// `Some` for dense 1x1, stride 1, no padding.
    pub(crate) fn new(op: &Conv2d, x: &[usize]) -> Option<Self> {
        let is_1x1 =
            op.kernel == [1, 1] && op.stride == [1, 1] && op.padding == [0, 0] && op.groups == 1;
        is_1x1.then(|| Self {
            op: op.clone(),
            pixels: x[1] * x[2],
            residual: None,
            output: op.output.clone(),
            fold: Fold::default(),
            weights_from: None,
        })
    }

    /// The convolution.
    pub(crate) fn op(&self) -> &Conv2d {
        &self.op
    }

    /// Reads `input` as its map instead (a squeeze-excite's own input, when the gates go
    /// into this layer's weights: [`super::se_weights`]).
    pub(crate) fn read_map(&mut self, input: &str) {
        self.op.input = input.to_owned();
    }
}

/// The weights of the 1x1 convolution `op` in the kernel's layout: times the hardswish
/// fold's scales, packed in panels.
pub(crate) fn packed_weights(op: &Conv2d, fold: Fold, model: &ModelFile) -> Result<Vec<f32>, IrError> {
    let w = fold.scale_weights(model.tensor_f32(&op.weight)?);
    Ok(pack_panels(&w, op.out_channels, op.in_channels))
}

impl NodeCodegen for Pointwise {
    fn name(&self) -> &str {
        &self.op.name
    }
    fn kernel(&self) -> &'static str {
        "pointwise"
    }
    fn inputs(&self) -> Vec<&str> {
        let mut v = vec![self.op.input.as_str()];
        v.extend(self.residual.as_deref());
        v.extend(self.weights_from.as_deref());
        v
    }
    fn output(&self) -> &str {
        &self.output
    }
    fn output_len(&self) -> usize {
        self.pixels * self.op.out_channels
    }
    fn weights(&self, model: &ModelFile) -> Result<Vec<Vec<f32>>, IrError> {
        let bias = self.fold.scale_bias(model.tensor_f32(&self.op.bias)?);
        Ok(match self.weights_from {
            Some(_) => vec![bias],
            None => vec![packed_weights(&self.op, self.fold, model)?, bias],
        })
    }
    fn macs(&self) -> u64 {
        (self.pixels * self.op.in_channels * self.op.out_channels) as u64
    }
    fn activation(&self) -> Option<Activation> {
        Some(self.op.activation)
    }
    fn fold_mut(&mut self) -> Option<&mut Fold> {
        Some(&mut self.fold)
    }
    fn emit(&self, e: &Emit<'_>) -> TokenStream {
        let (rt, x, out) = (e.rt, &e.inputs[0], &e.output);
        // Weights from the arena come last among the inputs (see `inputs`).
        let (w, b) = match self.weights_from {
            Some(_) => (&e.inputs[e.inputs.len() - 1], &e.weights[0]),
            None => (&e.weights[0], &e.weights[1]),
        };
        let (p, k, n) = (
            lit(self.pixels),
            lit(self.op.in_channels),
            lit(self.op.out_channels),
        );
        let act = act_tokens(rt, self.op.activation, self.fold);
        let residual = match (&self.residual, e.inputs.get(1)) {
            (Some(_), Some(r)) => quote!(::core::option::Option::Some(#r)),
            _ => quote!(::core::option::Option::None),
        };
        quote! {
            const SHAPE: #rt::kernels::PointwiseShape = #rt::kernels::PointwiseShape { pixels: #p, k: #k, n: #n };
            #rt::kernels::pointwise(#x, SHAPE, #w, #b, #act, #residual, #out);
        }
    }
}
