//! Global average pooling: `[H*W][C] -> [C]`.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Emit, NodeCodegen, lit};
use crate::ir::{GlobalAvgPool as Op, IrError, ModelFile};

/// `kernels::global_avg_pool`.
pub(crate) struct GlobalAvgPool {
    op: Op,
    hw: usize,
    c: usize,
}

impl GlobalAvgPool {
    /// From the validated op and its input shape `[C, H, W]`.
    pub(crate) fn new(op: &Op, x: &[usize]) -> Self {
        Self {
            op: op.clone(),
            hw: x[1] * x[2],
            c: x[0],
        }
    }
}

impl NodeCodegen for GlobalAvgPool {
    fn name(&self) -> &str {
        &self.op.name
    }
    fn kernel(&self) -> &'static str {
        "global_avg_pool"
    }
    fn inputs(&self) -> Vec<&str> {
        vec![&self.op.input]
    }
    fn output(&self) -> &str {
        &self.op.output
    }
    fn output_len(&self) -> usize {
        self.c
    }
    fn weights(&self, _: &ModelFile) -> Result<Vec<Vec<f32>>, IrError> {
        Ok(vec![])
    }
    fn macs(&self) -> u64 {
        (self.hw * self.c) as u64
    }
    fn emit(&self, e: &Emit<'_>) -> TokenStream {
        let (rt, x, out) = (e.rt, &e.inputs[0], &e.output);
        let (hw, c) = (lit(self.hw), lit(self.c));
        quote! {
            #rt::kernels::global_avg_pool(#x, #hw, #c, #out);
        }
    }
}
