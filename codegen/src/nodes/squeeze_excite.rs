//! Squeeze-and-excite, scaling its feature map in place.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Emit, Fold, NodeCodegen, lit, pack_panels};
use crate::ir::{IrError, ModelFile, SqueezeExcite as Op};

/// `kernels::squeeze_excite`.
pub(crate) struct SqueezeExcite {
    op: Op,
    hw: usize,
    /// Hardswish folding ([`super::scale`]): a scaled input scales the pooled vector, so
    /// `input_scale` goes into the first layer's weights; the output carries the input's scale.
    pub(crate) fold: Fold,
}

impl SqueezeExcite {
    /// From the validated op and its input shape `[C, H, W]`.
    pub(crate) fn new(op: &Op, x: &[usize]) -> Self {
        Self {
            op: op.clone(),
            hw: x[1] * x[2],
            fold: Fold::default(),
        }
    }
}

impl NodeCodegen for SqueezeExcite {
    fn name(&self) -> &str {
        &self.op.name
    }
    fn kernel(&self) -> &'static str {
        "squeeze_excite"
    }
    fn inputs(&self) -> Vec<&str> {
        vec![&self.op.input]
    }
    fn output(&self) -> &str {
        &self.op.output
    }
    fn output_len(&self) -> usize {
        self.hw * self.op.channels
    }
    fn in_place(&self) -> bool {
        true
    }
    fn scratch_len(&self) -> usize {
        // The pooled vector (c) and the bottleneck (csq).
        self.op.channels + self.op.squeeze_channels
    }
    fn weights(&self, model: &ModelFile) -> Result<Vec<Vec<f32>>, IrError> {
        let (c, q) = (self.op.channels, self.op.squeeze_channels);
        Ok(vec![
            pack_panels(
                &self
                    .fold
                    .scale_input_weights(model.tensor_f32(&self.op.fc1_weight)?),
                q,
                c,
            ),
            model.tensor_f32(&self.op.fc1_bias)?,
            pack_panels(&model.tensor_f32(&self.op.fc2_weight)?, c, q),
            model.tensor_f32(&self.op.fc2_bias)?,
        ])
    }
    fn fold_mut(&mut self) -> Option<&mut Fold> {
        Some(&mut self.fold)
    }
    fn macs(&self) -> u64 {
        // Pooling adds and the final scaling count one each per element.
        (2 * self.op.channels * self.op.squeeze_channels + 2 * self.hw * self.op.channels) as u64
    }
    fn emit(&self, e: &Emit<'_>) -> TokenStream {
        let (rt, x, scratch) = (e.rt, &e.output, &e.scratch);
        let [w1, b1, w2, b2] = [&e.weights[0], &e.weights[1], &e.weights[2], &e.weights[3]];
        let (hw, c, q) = (
            lit(self.hw),
            lit(self.op.channels),
            lit(self.op.squeeze_channels),
        );
        quote! {
            const SHAPE: #rt::kernels::SeShape = #rt::kernels::SeShape { pixels: #hw, c: #c, squeeze: #q };
            #rt::kernels::squeeze_excite(#x, SHAPE, #w1, #b1, #w2, #b2, #scratch);
        }
    }
}
