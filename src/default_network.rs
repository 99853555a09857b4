//! crius's default pod network, written when the CNI conf dir has none: crius's own bridge
//! with host-local IPAM and port mappings (the same file as deploy/cni/). No loopback plugin:
//! crius brings `lo` up itself when it creates the pod's network namespace.
//!
//! The shipped subnet is containerd's and Podman's default, 10.88.0.0/16: on a host where
//! another runtime already routes it, the first free one of a few neighbours is written instead.

use std::path::Path;

use crius_cni_plugins::routes::{self, HostRoute};
use crius_cni_plugins::types::IpNet;

/// deploy/cni/10-crius.conflist
pub const DEFAULT_CONFLIST: &str = include_str!("../deploy/cni/10-crius.conflist");
const SHIPPED_SUBNET: &str = "10.88.0.0/16";
const CANDIDATES: &[&str] = &[
    SHIPPED_SUBNET,
    "10.89.0.0/16",
    "10.90.0.0/16",
    "10.91.0.0/16",
    "10.92.0.0/16",
];

pub fn write_if_missing(dir: &Path) -> std::io::Result<()> {
    let has_config = std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            [".conflist", ".conf", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
    });
    if has_config {
        return Ok(());
    }
    let subnet = free_subnet(&routes::host_routes()).map_err(std::io::Error::other)?;
    if subnet != SHIPPED_SUBNET {
        tracing::warn!(%subnet, shipped = SHIPPED_SUBNET, "the default pod subnet is routed on this host already: using another");
    }
    std::fs::create_dir_all(dir)?;
    let conflist = DEFAULT_CONFLIST.replace(SHIPPED_SUBNET, subnet);
    crius_state::atomic_write(&dir.join("10-crius.conflist"), conflist.as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::info!(dir = %dir.display(), %subnet, "wrote the default pod network config");
    Ok(())
}

/// The first candidate subnet that no host route overlaps (crius's own bridge excepted).
fn free_subnet(routes: &[HostRoute]) -> Result<&'static str, String> {
    let mut taken = Vec::new();
    for candidate in CANDIDATES {
        let net: IpNet = candidate.parse().expect("static subnet");
        match routes::conflicting(net, "crius0", routes) {
            None => return Ok(candidate),
            Some(route) => taken.push(format!("{candidate} (route {route})")),
        }
    }
    Err(format!(
        "no default pod subnet is free on this host: {}; write a network config to the CNI conf dir",
        taken.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, dev: &str) -> HostRoute {
        HostRoute {
            dst: dst.parse().unwrap(),
            dev: dev.into(),
        }
    }

    #[test]
    fn the_shipped_file_has_the_shipped_subnet() {
        assert!(DEFAULT_CONFLIST.contains(SHIPPED_SUBNET));
    }

    #[test]
    fn picks_the_first_subnet_no_other_network_routes() {
        assert_eq!(
            free_subnet(&[route("0.0.0.0/0", "eth0")]),
            Ok(SHIPPED_SUBNET)
        );
        // Our own bridge from an earlier run is no conflict.
        assert_eq!(
            free_subnet(&[route("10.88.0.0/16", "crius0")]),
            Ok(SHIPPED_SUBNET)
        );
        // containerd's cni0 (or Podman's) holds 10.88/16: the next one.
        assert_eq!(
            free_subnet(&[route("10.88.0.0/16", "cni0"), route("10.89.3.0/24", "wg0")]),
            Ok("10.90.0.0/16")
        );
        let err = free_subnet(&[route("10.0.0.0/8", "eth1")]).unwrap_err();
        assert!(
            err.contains("10.88.0.0/16 (route 10.0.0.0/8 dev eth1)"),
            "{err}"
        );
    }
}
