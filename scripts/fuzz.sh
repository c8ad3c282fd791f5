#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ one after the other, one job each.
#
#   scripts/fuzz.sh [TARGET|all] [RUNS]     # default: every target, 1,000,000 runs each
#
# Targets: read_model (model reader + code generator), classify (derm_runtime::classify and its
# preprocessing), c_abi (the extern "C" functions). The runtime is built with a tiny synthetic
# model (written to fuzz/target/tiny-model/ by derm-codegen's synthetic_model example), so one
# inference costs microseconds. See docs/fuzzing.md.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). libFuzzer's -Z flags need nightly;
# without one, RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. AddressSanitizer is used
# when the toolchain ships its runtime, else none (DERM_FUZZ_SANITIZER=address|none overrides);
# debug assertions (overflow checks included) are always on.
# Corpora grow in fuzz/corpus/<target>, crashes land in fuzz/artifacts/<target>, logs in
# fuzz/target/fuzz-logs/<target>.log; all three are ignored by git.
set -euo pipefail

usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

ALL=(read_model classify c_abi)
target="${1:-all}"
runs="${2:-1000000}"
if [[ "$target" == all ]]; then
  targets=("${ALL[@]}")
elif [[ " ${ALL[*]} " == *" $target "* ]]; then
  targets=("$target")
else
  echo "error: unknown target '$target' (one of: all ${ALL[*]})" >&2
  exit 2
fi
[[ "$runs" =~ ^[0-9]+$ ]] || { echo "error: RUNS must be a number, got '$runs'" >&2; exit 2; }

cd "$(dirname "$0")/.."
root="$PWD"
# shellcheck source=scripts/env.sh
source scripts/env.sh

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "error: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi
sanitizer="${DERM_FUZZ_SANITIZER:-}"
if [[ -z "$sanitizer" ]]; then
  if compgen -G "$(rustc --print target-libdir)/librustc-*_rt.asan.a" >/dev/null; then
    sanitizer=address
  else
    sanitizer=none
  fi
fi

# The tiny model (3 classes, 32x32 input) and its graph JSON, also read_model's seeds. Built in
# fuzz/target so the main workspace's target folder is left alone.
model_dir="$root/fuzz/target/tiny-model"
mkdir -p "$model_dir"
CARGO_TARGET_DIR="$root/fuzz/target" nice -n 10 cargo run --locked -q -p derm-codegen \
  --example synthetic_model -- --tiny "$model_dir"
export DERM_MODEL="$model_dir/tiny.safetensors"

# A few seeds that reach the success paths at once; libFuzzer finds the rest.
seed() { # seed TARGET NAME: bytes from stdin, written once
  local dir="fuzz/corpus/$1"
  mkdir -p "$dir"
  # Read stdin either way: a writer whose reader left early dies of SIGPIPE, which
  # pipefail turns into the script's exit on every run after the first.
  if [[ -e "$dir/$2" ]]; then cat >/dev/null; else cat >"$dir/$2"; fi
}
seed read_model tiny.json <"$model_dir/tiny.json"
seed read_model tiny.safetensors <"$model_dir/tiny.safetensors"
seed read_model tiny_int8.json <"$model_dir/tiny_int8.json"
seed read_model tiny_int8.safetensors <"$model_dir/tiny_int8.safetensors"
seed read_model tiny_int8_fhs.json <"$model_dir/tiny_int8_fhs.json"
seed read_model tiny_int8_fhs.safetensors <"$model_dir/tiny_int8_fhs.safetensors"
seed read_model tiny_int8_pc.json <"$model_dir/tiny_int8_pc.json"
seed read_model tiny_int8_pc.safetensors <"$model_dir/tiny_int8_pc.safetensors"
pixels() { head -c "$1" /dev/zero | tr '\0' '\221'; }
# classify: a valid 4x4 image (mode 0, width tag 4 << 2, 48 pixel bytes).
{ printf '\000\000\020'; pixels 48; } | seed classify image-4x4
# classify: 7x5 region crop of a 9x9 image resized to 3x2 (mode 2).
{ printf '\002\000\044\044\004\004\034\024\010\014'; pixels 16; } | seed classify crop-9x9
# c_abi: derm_classify on a valid 4x4 image and an exact arena; derm_run on a full input.
{ printf '\000\000\020\020\000'; pixels 48; } | seed c_abi classify-4x4
{ printf '\001\000\000'; pixels 64; } | seed c_abi run

max_len() {
  case "$1" in
    read_model) echo 16384 ;; # the graph JSON is about 8 KB
    *) echo 4096 ;;
  esac
}

logs="$root/fuzz/target/fuzz-logs"
mkdir -p "$logs"
summary=()
status=0
for t in "${targets[@]}"; do
  log="$logs/$t.log"
  echo "== $t: $runs runs, -s $sanitizer -a, -max_len=$(max_len "$t") (log: ${log#"$root"/})"
  start=$SECONDS
  rc=0
  nice -n 10 cargo fuzz run --fuzz-dir fuzz -s "$sanitizer" -a "$t" "fuzz/corpus/$t" -- \
    -runs="$runs" -max_len="$(max_len "$t")" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  wall=$((SECONDS - start))
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  secs=$(sed -nE 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/p' "$log" | tail -n 1)
  done_runs=$(sed -nE 's/^Done ([0-9]+) runs in.*/\1/p' "$log" | tail -n 1)
  if [[ $rc -eq 0 && -n "$done_runs" ]]; then
    result="ok, no crash"
  else
    artifact=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | cut -d' ' -f5 || true)
    result="FAILED (exit $rc${artifact:+, input $artifact}); see ${log#"$root"/}"
    status=1
  fi
  line=$(printf '%-10s runs %-9s wall %5s s  libFuzzer %ss  %s  -> %s' "$t" \
    "${done_runs:-?}" "$wall" "${secs:-?}" \
    "$(sed -nE 's/^#[0-9]+[[:space:]]+DONE[[:space:]]+(.*)/\1/p' <<<"$done_line")" "$result")
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary (-s $sanitizer -a)"
printf '%s\n' "${summary[@]}"
exit "$status"
