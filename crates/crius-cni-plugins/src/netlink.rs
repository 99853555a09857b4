//! rtnetlink helpers: links, addresses, routes. One [`Netlink`] handle talks to one netns.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder,
};

use crate::error::{CniError, Result};
use crate::netns::NetNs;
use crate::types::IpNet;

/// A netlink connection bound to the namespace it was opened in.
pub struct Netlink {
    handle: Handle,
}

/// True when the netlink error carries `errno`.
pub fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}

fn nl_err(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> CniError {
    move |e| CniError::internal(format!("netlink: {what}"), e)
}

/// Facts about a link read from an RTM_NEWLINK message.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub kind: Option<InfoKind>,
    pub controller: Option<u32>,
    pub up: bool,
}

impl From<&LinkMessage> for Link {
    fn from(m: &LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: String::new(),
            kind: None,
            controller: None,
            up: m.header.flags.contains(LinkFlags::Up),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(mac) => {
                    l.mac = mac
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }
                LinkAttribute::Controller(c) => l.controller = Some(*c),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

impl Netlink {
    /// Connect in the calling thread's current namespace; needs a tokio runtime.
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| CniError::internal("netlink: opening socket", e))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Connect inside `ns`: the socket stays bound to `ns` after the thread returns.
    pub fn connect_in(ns: &NetNs) -> Result<Self> {
        ns.run(Self::connect)?
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
            Err(e) => Err(nl_err(format!("getting link {name}"))(e)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut s = self.handle.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(format!("getting link {index}"))(e)),
        }
    }

    /// Find the bridge `name` or create it (up, with `mtu`). Tolerates a concurrent creator.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<Link> {
        if self.link_by_name(name).await?.is_none() {
            let msg = LinkBridge::new(name).mtu(mtu).up().build();
            match self.handle.link().add(msg).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(nl_err(format!("creating bridge {name}"))(e)),
            }
        }
        let link = self.link_by_name(name).await?.ok_or_else(|| {
            CniError::internal(format!("bridge {name} vanished after creation"), "")
        })?;
        if link.kind != Some(InfoKind::Bridge) {
            return Err(CniError::internal(
                format!("{name} already exists but is not a bridge"),
                format!("{:?}", link.kind),
            ));
        }
        if !link.up {
            self.set_up(link.index).await?;
        }
        Ok(link)
    }

    /// Create a veth pair whose peer is born inside `peer_ns` (IFLA_NET_NS_FD on the peer
    /// message), so no interface is moved between namespaces afterwards.
    pub async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        peer_ns: &NetNs,
        mtu: u32,
    ) -> Result<()> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .mtu(mtu)
            .setns_by_fd(peer_ns.raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_owned())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(nl_err(format!("creating veth {host}/{peer}")))
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl_err(format!("setting link {index} up")))
    }

    pub async fn set_controller(&self, index: u32, controller: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .controller(controller)
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl_err(format!("attaching link {index} to {controller}")))
    }

    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).promiscuous(on).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl_err(format!("setting promisc on link {index}")))
    }

    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<()> {
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(nl_err(format!("setting hairpin on link {index}")))
    }

    /// Delete a link; `Ok(false)` when it did not exist.
    pub async fn del_link(&self, index: u32) -> Result<bool> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(nl_err(format!("deleting link {index}"))(e)),
        }
    }

    /// Add `addr` to link `index`; an already present address is fine.
    pub async fn add_addr(&self, index: u32, addr: IpNet) -> Result<()> {
        let mut req = self.handle.address().add(index, addr.addr, addr.prefix);
        if addr.addr.is_ipv6() {
            // IPAM already guarantees the address is unique on the network: skipping
            // duplicate address detection makes it usable at once instead of after ~1-2 s.
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err(format!("adding address {addr} to link {index}"))(e)),
        }
    }

    /// Add a route via link `index`; an identical existing route is fine.
    pub async fn add_route(&self, index: u32, dst: IpNet, gw: Option<IpAddr>) -> Result<()> {
        let dst = dst.trunc();
        let msg = match dst.addr {
            IpAddr::V4(d) => {
                let mut b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(d, dst.prefix)
                    .output_interface(index);
                if let Some(IpAddr::V4(g)) = gw {
                    b = b.gateway(g);
                }
                b.build()
            }
            IpAddr::V6(d) => {
                let mut b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(d, dst.prefix)
                    .output_interface(index);
                if let Some(IpAddr::V6(g)) = gw {
                    b = b.gateway(g);
                }
                b.build()
            }
        };
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err(format!("adding route {dst} via {gw:?} dev {index}"))(e)),
        }
    }
}
