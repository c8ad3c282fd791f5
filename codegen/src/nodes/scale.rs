//! Hardswish in three vector instructions.
//!
//! `hardswish(x) = x * relu6(x + 3) / 6` costs five vector instructions per four outputs on
//! NEON and AVX2. With `z = x / 3` it is `3/2 * (z + z * clamp(z, -1, 1))`, and
//! `z + z * clamp(z, -1, 1)` costs three: max, min and one fused multiply-add whose
//! accumulator is `z` itself. The kernels offer it as `Activation::ScaledHardswish`. Code
//! generation uses it where both factors fold into weights:
//!
//! - the layer computing `x` (stem, pointwise, depthwise, fully connected) computes `z`
//!   instead: its weights and bias times [`PRE_SCALE`] (1/3);
//! - its output is [`OUT_SCALE`] (2/3) times the hardswish, so every layer that reads it takes
//!   3/2 into the weights that multiply it: pointwise, depthwise and fully connected layers
//!   (not their bias, which does not multiply the input); squeeze-excite's first layer (the
//!   pooled mean carries the factor too), while its output (input times gate) keeps the
//!   factor and is followed further; global average pooling, whose output keeps the factor
//!   and is followed further.
//!
//! A hardswish stays as it is when any reader of its value (followed through squeeze-excite
//! and pooling) cannot take the factor: a residual add (both operands must agree), the
//! residual operand of a fused pointwise, or the graph output; and when its own layer adds a
//! fused residual after the activation. So the logits are the model's, up to float rounding.

use super::Node;
use crate::ir::Activation;

/// Factor on the weights and bias of a layer whose hardswish is scaled: it computes
/// `z = x / 3`.
pub(crate) const PRE_SCALE: f32 = 1.0 / 3.0;

/// `scaled_hardswish(x / 3) / hardswish(x)`: what the readers of a scaled hardswish divide
/// out of their weights.
pub(crate) const OUT_SCALE: f32 = 2.0 / 3.0;

/// Marks every hardswish node whose own weights can take [`PRE_SCALE`] and whose readers
/// can all take [`OUT_SCALE`] as a scaled hardswish, and scales those readers' input weights
/// (see the module documentation).
pub(crate) fn fold_hardswish(nodes: &mut [Node], graph_output: &str) {
    for i in 0..nodes.len() {
        let node = nodes[i].get();
        if node.activation() != Some(Activation::Hardswish) || node.output() == graph_output {
            continue;
        }
        // A fused residual is added after the activation, unscaled.
        if let Node::Pointwise(p) = &nodes[i]
            && p.residual.is_some()
        {
            continue;
        }
        let mut readers = Vec::new();
        if !readers_take_scale(nodes, nodes[i].get().output(), graph_output, &mut readers) {
            continue;
        }
        let Some(f) = nodes[i].get_mut().fold_mut() else {
            continue;
        };
        f.scaled_hardswish = true;
        for r in readers {
            if let Some(f) = nodes[r].get_mut().fold_mut() {
                f.input_scale /= OUT_SCALE;
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

    /// The folded form reproduces hardswish to float precision relative to the value, near
    /// zero too: the layer's weights and bias take [`PRE_SCALE`] (`Fold::scale_weights`,
    /// `Fold::scale_bias`), the runtime's `ScaledHardswish` (`z + z * clamp(z, -1, 1)`)
    /// follows, and a reader divides by [`OUT_SCALE`]. A form that shifts the pre-activation
    /// by a constant (`-x / 3 - 1` was tried) rounds small values away: a seeded network
    /// whose logits are about 1e-8 then gave six equal logits.
    #[test]
    fn the_folded_hardswish_keeps_small_values() {
        let fold = crate::nodes::Fold {
            scaled_hardswish: true,
            input_scale: 1.0,
        };
        let scaled_hardswish = |z: f32| z + z * z.clamp(-1.0, 1.0);
        let hardswish = |x: f64| x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
        for x in [
            5.0f32, 3.0, 1.5, 0.25, 1e-3, 1e-6, 1e-9, 0.0, -1e-9, -1e-6, -1e-3, -0.7, -2.9, -3.0,
            -4.0,
        ] {
            // x as a layer computes it: weight 1 times input x, plus bias 0 (or weight 0.5
            // and bias x / 2).
            for (w, a, b) in [(1.0f32, x, 0.0f32), (0.5, x, x / 2.0)] {
                let ws = fold.scale_weights(vec![w])[0];
                let bs = fold.scale_bias(vec![b])[0];
                let got = scaled_hardswish(ws * a + bs) as f64 / OUT_SCALE as f64;
                let want = hardswish(x as f64);
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs() + 1e-30,
                    "x = {x}: folded {got}, hardswish {want}"
                );
            }
        }
    }

    /// On the synthetic MobileNetV3-like model every hardswish is read only by layers with
    /// weights, squeeze-excite and pooling, so every one is folded; each reader of a folded
    /// value carries exactly one factor of 3/2, and nothing else changes.
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
                marked += usize::from(fold.scaled_hardswish);
                if fold.input_scale != 1.0 {
                    assert_eq!(fold.input_scale, 1.0 / OUT_SCALE, "{}", p.get().name());
                    scaled += 1;
                }
            }
        }
        assert_eq!(marked, hardswish);
        assert!(scaled >= hardswish, "{scaled} scaled readers");
    }
}
