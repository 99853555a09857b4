//! What a node publishes, what the kernel should hold for its peers, and the diff between
//! that and what the kernel holds now: the agent only ever touches the difference, so a
//! restart with the same peers changes nothing on the data path.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::subnet::Ipv4Net;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The VTEP MAC of a node, derived from its underlay address: locally administered,
    /// unicast, stable across agent restarts and known to peers without asking.
    pub fn for_vtep(underlay: Ipv4Addr) -> Self {
        let o = underlay.octets();
        Mac([0x0e, 0xc5, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().filter(|p| p.len() == 2);
            *b = p
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("{s:?} is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address"));
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One node of the overlay as the backends know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub subnet: Ipv4Net,
    /// Underlay (VTEP) address.
    pub public_ip: Ipv4Addr,
    /// VXLAN device MAC; derived from `public_ip` when a static file leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<Mac>,
}

impl Node {
    pub fn mac(&self) -> Mac {
        self.vtep_mac
            .unwrap_or_else(|| Mac::for_vtep(self.public_ip))
    }
}

/// Forwarding entry on the vxlan device: frames for `mac` are sent to `dst` over UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// Permanent neighbour on the vxlan device: the peer's VTEP address inside the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// Route to a peer subnet via the peer's VTEP address, onlink on the vxlan device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteEntry {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
}

/// Everything the vxlan device should (or does) carry for the peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    pub fdb: BTreeSet<Fdb>,
    pub neigh: BTreeSet<Neigh>,
    pub routes: BTreeSet<RouteEntry>,
}

/// The address a node's vxlan device carries (as /32): its subnet's network address, as
/// flannel does, so the bridge keeps network + 1.
pub fn vtep_ip(subnet: &Ipv4Net) -> Ipv4Addr {
    subnet.network()
}

impl PeerState {
    /// What the kernel must hold for `nodes`, leaving out this node itself and any node whose
    /// record clashes with ours (same subnet or same underlay address).
    pub fn desired(me: &Node, nodes: &[Node]) -> Self {
        let mut s = PeerState::default();
        for n in nodes {
            if n.name == me.name || n.subnet == me.subnet || n.public_ip == me.public_ip {
                continue;
            }
            let mac = n.mac();
            let via = vtep_ip(&n.subnet);
            s.fdb.insert(Fdb {
                mac,
                dst: n.public_ip,
            });
            s.neigh.insert(Neigh { ip: via, mac });
            s.routes.insert(RouteEntry { dst: n.subnet, via });
        }
        s
    }
}

/// Entries to add (or replace) and to delete to turn `actual` into `desired`.
#[derive(Debug, PartialEq, Eq)]
pub struct Diff<T> {
    pub add: Vec<T>,
    pub del: Vec<T>,
}

impl<T> Diff<T> {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.del.is_empty()
    }
}

pub fn diff<T: Ord + Copy>(desired: &BTreeSet<T>, actual: &BTreeSet<T>) -> Diff<T> {
    Diff {
        add: desired.difference(actual).copied().collect(),
        del: actual.difference(desired).copied().collect(),
    }
}

/// The three diffs; applied as: add FDB, neighbours, routes; then delete routes, neighbours,
/// FDB — a route never points at a neighbour that is not there yet.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub fdb: Diff<Fdb>,
    pub neigh: Diff<Neigh>,
    pub routes: Diff<RouteEntry>,
}

impl Plan {
    pub fn new(desired: &PeerState, actual: &PeerState) -> Self {
        let mut p = Self {
            fdb: diff(&desired.fdb, &actual.fdb),
            neigh: diff(&desired.neigh, &actual.neigh),
            routes: diff(&desired.routes, &actual.routes),
        };
        // The kernel keys neighbours by IP, routes by destination and FDB entries by MAC: an
        // entry that changed is replaced by its add, and deleting the old one would delete
        // the new one with it.
        p.neigh
            .del
            .retain(|d| !desired.neigh.iter().any(|n| n.ip == d.ip));
        p.routes
            .del
            .retain(|d| !desired.routes.iter().any(|r| r.dst == d.dst));
        p.fdb
            .del
            .retain(|d| !desired.fdb.iter().any(|f| f.mac == d.mac));
        p
    }

