//! crius-bridge: a Linux bridge on the host, a veth pair per attachment (peer created directly
//! in the pod netns), IPAM via a delegate plugin, optional masquerade via nftables.

use crius_cni_plugins::conf::Obj;
use crius_cni_plugins::error::{CniError, Result};
use crius_cni_plugins::ipam;
use crius_cni_plugins::netlink::Netlink;
use crius_cni_plugins::netns::NetNs;
use crius_cni_plugins::nft::{self, Hook, NatChain, NatTable, Nft, Rule};
use crius_cni_plugins::skel::{self, CmdArgs, Plugin, valid_ifname};
use crius_cni_plugins::types::{CniResult, Dns, Interface, IpNet, Route, from_bits, to_bits};
use crius_cni_plugins::{routes, runtime, sysctl};
use serde_json::Value;

const DEFAULT_BRIDGE: &str = "crius0";
const DEFAULT_MTU: u32 = 1500;
const NAT_TABLE: &str = "crius-nat";

struct BridgeConf {
    network: String,
    bridge: String,
    is_gateway: bool,
    is_default_gateway: bool,
    ip_masq: bool,
    mtu: u32,
    hairpin: bool,
    promisc: bool,
    ipam_type: Option<String>,
    dns: Dns,
    /// Destinations not masqueraded besides the pod's own subnet (`ipMasqExclude`): the
    /// overlay's cluster CIDR, so pod-to-pod traffic across nodes keeps its source.
    masq_exclude: Vec<IpNet>,
}

/// Bound on `ipMasqExclude` entries (each is one match in every masquerade rule).
const MAX_MASQ_EXCLUDE: usize = 16;

impl BridgeConf {
    fn parse(args: &CmdArgs) -> Result<Self> {
        let c = args.conf()?;
        let network = c.str_req("name")?.to_owned();
        let bridge = c
            .str_opt("bridge")?
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_BRIDGE)
            .to_owned();
        if !valid_ifname(&bridge) {
            return Err(CniError::config(
                "bridge",
                format!("{bridge:?} is not a valid interface name"),
            ));
        }
        let mtu = c.u32_opt("mtu")?.unwrap_or(DEFAULT_MTU);
        if !(68..=65535).contains(&mtu) {
            return Err(CniError::config(
                "mtu",
                format!("{mtu} is outside 68..=65535"),
            ));
        }
        let is_default_gateway = c.bool_or("isDefaultGateway", false)?;
        let ipam_type = match c.obj_value("ipam")? {
            Some(m) if !m.is_empty() => Some(Obj::with_path(m, "ipam").str_req("type")?.to_owned()),
            _ => None,
        };
        let dns = match c.raw("dns") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| CniError::config("dns", e.to_string()))?,
            None => Dns::default(),
        };
        let mut masq_exclude = Vec::new();
        for (i, v) in c
            .arr_opt("ipMasqExclude")?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("ipMasqExclude[{i}]");
            if i >= MAX_MASQ_EXCLUDE {
                return Err(CniError::config(
                    "ipMasqExclude",
                    format!("at most {MAX_MASQ_EXCLUDE} entries"),
                ));
            }
            let net = v
                .as_str()
                .ok_or_else(|| CniError::config(&field, "must be a string"))?
                .parse::<IpNet>()
                .map_err(|e| CniError::config(&field, e))?;
            masq_exclude.push(net.trunc());
        }
        Ok(Self {
            masq_exclude,
            network,
            bridge,
            is_gateway: c.bool_or("isGateway", false)? || is_default_gateway,
            is_default_gateway,
            ip_masq: c.bool_or("ipMasq", false)?,
            mtu,
            hairpin: c.bool_or("hairpinMode", false)?,
            promisc: c.bool_or("promiscMode", false)?,
            ipam_type,
            dns,
        })
    }
}

/// Host-side veth name: stable for (network, container, ifname) so DEL finds it without the
/// pod netns. "veth" + 10 hex digits of FNV-1a.
fn host_veth_name(network: &str, id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network
        .bytes()
        .chain([0])
        .chain(id.bytes())
        .chain([0])
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("veth{:010x}", h & 0xff_ffff_ffff)
}

fn nat_tag(conf: &BridgeConf, args: &CmdArgs) -> String {
    nft::tag(&[&args.container_id, &args.ifname, &conf.network])
}

const NAT_CHAINS: &[NatChain] = &[NatChain {
    name: "postrouting",
    hook: Hook::Postrouting,
    priority: nft::PRIO_SRCNAT,
}];

const NAT: NatTable<'static> = NatTable {
    name: NAT_TABLE,
    chains: NAT_CHAINS,
};

