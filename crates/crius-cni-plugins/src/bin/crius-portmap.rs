//! crius-portmap: chained after crius-bridge; DNATs `runtimeConfig.portMappings` host ports to
//! the pod IP with nftables (table `inet crius-portmap`). Every rule carries a comment naming
//! the attachment, DEL deletes exactly those, and an empty table is removed.
//!
//! hostPort on 127.0.0.1 needs `route_localnet` on the host side of the pod network, which
//! would also let a pod send to the host's loopback services (CVE-2020-8558). So every
//! attachment that enables it also adds kube-proxy's guard: packets to 127.0.0.0/8 that did
//! not come from `lo` and belong to no DNATed connection are dropped on input.

use std::net::IpAddr;
use std::path::Path;

use crius_cni_plugins::conf::Obj;
use crius_cni_plugins::error::{CniError, Result};
use crius_cni_plugins::nft::{self, Hook, L4Proto, NatChain, NatTable, NfProto, Nft, Rule};
use crius_cni_plugins::skel::{self, CmdArgs, Plugin};
use crius_cni_plugins::sysctl;
use crius_cni_plugins::types::{CniResult, IpNet};
use serde_json::Value;

const TABLE: &str = "crius-portmap";

#[derive(Debug, Clone)]
struct PortMapping {
    host_port: u16,
    container_port: u16,
    proto: L4Proto,
    host_ip: Option<IpAddr>,
}

fn port(o: Obj<'_>, key: &str) -> Result<u16> {
    let p = o
        .u32_opt(key)?
        .ok_or_else(|| CniError::config(&o.field(key), "is required"))?;
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| CniError::config(&o.field(key), format!("{p} is not a port (1..=65535)")))
}

fn parse_mappings(args: &CmdArgs) -> Result<Vec<PortMapping>> {
    let c = args.conf()?;
    c.str_req("name")?;
    let Some(rc) = c.obj_value("runtimeConfig")? else {
        return Ok(Vec::new());
    };
    let rc = Obj::with_path(rc, "runtimeConfig");
    let mut out = Vec::new();
    for (i, m) in rc
        .arr_opt("portMappings")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("runtimeConfig.portMappings[{i}]");
        let o = Obj::of(m, &path)?;
        let proto = match o
            .str_opt("protocol")?
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("tcp") => L4Proto::Tcp,
            Some("udp") => L4Proto::Udp,
            Some("sctp") => L4Proto::Sctp,
            Some(other) => {
                return Err(CniError::config(
                    &o.field("protocol"),
                    format!("{other:?} is not tcp, udp or sctp"),
                ));
            }
        };
        let host_ip = o.ip_opt("hostIP")?.filter(|ip| !ip.is_unspecified());
        out.push(PortMapping {
            host_port: port(o, "hostPort")?,
            container_port: port(o, "containerPort")?,
            proto,
            host_ip,
        });
    }
    Ok(out)
}

fn prev_result(args: &CmdArgs) -> Result<CniResult> {
    let v = args
        .conf()?
        .raw("prevResult")
        .ok_or_else(|| CniError::config("prevResult", "is required"))?;
    CniResult::from_value(v.clone()).map_err(|e| CniError::config("prevResult", e.to_string()))
}

/// Pod addresses: IPs on a sandbox interface (or without interface index).
fn pod_ips(prev: &CniResult) -> Vec<IpNet> {
    prev.ips
        .iter()
        .filter(|ip| {
            ip.interface
                .and_then(|i| prev.interfaces.get(i))
                .is_none_or(|itf| !itf.sandbox.is_empty())
        })
        .map(|ip| ip.address)
        .collect()
}

fn tag(args: &CmdArgs) -> Result<String> {
    Ok(nft::tag(&[
        &args.container_id,
        &args.ifname,
        args.network_name()?,
    ]))
}

const CHAINS: &[NatChain] = &[
    NatChain {
        name: "prerouting",
        hook: Hook::Prerouting,
        priority: nft::PRIO_DSTNAT,
    },
    NatChain {
        name: "output",
        hook: Hook::Output,
        priority: -100,
    },
    NatChain {
        name: "postrouting",
        hook: Hook::Postrouting,
        priority: nft::PRIO_SRCNAT,
    },
    NatChain {
        name: "input",
        hook: Hook::Input,
        priority: 0, // priority filter
    },
];

