#!/usr/bin/env bash
# Single-thread ms/image of MobileNetV3 Small and Large (f32, paper head, 224x224, 6 classes):
# derm-runtime vs libtorch (tch 0.26 / libtorch 2.13 CPU), from one command.
#
# For each size it exports a seeded student (derm-train init-student + export), builds
# pi-bench with that model embedded (DERM_MODEL=...), and runs pi-bench's protocol on both
# engines with the same generated images: 10 iterations x 100 images, each image resized and
# normalized by derm-runtime's preprocessing, then the network, then softmax. libtorch runs
# the exported (BatchNorm-folded) graph in eval mode with no grad and 1 thread.
#
# Usage: scripts/compare.sh [pi-bench args, e.g. --iterations 3 --images 50]
# Needs libtorch (scripts/setup.sh). Outputs and logs go to target/compare/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/env.sh
source scripts/env.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
out="target/compare"
mkdir -p "$out"

# libtorch side: the dev profile already builds tch and libtorch's bindings at opt-level 2
# (see Cargo.toml); our crates on that side are optimized too, so the baseline's own
# preprocessing is as fast as the runtime's.
lt_cfg=()
for p in derm-runtime derm-train derm-codegen pi-bench; do
  lt_cfg+=(--config "profile.dev.package.$p.opt-level=3")
done

echo "building derm-train ..." >&2
cargo build -q -p derm-train --bin derm-train "${lt_cfg[@]}"
dt=target/debug/derm-train
mean=(0.7640 0.5382 0.5630)
std=(0.1378 0.1585 0.1759)

field() { # field FILE KEY -> the number after "KEY": in FILE's per_image_ms object
  grep -o "\"$2\": [0-9.eE+-]*" "$1" | tail -1 | awk '{print $2}'
}

rows=()
for arch in small large; do
  student="$out/$arch.student.safetensors"
  model="$out/$arch.safetensors"
  echo "exporting mobilenet_v3_$arch ..." >&2
  "$dt" init-student --arch "$arch" --head paper --seed 0 --mean "${mean[@]}" --std "${std[@]}" \
    --notes "scripts/compare.sh timing model (untrained)" -o "$student" >"$out/$arch.export.log"
  "$dt" export "$student" -o "$model" --no-layers >>"$out/$arch.export.log"
  echo "timing derm-runtime ($arch) ..." >&2
  DERM_MODEL="$model" cargo run -q --release -p pi-bench --bin pi-bench -- "$@" \
    --json "$out/$arch.runtime.json" >"$out/$arch.runtime.txt"
  echo "timing libtorch ($arch) ..." >&2
  DERM_MODEL="$model" cargo run -q -p pi-bench --features libtorch --bin pi-bench-libtorch \
    "${lt_cfg[@]}" -- --model "$model" "$@" --json "$out/$arch.libtorch.json" >"$out/$arch.libtorch.txt"
  rt_mean=$(field "$out/$arch.runtime.json" mean)
  rt_p50=$(field "$out/$arch.runtime.json" p50)
  lt_mean=$(field "$out/$arch.libtorch.json" mean)
  lt_p50=$(field "$out/$arch.libtorch.json" p50)
  parity=$(grep -o '= [0-9.eE+-]* of the logit range' "$out/$arch.libtorch.txt" | awk '{print $2}')
  rows+=("$(awk -v a="$arch" -v rm="$rt_mean" -v rp="$rt_p50" -v lm="$lt_mean" -v lp="$lt_p50" -v d="${parity:-n/a}" \
    'BEGIN { printf "| MobileNetV3-%s | %.3f | %.3f | %.3f | %.3f | %.1fx | %s |", (a=="small"?"Small":"Large"), rm, rp, lm, lp, lp/rp, d }')")
done

echo
echo "single thread, f32, paper head, 224x224, 6 classes; ms per image (resize + normalize + network + softmax)"
echo "$(uname -m), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //'), $(nproc) cores available, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model | derm-runtime mean | derm-runtime p50 | libtorch mean | libtorch p50 | speed-up (p50) | max logit diff / range |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
