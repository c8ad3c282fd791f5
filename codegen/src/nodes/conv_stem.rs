//! The first convolution: dense kxk from the planar (CHW) model input to HWC.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Emit, Fold, NodeCodegen, act_tokens, lit};
use crate::ir::{Activation, Conv2d, IrError, ModelFile};

/// `kernels::conv_stem`.
pub(crate) struct ConvStem {
    op: Conv2d,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    /// Hardswish folding ([`super::scale`]); the model input is never scaled.
    pub(crate) fold: Fold,
}

impl ConvStem {
    /// Accepts any dense conv with square stride and padding.
    pub(crate) fn new(op: &Conv2d, x: &[usize], y: &[usize]) -> Result<Self, String> {
        if op.groups != 1 {
            return Err(format!(
                "a grouped conv (groups {}) cannot read the model input",
                op.groups
            ));
        }
        if op.stride[0] != op.stride[1] || op.padding[0] != op.padding[1] {
            return Err(format!(
                "the stem conv needs equal strides and paddings, got stride {:?} padding {:?}",
                op.stride, op.padding
            ));
        }
        Ok(Self {
            op: op.clone(),
            ih: x[1],
            iw: x[2],
            oh: y[1],
            ow: y[2],
            fold: Fold::default(),
        })
    }
}

impl NodeCodegen for ConvStem {
    fn name(&self) -> &str {
        &self.op.name
    }
    fn kernel(&self) -> &'static str {
        "conv_stem"
    }
    fn inputs(&self) -> Vec<&str> {
        vec![&self.op.input]
    }
    fn output(&self) -> &str {
        &self.op.output
    }
    fn output_len(&self) -> usize {
        self.op.out_channels * self.oh * self.ow
    }
    fn weights(&self, model: &ModelFile) -> Result<Vec<Vec<f32>>, IrError> {
        let w = self.fold.scale_weights(model.tensor_f32(&self.op.weight)?);
        let (co, ci) = (self.op.out_channels, self.op.in_channels);
        let [kh, kw] = self.op.kernel;
        let packed = super::stem_layout(&w, co, ci, kh, kw);
        Ok(vec![packed, self.fold.scale_bias(model.tensor_f32(&self.op.bias)?)])
    }
    fn macs(&self) -> u64 {
        let [kh, kw] = self.op.kernel;
        (self.output_len() * self.op.in_channels * kh * kw) as u64
    }
    fn activation(&self) -> Option<Activation> {
        Some(self.op.activation)
    }
    fn fold_mut(&mut self) -> Option<&mut Fold> {
        Some(&mut self.fold)
    }
    fn emit(&self, e: &Emit<'_>) -> TokenStream {
        let (rt, x, out) = (e.rt, &e.inputs[0], &e.output);
        let (w, b) = (&e.weights[0], &e.weights[1]);
        let c = &self.op;
        let (ih, iw, cin, cout) = (
            lit(self.ih),
            lit(self.iw),
            lit(c.in_channels),
            lit(c.out_channels),
        );
        let (kh, kw, s, p) = (
            lit(c.kernel[0]),
            lit(c.kernel[1]),
            lit(c.stride[0]),
            lit(c.padding[0]),
        );
        let (oh, ow) = (lit(self.oh), lit(self.ow));
        let act = act_tokens(rt, c.activation, self.fold);
        quote! {
            const SHAPE: #rt::kernels::ConvShape = #rt::kernels::ConvShape {
                ih: #ih, iw: #iw, cin: #cin, cout: #cout, kh: #kh, kw: #kw,
                stride: #s, pad: #p, oh: #oh, ow: #ow,
            };
            #rt::kernels::conv_stem(#x, SHAPE, #w, #b, #act, #out);
        }
    }
}
