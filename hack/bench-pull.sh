#!/usr/bin/env bash
# Pull benchmark: builds release binaries, then runs crius-bench-pull, which pushes a
# large_image(MB) to a local registry, pulls it cold and warm through criusd (registry as the
# docker.io mirror), and times `skopeo copy` of the same image for reference.
# Usage: bash hack/bench-pull.sh [MB]     (default 100; SKIP_DEPS=1 skips install-deps.sh)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mb=${1:-100}

if [[ ${SKIP_DEPS:-0} != 1 ]]; then
  bash hack/install-deps.sh </dev/null
fi
cargo build --release --bin criusd -p criusd </dev/null
cargo build --release --bin crius-bench-pull -p crius-testkit </dev/null

target=${CARGO_TARGET_DIR:-$(pwd)/target}
exec "$target/release/crius-bench-pull" --criusd "$target/release/criusd" --mb "$mb" </dev/null
