//! Fully connected layer on a vector.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Emit, NodeCodegen, act_tokens, lit, pack_panels};
use crate::ir::{IrError, Linear as Op, ModelFile};

/// `kernels::linear`.
pub(crate) struct Linear {
    op: Op,
}

impl Linear {
    /// From the validated op.
    pub(crate) fn new(op: &Op) -> Self {
        Self { op: op.clone() }
    }
}

impl NodeCodegen for Linear {
    fn name(&self) -> &str {
        &self.op.name
    }
    fn kernel(&self) -> &'static str {
        "linear"
    }
    fn inputs(&self) -> Vec<&str> {
        vec![&self.op.input]
    }
    fn output(&self) -> &str {
        &self.op.output
    }
    fn output_len(&self) -> usize {
        self.op.out_features
    }
    fn weights(&self, model: &ModelFile) -> Result<Vec<Vec<f32>>, IrError> {
        Ok(vec![
            pack_panels(
                &model.tensor_f32(&self.op.weight)?,
                self.op.out_features,
                self.op.in_features,
            ),
            model.tensor_f32(&self.op.bias)?,
        ])
    }
    fn macs(&self) -> u64 {
        (self.op.in_features * self.op.out_features) as u64
    }
    fn emit(&self, e: &Emit<'_>) -> TokenStream {
        let (rt, x, out) = (e.rt, &e.inputs[0], &e.output);
        let (w, b) = (&e.weights[0], &e.weights[1]);
        let (k, n) = (lit(self.op.in_features), lit(self.op.out_features));
        let act = act_tokens(rt, self.op.activation);
        quote! {
            #rt::kernels::linear(#x, #k, #n, #w, #b, #act, #out);
        }
    }
}