/// kube-proxy's localnet guard: replies of hostPort-on-127.0.0.1 connections carry the DNAT
/// status; anything else arriving from outside `lo` for a loopback address is a pod (or a
/// neighbour) reaching for the host's loopback services.
fn localnet_guard(tag: &str) -> Rule {
    Rule::new("input")
        .iifname_ne("lo")
        .daddr("127.0.0.0/8".parse().expect("static"))
        .ct_status_not_dnat()
        .drop_packet()
        .comment(tag)
}

fn rules(maps: &[PortMapping], ips: &[IpNet], tag: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    for m in maps {
        for ip in ips {
            let v4 = ip.addr.is_ipv4();
            if m.host_ip.is_some_and(|h| h.is_ipv4() != v4) {
                continue;
            }
            for chain in ["prerouting", "output"] {
                let r = Rule::new(chain).fib_daddr_local();
                let r = match m.host_ip {
                    Some(h) => r.daddr(IpNet::host(h)),
                    None => r.nfproto(NfProto::of(ip.addr)),
                };
                out.push(
                    r.dport(m.proto, m.host_port)
                        .dnat(ip.addr, m.container_port)
                        .comment(tag),
                );
            }
            let to_pod = |from: IpNet| {
                Rule::new("postrouting")
                    .saddr(from)
                    .daddr(IpNet::host(ip.addr))
                    .dport(m.proto, m.container_port)
                    .ct_status_dnat()
                    .masquerade()
                    .comment(tag)
            };
            // Hairpin: a pod of the subnet (this one included) reaching the pod via a host port.
            out.push(to_pod(ip.trunc()));
            if v4 {
                // Host-local clients (127.0.0.1): the pod cannot answer a loopback source.
                out.push(to_pod("127.0.0.0/8".parse().expect("static")));
            }
        }
    }
    if !maps.is_empty() && ips.iter().any(|ip| ip.addr.is_ipv4()) {
        out.push(localnet_guard(tag));
    }
    out
}

/// route_localnet on the host interfaces of the attachment so DNAT of 127.0.0.1 is routable
/// (`on`), or back off once no port mapping is left (the guard rules went with the table).
fn set_localnet(prev: &CniResult, on: bool) -> Result<()> {
    for itf in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
        if Path::new("/proc/sys/net/ipv4/conf")
            .join(&itf.name)
            .is_dir()
        {
            sysctl::set_if(
                "ipv4",
                &itf.name,
                "route_localnet",
                if on { "1" } else { "0" },
            )?;
        }
    }
    Ok(())
}

struct Portmap;

impl Plugin for Portmap {
    fn add(&self, args: &CmdArgs) -> Result<Value> {
        let maps = parse_mappings(args)?;
        let prev = prev_result(args)?;
        let tag = tag(args)?;
        if !maps.is_empty() {
            let ips = pod_ips(&prev);
            if ips.is_empty() {
                return Err(CniError::config(
                    "prevResult.ips",
                    "no pod IP to map ports to",
                ));
            }
            let mut nf = Nft::open()?;
            let _lock = nft::lock()?;
            // A retried ADD replaces its own rules rather than duplicating them. The guard is
            // in place before route_localnet opens the door it guards.
            let table = NatTable {
                name: TABLE,
                chains: CHAINS,
            };
            nf.replace_tagged(&table, &tag, &rules(&maps, &ips, &tag))?;
            set_localnet(&prev, true)?;
        }
        Ok(prev.to_json(&args.cni_version))
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let tag = tag(args)?;
        // Without nf_tables there cannot be rules to delete.
        let Ok(mut nf) = Nft::open() else {
            return Ok(());
        };
        let _lock = nft::lock()?;
        if nf.delete_tagged(TABLE, &tag)? == 0 {
            return Ok(());
        }
        // The last mapping (and guard) of this network is gone: close route_localnet again
        // where this attachment opened it, so no unguarded door is left behind.
        let network = format!("/{}", args.network_name()?);
        let same_network = nf
            .list_rules(TABLE)?
            .unwrap_or_default()
            .iter()
            .any(|r| r.comment.as_deref().is_some_and(|c| c.ends_with(&network)));
        if !same_network && let Ok(prev) = prev_result(args) {
            set_localnet(&prev, false)?;
        }
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let maps = parse_mappings(args)?;
        prev_result(args)?;
        if maps.is_empty() {
            return Ok(());
        }
        let tag = tag(args)?;
        let n = Nft::open()?
            .list_rules(TABLE)?
            .unwrap_or_default()
            .iter()
            .filter(|r| r.comment.as_deref() == Some(tag.as_str()))
            .count();
        if n == 0 {
            return Err(CniError::internal(
                format!("no port mapping rules for {tag}"),
                "",
            ));
        }
        Ok(())
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        args.network_name().map(drop)
    }
}