/// Masquerade what the pod sends off its subnet (and off `exclude` of the same family),
/// except multicast.
fn masq_rules(tag: &str, ips: &[IpNet], exclude: &[IpNet]) -> Vec<Rule> {
    ips.iter()
        .map(|ip| {
            let mcast = if ip.addr.is_ipv4() {
                "224.0.0.0/4"
            } else {
                "ff00::/8"
            };
            let mut r = Rule::new("postrouting")
                .saddr(IpNet::host(ip.addr))
                .daddr_ne(ip.trunc());
            for x in exclude
                .iter()
                .filter(|x| x.addr.is_ipv4() == ip.addr.is_ipv4())
            {
                r = r.daddr_ne(*x);
            }
            r.daddr_ne(mcast.parse().expect("static"))
                .masquerade()
                .comment(tag)
        })
        .collect()
}

/// `accept_dad=0` (and IPv6 enabled) on `ifname` inside the pod netns; nothing to do when the
/// kernel has no IPv6.
fn disable_dad(ns: &NetNs, ifname: &str) -> Result<()> {
    ns.run(|| {
        if !std::path::Path::new("/proc/sys/net/ipv6/conf")
            .join(ifname)
            .is_dir()
        {
            return Ok(());
        }
        sysctl::set_if("ipv6", ifname, "disable_ipv6", "0")?;
        sysctl::set_if("ipv6", ifname, "accept_dad", "0")
    })?
}

struct Bridge;

/// Everything created so far by ADD, undone in reverse on failure.
#[derive(Default)]
struct Undo {
    host_veth: Option<u32>,
    ipam: bool,
    nat: bool,
}

/// A pod subnet that another interface already routes (another runtime's bridge on the same
/// default 10.88.0.0/16, a VPN, the LAN) would make pods unreachable or shadow real hosts:
/// refuse it with the route named, instead of adding a second route that silently loses.
fn refuse_overlap(conf: &BridgeConf, address: IpNet) -> Result<()> {
    let subnet = IpNet {
        addr: address.network(),
        prefix: address.prefix,
    };
    let routes = routes::host_routes();
    match routes::conflicting(subnet, &conf.bridge, &routes) {
        None => Ok(()),
        Some(route) => Err(CniError::config(
            "ipam.ranges",
            format!(
                "pod subnet {subnet} of network {:?} overlaps the host route {route}: \
                 another network already uses it; choose a free subnet in the network config",
                conf.network
            ),
        )),
    }
}

