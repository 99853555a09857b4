#!/usr/bin/env bash
# Streaming benchmark (not a timed test): exec round trip p50/p99 of `true` with kubectl
# (through the API-server stand-in), crictl and criusctl, exec stdout MB/s and port-forward
# MB/s, through a real criusd, a busybox pod and the kubectl on PATH (speaking SPDY). Run as root from the repository: bash hack/bench-streaming.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p criusd -p crius-init -p crius-monitor -p crius-cni-plugins -p criusctl --bins </dev/null
cargo test --release --test streaming -- --ignored bench_streaming --nocapture --test-threads=1 </dev/null 2>&1 |
  grep '^BENCH' | sed 's/^BENCH //'
