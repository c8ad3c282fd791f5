#!/usr/bin/env bash
# ms per image of MobileNetV3 Small and Large (f32, paper head, 224x224, 6 classes) on every
# engine, from one command: derm-runtime, ONNX Runtime 1.31.1 (ort), tract 0.23.9 and
# libtorch 2.13 (tch 0.26), with 1 thread and with all cores ($(nproc)); and derm-runtime on
# the same network quantized to int8.
#
# For each size it exports a seeded student (derm-train init-student + export), builds pi-bench
# with that model embedded (DERM_MODEL=...) and the engine binaries (pi-bench-ort,
# pi-bench-tract, pi-bench-libtorch) against the same file, and runs pi-bench's protocol on
# each with the same generated images: 10 iterations x 100 images, each image cropped, resized
# and normalized by derm-runtime's preprocessing, then the network, then softmax. ONNX Runtime
# and tract run the model file's ONNX export (derm_codegen::onnx, in memory); libtorch runs
# the BatchNorm-folded graph in eval mode with no grad. Each engine first checks its logits
# on 4 images against the embedded derm-runtime model (last column: max |diff| / logit range).
#
# int8: the same seeded file through `derm-train quantize` (calibrated on the repository's 48
# test-fixture photos, the stem's hardswish in f32; the shipped int8 model also puts the
# depthwise inputs on per-channel grids, with their writers' hardswish in f32, and is not
# slower on this host for it: docs/results.md, "int8 per-channel grids"), embedded in
# a second pi-bench build. Its weights are as untrained as the f32 file's, which does not
# change the work per image; its logits are not compared with the f32 ones (the int8 file's
# own golden vectors are checked by the test suite). ONNX Runtime runs the int8 file too: its
# ONNX export is then in QDQ form (int8 weights, every activation rounded on the file's grids,
# derm_codegen::onnx), which ONNX Runtime fuses into its integer kernels; that binary embeds
# the int8 file, so its logits are checked against derm-runtime int8 (rounding in float
# instead of integers: within pi_bench::engine::QDQ_PARITY_TOLERANCE of the logit range).
#
# Threads: "1" is one worker with one intra-op thread everywhere. "N workers" splits each
# iteration's images among N workers, one engine instance each (pi-bench --threads N):
# per-image times are each image's latency on its worker, "wall" is the iteration's wall time
# per image. "1 x N intra-op" is one instance using N threads inside each image (ONNX
# Runtime, libtorch; derm-runtime and tract have no intra-op threads).
#
# Usage: scripts/compare.sh [protocol flags for every engine, e.g. --iterations 3 --images 50,
# or --mode model to time the network alone on inputs preprocessed before timing, as the
# paper does] (the script sets --threads itself). Needs libtorch (scripts/setup.sh); ONNX Runtime is
# optional (scripts/setup.sh ort): without it its rows say "not installed". Outputs and logs
# go to target/compare/. Exits nonzero if any engine failed or disagreed with derm-runtime.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/env.sh
source scripts/env.sh
# Before the export below: nproc reports OMP_NUM_THREADS when it is set.
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
out="target/compare"
mkdir -p "$out"

# The engine binaries build in the dev profile, whose dependencies are already optimized
# (opt-level 2, see Cargo.toml); our crates and tract's are raised to opt-level 3 so the
# shared preprocessing and tract's own Rust kernels are as optimized as the release runtime.
cfg=()
for p in derm-runtime derm-train derm-codegen pi-bench tract-core tract-linalg tract-data \
  tract-hir tract-nnef tract-onnx tract-onnx-opl tract-extra; do
  cfg+=(--config "profile.dev.package.$p.opt-level=3")
done

have_ort=0
if [ -n "${ORT_DYLIB_PATH:-}" ] && [ -f "$ORT_DYLIB_PATH" ]; then have_ort=1; fi

echo "building derm-train ..." >&2
cargo build -q -p derm-train --bin derm-train "${cfg[@]}"
dt=target/debug/derm-train
mean=(0.7640 0.5382 0.5630)
std=(0.1378 0.1585 0.1759)
fixture=train/tests/fixtures/ham10000
echo "preparing the int8 calibration images ($fixture) ..." >&2
"$dt" prepare --manifest "$fixture/metadata.csv" --images "$fixture/images" --size 224 \
  --out "$out/calib-cache" >"$out/calib-cache.log"