impl Bridge {
    async fn add_inner(
        &self,
        args: &CmdArgs,
        conf: &BridgeConf,
        ns: &NetNs,
        undo: &mut Undo,
    ) -> Result<CniResult> {
        let host = Netlink::connect()?;
        let pod = Netlink::connect_in(ns)?;
        let br = host.ensure_bridge(&conf.bridge, conf.mtu).await?;
        if conf.promisc {
            host.set_promisc(br.index, true).await?;
        }
        let veth_name = host_veth_name(&conf.network, &args.container_id, &args.ifname);
        // A retried ADD finds its own half-built veth: remove it (deleting one end removes both).
        if let Some(stale) = host.link_by_name(&veth_name).await? {
            host.del_link(stale.index).await?;
        }
        if pod.link_by_name(&args.ifname).await?.is_some() {
            return Err(CniError::internal(
                format!(
                    "interface {} already exists in {}",
                    args.ifname,
                    ns.path().display()
                ),
                "",
            ));
        }
        host.create_veth(&veth_name, &args.ifname, ns, conf.mtu)
            .await?;
        let hv = host.link_by_name(&veth_name).await?.ok_or_else(|| {
            CniError::internal(format!("veth {veth_name} missing after creation"), "")
        })?;
        undo.host_veth = Some(hv.index);
        host.set_controller(hv.index, br.index).await?;
        if conf.hairpin {
            host.set_hairpin(hv.index, true).await?;
        }
        host.set_up(hv.index).await?;
        let pv = pod.link_by_name(&args.ifname).await?.ok_or_else(|| {
            CniError::internal(format!("{} missing in pod netns", args.ifname), "")
        })?;
        // Before the link goes up: its IPv6 addresses (link-local included) skip duplicate
        // address detection, so a pod is reachable over IPv6 as soon as ADD returns.
        disable_dad(ns, &args.ifname)?;
        pod.set_up(pv.index).await?;

        let mut result = CniResult::default();
        if let Some(t) = &conf.ipam_type {
            undo.ipam = true;
            result = ipam::delegate(args, t, "ADD")?.unwrap_or_default();
        }
        let mut routes: Vec<Route> = Vec::new();
        for ip in &mut result.ips {
            if conf.is_gateway && ip.gateway.is_none() {
                ip.gateway = Some(from_bits(
                    ip.address.addr,
                    to_bits(ip.address.network()) + 1,
                ));
            }
            ip.interface = Some(2);
            pod.add_addr(pv.index, ip.address).await?;
            if let (true, Some(gw)) = (conf.is_gateway, ip.gateway) {
                refuse_overlap(conf, ip.address)?;
                host.add_addr(
                    br.index,
                    IpNet {
                        addr: gw,
                        prefix: ip.address.prefix,
                    },
                )
                .await?;
                if gw.is_ipv4() {
                    sysctl::set("net.ipv4.ip_forward", "1")?;
                } else {
                    sysctl::set("net.ipv6.conf.all.forwarding", "1")?;
                }
            }
            if let (true, Some(gw)) = (conf.is_default_gateway, ip.gateway) {
                let any = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                let dst: IpNet = any.parse().expect("static");
                pod.add_route(pv.index, dst, Some(gw)).await?;
                routes.push(Route { dst, gw: Some(gw) });
            }
        }
        for r in &result.routes {
            let gw = r.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .find(|i| i.address.addr.is_ipv4() == r.dst.addr.is_ipv4())
                    .and_then(|i| i.gateway)
            });
            if conf.is_default_gateway && r.dst.prefix == 0 {
                continue; // already installed via the gateway
            }
            pod.add_route(pv.index, r.dst, gw).await?;
            routes.push(Route { dst: r.dst, gw });
        }
        if conf.ip_masq && !result.ips.is_empty() {
            let mut nf = Nft::open()?;
            let _lock = nft::lock()?;
            undo.nat = true;
            let ips: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
            let tag = nat_tag(conf, args);
            nf.replace_tagged(&NAT, &tag, &masq_rules(&tag, &ips, &conf.masq_exclude))?;
        }
        let brl = host
            .link_by_index(br.index)
            .await?
            .map(|l| l.mac)
            .unwrap_or_default();
        let hvl = host
            .link_by_index(hv.index)
            .await?
            .map(|l| l.mac)
            .unwrap_or_default();
        let pvl = pod
            .link_by_index(pv.index)
            .await?
            .map(|l| l.mac)
            .unwrap_or_default();
        result.interfaces = vec![
            Interface {
                name: conf.bridge.clone(),
                mac: brl,
                mtu: Some(conf.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: veth_name,
                mac: hvl,
                mtu: Some(conf.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: args.ifname.clone(),
                mac: pvl,
                mtu: Some(conf.mtu),
                sandbox: ns.path().display().to_string(),
            },
        ];
        result.routes = routes;
        if result.dns.is_empty() {
            result.dns = conf.dns.clone();
        }
        Ok(result)
    }

    /// Undo a failed ADD (best effort, errors of the rollback itself are dropped).
    async fn rollback(&self, args: &CmdArgs, conf: &BridgeConf, undo: Undo) {
        if undo.nat
            && let Ok(mut nf) = Nft::open()
            && let Ok(_lock) = nft::lock()
        {
            let _ = nf.delete_tagged(NAT_TABLE, &nat_tag(conf, args));
        }
        if undo.ipam
            && let Some(t) = &conf.ipam_type
        {
            let _ = ipam::delegate(args, t, "DEL");
        }
        if let (Some(idx), Ok(host)) = (undo.host_veth, Netlink::connect()) {
            let _ = host.del_link(idx).await;
        }
    }
}

