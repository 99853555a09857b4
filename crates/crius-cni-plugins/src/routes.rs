//! The host's routes as the kernel lists them in /proc/net/route and /proc/net/ipv6_route, to
//! find a pod subnet that another network (another runtime's bridge, a VPN, the LAN) already
//! uses: its pods would be unreachable, or worse, shadow real hosts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::types::{IpNet, to_bits};

/// One route of the main table: destination and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub dst: IpNet,
    pub dev: String,
}

impl std::fmt::Display for HostRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dev {}", self.dst, self.dev)
    }
}

/// The host's IPv4 and IPv6 routes (as seen from this process's network namespace).
pub fn host_routes() -> Vec<HostRoute> {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).unwrap_or_default();
    let mut routes = parse_ipv4(&read("/proc/net/route"));
    routes.extend(parse_ipv6(&read("/proc/net/ipv6_route")));
    routes
}

/// Whether two prefixes share an address.
pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    if a.addr.is_ipv4() != b.addr.is_ipv4() {
        return false;
    }
    let shorter = a.prefix.min(b.prefix);
    let (x, y) = (
        IpNet {
            prefix: shorter,
            ..a
        },
        IpNet {
            prefix: shorter,
            ..b
        },
    );
    to_bits(x.network()) == to_bits(y.network())
}

/// The first route, not through `own_dev`, that overlaps `subnet`. Default routes do not count
/// (every subnet overlaps them).
pub fn conflicting<'a>(
    subnet: IpNet,
    own_dev: &str,
    routes: &'a [HostRoute],
) -> Option<&'a HostRoute> {
    routes
        .iter()
        .find(|r| r.dst.prefix > 0 && r.dev != own_dev && r.dev != "lo" && overlaps(subnet, r.dst))
}

/// /proc/net/route: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses in
/// host-order hex (little-endian on x86).
fn parse_ipv4(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dev, dst, mask) = (f.first()?, f.get(1)?, f.get(7)?);
            // The kernel prints each `__be32` with %08X of its in-memory value: the address
            // bytes are the number's native-endian bytes.
            let dst = Ipv4Addr::from(u32::from_str_radix(dst, 16).ok()?.to_ne_bytes());
            let mask = u32::from_str_radix(mask, 16).ok()?;
            let dst = IpNet::new(IpAddr::V4(dst), mask.count_ones() as u8)?;
            Some(HostRoute {
                dst,
                dev: (*dev).to_string(),
            })
        })
        .collect()
}

/// /proc/net/ipv6_route: `dst dst_len src src_len next_hop metric refcnt use flags dev`.
fn parse_ipv6(text: &str) -> Vec<HostRoute> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dst, len, dev) = (f.first()?, f.get(1)?, f.get(9)?);
            let dst = Ipv6Addr::from(u128::from_str_radix(dst, 16).ok()?);
            let len = u8::from_str_radix(len, 16).ok()?;
            Some(HostRoute {
                dst: IpNet::new(IpAddr::V6(dst), len)?,
                dev: (*dev).to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_kernels_route_tables() {
        // Captured on x86_64: 10.88.0.0/16 dev cni0, default via 10.0.2.2 dev eth0.
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  cni0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_ipv4(v4);
        if cfg!(target_endian = "little") {
            assert_eq!(r[1].dst, net("10.88.0.0/16"));
            assert_eq!(r[1].dev, "cni0");
        }
        assert_eq!(r[0].dst.prefix, 0);
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 cni0\n";
        let r = parse_ipv6(v6);
        assert_eq!(
            r,
            vec![HostRoute {
                dst: net("fd00::/64"),
                dev: "cni0".into()
            }]
        );
    }

    #[test]
    fn finds_a_route_of_another_device_that_overlaps() {
        let routes = vec![
            HostRoute {
                dst: net("0.0.0.0/0"),
                dev: "eth0".into(),
            },
            HostRoute {
                dst: net("10.88.0.0/16"),
                dev: "cni0".into(),
            },
            HostRoute {
                dst: net("10.89.0.0/24"),
                dev: "crius0".into(),
            },
        ];
        let hit = conflicting(net("10.88.0.0/16"), "crius0", &routes).unwrap();
        assert_eq!(hit.to_string(), "10.88.0.0/16 dev cni0");
        assert!(conflicting(net("10.88.5.0/24"), "crius0", &routes).is_some());
        assert!(conflicting(net("10.0.0.0/8"), "crius0", &routes).is_some());
        // Our own bridge's route and the default route are not conflicts.
        assert!(conflicting(net("10.89.0.0/16"), "crius0", &routes).is_none());
        assert!(conflicting(net("10.90.0.0/16"), "crius0", &routes).is_none());
        assert!(!overlaps(net("10.88.0.0/16"), net("fd00::/8")));
    }
}
