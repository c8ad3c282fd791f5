//! Squeeze-excite gates folded into the next layer's weights.
//!
//! Squeeze-excite multiplies every value of its map by its channel's gate, and in
//! MobileNetV3 the only reader of the gated map is the block's 1x1 projection, which
//! multiplies it by its weights. Since `W[j][ch] (x[ch] s[ch]) = (W[j][ch] s[ch]) x[ch]`,
//! the gates can scale the projection's weights instead, once per image: `c * n` multiplies
//! instead of `pixels * c`. Where the map has more pixels than the projection has outputs
//! (rounded up to its panels of 8), that is less work, and the map is read once fewer
//! (MobileNetV3-Small at 224x224: the squeeze-excites of blocks 1 and 4-8; blocks 9-11 have
//! 49 pixels against 96 outputs and keep the in-place scaling).
//!
//! The squeeze-excite node then writes the scaled weights into an arena value of its own
//! (`kernels::squeeze_excite_weights`), the pointwise node reads its map from the
//! squeeze-excite's input and its weights from that value. The logits are the model's up
//! to float rounding.

use super::squeeze_excite::Project;
use super::{NR, Node};

/// Folds every squeeze-excite whose map is read only by one pointwise layer (as its map,
/// not as a residual), and has more pixels than that layer has panel-padded outputs, into
/// that layer's weights (see the module documentation).
pub(crate) fn fold_se_into_weights(nodes: &mut [Node], graph_output: &str) {
    for i in 0..nodes.len() {
        let Node::SqueezeExcite(se) = &nodes[i] else {
            continue;
        };
        let gated = se.gated().to_owned();
        if gated == graph_output {
            continue;
        }
        let readers: Vec<usize> = (0..nodes.len())
            .filter(|&j| nodes[j].get().inputs().contains(&gated.as_str()))
            .collect();
        let [j] = readers[..] else {
            continue;
        };
        let Node::Pointwise(pw) = &nodes[j] else {
            continue;
        };
        let (pixels, _) = se.map();
        let n = pw.op().out_channels;
        if pw.op().input != gated || pw.residual.as_deref() == Some(gated.as_str()) {
            continue;
        }
        if pixels <= n.div_ceil(NR) * NR {
            continue;
        }
        let map = se.input().to_owned();
        let weights = format!("{gated}/weights");
        let project = Project::of(pw, weights.clone());
        if let Node::SqueezeExcite(se) = &mut nodes[i] {
            se.project = Some(project);
        }
        if let Node::Pointwise(pw) = &mut nodes[j] {
            pw.read_map(&map);
            pw.weights_from = Some(weights);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ModelFile;
    use crate::synthetic::SyntheticSpec;

    fn lowered(model: &ModelFile, fold: bool) -> Vec<Node> {
        let shapes = model.validate().unwrap();
        super::super::lower(model, &shapes, true, true, fold).unwrap()
    }

    /// On the synthetic MobileNetV3-like model, the squeeze-excites whose map has more
    /// pixels than the projection has outputs write that projection's weights, which then
    /// reads the squeeze-excite's input and those weights; the others stay in place.
    #[test]
    fn gates_go_into_the_projection_where_the_map_is_larger() {
        let model = SyntheticSpec::tiny(11).build().unwrap();
        let (plain, folded) = (lowered(&model, false), lowered(&model, true));
        let mut moved = 0;
        let mut kept = 0;
        for (i, (p, f)) in plain.iter().zip(&folded).enumerate() {
            let (Node::SqueezeExcite(p), Node::SqueezeExcite(f)) = (p, f) else {
                continue;
            };
            let Some(j) = folded.iter().position(|n| match n {
                Node::Pointwise(pw) => {
                    pw.weights_from.is_some()
                        && pw.weights_from.as_deref() == f.project.as_ref().map(|p| &*p.output)
                }
                _ => false,
            }) else {
                assert!(f.project.is_none());
                kept += 1;
                continue;
            };
            let Node::Pointwise(pw) = &folded[j] else {
                unreachable!()
            };
            assert!(j > i, "the projection runs after the squeeze-excite");
            assert_eq!(pw.op().input, p.input(), "the projection reads the ungated map");
            let (pixels, _) = f.map();
            assert!(pixels > pw.op().out_channels.div_ceil(NR) * NR);
            moved += 1;
        }
        // The tiny model's first block (8x8 map, 8 outputs) folds; its third (4x4, 12 -> 16)
        // and fourth (2x2, 20 -> 24) keep the in-place scaling.
        assert_eq!((moved, kept), (1, 2));
    }
}
