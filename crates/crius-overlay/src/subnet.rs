//! IPv4 prefixes and the allocation of one node subnet out of the cluster CIDR.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{OverlayError, Result};

/// An IPv4 prefix, always stored truncated to its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then(|| Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The bridge gateway inside a node subnet: network + 1 (crius-bridge's `isGateway`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }

    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 prefix (a.b.c.d/len)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{l:?} is not a prefix length 0..=32"))?;
        Ok(Self::new(addr, len).expect("len checked"))
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The node subnets a cluster CIDR splits into.
#[derive(Debug, Clone, Copy)]
pub struct SubnetPool {
    pub cluster: Ipv4Net,
    pub len: u8,
}

impl SubnetPool {
    /// A node subnet must leave room for network, gateway, one pod and broadcast (len <= 29),
    /// and the cluster must split into at least two of them.
    pub fn new(cluster: Ipv4Net, len: u8) -> Result<Self> {
        if len > 29 {
            return Err(OverlayError::config(
                "subnet_len",
                format!("/{len} leaves no room for pods (at most /29)"),
            ));
        }
        if len <= cluster.prefix_len() {
            return Err(OverlayError::config(
                "subnet_len",
                format!("/{len} is not smaller than the cluster CIDR {cluster}"),
            ));
        }
        Ok(Self { cluster, len })
    }

    pub fn count(&self) -> u64 {
        1u64 << (self.len - self.cluster.prefix_len())
    }

    pub fn nth(&self, i: u64) -> Option<Ipv4Net> {
        (i < self.count()).then(|| {
            let step = 1u64 << (32 - u32::from(self.len));
            let base = u64::from(u32::from(self.cluster.network()));
            Ipv4Net::new(Ipv4Addr::from((base + i * step) as u32), self.len).expect("len <= 29")
        })
    }

    /// True when `net` is one of this pool's subnets.
    pub fn is_member(&self, net: &Ipv4Net) -> bool {
        net.prefix_len() == self.len && self.cluster.contains_net(net)
    }

    /// Pick a subnet for a node: `preferred` (the one it had before a restart) when it is still
    /// free, else the first free one. `taken` holds the other nodes' subnets.
    pub fn allocate(
        &self,
        preferred: Option<Ipv4Net>,
        taken: &BTreeSet<Ipv4Net>,
    ) -> Result<Ipv4Net> {
        if let Some(p) = preferred.filter(|p| self.is_member(p) && !taken.contains(p)) {
            return Ok(p);
        }
        // Bounded by the pool size; `taken` can at most hold every subnet of the pool.
        (0..self.count())
            .filter_map(|i| self.nth(i))
            .find(|n| !taken.contains(n))
            .ok_or_else(|| OverlayError::Exhausted {
                cluster: self.cluster.to_string(),
                len: self.len,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parse_truncates_and_rejects_garbage() {
        assert_eq!(net("10.244.3.7/16").to_string(), "10.244.0.0/16");
        assert_eq!(net("10.244.1.0/24").gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert!("10.244.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.244.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("fd00::/64".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn pool_bounds() {
        assert!(SubnetPool::new(net("10.244.0.0/16"), 16).is_err());
        assert!(SubnetPool::new(net("10.244.0.0/16"), 30).is_err());
        let p = SubnetPool::new(net("10.244.0.0/16"), 24).unwrap();
        assert_eq!(p.count(), 256);
        assert_eq!(p.nth(0), Some(net("10.244.0.0/24")));
        assert_eq!(p.nth(255), Some(net("10.244.255.0/24")));
        assert_eq!(p.nth(256), None);
        assert!(p.is_member(&net("10.244.9.0/24")));
        assert!(!p.is_member(&net("10.245.9.0/24")));
        assert!(!p.is_member(&net("10.244.9.0/25")));
    }

    #[test]
    fn allocation_skips_taken_and_keeps_preferred() {
        let p = SubnetPool::new(net("10.244.0.0/16"), 24).unwrap();
        let mut taken = BTreeSet::new();
        let a = p.allocate(None, &taken).unwrap();
        assert_eq!(a, net("10.244.0.0/24"));
        taken.insert(a);
        assert_eq!(p.allocate(None, &taken).unwrap(), net("10.244.1.0/24"));
        // A restarting node keeps its subnet while nobody else holds it...
        assert_eq!(
            p.allocate(Some(net("10.244.7.0/24")), &taken).unwrap(),
            net("10.244.7.0/24")
        );
        // ...but not when someone does, nor when it is outside the pool.
        assert_eq!(
            p.allocate(Some(net("10.244.0.0/24")), &taken).unwrap(),
            net("10.244.1.0/24")
        );
        assert_eq!(
            p.allocate(Some(net("10.9.7.0/24")), &taken).unwrap(),
            net("10.244.1.0/24")
        );
    }

    #[test]
    fn allocation_is_distinct_until_exhausted() {
        let p = SubnetPool::new(net("10.244.0.0/22"), 24).unwrap();
        let mut taken = BTreeSet::new();
        for _ in 0..4 {
            let n = p.allocate(None, &taken).unwrap();
            assert!(taken.insert(n), "{n} handed out twice");
        }
        let e = p.allocate(None, &taken).unwrap_err();
        assert!(e.to_string().contains("no free /24"), "{e}");
    }
}
