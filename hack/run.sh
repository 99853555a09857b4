#!/usr/bin/env bash
# Builds crius and runs criusd in the foreground with the embedded defaults
# (socket /run/crius/crius.sock, root /var/lib/crius, state /run/crius).
# Extra arguments go to criusd, e.g. `hack/run.sh --log-level debug`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "hack/run.sh: criusd needs root (namespaces, mounts, cgroups); run it with sudo" >&2
  exit 1
fi
bash hack/install-deps.sh
cargo build --release --bin criusd --bin criusctl
install -m 0755 target/release/criusd target/release/criusctl /usr/local/bin/
echo "criusd: serving on /run/crius/crius.sock (try: criusctl version; criusctl pull busybox)" >&2
exec /usr/local/bin/criusd "$@"
