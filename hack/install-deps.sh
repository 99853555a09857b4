#!/usr/bin/env bash
# Installs what building and testing crius needs on Debian 12. Idempotent; apt-get update
# runs only when a package is missing. Does not install Rust (cargo must already exist).
set -euo pipefail

packages=(
  protobuf-compiler    # crius-proto build.rs
  pkg-config
  docker-registry      # crius-testkit: real registries
  skopeo               # crius-testkit self-tests, bench reference
  umoci                # reference layer extraction
  busybox-static       # test images
  openssl              # TLS registry certificates
  apache2-utils        # htpasswd
  runc crun            # OCI runtimes
  containernetworking-plugins
  iproute2 nftables iptables
  jq
  attr                 # getfattr in xattr checks
  procps psmisc
  etcd-server          # tests/overlay.rs: crius-overlay's etcd backend
  libprotobuf-dev      # etcd-client build.rs: google/protobuf/*.proto well-known types
  iperf3               # hack/bench-overlay.sh
  curl                 # tests/streaming.rs: the streaming server over TLS
  python3-prometheus-client  # tests/metrics.rs: an independent parser of /metrics
  python3-kubernetes   # tests/streaming.rs: a WebSocket (v4.channel.k8s.io) exec/attach client
  qemu-system-x86      # hack/test-vm.sh: cgroup v2 and systemd as PID 1 in a VM
  linux-image-amd64    # hack/test-vm.sh: the VM's kernel and its 9p/overlay modules
)

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#packages[@]} packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [[ -x $d/cargo ]] && export PATH="$d:$PATH"
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install a Rust toolchain (>= 1.85) first" >&2
  exit 1
fi
echo "install-deps: $(cargo --version)"
