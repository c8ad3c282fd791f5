//! The embedded model as reports name it: file, SHA-256, precision, size, and the metrics its
//! provenance records (`evaluation`: held-out scores by derm-runtime; `metrics`: the training
//! loop's validation scores), from the constants `derm-runtime` compiles in.

use derm_runtime::{
    ARENA_LEN, CENTRE_CROP, CLASS_NAMES, INPUT_H, INPUT_W, MACS, MODEL_NAME, MODEL_PRECISION,
    MODEL_PROVENANCE_JSON, MODEL_SHA256, NUM_CLASSES, PARAMS,
};
use serde_json::Value;

/// The embedded model file's provenance object (`Null` if the constant were not JSON, which
/// the build script never writes).
pub fn provenance() -> Value {
    serde_json::from_str(MODEL_PROVENANCE_JSON).unwrap_or(Value::Null)
}

/// The header lines naming the embedded model: `(label, text)` pairs.
pub fn header_lines() -> Vec<(&'static str, String)> {
    let mut lines = vec![
        (
            "model",
            format!(
                "{MODEL_NAME} ({MODEL_PRECISION} weights, {}), sha256 {MODEL_SHA256}",
                arithmetic(MODEL_PRECISION)
            ),
        ),
        (
            "model shape",
            format!(
                "{INPUT_W}x{INPUT_H} input, {NUM_CLASSES} classes, {PARAMS} params, {:.1} M MACs, arena {} KiB",
                MACS as f64 / 1e6,
                ARENA_LEN * 4 / 1024
            ),
        ),
    ];
    lines.extend(metric_lines(&provenance()));
    lines
}

/// What a model of `precision` computes in: int8 files run integer kernels end to end; f16
/// files store half weights that the kernels widen to `f32`.
pub fn arithmetic(precision: &str) -> &'static str {
    if precision == "int8" {
        "integer arithmetic"
    } else {
        "f32 arithmetic"
    }
}

/// Lines for the metrics a provenance object records; fields that are missing or not numbers
/// are left out, and anything that is not an object gives a line saying so.
pub fn metric_lines(provenance: &Value) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if provenance.get("trained") == Some(&Value::Bool(false)) {
        lines.push(("model training", "none (untrained weights)".to_string()));
    }
    if let Some(text) = provenance.get("evaluation").and_then(scores) {
        lines.push(("model evaluation", text));
        if let Some(Value::Object(groups)) = provenance["evaluation"].get("per_group_accuracy") {
            let per: Vec<String> = groups
                .iter()
                .filter_map(|(g, v)| v.as_f64().map(|a| format!("{g} {a:.3}")))
                .collect();
            if !per.is_empty() {
                lines.push(("  per group", per.join(", ")));
            }
        }
    }
    if let Some(text) = provenance.get("metrics").and_then(scores) {
        lines.push(("model validation", format!("{text} (training loop)")));
    }
    if lines.is_empty() {
        lines.push((
            "model metrics",
            "none recorded in the model file's provenance".to_string(),
        ));
    }
    lines
}

/// `accuracy a, balanced accuracy b, fairness f (SPD s, minority m)` from whichever of these
/// an object has; `None` when it has none.
fn scores(v: &Value) -> Option<String> {
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    let mut parts = Vec::new();
    if let Some(a) = num("accuracy") {
        parts.push(format!("accuracy {a:.4}"));
    }
    if let Some(b) = num("balanced_accuracy") {
        parts.push(format!("balanced accuracy {b:.4}"));
    }
    let mut extra = Vec::new();
    if let Some(s) = num("spd") {
        extra.push(format!("SPD {s:.4}"));
    }
    if let Some(m) = v.get("minority_group").and_then(Value::as_str) {
        extra.push(format!("minority {m}"));
    }
    match num("fairness") {
        Some(f) if extra.is_empty() => parts.push(format!("fairness {f:.4}")),
        Some(f) => parts.push(format!("fairness {f:.4} ({})", extra.join(", "))),
        None => parts.extend(extra),
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The model as `--json` reports it.
pub fn json() -> Value {
    serde_json::json!({
        "file": MODEL_NAME,
        "sha256": MODEL_SHA256,
        "precision": MODEL_PRECISION,
        "input": [INPUT_H, INPUT_W],
        "centre_crop": CENTRE_CROP,
        "classes": CLASS_NAMES,
        "params": PARAMS,
        "macs": MACS,
        "arena_bytes": ARENA_LEN * 4,
        "provenance": provenance(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_constants_describe_a_file() {
        assert!(!MODEL_NAME.is_empty());
        assert_eq!(MODEL_SHA256.len(), 64);
        assert!(MODEL_SHA256.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(provenance().is_object());
        let lines = header_lines();
        assert!(lines[0].1.contains(MODEL_SHA256) && lines[0].1.contains(MODEL_NAME));
        assert!(lines[0].1.contains(arithmetic(MODEL_PRECISION)));
        assert_eq!(arithmetic("int8"), "integer arithmetic");
        assert_eq!(arithmetic("f16"), "f32 arithmetic");
        assert_eq!(arithmetic("f32"), "f32 arithmetic");
        assert_eq!(json()["sha256"], MODEL_SHA256);
    }

    #[test]
    fn metrics_from_a_provenance_like_the_shipped_one() {
        let p = json!({
            "evaluation": {"accuracy": 0.7667, "balanced_accuracy": 0.6135, "fairness": 0.6788,
                           "spd": 0.0642, "minority_group": "age00-39",
                           "per_group_accuracy": {"age00-39": 0.789, "age40-54": "n/a"}},
            "metrics": {"accuracy": 0.7642, "fairness": 0.78},
        });
        let lines = metric_lines(&p);
        assert_eq!(
            lines[0].1,
            "accuracy 0.7667, balanced accuracy 0.6135, fairness 0.6788 (SPD 0.0642, minority age00-39)"
        );
        assert_eq!(lines[1], ("  per group", "age00-39 0.789".to_string()));
        assert_eq!(
            lines[2].1,
            "accuracy 0.7642, fairness 0.7800 (training loop)"
        );
    }

    #[test]
    fn odd_provenance_never_panics() {
        for p in [
            json!(null),
            json!([1, 2]),
            json!("text"),
            json!({"evaluation": 3, "metrics": {"accuracy": "high"}}),
            json!({"evaluation": {"per_group_accuracy": {"a": 0.5}}}),
        ] {
            let lines = metric_lines(&p);
            assert_eq!(lines.len(), 1, "{p}: {lines:?}");
            assert_eq!(lines[0].0, "model metrics");
        }
        let untrained = metric_lines(&json!({"trained": false}));
        assert_eq!(untrained[0].1, "none (untrained weights)");
    }
}
