#!/usr/bin/env bash
# Executed aarch64 instructions per image (our stand-in for Raspberry Pi 4 cost):
# build a small runner for aarch64 (Cortex-A72), count its instructions under
# qemu-aarch64 with the insn plugin for N=1 and N=11 runs, print (c11 - c1) / 10.
#
#   scripts/icount.sh            # the embedded model: derm_runtime::run (examples/icount.rs)
#   scripts/icount.sh kernels    # MobileNetV3-Small's layers through the kernels alone
#   scripts/icount.sh layers     # the same, one line per layer (name, MACs, insns, insns per 4 MACs)
#   scripts/icount.sh profile    # the embedded model (f32 or int8, DERM_MODEL), instructions per
#                                # function: each generated layer_N_... is one layer of the network
#   scripts/icount.sh preprocess # the embedded model's input preprocessing (crop, resize,
#                                # normalize) per image, over the latency protocol's 4 image sizes
#
# Needs `scripts/setup.sh aarch64 icount` (cross toolchain, qemu, the insn plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
PLUGIN="$DERM_QEMU_PLUGIN_DIR/libinsn.so"
[[ -f $PLUGIN ]] || { echo "icount: $PLUGIN missing; run scripts/setup.sh icount" >&2; exit 1; }
TARGET=aarch64-unknown-linux-gnu
BIN_DIR="${DERM_CROSS_TARGET_DIR:-target/aarch64-cross}/$TARGET/release/examples"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# count BIN ARGS...: executed instructions of one run (empty environment, so
# the count does not depend on the caller's variables).
count() {
  env -i qemu-aarch64 -L / -cpu cortex-a72 -plugin "$PLUGIN,inline=on" -d plugin -D "$TMP/out.txt" "$@" >/dev/null
  sed -n 's/^insns: //p' "$TMP/out.txt"
}

build() {
  derm_cross build --release -q -p derm-runtime --example "$1" --target "$TARGET"
}

mode=${1:-model}
case "$mode" in
  model)
    build icount
    c1=$(count "$BIN_DIR/icount" 1)
    c11=$(count "$BIN_DIR/icount" 11)
    echo "model: $(( (c11 - c1) / 10 )) instructions per image (1 run: $c1, 11 runs: $c11)"
    ;;
  kernels)
    build kernel_icount
    c1=$(count "$BIN_DIR/kernel_icount" 1 "${2:-}")
    c11=$(count "$BIN_DIR/kernel_icount" 11 "${2:-}")
    echo "kernels${2:+ ($2*)}: $(( (c11 - c1) / 10 )) instructions per image"
    ;;
  preprocess)
    build preprocess_icount
    c1=$(count "$BIN_DIR/preprocess_icount" 1)
    c11=$(count "$BIN_DIR/preprocess_icount" 11)
    echo "preprocess: $(( (c11 - c1) / 40 )) instructions per image (mean over 600x450, 1024x768, 640x480, 200x150)"
    ;;
  layers)
    build kernel_icount
    KERNEL_ICOUNT_LIST=1 qemu-aarch64 -L / -cpu cortex-a72 "$BIN_DIR/kernel_icount" 0 >"$TMP/layers.txt"
    total=0
    printf '%-14s %9s %10s %8s\n' layer MACs insns 'per 4MAC'
    while read -r name macs _; do
      c1=$(count "$BIN_DIR/kernel_icount" 1 "$name")
      c3=$(count "$BIN_DIR/kernel_icount" 3 "$name")
      d=$(( (c3 - c1) / 2 ))
      total=$(( total + d ))
      awk -v n="$name" -v m="$macs" -v d="$d" 'BEGIN { printf "%-14s %9d %10d %8.2f\n", n, m, d, (m > 0 ? 4 * d / m : 0) }'
    done <"$TMP/layers.txt"
    echo "total: $total"
    ;;
  profile)
    # Per-function counts from qemu's execution log (every executed translated block, its
    # instruction count and its function): 1 and 3 runs, difference / 2, as above.
    build icount
    for n in 1 3; do
      qemu-aarch64 -L / -cpu cortex-a72 -d page,in_asm,exec,nochain -D "$TMP/trace$n.log" \
        "$BIN_DIR/icount" "$n" >/dev/null
    done
    python3 scripts/icount_profile.py "$BIN_DIR/icount" "$TMP/trace1.log" 1 "$TMP/trace3.log" 3
    ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