impl Plugin for Bridge {
    fn add(&self, args: &CmdArgs) -> Result<Value> {
        let conf = BridgeConf::parse(args)?;
        let ns = NetNs::open(
            args.netns
                .as_deref()
                .ok_or_else(|| CniError::env("CNI_NETNS", "not set"))?,
        )?;
        let rt = runtime()?;
        rt.block_on(async {
            let mut undo = Undo::default();
            match self.add_inner(args, &conf, &ns, &mut undo).await {
                Ok(r) => Ok(r.to_json(&args.cni_version)),
                Err(e) => {
                    self.rollback(args, &conf, undo).await;
                    Err(e)
                }
            }
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let conf = BridgeConf::parse(args)?;
        // NAT first, and the socket stays open until DEL returns: closing a NETLINK_NETFILTER
        // socket waits until nf_tables has freed what the commit deleted (an RCU grace period,
        // ~10-20 ms), which then overlaps the IPAM and link teardown instead of adding to it.
        let _nat = if conf.ip_masq {
            let mut nf = Nft::open()?;
            let _lock = nft::lock()?;
            nf.delete_tagged(NAT_TABLE, &nat_tag(&conf, args))?;
            Some(nf)
        } else {
            None
        };
        if let Some(t) = &conf.ipam_type {
            ipam::delegate(args, t, "DEL")?;
        }
        let rt = runtime()?;
        rt.block_on(async {
            // The pod end first (if the netns is still there), then the host end by its
            // deterministic name; either removes the pair, a missing one is fine.
            if let Some(path) = &args.netns
                && let Ok(ns) = NetNs::open(path)
            {
                let pod = Netlink::connect_in(&ns)?;
                if let Some(l) = pod.link_by_name(&args.ifname).await? {
                    pod.del_link(l.index).await?;
                }
            }
            let host = Netlink::connect()?;
            let veth = host_veth_name(&conf.network, &args.container_id, &args.ifname);
            if let Some(l) = host.link_by_name(&veth).await? {
                host.del_link(l.index).await?;
            }
            Ok::<_, CniError>(())
        })?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let conf = BridgeConf::parse(args)?;
        let ns = NetNs::open(
            args.netns
                .as_deref()
                .ok_or_else(|| CniError::env("CNI_NETNS", "not set"))?,
        )?;
        if let Some(t) = &conf.ipam_type {
            ipam::delegate(args, t, "CHECK")?;
        }
        runtime()?.block_on(async {
            let host = Netlink::connect()?;
            let pod = Netlink::connect_in(&ns)?;
            let br = host
                .link_by_name(&conf.bridge)
                .await?
                .ok_or_else(|| CniError::internal(format!("bridge {} missing", conf.bridge), ""))?;
            let veth = host_veth_name(&conf.network, &args.container_id, &args.ifname);
            let hv = host
                .link_by_name(&veth)
                .await?
                .ok_or_else(|| CniError::internal(format!("veth {veth} missing"), ""))?;
            if hv.controller != Some(br.index) {
                return Err(CniError::internal(
                    format!("veth {veth} is not attached to {}", conf.bridge),
                    "",
                ));
            }
            pod.link_by_name(&args.ifname).await?.ok_or_else(|| {
                CniError::internal(format!("{} missing in pod netns", args.ifname), "")
            })?;
            Ok(())
        })
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        BridgeConf::parse(args).map(drop)
    }
}

fn main() {
    skel::run(&Bridge)
}

#[cfg(test)]
#[path = "../../tests/common/nft_equiv.rs"]
mod nft_equiv;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_are_stable() {
        let a = host_veth_name("net", "abc", "eth0");
        assert_eq!(a.len(), 14);
        assert_eq!(a, host_veth_name("net", "abc", "eth0"));
        assert_ne!(a, host_veth_name("net", "abc", "eth1"));
    }

    /// The script ADD ran before nftables was spoken over netlink: the reference.
    fn legacy_script(table: &str, tag: &str, ips: &[IpNet]) -> String {
        let mut s = format!(
            "add table inet {table}\nadd chain inet {table} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
        );
        for ip in ips {
            let (fam, mcast) = if ip.addr.is_ipv4() {
                ("ip", "224.0.0.0/4")
            } else {
                ("ip6", "ff00::/8")
            };
            let net = ip.trunc();
            s.push_str(&format!(
                "add rule inet {table} postrouting {fam} saddr {} {fam} daddr != {net} {fam} daddr != {mcast} masquerade comment \"{tag}\"\n",
                ip.addr
            ));
        }
        s
    }

    /// With `ipMasqExclude` (the overlay's cluster CIDR) the rule also skips that destination.
    #[test]
    fn masq_exclude_matches_the_nft_script() {
        if !nft_equiv::usable() {
            return;
        }
        let tag = nft::tag(&["0123abcd", "eth0", "overlay"]);
        let ips: Vec<IpNet> = vec![
            "10.244.3.7/24".parse().unwrap(),
            "fd00:1::7/64".parse().unwrap(),
        ];
        let exclude: Vec<IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
        nft_equiv::assert_same_rules(
            "excl",
            NAT_CHAINS,
            &tag,
            &masq_rules(&tag, &ips, &exclude),
            |t| {
                format!(
                    "add table inet {t}\nadd chain inet {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
                 add rule inet {t} postrouting ip saddr 10.244.3.7 ip daddr != 10.244.3.0/24 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade comment \"{tag}\"\n\
                 add rule inet {t} postrouting ip6 saddr fd00:1::7 ip6 daddr != fd00:1::/64 ip6 daddr != ff00::/8 masquerade comment \"{tag}\"\n"
                )
            },
        );
    }

    #[test]
    fn masq_rules_match_the_nft_script() {
        if !nft_equiv::usable() {
            return;
        }
        let tag = nft::tag(&["0123abcd", "eth0", "crius net"]);
        for (case, ips) in [
            ("v4", &["10.99.3.7/16"][..]),
            ("v6", &["fd00:99::7/64"]),
            ("dual", &["10.88.0.9/24", "fd00:88:0:1::9/60"]),
            ("odd", &["172.20.5.3/20", "fd12:3456:789a::1/127"]),
        ] {
            let ips: Vec<IpNet> = ips.iter().map(|s| s.parse().unwrap()).collect();
            nft_equiv::assert_same_rules(
                case,
                NAT_CHAINS,
                &tag,
                &masq_rules(&tag, &ips, &[]),
                |t| legacy_script(t, &tag, &ips),
            );
        }
    }
}
