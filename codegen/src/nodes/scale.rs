//! Hardswish without its division by six.
//!
//! `hardswish(x) = x * relu6(x + 3) / 6` costs five vector instructions per four outputs on
//! NEON (the `/ 6` is folded into a multiply-add, whose accumulator needs a fresh constant)
//! and five on AVX2; `x * relu6(x + 3)` costs four. The kernels offer it as
//! `Activation::Hardswish6`, six times hardswish. Every layer that reads such a value then
//! takes the 1/6 into the weights that multiply it, at code generation time:
//!
//! - pointwise, depthwise and fully connected layers: their weights times 1/6 (not the
//!   bias, which does not multiply the input);
//! - squeeze-excite: the pooled mean is six times too, so its first layer's weights take the
//!   1/6; its output (input times gate) stays six times too and is followed further;
//! - global average pooling: its output is six times too and is followed further.
//!
//! A hardswish stays as it is when any reader of its value (followed through squeeze-excite
//! and pooling) cannot take the factor: a residual add (both operands must agree), the
//! residual operand of a fused pointwise, or the graph output. So the logits are the
//! model's, up to float rounding.

use super::Node;
use crate::ir::Activation;

/// Marks every hardswish node whose readers can all take the 1/6 as `Hardswish6`, and
/// scales those readers' input weights (see the module documentation).
pub(crate) fn fold_hardswish(nodes: &mut [Node], graph_output: &str) {
    for i in 0..nodes.len() {
        let node = nodes[i].get();
        if node.activation() != Some(Activation::Hardswish) || node.output() == graph_output {
            continue;
        }
        let mut readers = Vec::new();
        if !readers_take_scale(nodes, node.output(), graph_output, &mut readers) {
            continue;
        }
        if let Some(f) = nodes[i].get_mut().fold_mut() {
            f.hardswish6 = true;
        }
        for r in readers {
            if let Some(f) = nodes[r].get_mut().fold_mut() {
                f.input_scale /= 6.0;
            }
        }
    }
}

/// Whether every node reading `value`, and every node reading what squeeze-excite and
/// pooling pass on from it, can take a scaled input; collects the nodes whose weights take
/// the factor (pointwise, depthwise, linear, squeeze-excite).
fn readers_take_scale(
    nodes: &[Node],
    value: &str,
    graph_output: &str,
    readers: &mut Vec<usize>,
) -> bool {
    if value == graph_output {
        return false;
    }
    for (j, n) in nodes.iter().enumerate() {
        let inputs = n.get().inputs();
        let Some(pos) = inputs.iter().position(|v| *v == value) else {
            continue;
        };
        // The second input of a pointwise node is its fused residual, added unscaled.
        if inputs[pos + 1..].contains(&value) {
            return false;
        }
        let ok = match n {
            Node::Pointwise(_) => pos == 0,
            Node::Depthwise(_) | Node::Linear(_) => true,
            Node::SqueezeExcite(_) => {
                readers_take_scale(nodes, n.get().output(), graph_output, readers)
            }
            Node::GlobalAvgPool(_) => {
                if !readers_take_scale(nodes, n.get().output(), graph_output, readers) {
                    return false;
                }
                continue;
            }
            Node::ConvStem(_) | Node::Add(_) => false,
        };
        if !ok {
            return false;
        }
        readers.push(j);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ModelFile;
    use crate::synthetic::SyntheticSpec;

    fn fold_of(n: &Node) -> Option<crate::nodes::Fold> {
        match n {
            Node::ConvStem(x) => Some(x.fold),
            Node::Pointwise(x) => Some(x.fold),
            Node::Depthwise(x) => Some(x.fold),
            Node::SqueezeExcite(x) => Some(x.fold),
            Node::Linear(x) => Some(x.fold),
            Node::GlobalAvgPool(_) | Node::Add(_) => None,
        }
    }

    fn lowered(model: &ModelFile, fold: bool) -> Vec<Node> {
        let shapes = model.validate().unwrap();
        super::super::lower(model, &shapes, true, fold, false).unwrap()
    }

    /// On the synthetic MobileNetV3-like model every hardswish is read only by layers with
    /// weights, squeeze-excite and pooling, so every one is folded; each reader of a folded
    /// value carries exactly one factor of 1/6, and nothing else changes.
    #[test]
    fn every_hardswish_of_a_mobilenet_is_folded_into_its_readers() {
        let model = SyntheticSpec::tiny(11).build().unwrap();
        let (plain, folded) = (lowered(&model, false), lowered(&model, true));
        let hardswish = plain
            .iter()
            .filter(|n| n.get().activation() == Some(Activation::Hardswish))
            .count();
        assert!(hardswish >= 3, "the tiny model has {hardswish} hardswish nodes");
        let mut marked = 0;
        let mut scaled = 0;
        for (p, f) in plain.iter().zip(&folded) {
            assert_eq!(p.get().name(), f.get().name());
            if let Some(fold) = fold_of(f) {
                marked += usize::from(fold.hardswish6);
                if fold.input_scale != 1.0 {
                    assert_eq!(fold.input_scale, 1.0 / 6.0, "{}", p.get().name());
                    scaled += 1;
                }
            }
        }
        assert_eq!(marked, hardswish);
        assert!(scaled >= hardswish, "{scaled} scaled readers");
    }
}
