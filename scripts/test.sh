#!/usr/bin/env bash
# test.sh: the test command, failing loudly on the first failure.
#   formatting, clippy (host, and aarch64 for the NEON code), rustdoc with warnings denied,
#   host tests with libtorch,
#   the runtime's tests built for aarch64 and run under qemu (Cortex-A72),
#   the C example (examples/c) on both, and pi-bench for aarch64 under qemu.
# Longer checks live in their own scripts (scripts/parity-large.sh, scripts/fuzz.sh,
# scripts/compare.sh, scripts/icount.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints how long the one before it took, so a slow step shows in any CI log; the
# last one also lists them all (the whole run should stay under 30 minutes).
step_start=$SECONDS
step_times=()
step() {
  if [ -n "${step_name:-}" ]; then
    printf '    (%s: %d s)\n' "$step_name" $((SECONDS - step_start)) >&2
    step_times+=("$(printf '%6d s  %s' $((SECONDS - step_start)) "$step_name")")
  fi
  step_name=$*
  step_start=$SECONDS
  printf '\n==> %s\n' "$*" >&2
}

if ! scripts/setup.sh --check 2>/dev/null; then
  step "installing what is missing (scripts/setup.sh)"
  scripts/setup.sh
fi
# shellcheck source=env.sh
source scripts/env.sh
# Every build here starts from a clean clone in CI: incremental state is never reused, and with
# it rustc splits each crate into 256 codegen units, duplicating the inlined kernels in many of
# them. Without it the runtime's test builds for aarch64 take about half the time.
export CARGO_INCREMENTAL=0

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (host)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo clippy (aarch64, derm-runtime)"
RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/aarch64-cross \
  /usr/bin/cargo-clippy clippy -p derm-runtime --lib --tests --examples --locked \
  --target aarch64-unknown-linux-gnu -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked

step "cargo test (host)"
# One libtorch thread per test process: tests already run in parallel on few cores.
OMP_NUM_THREADS=1 cargo test --workspace --locked

step "scripts/oof_teachers.py, logit_bias_cv.py, teacher_targets.py and compare_predictions.py (numpy + safetensors venv)"
# Which teacher's logits each training row gets decides whether a distilled student's held-out
# score is honest; the GPU training part itself is not run here.
# shellcheck source=venv.sh
source scripts/venv.sh
derm_venv oof_teachers target/venv-oof "numpy, safetensors" "numpy/safetensors do not import" \
  numpy==2.4.6 safetensors==0.8.0
target/venv-oof/bin/python -m unittest scripts/test_oof_teachers.py
# The post-hoc logit bias's nested cross-validation (docs/results.md): fitted without the fold
# it is scored on.
target/venv-oof/bin/python -m unittest scripts/test_logit_bias_cv.py
# What a teacher-logits file teaches under --teacher-adjust, on training images only.
target/venv-oof/bin/python -m unittest scripts/test_teacher_targets.py
# The precision comparisons' paired bootstrap (how much of a difference the images alone make).
target/venv-oof/bin/python -m unittest scripts/test_compare_predictions.py

step "cargo test -p derm-runtime (aarch64 under qemu, cortex-a72)"
# Its tests (all integration tests: `test = false` on the library, whose unit-test harness would
# compile the embedded model again) and its doc test; the examples are built for aarch64 by
# scripts/icount.sh and linted above (building kernel_icount again here cost about 80 s).
derm_cross test -p derm-runtime --locked --target aarch64-unknown-linux-gnu --tests
derm_cross test -p derm-runtime --locked --target aarch64-unknown-linux-gnu --doc

# MobileNetV3-Large on aarch64: its layer shapes go through the kernels above (kernels.rs), its
# whole network through the chain on the host (tests/tests/parity.rs); the whole network under
# qemu is scripts/parity-large.sh (a runtime rebuilt around Large, about 150 s).

step "the int8 MobileNetV3-Small (models/default-int8.safetensors) bit-exact with its golden logits"
# Integer arithmetic: the compiled int8 model must reproduce the int8 reference interpreter's
# logits to the bit on the host and on the Pi 4 target.
int8_model="$PWD/models/default-int8.safetensors"
DERM_MODEL="$int8_model" cargo test -p derm-runtime --locked --test model
DERM_MODEL="$int8_model" \
  derm_cross test -p derm-runtime --locked --target aarch64-unknown-linux-gnu --test model

step "C example against the static library (host, and aarch64 under qemu)"
scripts/c-example.sh

step "pi-bench for aarch64 under qemu: the ESFair table on the 48 fixture images"
# Already built beside the C library by scripts/c-example.sh (one derm-runtime for both).
derm_cross build --release --locked -p derm-capi -p pi-bench --target aarch64-unknown-linux-gnu
pb=target/pi-bench-aarch64
rm -rf "$pb" && mkdir -p "$pb"
fixture=train/tests/fixtures/ham10000
qemu-aarch64 -L / -cpu cortex-a72 target/aarch64-cross/aarch64-unknown-linux-gnu/release/pi-bench \
  --manifest "$fixture/metadata.csv" --image-dir "$fixture/images" --images 5 --iterations 1 \
  --strict --json "$pb/report.json"
# Every image classified (n = 48), the score keys present, the confusion PNGs written.
python3 - "$pb/report.json" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
bad = [k for k in ("accuracy", "balanced_accuracy", "fairness", "latency_score", "overall", "groups")
       if k not in r]
if bad or r["esfair"]["n"] != 48 or r["skipped"]:
    sys.exit(f"pi-bench (aarch64): missing {bad}, n = {r['esfair']['n']}, skipped {r['skipped']}")
if not all(os.path.getsize(p) > 0 for p in r["confusion_pngs"]):
    sys.exit("pi-bench (aarch64): an empty confusion PNG")
print(f"pi-bench (aarch64): 48 images, accuracy {r['accuracy']:.4f}, L {r['l_seconds_per_100_images']:.2f} s under qemu")
PY

step "all checks passed in $SECONDS s"
printf '%s\n' "${step_times[@]}" >&2