# run NAME JSON LOG CMD...: runs one engine; a failure is recorded, not fatal, so the table
# still shows every other engine.
failed=0
run() {
  local name=$1 json=$2 log=$3
  shift 3
  echo "timing $name ..." >&2
  rm -f "$json" "$json.failed"
  local rc=0
  "$@" --json "$json" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "  $name failed (exit status $rc): see $log" >&2
    echo "$rc" >"$json.failed"
    failed=1
  fi
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for arch in small large; do
  student="$out/$arch.student.safetensors"
  model="$out/$arch.safetensors"
  bin="$out/bin-$arch"
  echo "exporting mobilenet_v3_$arch ..." >&2
  "$dt" init-student --arch "$arch" --head paper --seed 0 --mean "${mean[@]}" --std "${std[@]}" \
    --notes "scripts/compare.sh timing model (untrained)" -o "$student" >"$out/$arch.export.log"
  "$dt" export "$student" -o "$model" --no-layers >>"$out/$arch.export.log"
  echo "quantizing mobilenet_v3_$arch to int8 ..." >&2
  "$dt" quantize "$model" -o "$out/$arch.int8.safetensors" --calibration-cache "$out/calib-cache" \
    --calibration-images 48 --float-hardswish stem --quiet >>"$out/$arch.export.log"
  echo "building the engines with mobilenet_v3_$arch embedded ..." >&2
  rm -rf "$bin" && mkdir -p "$bin"
  DERM_MODEL="$PWD/$out/$arch.int8.safetensors" cargo build -q --release -p pi-bench --bin pi-bench
  cp target/release/pi-bench "$bin/pi-bench-int8"
  if [ "$have_ort" = 1 ]; then
    DERM_MODEL="$PWD/$out/$arch.int8.safetensors" cargo build -q -p pi-bench --features ort \
      --bin pi-bench-ort "${cfg[@]}"
    cp target/debug/pi-bench-ort "$bin/pi-bench-ort-int8"
  fi
  DERM_MODEL="$PWD/$model" cargo build -q --release -p pi-bench --bin pi-bench
  DERM_MODEL="$PWD/$model" cargo build -q -p pi-bench --features libtorch,ort,tract \
    --bin pi-bench-libtorch --bin pi-bench-ort --bin pi-bench-tract "${cfg[@]}"
  # Copied at once: the shared target folder may be rebuilt with another model meanwhile.
  cp target/release/pi-bench target/debug/pi-bench-libtorch target/debug/pi-bench-ort \
    target/debug/pi-bench-tract "$bin/"

  settings=(1)
  [ "$cores" -gt 1 ] && settings+=("$cores")
  for t in "${settings[@]}"; do
    p="$out/$arch.t$t"
    run "derm-runtime ($arch, $t)" "$p.runtime.json" "$p.runtime.txt" \
      "$bin/pi-bench" "$@" --threads "$t"
    run "derm-runtime int8 ($arch, $t)" "$p.int8.json" "$p.int8.txt" \
      "$bin/pi-bench-int8" "$@" --threads "$t"
    if [ "$have_ort" = 1 ]; then
      run "ONNX Runtime ($arch, $t)" "$p.ort.json" "$p.ort.txt" \
        "$bin/pi-bench-ort" --model "$model" "$@" --threads "$t"
      run "ONNX Runtime int8 QDQ ($arch, $t)" "$p.ort8.json" "$p.ort8.txt" \
        "$bin/pi-bench-ort-int8" --model "$out/$arch.int8.safetensors" "$@" --threads "$t"
    fi
    run "tract ($arch, $t)" "$p.tract.json" "$p.tract.txt" \
      "$bin/pi-bench-tract" --model "$model" "$@" --threads "$t"
    run "libtorch ($arch, $t)" "$p.libtorch.json" "$p.libtorch.txt" \
      "$bin/pi-bench-libtorch" --model "$model" "$@" --threads "$t"
  done
  if [ "$cores" -gt 1 ]; then
    p="$out/$arch.i$cores"
    if [ "$have_ort" = 1 ]; then
      run "ONNX Runtime ($arch, 1 x $cores intra-op)" "$p.ort.json" "$p.ort.txt" \
        "$bin/pi-bench-ort" --model "$model" "$@" --intra-op-threads "$cores"
    fi
    run "libtorch ($arch, 1 x $cores intra-op)" "$p.libtorch.json" "$p.libtorch.txt" \
      "$bin/pi-bench-libtorch" --model "$model" "$@" --intra-op-threads "$cores"
  fi
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

echo
stage="crop + resize + normalize + network + softmax"
case " $* " in
  *" --mode model "* | *" --mode=model "*) stage="network + softmax, on inputs preprocessed before timing" ;;
