#!/usr/bin/env bash
# Removes what Debian's reference CNI plugins leave in the iptables/ip6tables nat tables once
# no pod uses them: CNI-* chains nothing jumps to any more, and portmap's CNI-HOSTPORT-*
# scaffolding when CNI-HOSTPORT-DNAT has no mapping left. Safe on a host with live pods:
# a chain in use is referenced, and live port mappings keep CNI-HOSTPORT-DNAT non-empty.
set -uo pipefail

for ipt in iptables ip6tables; do
  command -v "$ipt-save" >/dev/null || continue
  rules=$("$ipt-save" -t nat 2>/dev/null) || continue
  if ! grep -q -- '^-A CNI-HOSTPORT-DNAT ' <<<"$rules"; then
    "$ipt" -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
    "$ipt" -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
    "$ipt" -t nat -D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" \
      -j CNI-HOSTPORT-MASQ 2>/dev/null
  fi
  # Deleting a chain can orphan the chains it jumped to: repeat until nothing changes.
  changed=1
  while ((changed)); do
    changed=0
    rules=$("$ipt-save" -t nat)
    for chain in $(sed -n 's/^:\(CNI-[^ ]*\) .*/\1/p' <<<"$rules"); do
      if ! grep -qE -- "-j ${chain}( |\$)" <<<"$rules"; then
        "$ipt" -t nat -F "$chain" && "$ipt" -t nat -X "$chain" && changed=1
      fi
    done
  done
done
