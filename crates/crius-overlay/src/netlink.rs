//! The node's data path over rtnetlink: the vxlan device and, per peer, an FDB entry, a
//! permanent neighbour and an onlink route. Reads what is there so the agent applies only the
//! difference.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::error::{OverlayError, Result};
use crate::state::{Fdb, Mac, Neigh, PeerState, Plan, RouteEntry};
use crate::subnet::Ipv4Net;

/// What the vxlan device must look like; a device that differs is recreated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay_index: u32,
    pub mac: Mac,
    pub mtu: u32,
}

/// Facts about one link.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub up: bool,
    pub kind: Option<InfoKind>,
    pub vxlan: Vec<InfoVxlan>,
}

impl From<&LinkMessage> for Link {
    fn from(m: &LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            ..Default::default()
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(n) => l.mtu = *n,
                LinkAttribute::Address(a) if a.len() == 6 => {
                    l.mac = Some(Mac(a.as_slice().try_into().expect("len 6")))
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(k.clone()),
                            LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = v.clone(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

impl Link {
    /// True when this existing device already is the vxlan device `spec` describes.
    fn matches(&self, spec: &VxlanSpec) -> bool {
        let has = |want: &InfoVxlan| self.vxlan.iter().any(|v| v == want);
        self.kind == Some(InfoKind::Vxlan)
            && has(&InfoVxlan::Id(spec.vni))
            && has(&InfoVxlan::Port(spec.port))
            && has(&InfoVxlan::Local(spec.local))
            && has(&InfoVxlan::Learning(false))
            && self.mac == Some(spec.mac)
    }
}

fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}

/// A netlink connection in the namespace of the thread that opened it.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Needs a tokio runtime; the socket stays in the namespace it was opened in.
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| OverlayError::io("opening", "netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(OverlayError::netlink(format!("getting link {name}"))(e)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut s = self.handle.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(OverlayError::netlink(format!("getting link {index}"))(e)),
        }
    }

    /// IPv4 addresses with their prefix length and link index.
    async fn ipv4_addrs(&self, index: Option<u32>) -> Result<Vec<(u32, Ipv4Addr, u8)>> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let msgs: Vec<AddressMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(OverlayError::netlink("listing addresses"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => {
                        Some((m.header.index, *ip, m.header.prefix_len))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// The underlay: the named interface (and its first IPv4 address unless one is given),
    /// or the interface holding `addr`.
    pub async fn underlay(
        &self,
        ifname: Option<&str>,
        addr: Option<Ipv4Addr>,
    ) -> Result<(Link, Ipv4Addr)> {
        let addrs = self.ipv4_addrs(None).await?;
        let link = match ifname {
            Some(n) => self.link_by_name(n).await?.ok_or_else(|| {
                OverlayError::config("underlay_interface", format!("no interface {n:?}"))
            })?,
            None => {
                let a = addr.expect("validated: one of the two is set");
                let idx = addrs
                    .iter()
                    .find(|(_, ip, _)| *ip == a)
                    .map(|(i, _, _)| *i)
                    .ok_or_else(|| {
                        OverlayError::config("underlay_address", format!("no interface holds {a}"))
                    })?;
                self.link_by_index(idx).await?.ok_or_else(|| {
                    OverlayError::config("underlay_address", format!("interface of {a} vanished"))
                })?
            }
        };
        let ip = match addr {
            Some(a) => a,
            None => addrs
                .iter()
                .find(|(i, _, _)| *i == link.index)
                .map(|(_, ip, _)| *ip)
                .ok_or_else(|| {
                    OverlayError::config(
                        "underlay_interface",
                        format!("{} has no IPv4 address", link.name),
                    )
                })?,
        };
        Ok((link, ip))
    }

    /// Find the vxlan device as `spec` says or (re)create it; a matching device is left
    /// alone (an agent restart must not flap it), only MTU and up are fixed.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<Link> {
        if let Some(l) = self.link_by_name(&spec.name).await? {
            if l.matches(spec) {
                if l.mtu != spec.mtu || !l.up {
                    let msg = LinkUnspec::new_with_index(l.index)
                        .mtu(spec.mtu)
                        .up()
                        .build();
                    self.handle
                        .link()
                        .set(msg)
                        .execute()
                        .await
                        .map_err(OverlayError::netlink(format!("updating {}", spec.name)))?;
                }
                return self.require_link(&spec.name).await;
            }
            tracing::warn!(device = %spec.name, "vxlan device differs from the configuration, recreating it");
            self.handle
                .link()
                .del(l.index)
                .execute()
                .await
                .map_err(OverlayError::netlink(format!("deleting {}", spec.name)))?;
        }
        let msg = LinkVxlan::new(&spec.name, spec.vni)
            .port(spec.port)
            .local(spec.local)
            .dev(spec.underlay_index)
            .learning(false)
            .address(spec.mac.0.to_vec())
            .mtu(spec.mtu)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(OverlayError::netlink(format!(
                "creating vxlan {}",
                spec.name
            )))?;
        self.require_link(&spec.name).await
    }

    async fn require_link(&self, name: &str) -> Result<Link> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| OverlayError::State(format!("link {name} vanished")))
    }

    /// Make `ip`/32 the only IPv4 address of link `index`.
    pub async fn ensure_only_addr(&self, index: u32, ip: Ipv4Addr) -> Result<()> {
        let have = self.ipv4_addrs(Some(index)).await?;
        for (_, a, len) in &have {
            if *a == ip && *len == 32 {
                continue;
            }
            let mut msg = AddressMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.index = index;
            msg.header.prefix_len = *len;
            msg.attributes.push(AddressAttribute::Local(IpAddr::V4(*a)));
            msg.attributes
                .push(AddressAttribute::Address(IpAddr::V4(*a)));
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(OverlayError::netlink(format!("removing {a}/{len}")))?;
        }
        if !have.iter().any(|(_, a, len)| *a == ip && *len == 32) {
            match self
                .handle
                .address()
                .add(index, IpAddr::V4(ip), 32)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(OverlayError::netlink(format!("adding {ip}/32"))(e)),
            }
        }
        Ok(())
    }