fn main() {
    skel::run(&Portmap)
}

#[cfg(test)]
#[path = "../../tests/common/nft_equiv.rs"]
mod nft_equiv;

#[cfg(test)]
mod tests {
    use super::*;

    /// The script ADD ran before nftables was spoken over netlink: the reference.
    fn legacy_script(table: &str, maps: &[PortMapping], ips: &[IpNet], tag: &str) -> String {
        let mut s = format!(
            "add table inet {table}\n\
             add chain inet {table} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
             add chain inet {table} output {{ type nat hook output priority -100; policy accept; }}\n\
             add chain inet {table} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
             add chain inet {table} input {{ type filter hook input priority filter; policy accept; }}\n"
        );
        for m in maps {
            for ip in ips {
                let v4 = ip.addr.is_ipv4();
                if m.host_ip.is_some_and(|h| h.is_ipv4() != v4) {
                    continue;
                }
                let fam = if v4 { "ip" } else { "ip6" };
                let dest = if v4 {
                    format!("{}:{}", ip.addr, m.container_port)
                } else {
                    format!("[{}]:{}", ip.addr, m.container_port)
                };
                let daddr = match m.host_ip {
                    Some(h) => format!("{fam} daddr {h}"),
                    None => format!("meta nfproto {}", if v4 { "ipv4" } else { "ipv6" }),
                };
                let p = m.proto.as_str();
                for chain in ["prerouting", "output"] {
                    s.push_str(&format!(
                        "add rule inet {table} {chain} fib daddr type local {daddr} {p} dport {} dnat {fam} to {dest} comment \"{tag}\"\n",
                        m.host_port
                    ));
                }
                let to_pod = format!(
                    "{fam} daddr {} {p} dport {} ct status dnat",
                    ip.addr, m.container_port
                );
                s.push_str(&format!(
                    "add rule inet {table} postrouting {fam} saddr {} {to_pod} masquerade comment \"{tag}\"\n",
                    ip.trunc()
                ));
                if v4 {
                    s.push_str(&format!(
                        "add rule inet {table} postrouting ip saddr 127.0.0.0/8 {to_pod} masquerade comment \"{tag}\"\n"
                    ));
                }
            }
        }
        if !maps.is_empty() && ips.iter().any(|ip| ip.addr.is_ipv4()) {
            s.push_str(&format!(
                "add rule inet {table} input iifname != \"lo\" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop comment \"{tag}\"\n"
            ));
        }
        s
    }

    fn pm(
        host_port: u16,
        container_port: u16,
        proto: L4Proto,
        host_ip: Option<&str>,
    ) -> PortMapping {
        PortMapping {
            host_port,
            container_port,
            proto,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
        }
    }

    #[test]
    fn rules_match_the_nft_script() {
        if !nft_equiv::usable() {
            return;
        }
        let tag = nft::tag(&["0123abcd", "eth0", "crius"]);
        let v4 = ["10.99.3.7/16"];
        let v6 = ["fd00:99::7/64"];
        let dual = ["10.88.0.9/24", "fd00:88::9/64"];
        let cases: [(&str, &[&str], Vec<PortMapping>); 6] = [
            ("v4", &v4, vec![pm(8080, 80, L4Proto::Tcp, None)]),
            (
                "v4-hostip",
                &v4,
                vec![
                    pm(5353, 53, L4Proto::Udp, Some("192.168.7.1")),
                    pm(9999, 9, L4Proto::Sctp, Some("127.0.0.1")),
                ],
            ),
            ("v6", &v6, vec![pm(8443, 443, L4Proto::Sctp, None)]),
            (
                "v6-hostip",
                &v6,
                vec![pm(8053, 53, L4Proto::Udp, Some("fd00:1::1"))],
            ),
            (
                "dual",
                &dual,
                vec![
                    pm(8080, 80, L4Proto::Tcp, None),
                    pm(8081, 81, L4Proto::Udp, Some("10.0.0.1")),
                    pm(8082, 82, L4Proto::Sctp, Some("fd00:2::2")),
                ],
            ),
            (
                "odd-prefix",
                &["172.20.5.3/20", "fd12::3/61"],
                vec![pm(1, 65535, L4Proto::Tcp, None)],
            ),
        ];
        for (case, ips, maps) in cases {
            let ips: Vec<IpNet> = ips.iter().map(|s| s.parse().unwrap()).collect();
            nft_equiv::assert_same_rules(case, CHAINS, &tag, &rules(&maps, &ips, &tag), |t| {
                legacy_script(t, &maps, &ips, &tag)
            });
        }
    }
}
