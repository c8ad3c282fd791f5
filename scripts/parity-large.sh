#!/usr/bin/env bash
# parity-large.sh: MobileNetV3-Large with the paper head through the whole chain on the Pi 4
# target: a seeded tch student -> export (golden logits) -> codegen -> derm-runtime built for
# aarch64 with it embedded -> its model tests under qemu (Cortex-A72), which compare the logits
# with the golden ones.
#
# Not part of scripts/test.sh: rebuilding the runtime around Large costs about two and a half
# minutes (and its tests under qemu about one). The test command covers the same ground in parts: every layer shape of Large through
# the aarch64 kernels (runtime/tests/kernels.rs under qemu) and both Large heads through the whole
# chain on the host (tests/tests/parity.rs). Run this after changing NEON kernels or codegen.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=env.sh
source scripts/env.sh
export CARGO_INCREMENTAL=0

out=target/parity-large
mkdir -p "$out"
# The release build: the one training uses, so usually already there.
cargo build --release --locked -p derm-train
target/release/derm-train init-student --arch large --head paper --seed 7 \
  -o "$out/student.safetensors" >/dev/null
target/release/derm-train export "$out/student.safetensors" -o "$out/model.safetensors" --no-layers
DERM_MODEL="$PWD/$out/model.safetensors" \
  derm_cross test -p derm-runtime --locked --target aarch64-unknown-linux-gnu --test model
echo "MobileNetV3-Large (paper head): aarch64 logits match the exported golden ones" >&2
