//! Squeeze-and-excite, scaling its feature map in place, or the weights of the 1x1
//! convolution that reads the map ([`super::se_weights`]).

use proc_macro2::TokenStream;
use quote::quote;

use super::pointwise::{Pointwise, packed_weights};
use super::{Emit, Fold, NodeCodegen, lit, pack_panels, packed_len};
use crate::ir::{Conv2d, IrError, ModelFile, SqueezeExcite as Op};

/// The 1x1 convolution whose weights a squeeze-excite scales instead of its map.
pub(crate) struct Project {
    /// The convolution.
    op: Conv2d,
    /// Its hardswish fold (already decided).
    fold: Fold,
    /// The arena value receiving the scaled weights.
    pub output: String,
}

impl Project {
    /// For the pointwise node `p`, writing into `output`.
    pub(crate) fn of(p: &Pointwise, output: String) -> Self {
        Self {
            op: p.op().clone(),
            fold: p.fold,
            output,
        }
    }

    /// Length of the packed weights (panels of `NR` outputs).
    fn len(&self) -> usize {
        packed_len(self.op.in_channels, self.op.out_channels)
    }
}

/// `kernels::squeeze_excite`.
pub(crate) struct SqueezeExcite {
    op: Op,
    hw: usize,
    /// Hardswish folding ([`super::scale`]): a scaled input scales the pooled vector, so
    /// `input_scale` goes into the first layer's weights; the output carries the input's scale.
    pub(crate) fold: Fold,
    /// The convolution whose weights the gates scale, instead of the map
    /// ([`super::se_weights`]).
    pub(crate) project: Option<Project>,
}

impl SqueezeExcite {
    /// From the validated op and its input shape `[C, H, W]`.
    pub(crate) fn new(op: &Op, x: &[usize]) -> Self {
        Self {
            op: op.clone(),
            hw: x[1] * x[2],
            fold: Fold::default(),
            project: None,
        }
    }

    /// The map's pixels and channels.
    pub(crate) fn map(&self) -> (usize, usize) {
        (self.hw, self.op.channels)
    }

    /// The map this node reads.
    pub(crate) fn input(&self) -> &str {
        &self.op.input
    }

    /// The gated map the op defines (this node's output unless it scales weights instead).
    pub(crate) fn gated(&self) -> &str {
        &self.op.output
    }
}

impl NodeCodegen for SqueezeExcite {
    fn name(&self) -> &str {
        &self.op.name
    }
    fn kernel(&self) -> &'static str {
        match self.project {
            Some(_) => "squeeze_excite_weights",
            None => "squeeze_excite",
        }
    }
    fn inputs(&self) -> Vec<&str> {
        vec![&self.op.input]
    }
    fn output(&self) -> &str {
        match &self.project {
            Some(p) => &p.output,
            None => &self.op.output,
        }
    }
    fn output_len(&self) -> usize {
        match &self.project {
            Some(p) => p.len(),
            None => self.hw * self.op.channels,
        }
    }
    fn in_place(&self) -> bool {
        self.project.is_none()
    }
    fn scratch_len(&self) -> usize {
        // The pooled vector (c) and the bottleneck (csq).
        self.op.channels + self.op.squeeze_channels
    }
    fn weights(&self, model: &ModelFile) -> Result<Vec<Vec<f32>>, IrError> {
        let (c, q) = (self.op.channels, self.op.squeeze_channels);
        let mut w = vec![
            pack_panels(
                &self.fold.scale_weights(model.tensor_f32(&self.op.fc1_weight)?),
                q,
                c,
            ),
            model.tensor_f32(&self.op.fc1_bias)?,
            pack_panels(&model.tensor_f32(&self.op.fc2_weight)?, c, q),
            model.tensor_f32(&self.op.fc2_bias)?,
        ];
        if let Some(p) = &self.project {
            w.push(packed_weights(&p.op, p.fold, model)?);
        }
        Ok(w)
    }
    fn fold_mut(&mut self) -> Option<&mut Fold> {
        Some(&mut self.fold)
    }
    fn macs(&self) -> u64 {
        // Pooling adds and the final scaling count one each per element (of the map, or of
        // the weights scaled instead).
        let scaled = match &self.project {
            Some(p) => p.len(),
            None => self.hw * self.op.channels,
        };
        (2 * self.op.channels * self.op.squeeze_channels + self.hw * self.op.channels + scaled)
            as u64
    }
    fn emit(&self, e: &Emit<'_>) -> TokenStream {
        let (rt, x, scratch) = (e.rt, &e.output, &e.scratch);
        let [w1, b1, w2, b2] = [&e.weights[0], &e.weights[1], &e.weights[2], &e.weights[3]];
        let (hw, c, q) = (
            lit(self.hw),
            lit(self.op.channels),
            lit(self.op.squeeze_channels),
        );
        let shape = quote! {
            const SHAPE: #rt::kernels::SeShape = #rt::kernels::SeShape { pixels: #hw, c: #c, squeeze: #q };
        };
        match self.project {
            Some(_) => {
                let (map, proj) = (&e.inputs[0], &e.weights[4]);
                quote! {
                    #shape
                    #rt::kernels::squeeze_excite_weights(#map, SHAPE, [#w1, #b1, #w2, #b2], #proj, #scratch, #x);
                }
            }
            None => quote! {
                #shape
                #rt::kernels::squeeze_excite(#x, SHAPE, #w1, #b1, #w2, #b2, #scratch);
            },
        }
    }
}
