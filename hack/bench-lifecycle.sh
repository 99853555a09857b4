#!/usr/bin/env bash
# Lifecycle benchmark: builds release binaries, then prints p50/p90/p99 of RunPodSandbox,
# CreateContainer, StartContainer, StopContainer, RemoveContainer, StopPodSandbox and
# RemovePodSandbox over N iterations, and the memory of criusd and the pod monitors with 20
# running pods.
# Runs twice: pods with a loopback-only network (the runtime's own cost) and with crius's
# bridge network.
# Usage: bash hack/bench-lifecycle.sh [ITERATIONS=100] [RUNTIME=runc]   (SKIP_DEPS=1 skips installs)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
iterations=${1:-100}
runtime=${2:-runc}

if [[ ${SKIP_DEPS:-0} != 1 ]]; then
  bash hack/install-deps.sh </dev/null
fi
cargo build --release -p criusd -p crius-monitor -p crius-init -p crius-cni-plugins -p crius-testkit --bins </dev/null

target=${CARGO_TARGET_DIR:-$(pwd)/target}
for network in loopback bridge; do
  "$target/release/crius-bench-lifecycle" --criusd "$target/release/criusd" \
    --iterations "$iterations" --runtime "$runtime" --network "$network" </dev/null
  echo
done
