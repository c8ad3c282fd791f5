//! Fully connected layer on a vector.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Emit, Fold, NodeCodegen, act_tokens, lit, pack_panels};
use crate::ir::{Activation, IrError, Linear as Op, ModelFile};

/// `kernels::linear`.
pub(crate) struct Linear {
    op: Op,
    /// Hardswish folding ([`super::scale`]).
    pub(crate) fold: Fold,
}

impl Linear {
    /// From the validated op.
    pub(crate) fn new(op: &Op) -> Self {
        Self {
            op: op.clone(),
            fold: Fold::default(),
        }
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
                &self.fold.scale_weights(model.tensor_f32(&self.op.weight)?),
                self.op.out_features,
                self.op.in_features,
            ),
            self.fold.scale_bias(model.tensor_f32(&self.op.bias)?),
        ])
    }
    fn macs(&self) -> u64 {
        (self.op.in_features * self.op.out_features) as u64
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
        let (k, n) = (lit(self.op.in_features), lit(self.op.out_features));
        let act = act_tokens(rt, self.op.activation, self.fold);
        quote! {
            #rt::kernels::linear(#x, #k, #n, #w, #b, #act, #out);
        }
    }
}
