#!/usr/bin/env bash
# setup.sh: install what this workspace needs and nothing else.
#
#   scripts/setup.sh [libtorch] [aarch64] [icount] [ort]   (default: libtorch aarch64)
#   scripts/setup.sh --check [PART...]   exit 0 when those parts (default: libtorch aarch64)
#                                        are in place
#
#   libtorch  libtorch 2.13.0, CPU only, for tch 0.26.0 (training, export, baselines).
#             Taken from the PyPI wheels torch==2.13.0 (cp311 manylinux_2_28_x86_64),
#             nvidia-cuda-runtime==13.0.96 and nvidia-cuda-cupti==13.0.85, pinned by sha256.
#             Only include/, libtorch_cpu.so, libc10.so, libgomp.so.1, libcudart.so.13 and
#             libcupti.so.13 are kept (the PyPI libtorch_cpu.so links the two CUDA runtime
#             libraries; they load without a GPU). lib/libtorch.so -> libtorch_cpu.so
#             because tch links -ltorch. ~540 MB download, ~490 MB on disk.
#             Installed in $DERM_CACHE/libtorch-2.13.0-cpu, outside the repository, so every
#             clone on the machine shares it.
#   aarch64   Raspberry Pi 4 cross-build and emulation from Debian packages: the arm64
#             architecture, rustc-web (rustc 1.96 at /usr/bin/rustc) with
#             libstd-rust-web-dev for amd64 and arm64, its clippy, gcc-aarch64-linux-gnu,
#             qemu-user, and rust-web-src (for bare-metal -Zbuild-std=core). Needs root.
#   icount    a qemu TCG plugin (libinsn.so) that counts executed aarch64 instructions, built
#             from Debian's qemu source package into $DERM_CACHE/qemu-plugins.
#   ort       ONNX Runtime 1.31.1 (CPU), the shared library the `ort` crate loads at run time
#             (pi-bench's `ort` feature, scripts/compare.sh). Taken from the PyPI wheel
#             onnxruntime==1.31.1 (cp311 manylinux_2_28_x86_64), pinned by sha256; only
#             libonnxruntime.so* is kept (~30 MB), in $DERM_CACHE/onnxruntime-1.31.1/lib.
#             scripts/env.sh points ORT_DYLIB_PATH at it. Optional: no default build or test
#             needs it.
#
# Safe to run twice or at once (flock), and nothing half-installed looks installed: each
# part is built in a temporary folder and moved into place before its marker is written.
# DERM_CACHE defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/derm.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

DERM_CACHE="${DERM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/derm}"

TORCH_VERSION=2.13.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
TORCH_SHA256=60fcdcb2f3876e21146cb4524ef06397d727ca9ad5f020818547e25075fe3cb7
CUDART_SHA256=7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
CUPTI_SHA256=4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8
LIBTORCH_DIR="$DERM_CACHE/libtorch-$TORCH_VERSION-cpu"
LIBTORCH_STAMP="torch=$TORCH_VERSION cudart=$CUDART_VERSION cupti=$CUPTI_VERSION layout=1"

