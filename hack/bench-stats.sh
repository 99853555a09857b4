#!/usr/bin/env bash
# Stats and events benchmark: builds the binaries, then prints ListPodSandboxStats p50/p99 over
# N pods (one sleeping container each; target under 5 ms) and RunPodSandbox p50 without and
# with a GetContainerEvents consumer that never reads (target: at most 5% slower).
# Usage: bash hack/bench-stats.sh [PODS=100] [RUNTIME=runc]
#   PROFILE=debug uses the debug build (default: release); SKIP_DEPS=1 skips installs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
pods=${1:-100}
runtime=${2:-runc}
profile=${PROFILE:-release}

if [[ ${SKIP_DEPS:-0} != 1 ]]; then
  bash hack/install-deps.sh </dev/null
fi
flags=()
dir=debug
if [[ $profile == release ]]; then
  flags=(--release)
  dir=release
fi
cargo build "${flags[@]}" -p criusd -p crius-monitor -p crius-init -p crius-sandbox \
  -p crius-cni-plugins -p crius-testkit --bins </dev/null

target=${CARGO_TARGET_DIR:-$(pwd)/target}
"$target/$dir/crius-bench-stats" --criusd "$target/$dir/criusd" --pods "$pods" \
  --runtime "$runtime" </dev/null
