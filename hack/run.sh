#!/usr/bin/env bash
# Builds crius and runs criusd in the foreground with the embedded defaults
# (socket /run/crius/crius.sock, root /var/lib/crius, state /run/crius, CNI conf dir
# /etc/cni/net.d, where crius's default bridge network is written if the dir is empty).
# Extra arguments go to criusd, e.g. `hack/run.sh --log-level debug`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "hack/run.sh: criusd needs root (namespaces, mounts, cgroups); run it with sudo" >&2
  exit 1
fi
bash hack/install-deps.sh
cargo build --release -p criusd -p criusctl -p crius-init -p crius-monitor -p crius-cni-plugins --bins
target=${CARGO_TARGET_DIR:-target}/release
install -m 0755 "$target/criusd" "$target/criusctl" /usr/local/bin/
# Helpers and crius's CNI plugins: criusd looks for them in /usr/local/libexec/crius.
install -d /usr/local/libexec/crius
install -m 0755 "$target/crius-pinns" "$target/crius-init" "$target/crius-monitor" \
  "$target/crius-bridge" "$target/crius-host-local" "$target/crius-portmap" "$target/crius-loopback" \
  /usr/local/libexec/crius/
echo "criusd: serving on /run/crius/crius.sock (try: criusctl version; criusctl pull busybox)" >&2
exec /usr/local/bin/criusd "$@"