AARCH64_PKGS=(rustc-web libstd-rust-web-dev:amd64 libstd-rust-web-dev:arm64 rust-web-clippy
              rust-web-src gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
ICOUNT_PKGS=(gcc pkg-config libglib2.0-dev xz-utils)
PLUGIN_DIR="$DERM_CACHE/qemu-plugins"

# ONNX Runtime 1.31 is the API version ort 2.0.0-rc.15 (Cargo.toml) targets.
ORT_VERSION=1.31.1
ORT_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_DIR="$DERM_CACHE/onnxruntime-$ORT_VERSION"
ORT_STAMP="onnxruntime=$ORT_VERSION layout=1"

# --- pinned wheels from PyPI (libtorch, ort) --------------------------------------------
# need_pip PART WHAT: dies unless this host can download the x86_64 wheels with pip; WHAT
# ("the wheels", "the wheel") only words the message.
need_pip() {
  [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] \
    || die "$1: only Linux x86_64 hosts are supported (this is $(uname -s)-$(uname -m))"
  command -v python3 >/dev/null 2>&1 \
    || die "$1: python3 is needed to download $2; install it (apt-get install python3 python3-pip)"
  python3 -m pip --version >/dev/null 2>&1 \
    || die "$1: pip is missing; install it (apt-get install python3-pip, or python3 -m ensurepip)"
}

# pip_download DIR REQUIREMENTS PLATFORM...: downloads into DIR the wheels REQUIREMENTS pins by
# version and sha256, for CPython 3.11 on the PLATFORMs; the platform and python flags pin the
# exact files whatever python runs pip. Returns pip's status.
pip_download() {
  local dir="$1" req="$2" p platforms=()
  shift 2
  for p in "$@"; do platforms+=(--platform "$p"); done
  env -u PIP_FIND_LINKS PIP_REQUIRE_VIRTUALENV=false \
    python3 -m pip download --no-deps --no-cache-dir --require-hashes --only-binary=:all: \
      "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311 \
      --progress-bar off --disable-pip-version-check \
      -d "$dir" -r "$req" >&2
}

# --- libtorch ---------------------------------------------------------------------------
libtorch_ok() {
  [ -f "$LIBTORCH_DIR/.derm-setup-ok" ] \
    && [ "$(cat "$LIBTORCH_DIR/.derm-setup-ok")" = "$LIBTORCH_STAMP" ] \
    && [ -f "$LIBTORCH_DIR/lib/libtorch_cpu.so" ] && [ -e "$LIBTORCH_DIR/lib/libtorch.so" ] \
    && [ -f "$LIBTORCH_DIR/lib/libc10.so" ] && [ -f "$LIBTORCH_DIR/lib/libcudart.so.13" ] \
    && [ -f "$LIBTORCH_DIR/lib/libcupti.so.13" ] \
    && [ -f "$LIBTORCH_DIR/include/torch/csrc/api/include/torch/all.h" ]
}

install_libtorch() {
  libtorch_ok && { log "libtorch $TORCH_VERSION (CPU) present in $LIBTORCH_DIR"; return 0; }
  need_pip libtorch "the wheels"
  mkdir -p "$DERM_CACHE"
  exec 8>"$DERM_CACHE/.libtorch.lock"
  flock 8
  libtorch_ok && { log "libtorch installed by a concurrent run"; return 0; }
  local tmp start
  start=$(date +%s)
  tmp="$(mktemp -d "$DERM_CACHE/.libtorch-tmp.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  cat >"$tmp/requirements.txt" <<REQ
torch==$TORCH_VERSION --hash=sha256:$TORCH_SHA256
nvidia-cuda-runtime==$CUDART_VERSION --hash=sha256:$CUDART_SHA256
nvidia-cuda-cupti==$CUPTI_VERSION --hash=sha256:$CUPTI_SHA256
REQ
  log "libtorch: downloading torch $TORCH_VERSION and two CUDA runtime wheels with pip (~540 MB)"
  if ! pip_download "$tmp/wheels" "$tmp/requirements.txt" manylinux_2_28_x86_64 \
    manylinux_2_25_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; then
    die "libtorch: pip could not download the pinned wheels (network, or a sha256 mismatch: see pip's message above). Nothing was installed; fix the cause and rerun scripts/setup.sh"
  fi
  log "libtorch: extracting the CPU parts"
  python3 - "$tmp/wheels" "$tmp/stage" <<'PY' || die "libtorch: extraction failed (see above); nothing was installed"
import glob, os, shutil, sys, zipfile
wheels, stage = sys.argv[1], sys.argv[2]
def one(pattern):
    found = glob.glob(os.path.join(wheels, pattern))
    if len(found) != 1:
        sys.exit(f"expected one wheel matching {pattern}, found {found}")
    return found[0]
def copy(z, info, out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with z.open(info) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
libs = {"torch/lib/libtorch_cpu.so", "torch/lib/libc10.so", "torch/lib/libgomp.so.1"}
with zipfile.ZipFile(one("torch-*.whl")) as z:
    got = set()
    for info in z.infolist():
        n = info.filename
        if n.endswith("/"):
            continue
        if n.startswith("torch/include/") or n in libs:
            copy(z, info, os.path.join(stage, n[len("torch/"):]))
            got.add(n)
    if libs - got:
        sys.exit(f"torch wheel lacks {sorted(libs - got)}")
for pattern, member in (("nvidia_cuda_runtime-*.whl", "nvidia/cu13/lib/libcudart.so.13"),
                        ("nvidia_cuda_cupti-*.whl", "nvidia/cu13/lib/libcupti.so.13")):
    with zipfile.ZipFile(one(pattern)) as z:
        copy(z, z.getinfo(member), os.path.join(stage, "lib", os.path.basename(member)))
PY
  ln -s libtorch_cpu.so "$tmp/stage/lib/libtorch.so"
  chmod 0755 "$tmp/stage/lib/"*.so*
  printf '%s\n' "$TORCH_VERSION" >"$tmp/stage/build-version"
  if command -v ldd >/dev/null 2>&1 && ldd "$tmp/stage/lib/libtorch_cpu.so" | grep -q 'not found'; then
    ldd "$tmp/stage/lib/libtorch_cpu.so" >&2
    die "libtorch: libtorch_cpu.so has unresolved dependencies (listed above); nothing was installed"
  fi
  printf '%s\n' "$LIBTORCH_STAMP" >"$tmp/stage/.derm-setup-ok"
  rm -rf "$LIBTORCH_DIR"
  mv "$tmp/stage" "$LIBTORCH_DIR"
  rm -rf "$tmp"
  trap - EXIT
  flock -u 8
  log "libtorch: installed in $LIBTORCH_DIR ($(du -sh "$LIBTORCH_DIR" | cut -f1)) in $(( $(date +%s) - start ))s"
}

# --- ONNX Runtime -----------------------------------------------------------------------
ort_ok() {
  [ -f "$ORT_DIR/.derm-setup-ok" ] \
    && [ "$(cat "$ORT_DIR/.derm-setup-ok")" = "$ORT_STAMP" ] \
    && [ -f "$ORT_DIR/lib/libonnxruntime.so.$ORT_VERSION" ] && [ -e "$ORT_DIR/lib/libonnxruntime.so" ]
}

install_ort() {
  ort_ok && { log "ONNX Runtime $ORT_VERSION present in $ORT_DIR"; return 0; }
  need_pip ort "the wheel"
  mkdir -p "$DERM_CACHE"
  exec 5>"$DERM_CACHE/.onnxruntime.lock"
  flock 5
  ort_ok && { log "ONNX Runtime installed by a concurrent run"; return 0; }
  local tmp start
  start=$(date +%s)
  tmp="$(mktemp -d "$DERM_CACHE/.onnxruntime-tmp.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  printf 'onnxruntime==%s --hash=sha256:%s\n' "$ORT_VERSION" "$ORT_SHA256" >"$tmp/requirements.txt"
  log "ort: downloading onnxruntime $ORT_VERSION with pip (~24 MB)"
  if ! pip_download "$tmp/wheels" "$tmp/requirements.txt" manylinux_2_28_x86_64 \
    manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; then
    die "ort: pip could not download the pinned wheel (network, or a sha256 mismatch: see pip's message above). Nothing was installed; fix the cause and rerun scripts/setup.sh ort"
  fi
  log "ort: extracting libonnxruntime.so"
  python3 - "$tmp/wheels" "$tmp/stage/lib" <<'PY' || die "ort: extraction failed (see above); nothing was installed"
import glob, os, re, shutil, sys, zipfile
wheels, lib = sys.argv[1], sys.argv[2]
found = glob.glob(os.path.join(wheels, "onnxruntime-*.whl"))
if len(found) != 1:
    sys.exit(f"expected one onnxruntime wheel, found {found}")
os.makedirs(lib, exist_ok=True)
got = []
with zipfile.ZipFile(found[0]) as z:
    for info in z.infolist():
        name = os.path.basename(info.filename)
        if re.fullmatch(r"libonnxruntime\.so(\.[0-9]+)*", name):
            with z.open(info) as src, open(os.path.join(lib, name), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            got.append(name)
if not got:
    sys.exit("the onnxruntime wheel holds no libonnxruntime.so*")
PY
  [ -f "$tmp/stage/lib/libonnxruntime.so.$ORT_VERSION" ] \
    || die "ort: the wheel has no libonnxruntime.so.$ORT_VERSION; nothing was installed"
  chmod 0755 "$tmp/stage/lib/"libonnxruntime.so*
  # The wheel ships only the versioned file; the SONAME link and the plain name are for dlopen.
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$tmp/stage/lib/libonnxruntime.so.1"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$tmp/stage/lib/libonnxruntime.so"
  if command -v ldd >/dev/null 2>&1 && ldd "$tmp/stage/lib/libonnxruntime.so" | grep -q 'not found'; then
    ldd "$tmp/stage/lib/libonnxruntime.so" >&2
    die "ort: libonnxruntime.so has unresolved dependencies (listed above); nothing was installed"
  fi
  printf '%s\n' "$ORT_STAMP" >"$tmp/stage/.derm-setup-ok"
  rm -rf "$ORT_DIR"
  mv "$tmp/stage" "$ORT_DIR"
  rm -rf "$tmp"
  trap - EXIT
  flock -u 5
  log "ort: installed in $ORT_DIR ($(du -sh "$ORT_DIR" | cut -f1)) in $(( $(date +%s) - start ))s"
}

# --- Debian packages --------------------------------------------------------------------
pkg_ok() { dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qx installed; }

APT_UPDATED=0
apt_install() {
  local missing=() p
  for p in "$@"; do pkg_ok "$p" || missing+=("$p"); done
  [ "${#missing[@]}" = 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to install Debian packages: ${missing[*]} (rerun as root, or: sudo apt-get install ${missing[*]})"
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get -q -o DPkg::Lock::Timeout=600 update >&2 \
      || die "apt-get update failed: check the apt sources and the network, then rerun scripts/setup.sh"
    APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2 \
    || die "apt-get install failed for: ${missing[*]} (is the package in your Debian release? 'apt-cache policy NAME' tells); then rerun scripts/setup.sh"
}

aarch64_ok() {
  command -v dpkg >/dev/null 2>&1 || return 1
  dpkg --print-foreign-architectures | grep -qx arm64 || return 1
  local p
  for p in "${AARCH64_PKGS[@]}"; do pkg_ok "$p" || return 1; done
  [ -x /usr/bin/rustc ] && command -v qemu-aarch64 >/dev/null 2>&1 && command -v aarch64-linux-gnu-gcc >/dev/null 2>&1
}

install_aarch64() {
  aarch64_ok && { log "aarch64 cross toolchain present ($(/usr/bin/rustc --version))"; return 0; }
  command -v dpkg >/dev/null 2>&1 || die "aarch64: needs a Debian-based host (dpkg not found)"
  [ "$(dpkg --print-architecture)" = amd64 ] || die "aarch64: the host must be amd64"
  mkdir -p "$DERM_CACHE"
  exec 7>"$DERM_CACHE/.apt.lock"
  flock 7
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [ "$(id -u)" = 0 ] || die "need root to run: dpkg --add-architecture arm64"
    log "dpkg --add-architecture arm64"
    dpkg --add-architecture arm64
    APT_UPDATED=0
  fi
  apt_install "${AARCH64_PKGS[@]}"
  aarch64_ok || die "aarch64: packages installed but /usr/bin/rustc, qemu-aarch64 or aarch64-linux-gnu-gcc is missing"
  self_test_aarch64
  flock -u 7
}

# Builds a no_std NEON function and a std binary that spawns a thread, runs them under qemu.
self_test_aarch64() {
  local t out
  t="$(mktemp -d)"
  cat >"$t/main.rs" <<'RS'
#[cfg(target_arch = "aarch64")]
fn dot(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    use core::arch::aarch64::*;
    unsafe { vaddvq_f32(vmulq_f32(vld1q_f32(a.as_ptr()), vld1q_f32(b.as_ptr()))) }
}
fn main() {
    let h = std::thread::spawn(|| dot(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 1.0, 1.0]));
    println!("ok {}", h.join().unwrap());
}
RS
  /usr/bin/rustc --edition 2021 -O --target aarch64-unknown-linux-gnu -C target-cpu=cortex-a72 \
    -C linker=aarch64-linux-gnu-gcc -o "$t/hello" "$t/main.rs" >&2 \
    || { rm -rf "$t"; die "aarch64 self-test: could not build a test binary with /usr/bin/rustc"; }
  out="$(timeout 60 qemu-aarch64 -L / -cpu cortex-a72 "$t/hello")" \
    || { rm -rf "$t"; die "aarch64 self-test: qemu-aarch64 could not run the test binary"; }
  rm -rf "$t"
  [ "$out" = "ok 10" ] || die "aarch64 self-test: unexpected output '$out'"
  log "aarch64 self-test passed (built with /usr/bin/rustc, ran under qemu-aarch64)"
}

# --- qemu instruction-count plugin ------------------------------------------------------
icount_ok() {
  local qver
  qver=$(dpkg-query -W -f='${Version}' qemu-user 2>/dev/null || true)
  [ -n "$qver" ] && [ -f "$PLUGIN_DIR/libinsn.so" ] && [ -f "$PLUGIN_DIR/.qemu-version" ] \
    && [ "$(cat "$PLUGIN_DIR/.qemu-version")" = "$qver" ]
}

install_icount() {
  icount_ok && { log "qemu instruction-count plugin present in $PLUGIN_DIR"; return 0; }
  install_aarch64
  apt_install "${ICOUNT_PKGS[@]}"
  qemu-aarch64 -h 2>/dev/null | grep -q -- '^-plugin' || die "icount: this qemu-aarch64 was built without plugin support"
  mkdir -p "$DERM_CACHE"
  exec 6>"$DERM_CACHE/.icount.lock"
  flock 6
  icount_ok && return 0
  local qver srcpkg srcver w f hdr c
  qver=$(dpkg-query -W -f='${Version}' qemu-user)
  srcpkg=$(dpkg-query -W -f='${source:Package}' qemu-user)
  srcver=$(dpkg-query -W -f='${source:Version}' qemu-user)
  w="$(mktemp -d "$DERM_CACHE/.icount-tmp.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$w'" EXIT
  mkdir -p "$w/parts" "$w/lists/partial" "$w/cache/archives/partial" "$w/src" "$w/out"
  : >"$w/sources.list"
  # deb-src lines are derived from the configured sources into a private apt state, so the
  # system's apt configuration is not touched.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n -E 's/^[[:space:]]*deb([[:space:]])/deb-src\1/p' "$f" >>"$w/sources.list"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed -E 's/^Types:.*/Types: deb-src/' "$f" >"$w/parts/$(basename "$f")"
  done
  if id _apt >/dev/null 2>&1; then chown -R _apt "$w"; fi
  local aptopts=(-q -o Dir::Etc::SourceList="$w/sources.list" -o Dir::Etc::SourceParts="$w/parts"
                 -o Dir::State::Lists="$w/lists" -o Dir::Cache="$w/cache")
  log "icount: fetching the source of $srcpkg $srcver"
  apt-get "${aptopts[@]}" update >&2 || log "warning: some deb-src indexes failed"
  (cd "$w" && apt-get "${aptopts[@]}" source --download-only "$srcpkg=$srcver" >&2) \
    || die "icount: could not download the source package $srcpkg=$srcver (apt needs deb-src access to the Debian archive)"
  f=$(find "$w" -maxdepth 1 -name "${srcpkg}_*.orig.tar.*" | head -n1)
  [ -n "$f" ] || die "icount: no .orig tarball of $srcpkg was downloaded"
  tar -xf "$f" -C "$w/src" --wildcards --no-anchored 'include/qemu/qemu-plugin.h' \
    'tests/plugin/insn.c' 'tests/tcg/plugins/insn.c' 2>/dev/null || true
  hdr=$(find "$w/src" -name qemu-plugin.h | head -n1)
  c=$(find "$w/src" -name insn.c | head -n1)
  [ -n "$hdr" ] && [ -n "$c" ] || die "icount: qemu-plugin.h or insn.c not found in $f"
  # shellcheck disable=SC2046
  gcc -O2 -shared -fPIC -I"$(dirname "$hdr")" $(pkg-config --cflags glib-2.0) \
    -o "$w/out/libinsn.so" "$c" $(pkg-config --libs glib-2.0) >&2 || die "icount: building libinsn.so failed"
  printf '%s\n' "$qver" >"$w/out/.qemu-version"
  rm -rf "$PLUGIN_DIR"
  mv "$w/out" "$PLUGIN_DIR"
  rm -rf "$w"
  trap - EXIT
  flock -u 6
  log "icount: built $PLUGIN_DIR/libinsn.so"
}

# --- main -------------------------------------------------------------------------------
parts=()
check=0
for a in "$@"; do
  case "$a" in
    libtorch|aarch64|icount|ort) parts+=("$a") ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$a' (expected: libtorch, aarch64, icount, ort, --check, --help)" ;;
  esac
done
[ "${#parts[@]}" = 0 ] && parts=(libtorch aarch64)

for p in "${parts[@]}"; do
  if [ "$check" = 1 ]; then
    "${p}_ok" || { log "$p: not installed (run scripts/setup.sh $p)"; exit 1; }
  else
    "install_$p"
  fi
done