esac
echo "f32 (and int8: derm-runtime, ONNX Runtime QDQ), paper head, 224x224, 6 classes; ms per image ($stage), flags: ${*:-(none)}"
echo "$(uname -m), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //'), $cores cores available, load average $load_start at the start, $load_end at the end"
echo
python3 - "$out" "$cores" "$have_ort" <<'PY' || failed=1
import hashlib, json, os, sys
out, cores, have_ort = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
engines = [("runtime", "derm-runtime"), ("int8", "derm-runtime int8"), ("ort", "ONNX Runtime 1.31.1"),
           ("ort8", "ONNX Runtime 1.31.1 int8 (QDQ)"), ("tract", "tract 0.23.9"), ("libtorch", "libtorch 2.13")]
bad = False

def load(path):
    # A report is written before an engine exits nonzero for a logit mismatch: show it.
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)

def row(model, threads, label, r, ref, sha):
    global bad
    if r is None:
        bad = True
        return f"| {model} | {threads} | {label} | failed | | | | | see {out}/*.txt |"
    ms = r["per_image_ms"]
    wall = r["l_seconds_per_100_images"] * 10
    if ref is None:
        ratio_p50 = ratio_wall = "1.00x"
    else:
        ratio_p50 = f"{ms['p50'] / ref['per_image_ms']['p50']:.2f}x"
        ratio_wall = f"{wall / (ref['l_seconds_per_100_images'] * 10):.2f}x"
    if label.startswith("derm-runtime"):
        same = r["model"]["sha256"] == sha
        bad |= not same
        parity = "(reference)" if ref is None else "(not compared: int8)"
        if not same:
            parity = "embedded another model!"
    elif r.get("parity") is None:
        bad = True
        parity = "not compared (other model embedded)"
    else:
        p = r["parity"]
        bad |= not p["ok"]
        parity = f"{p['max_relative_diff']:.2e}" + ("" if p["ok"] else " FAILED")
    return (f"| {model} | {threads} | {label} | {ms['mean']:.3f} | {ms['p50']:.3f} | {wall:.3f} "
            f"| {ratio_p50} | {ratio_wall} | {parity} |")

print("| model | threads | engine | mean | p50 | wall / image | p50 vs derm-runtime | wall vs derm-runtime | max logit diff / range |")
print("|---|---|---|---|---|---|---|---|---|")
def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

int8_vs_ort = []
for arch in ("small", "large"):
    model = "MobileNetV3-" + arch.capitalize()
    sha = sha256(os.path.join(out, arch + ".safetensors"))
    sha8 = sha256(os.path.join(out, arch + ".int8.safetensors"))
    settings = [(f"t{t}", "1" if t == 1 else f"{t} workers") for t in ([1, cores] if cores > 1 else [1])]
    if cores > 1:
        settings.append((f"i{cores}", f"1 x {cores} intra-op"))
    for key, threads in settings:
        ref = load(os.path.join(out, f"{arch}.{key}.runtime.json")) if key[0] == "t" else \
            load(os.path.join(out, f"{arch}.t1.runtime.json"))
        for short, label in engines:
            if key[0] == "i" and short in ("runtime", "int8", "ort8", "tract"):
                continue
            if short in ("ort", "ort8") and not have_ort:
                print(f"| {model} | {threads} | {label} | not installed (scripts/setup.sh ort) | | | | | |")
                continue
            r = load(os.path.join(out, f"{arch}.{key}.{short}.json"))
            print(row(model, threads, label, r, None if short == "runtime" else ref,
                      sha8 if short in ("int8", "ort8") else sha))
    r8 = load(os.path.join(out, f"{arch}.t1.int8.json"))
    ro = load(os.path.join(out, f"{arch}.t1.ort.json")) if have_ort else None
    ro8 = load(os.path.join(out, f"{arch}.t1.ort8.json")) if have_ort else None
    if r8 is not None and ro is not None:
        p50 = lambda r: r["per_image_ms"]["p50"]
        line = f"{model}: {p50(r8) / p50(ro):.2f}x ONNX Runtime f32"
        if ro8 is not None:
            line += f", {p50(r8) / p50(ro8):.2f}x ONNX Runtime int8 (QDQ)"
        int8_vs_ort.append(line)
if int8_vs_ort:
    print()
    print("derm-runtime int8, p50, 1 thread: " + "; ".join(int8_vs_ort))
sys.exit(1 if bad else 0)
PY
echo
echo "Per-image times and wall time per image in ms; ratios are engine / derm-runtime (above 1: slower)."
echo "The intra-op rows compare with derm-runtime on 1 thread. Raw reports: $out/"
exit "$failed"
