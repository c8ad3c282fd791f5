//! Element-wise add, for residuals that could not be fused into a pointwise conv.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Emit, NodeCodegen};
use crate::ir::{Add as Op, IrError, ModelFile};

/// `kernels::add`.
pub(crate) struct Add {
    op: Op,
    len: usize,
}

impl Add {
    /// From the validated op and its element count.
    pub(crate) fn new(op: &Op, len: usize) -> Self {
        Self {
            op: op.clone(),
            len,
        }
    }
}

impl NodeCodegen for Add {
    fn name(&self) -> &str {
        &self.op.name
    }
    fn kernel(&self) -> &'static str {
        "add"
    }
    fn inputs(&self) -> Vec<&str> {
        vec![&self.op.inputs[0], &self.op.inputs[1]]
    }
    fn output(&self) -> &str {
        &self.op.output
    }
    fn output_len(&self) -> usize {
        self.len
    }
    fn weights(&self, _: &ModelFile) -> Result<Vec<Vec<f32>>, IrError> {
        Ok(vec![])
    }
    fn macs(&self) -> u64 {
        0
    }
    fn emit(&self, e: &Emit<'_>) -> TokenStream {
        let (rt, a, b, out) = (e.rt, &e.inputs[0], &e.inputs[1], &e.output);
        quote! {
            #rt::kernels::add(#a, #b, #out);
        }
    }
}
