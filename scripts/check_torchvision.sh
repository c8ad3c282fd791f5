#!/usr/bin/env bash
# Checks derm-train's tch architectures (Swin V2-T teacher; MobileNetV3 Small and Large
# students, paper and torchvision heads; 128 and 224 px) against torchvision's reference
# implementations: model files made by derm-train load into torchvision with
# load_state_dict(strict=True) and give the same logits. What is compared and why is in
# docs/torchvision-check.md; the work is done by scripts/check_torchvision.py.
#
# Usage: scripts/check_torchvision.sh [check_torchvision.py options, see --help]
#
# Needs target/release/derm-train (cargo build --release -p derm-train) and libtorch
# (scripts/setup.sh libtorch). The first run makes a venv in target/torchvision-venv with
# torch 2.13.0 and torchvision 0.28.0 from PyPI: the torch wheel libtorch is taken from, so
# both sides run the same libtorch_cpu. That wheel's Python extension links the CUDA
# libraries (cuDNN, cuBLAS, NCCL, ...), so `pip install --no-deps` does not import even on
# CPU; the plain install with its NVIDIA wheels does, without a GPU (~2.6 GB download,
# ~4.8 GB venv, no pip cache kept). Scratch files go to target/torchvision-check/; the JSON
# results to target/torchvision-check/results.json. 1 thread; a few minutes at most.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
venv="target/torchvision-venv"
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
derm_venv check_torchvision "$venv" "torch, torchvision" "torch does not import" \
  "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# derm-train gets libtorch from scripts/env.sh inside the script; the venv's torch uses its own.
exec "$venv/bin/python" scripts/check_torchvision.py "$@"
