#!/usr/bin/env bash
# run.sh: the main job: pi-bench, the paper's latency protocol, on the embedded model.
# Extra arguments go to pi-bench (try: scripts/run.sh --help). Needs only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -p pi-bench -- "$@"
