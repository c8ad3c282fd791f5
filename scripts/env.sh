# shellcheck shell=bash
# Source this file (after scripts/setup.sh) to get the build environment:
#   libtorch for tch (host builds), ONNX Runtime when installed, and the aarch64 cross
#   settings as DERM_CROSS_* values.
# It installs nothing and changes no toolchain default.
DERM_CACHE="${DERM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/derm}"
export DERM_CACHE
export LIBTORCH="$DERM_CACHE/libtorch-2.13.0-cpu"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# These would make tch's build script look somewhere other than $LIBTORCH.
unset LIBTORCH_USE_PYTORCH LIBTORCH_INCLUDE LIBTORCH_LIB LIBTORCH_STATIC
# ONNX Runtime for pi-bench's `ort` feature (optional: `scripts/setup.sh ort`). The `ort`
# crate loads it at run time from ORT_DYLIB_PATH, exported only when the library is there
# (sourcing never fails for an optional part).
if [ -f "$DERM_CACHE/onnxruntime-1.31.1/lib/libonnxruntime.so.1.31.1" ]; then
  export ORT_DYLIB_PATH="$DERM_CACHE/onnxruntime-1.31.1/lib/libonnxruntime.so"
fi

# Raspberry Pi 4 (Cortex-A72). Debian's rustc provides the aarch64 std; rustup's toolchain
# stays the default, so cross commands pass RUSTC/RUSTDOC themselves (see derm_cross).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L / -cpu cortex-a72"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-cpu=cortex-a72"
export DERM_QEMU_PLUGIN_DIR="$DERM_CACHE/qemu-plugins"

# derm_cross CARGO_ARGS...: run cargo for aarch64 with Debian's rustc, in its own target
# folder (artifacts of two compilers never mix).
derm_cross() {
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="${DERM_CROSS_TARGET_DIR:-target/aarch64-cross}" \
    cargo "$@"
}
