#!/usr/bin/env bash
# Checks `derm-codegen onnx` end to end in ONNX Runtime: exports model files to ONNX with
# their golden vectors as JSON, then scripts/check_onnx.py runs onnx.checker and compares
# ONNX Runtime's logits with the golden ones (max |diff| / logit range <= 1e-4 per sample,
# 0.25 for an int8 file's QDQ form).
# What the ONNX graph holds and the measured numbers are in docs/onnx.md.
#
# Usage: scripts/check_onnx.sh [MODEL.safetensors ...]
#
# Without arguments it checks the tiny synthetic model, a seeded synthetic
# MobileNetV3-Small (224 px), models/default.safetensors and models/default-int8.safetensors
# (QDQ, compared within 0.25 of the logit range); a given model file needs its
# <stem>.golden.safetensors beside it. The first run makes a venv in target/onnx-venv with
# onnxruntime, onnx and numpy from PyPI (~100 MB). Scratch files go to target/onnx-check/.
# Exit status non-zero if any check fails. Not part of scripts/test.sh: ONNX Runtime is not
# a build dependency.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

ORT_VERSION=1.31.1
ONNX_VERSION=1.23.2
NUMPY_VERSION=2.4.6
venv="target/onnx-venv"
out="target/onnx-check"
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
derm_venv check_onnx "$venv" "onnx, onnxruntime, numpy" "onnx/onnxruntime do not import" \
  "onnxruntime==$ORT_VERSION" "onnx==$ONNX_VERSION" "numpy==$NUMPY_VERSION"

cargo build --locked -p derm-codegen --bin derm-codegen --example synthetic_model
codegen="target/debug/derm-codegen"
mkdir -p "$out"

models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  target/debug/examples/synthetic_model "$out/tiny.safetensors" 1 --spec tiny
  target/debug/examples/synthetic_model "$out/small.safetensors" 2026
  models=("$out/tiny.safetensors" "$out/small.safetensors" models/default.safetensors
    models/default-int8.safetensors)
fi

failed=0
for model in "${models[@]}"; do
  name="$(basename "$model" .safetensors)"
  echo "== $model"
  summary=$("$codegen" onnx "$model" -o "$out/$name.onnx" --golden-json "$out/$name.golden.json")
  echo "$summary"
  # An int8 file exports in QDQ form, which rounds in float where the runtime rounds in
  # integers: its logits are close, not equal (pi_bench::engine::QDQ_PARITY_TOLERANCE).
  tol=1e-4
  if grep -q "QDQ int8" <<<"$summary"; then tol=0.25; fi
  "$venv/bin/python" scripts/check_onnx.py "$out/$name.onnx" "$out/$name.golden.json" --tol "$tol" \
    || failed=1
done
if [ "$failed" -ne 0 ]; then
  echo "check_onnx: FAILED" >&2
  exit 1
fi
echo "check_onnx: all passed"