    pub fn is_empty(&self) -> bool {
        self.fdb.is_empty() && self.neigh.is_empty() && self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, subnet: &str, ip: [u8; 4]) -> Node {
        Node {
            name: name.into(),
            subnet: subnet.parse().unwrap(),
            public_ip: Ipv4Addr::from(ip),
            vtep_mac: None,
        }
    }

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m = Mac::for_vtep(Ipv4Addr::new(192, 168, 7, 2));
        assert_eq!(m.to_string(), "0e:c5:c0:a8:07:02");
        assert_eq!(m.to_string().parse::<Mac>().unwrap(), m);
        for bad in [
            "",
            "0e:c5:c0:a8:07",
            "0e:c5:c0:a8:07:02:01",
            "zz:c5:c0:a8:07:02",
            "e:c5:c0:a8:07:02",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn desired_leaves_out_self_and_clashes() {
        let me = node("a", "10.244.0.0/24", [192, 168, 0, 1]);
        let nodes = vec![
            me.clone(),
            node("b", "10.244.1.0/24", [192, 168, 0, 2]),
            node("c", "10.244.0.0/24", [192, 168, 0, 3]),
            node("d", "10.244.3.0/24", [192, 168, 0, 1]),
        ];
        let s = PeerState::desired(&me, &nodes);
        let b_mac = Mac::for_vtep(Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(
            s.fdb.into_iter().collect::<Vec<_>>(),
            vec![Fdb {
                mac: b_mac,
                dst: Ipv4Addr::new(192, 168, 0, 2)
            }]
        );
        assert_eq!(
            s.neigh.into_iter().collect::<Vec<_>>(),
            vec![Neigh {
                ip: Ipv4Addr::new(10, 244, 1, 0),
                mac: b_mac
            }]
        );
        assert_eq!(
            s.routes.into_iter().collect::<Vec<_>>(),
            vec![RouteEntry {
                dst: "10.244.1.0/24".parse().unwrap(),
                via: Ipv4Addr::new(10, 244, 1, 0)
            }]
        );
    }

    #[test]
    fn same_peers_means_empty_plan() {
        let me = node("a", "10.244.0.0/24", [192, 168, 0, 1]);
        let peers = vec![
            node("b", "10.244.1.0/24", [192, 168, 0, 2]),
            node("c", "10.244.2.0/24", [192, 168, 0, 3]),
        ];
        let want = PeerState::desired(&me, &peers);
        // An agent restart reads back exactly what it programmed: nothing to do.
        assert!(Plan::new(&want, &want.clone()).is_empty());
    }

    #[test]
    fn plan_adds_new_removes_gone_and_replaces_moved() {
        let me = node("a", "10.244.0.0/24", [192, 168, 0, 1]);
        let before = PeerState::desired(
            &me,
            &[
                node("b", "10.244.1.0/24", [192, 168, 0, 2]),
                node("c", "10.244.2.0/24", [192, 168, 0, 3]),
            ],
        );
        // c left; d joined; b moved to another underlay address.
        let after = PeerState::desired(
            &me,
            &[
                node("b", "10.244.1.0/24", [192, 168, 0, 9]),
                node("d", "10.244.4.0/24", [192, 168, 0, 4]),
            ],
        );
        let p = Plan::new(&after, &before);
        let ips = |v: &Vec<Fdb>| v.iter().map(|f| f.dst.octets()[3]).collect::<Vec<_>>();
        assert_eq!(ips(&p.fdb.add), vec![4, 9]);
        assert_eq!(ips(&p.fdb.del), vec![2, 3]);
        let dsts = |v: &Vec<RouteEntry>| v.iter().map(|r| r.dst.to_string()).collect::<Vec<_>>();
        // b's route is unchanged (same subnet, same via): it is not touched at all.
        assert_eq!(dsts(&p.routes.add), vec!["10.244.4.0/24"]);
        assert_eq!(dsts(&p.routes.del), vec!["10.244.2.0/24"]);
        // b's MAC changed with its address: replaced in place, only c's entry is deleted.
        assert_eq!(p.neigh.add.len(), 2);
        assert_eq!(
            p.neigh.del,
            vec![Neigh {
                ip: Ipv4Addr::new(10, 244, 2, 0),
                mac: Mac::for_vtep(Ipv4Addr::new(192, 168, 0, 3))
            }]
        );
    }
}