    /// The FDB entries, permanent neighbours and gateway routes on link `index`.
    pub async fn read(&self, index: u32) -> Result<PeerState> {
        let mut s = PeerState::default();
        let fdb: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(OverlayError::netlink("dumping fdb"))?;
        for m in fdb.iter().filter(|m| m.header.ifindex == index) {
            if let (Some(mac), Some(IpAddr::V4(dst))) = (neigh_mac(m), neigh_dst(m)) {
                s.fdb.insert(Fdb { mac, dst });
            }
        }
        let neigh: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(OverlayError::netlink("dumping neighbours"))?;
        for m in neigh
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
        {
            if let (Some(mac), Some(IpAddr::V4(ip))) = (neigh_mac(m), neigh_dst(m)) {
                s.neigh.insert(Neigh { ip, mac });
            }
        }
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(OverlayError::netlink("dumping routes"))?;
        for m in &routes {
            let mut oif = None;
            let mut dst = None;
            let mut gw = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    _ => {}
                }
            }
            if oif != Some(index) || m.header.kind != RouteType::Unicast {
                continue;
            }
            if let (Some(d), Some(via)) = (dst, gw)
                && let Some(dst) = Ipv4Net::new(d, m.header.destination_prefix_length)
            {
                s.routes.insert(RouteEntry { dst, via });
            }
        }
        Ok(s)
    }

    /// Apply `plan` on link `index`: adds (as replace) before deletes, routes last on add and
    /// first on delete. A delete of something already gone is fine.
    pub async fn apply(&self, index: u32, plan: &Plan) -> Result<()> {
        for f in &plan.fdb.add {
            self.handle
                .neighbours()
                .add_bridge(index, &f.mac.0)
                .destination(IpAddr::V4(f.dst))
                // NTF_SELF: the vxlan device's own FDB (there is no bridge master here).
                .flags(NeighbourFlags::Own)
                .replace()
                .execute()
                .await
                .map_err(OverlayError::netlink(format!(
                    "adding fdb {} dst {}",
                    f.mac, f.dst
                )))?;
        }
        for n in &plan.neigh.add {
            self.handle
                .neighbours()
                .add(index, IpAddr::V4(n.ip))
                .link_layer_address(&n.mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(OverlayError::netlink(format!(
                    "adding neighbour {} {}",
                    n.ip, n.mac
                )))?;
        }
        for r in &plan.routes.add {
            self.handle
                .route()
                .add(route_msg(index, r))
                .replace()
                .execute()
                .await
                .map_err(OverlayError::netlink(format!(
                    "adding route {} via {}",
                    r.dst, r.via
                )))?;
        }
        for r in &plan.routes.del {
            ok_if_gone(
                self.handle.route().del(route_msg(index, r)).execute().await,
                format!("deleting route {}", r.dst),
            )?;
        }
        for n in &plan.neigh.del {
            let mut m = NeighbourMessage::default();
            m.header.family = AddressFamily::Inet;
            m.header.ifindex = index;
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    n.ip,
                )));
            ok_if_gone(
                self.handle.neighbours().del(m).execute().await,
                format!("deleting neighbour {}", n.ip),
            )?;
        }
        for f in &plan.fdb.del {
            let mut m = NeighbourMessage::default();
            m.header.family = AddressFamily::Bridge;
            m.header.ifindex = index;
            m.header.flags = NeighbourFlags::Own;
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    f.dst,
                )));
            ok_if_gone(
                self.handle.neighbours().del(m).execute().await,
                format!("deleting fdb {}", f.mac),
            )?;
        }
        Ok(())
    }
}

fn ok_if_gone(r: std::result::Result<(), rtnetlink::Error>, what: String) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::ENOENT) || is_errno(&e, libc::ESRCH) => Ok(()),
        Err(e) => Err(OverlayError::netlink(what)(e)),
    }
}

fn route_msg(index: u32, r: &RouteEntry) -> RouteMessage {
    let mut m = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .gateway(r.via)
        .output_interface(index)
        .protocol(RouteProtocol::Static)
        .build();
    // The peer's VTEP address is not on any local subnet: onlink says it is reachable
    // directly on the vxlan device anyway.
    m.header.flags |= RouteFlags::Onlink;
    m
}

fn neigh_mac(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
            Some(Mac(l.as_slice().try_into().expect("len 6")))
        }
        _ => None,
    })
}

fn neigh_dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // FDB entries come with family AF_BRIDGE: the remote's address is left unparsed.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
            Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        _ => None,
    })
}
