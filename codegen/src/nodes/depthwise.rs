//! Depthwise kxk convolution (groups == channels), HWC in and out.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Emit, Fold, NodeCodegen, act_tokens, lit};
use crate::ir::{Activation, Conv2d, IrError, ModelFile};

/// `kernels::depthwise`.
pub(crate) struct Depthwise {
    op: Conv2d,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    /// Hardswish folding ([`super::scale`]).
    pub(crate) fold: Fold,
}

impl Depthwise {
    /// Accepts square depthwise convs with equal strides and paddings; any
    /// other conv shape has no kernel and is reported.
    pub(crate) fn new(op: &Conv2d, x: &[usize], y: &[usize]) -> Result<Self, String> {
        let depthwise = op.groups == op.in_channels && op.groups == op.out_channels;
        if !depthwise {
            return Err(format!(
                "no kernel for a conv with kernel {:?}, stride {:?}, groups {} ({} -> {} channels): \
                 supported are the model-input conv, 1x1 stride-1 dense convs and depthwise convs",
                op.kernel, op.stride, op.groups, op.in_channels, op.out_channels
            ));
        }
        if op.kernel[0] != op.kernel[1]
            || op.stride[0] != op.stride[1]
            || op.padding[0] != op.padding[1]
        {
            return Err(format!(
                "depthwise conv needs a square kernel and equal strides/paddings, got kernel {:?} stride {:?} padding {:?}",
                op.kernel, op.stride, op.padding
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

impl NodeCodegen for Depthwise {
    fn name(&self) -> &str {
        &self.op.name
    }
    fn kernel(&self) -> &'static str {
        "depthwise"
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
        let c = self.op.out_channels;
        let k = self.op.kernel[0];
        let packed = super::depthwise_layout(&w, c, k);
        Ok(vec![packed, self.fold.scale_bias(model.tensor_f32(&self.op.bias)?)])
    }
    fn macs(&self) -> u64 {
        (self.output_len() * self.op.kernel[0] * self.op.kernel[1]) as u64
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
        let (ih, iw, ch) = (lit(self.ih), lit(self.iw), lit(c.out_channels));
        let (k, s, p) = (lit(c.kernel[0]), lit(c.stride[0]), lit(c.padding[0]));
        let (oh, ow) = (lit(self.oh), lit(self.ow));
        let act = act_tokens(rt, c.activation, self.fold);
        quote! {
            const SHAPE: #rt::kernels::DepthwiseShape = #rt::kernels::DepthwiseShape {
                ih: #ih, iw: #iw, c: #ch, k: #k, stride: #s, pad: #p, oh: #oh, ow: #ow,
            };
            #rt::kernels::depthwise(#x, SHAPE, #w, #b, #act, #out);
        }
    }
}
