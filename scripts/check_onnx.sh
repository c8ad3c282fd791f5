#!/usr/bin/env bash
# Checks `derm-codegen onnx` end to end in ONNX Runtime: exports model files to ONNX with
# their golden vectors as JSON, then scripts/check_onnx.py runs onnx.checker and compares
# ONNX Runtime's logits with the golden ones (max |diff| / logit range <= 1e-4 per sample).
# What the ONNX graph holds and the measured numbers are in docs/onnx.md.
#
# Usage: scripts/check_onnx.sh [MODEL.safetensors ...]
#
# Without arguments it checks the tiny synthetic model, a seeded synthetic
# MobileNetV3-Small (224 px) and models/default.safetensors; a given model file needs its
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
stamp="onnxruntime==$ORT_VERSION onnx==$ONNX_VERSION numpy==$NUMPY_VERSION"

if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]; then
  command -v python3 >/dev/null || { echo "check_onnx: python3 is needed" >&2; exit 1; }
  echo "check_onnx: installing $stamp into $venv (once)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # the stamp is the list of requirements
  "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check $stamp
  "$venv/bin/python" -c "import onnx, onnxruntime, numpy" \
    || { echo "check_onnx: onnx/onnxruntime do not import in $venv" >&2; exit 1; }
  echo "$stamp" >"$venv/.installed"
fi

cargo build --locked -p derm-codegen --bin derm-codegen --example synthetic_model
codegen="target/debug/derm-codegen"
mkdir -p "$out"

models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  target/debug/examples/synthetic_model "$out/tiny.safetensors" 1 --spec tiny
  target/debug/examples/synthetic_model "$out/small.safetensors" 2026
  models=("$out/tiny.safetensors" "$out/small.safetensors" models/default.safetensors)
fi

failed=0
for model in "${models[@]}"; do
  name="$(basename "$model" .safetensors)"
  echo "== $model"
  "$codegen" onnx "$model" -o "$out/$name.onnx" --golden-json "$out/$name.golden.json"
  "$venv/bin/python" scripts/check_onnx.py "$out/$name.onnx" "$out/$name.golden.json" \
    || failed=1
done
if [ "$failed" -ne 0 ]; then
  echo "check_onnx: FAILED" >&2
  exit 1
fi
echo "check_onnx: all passed"
