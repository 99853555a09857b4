#!/usr/bin/env bash
# Pod-to-pod TCP throughput (iperf3) and latency (ping) across the VXLAN overlay vs. two pods
# on the same node bridge. Two "nodes" are network namespaces joined by veths on a bridge in
# a third namespace; each runs crius-overlay (static backend), pods are attached with the
# crius-vxlan CNI plugin. Nothing outside these namespaces is touched; all is removed on exit.
# Usage: bash hack/bench-overlay.sh [SECONDS]   (root; needs iperf3, busybox, built binaries)
set -euo pipefail

secs=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN_DIR:-$here/target/debug}
for b in crius-overlay crius-vxlan crius-bridge crius-host-local; do
  [[ -x $bin/$b ]] || { echo "missing $bin/$b: cargo build -p crius-overlay -p crius-cni-plugins" >&2; exit 1; }
done
command -v iperf3 >/dev/null || { echo "iperf3 missing (apt-get install iperf3)" >&2; exit 1; }

tag=b$$
ul=ovl${tag}u
work=$(mktemp -d /tmp/crius-bench-overlay.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in ${tag}pa ${tag}pb ${tag}pc "${ul}" ovl${tag}n0 ovl${tag}n1; do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ul"
ip -n "$ul" link set lo up
ip -n "$ul" link add br0 type bridge
ip -n "$ul" link set br0 up
cat >"$work/nodes.json" <<JSON
{"nodes": [
  {"name": "n0", "subnet": "10.244.0.0/24", "public_ip": "192.168.60.1"},
  {"name": "n1", "subnet": "10.244.1.0/24", "public_ip": "192.168.60.2"}
]}
JSON
for i in 0 1; do
  ns=ovl${tag}n$i
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ul" link add v$i type veth peer name eth0 netns "$ns"
  ip -n "$ul" link set v$i master br0 up
  ip -n "$ns" addr add 192.168.60.$((i + 1))/24 dev eth0
  ip -n "$ns" link set eth0 up
  mkdir -p "$work/n$i"
  cat >"$work/n$i/overlay.toml" <<TOML
node_name = "n$i"
cluster_cidr = "10.244.0.0/16"
underlay_interface = "eth0"
subnet_file = "$work/n$i/subnet.json"
[backend]
type = "static"
path = "$work/nodes.json"
TOML
  ip netns exec "$ns" "$bin/crius-overlay" --config "$work/n$i/overlay.toml" --log-level warn &
  pids+=($!)
done
for i in 0 1; do
  for _ in $(seq 50); do [[ -f $work/n$i/subnet.json ]] && break; sleep 0.1; done
done

# attach POD NODE: a pod netns attached by crius-vxlan on node NODE.
attach() {
  local pod=$1 node=$2
  ip netns add "$pod"
  CNI_COMMAND=ADD CNI_CONTAINERID=$pod CNI_NETNS=/run/netns/$pod CNI_IFNAME=eth0 CNI_PATH=$bin \
    ip netns exec ovl${tag}n$node "$bin/crius-vxlan" >"$work/$pod.json" <<JSON
{"cniVersion": "1.0.0", "name": "bench", "type": "crius-vxlan",
 "subnetFile": "$work/n$node/subnet.json", "dataDir": "$work/n$node/ipam", "cacheDir": "$work/n$node/cache"}
JSON
  jq -r '.ips[0].address' "$work/$pod.json" | cut -d/ -f1
}
ipa=$(attach ${tag}pa 0)
ipb=$(attach ${tag}pb 1)
ipc=$(attach ${tag}pc 0)

ip netns exec ${tag}pb iperf3 -s -D -1 >/dev/null
ip netns exec ${tag}pc iperf3 -s -D -1 >/dev/null
sleep 0.5

measure() {
  local label=$1 dst=$2
  local gbps lat
  gbps=$(ip netns exec ${tag}pa iperf3 -c "$dst" -t "$secs" -J | jq '.end.sum_received.bits_per_second / 1e9')
  lat=$(ip netns exec ${tag}pa busybox ping -c 50 -i 0.02 -q "$dst" | awk -F/ '/round-trip/ {print $4}')
  printf '%-28s %8.2f Gbit/s   rtt avg %s ms\n' "$label" "$gbps" "$lat"
}
echo "pod-to-pod, ${secs}s iperf3 TCP, 50 pings (MTU overlay $(jq .mtu "$work/n0/subnet.json"))"
measure "across nodes (VXLAN)" "$ipb"
measure "same node bridge" "$ipc"
