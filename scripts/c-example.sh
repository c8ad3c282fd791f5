#!/usr/bin/env bash
# c-example.sh: the C example (examples/c/classify.c) linked against derm-runtime's static
# library (package derm-capi), built and run for the host and for aarch64 (under qemu, as a
# Cortex-A72). Checks that
#   - both compile with -Wall -Wextra -Werror -std=c11 against include/derm_runtime.h,
#   - both classify a real photo (a HAM10000 fixture) alike: same class, probabilities within
#     1e-4 (the two builds use different kernels, so floats need not be bit-equal),
#   - both exit non-zero with a message on a missing, truncated or unsupported file and when
#     the library returns an error code.
# Host artifacts go to $CARGO_TARGET_DIR (default target/), aarch64 ones to
# $DERM_CROSS_TARGET_DIR (default target/aarch64-cross), so test.sh reuses what it built.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=env.sh
source scripts/env.sh

host_dir=${CARGO_TARGET_DIR:-target}
cross_dir=${DERM_CROSS_TARGET_DIR:-target/aarch64-cross}
out=$host_dir/c-example
mkdir -p "$out"
photo=examples/c/ISIC_0024310.ppm

cflags=(-Wall -Wextra -Werror -std=c11 -O2 -I runtime/include)
# The system libraries a Rust std staticlib needs on *-linux-gnu (what rustc prints with
# --print native-static-libs); --gc-sections drops the parts of std that are never called.
libs=(-Wl,--gc-sections -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
# The cross compiler links against its own sysroot's glibc; running with that sysroot as qemu's
# prefix keeps the loader and libc the ones the binary was linked against.
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a72)

echo "building libderm_capi.a and classify for the host" >&2
cargo build --release --locked -p derm-capi
gcc "${cflags[@]}" examples/c/classify.c "$host_dir/release/libderm_capi.a" "${libs[@]}" \
  -o "$out/classify-host"

echo "building libderm_capi.a and classify for aarch64" >&2
# Built together with pi-bench, which test.sh builds for aarch64 next: cargo unifies features per
# invocation, and pi-bench's image decoder turns on a bytemuck feature, so built apart the two
# would each compile their own derm-runtime. The library is the same.
derm_cross build --release --locked -p derm-capi -p pi-bench --target aarch64-unknown-linux-gnu
aarch64-linux-gnu-gcc "${cflags[@]}" examples/c/classify.c \
  "$cross_dir/aarch64-unknown-linux-gnu/release/libderm_capi.a" "${libs[@]}" \
  -o "$out/classify-aarch64"

# Each build as a command prefix.
run_host=("$out/classify-host")
run_aarch64=("${qemu[@]}" "$out/classify-aarch64")

"${run_host[@]}" "$photo" >"$out/host.txt"
"${run_aarch64[@]}" "$photo" >"$out/aarch64.txt"
echo "$photo: host | aarch64 (qemu)" >&2
paste "$out/host.txt" "$out/aarch64.txt" >&2

# Line 1 is "predicted NAME", then "NAME PROBABILITY" per class. Beyond agreement, check that
# the output is a distribution and the predicted class is its most probable one.
paste -d' ' "$out/host.txt" "$out/aarch64.txt" | awk '
  function abs(x) { return x < 0 ? -x : x }
  NR == 1 {
    if (NF != 4 || $1 != "predicted" || $3 != "predicted" || $2 != $4) bad = bad "\n  " $0
    predicted = $2
    next
  }
  {
    if (NF != 4 || $1 != $3 || abs($2 - $4) > 1e-4) bad = bad "\n  " $0
    sum += $2
    if (best == "" || $2 > best_p) { best = $1; best_p = $2 }
  }
  END {
    if (NR < 3) bad = bad "\n  too few lines: " NR
    if (abs(sum - 1) > 1e-3) bad = bad "\n  host probabilities sum to " sum
    if (best != predicted) bad = bad "\n  predicted " predicted " but the most probable is " best
    if (bad != "") { print "host and aarch64 outputs disagree:" bad > "/dev/stderr"; exit 1 }
  }'

# expect_failure WHAT PATTERN COMMAND...: COMMAND must exit non-zero and print PATTERN on stderr.
expect_failure() {
  local what=$1 pattern=$2 err rc=0
  shift 2
  err=$("$@" 2>&1 >/dev/null) || rc=$?
  if [[ $rc -eq 0 ]] || ! grep -qF -- "$pattern" <<<"$err"; then
    echo "classify on $what: expected a failure saying '$pattern', got exit $rc: $err" >&2
    exit 1
  fi
  echo "  $what: exit $rc: $err" >&2
}

head -c 1000 "$photo" >"$out/truncated.ppm"
printf 'P6\n2 2\n65535\n' >"$out/16bit.ppm"
printf 'P3\n1 1\n255\n0 0 0\n' >"$out/ascii.ppm"
printf 'P6\n0 150\n255\n' >"$out/empty.ppm"
for build in host aarch64; do
  declare -n run=run_$build
  echo "error handling ($build):" >&2
  expect_failure "a missing file" "$out/missing.ppm: No such file" \
    "${run[@]}" "$out/missing.ppm"
  expect_failure "a truncated PPM" "$out/truncated.ppm: truncated PPM" \
    "${run[@]}" "$out/truncated.ppm"
  expect_failure "a 16-bit PPM" "$out/16bit.ppm: maxval 65535 is not supported" \
    "${run[@]}" "$out/16bit.ppm"
  expect_failure "an ASCII PPM" "$out/ascii.ppm: not a binary PPM" \
    "${run[@]}" "$out/ascii.ppm"
  expect_failure "a 0x150 image (DERM_ERR_EMPTY_IMAGE)" "DERM_ERR_EMPTY_IMAGE" \
    "${run[@]}" "$out/empty.ppm"
  unset -n run
done
echo "C example: host and aarch64 agree; errors are reported" >&2
