# shellcheck shell=bash
# Source this file (from the repository root) for derm_venv, the pinned Python venv of the
# check scripts (check_onnx.sh, check_torchvision.sh).

# derm_venv NAME VENV IMPORTS FAILURE PACKAGE...: makes sure VENV holds exactly the pinned
# PACKAGEs (name==version, from PyPI). The package list is written to VENV/.installed once the
# venv works; when that file says anything else the venv is made again from scratch, with
# pip's temporary files in VENV.tmp (large wheels may not fit a small /tmp) and no pip cache.
# Then `import IMPORTS` must work, else it prints "NAME: FAILURE in VENV" and exits; NAME
# prefixes every message.
derm_venv() {
  local name="$1" venv="$2" imports="$3" failure="$4"
  shift 4
  local stamp="$*" tmp="$venv.tmp"
  [ "$(cat "$venv/.installed" 2>/dev/null)" = "$stamp" ] && return 0
  command -v python3 >/dev/null || { echo "$name: python3 is needed" >&2; exit 1; }
  echo "$name: installing $stamp into $venv (once)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  rm -rf "$tmp" && mkdir -p "$tmp"
  TMPDIR="$PWD/$tmp" "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "$@"
  rm -rf "$tmp"
  "$venv/bin/python" -c "import $imports" \
    || { echo "$name: $failure in $venv" >&2; exit 1; }
  echo "$stamp" >"$venv/.installed"
}
