//! crius-portmap: chained after crius-bridge; DNATs `runtimeConfig.portMappings` host ports to
//! the pod IP with nftables (table `inet crius-portmap`). Every rule carries a comment naming
//! the attachment, DEL deletes exactly those, and an empty table is removed.

use std::net::IpAddr;
use std::path::Path;

use crius_cni_plugins::conf::Obj;
use crius_cni_plugins::error::{CniError, ErrorCode, Result};
use crius_cni_plugins::skel::{self, CmdArgs, Plugin};
use crius_cni_plugins::types::{CniResult, IpNet};
use crius_cni_plugins::{nft, sysctl};
use serde_json::Value;

const TABLE: &str = "crius-portmap";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone)]
struct PortMapping {
    host_port: u16,
    container_port: u16,
    proto: Proto,
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
            None | Some("") | Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some("sctp") => Proto::Sctp,
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

fn script(maps: &[PortMapping], ips: &[IpNet], tag: &str) -> String {
    let mut s = format!(
        "add table inet {TABLE}\n\
         add chain inet {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add chain inet {TABLE} output {{ type nat hook output priority -100; policy accept; }}\n\
         add chain inet {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
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
                    "add rule inet {TABLE} {chain} fib daddr type local {daddr} {p} dport {} dnat {fam} to {dest} comment \"{tag}\"\n",
                    m.host_port
                ));
            }
            let to_pod = format!(
                "{fam} daddr {} {p} dport {} ct status dnat",
                ip.addr, m.container_port
            );
            // Hairpin: a pod of the subnet (this one included) reaching the pod via a host port.
            s.push_str(&format!(
                "add rule inet {TABLE} postrouting {fam} saddr {} {to_pod} masquerade comment \"{tag}\"\n",
                ip.trunc()
            ));
            if v4 {
                // Host-local clients (127.0.0.1): the pod cannot answer a loopback source.
                s.push_str(&format!(
                    "add rule inet {TABLE} postrouting ip saddr 127.0.0.0/8 {to_pod} masquerade comment \"{tag}\"\n"
                ));
            }
        }
    }
    s
}

/// route_localnet on the host interfaces of the attachment so DNAT of 127.0.0.1 is routable.
fn enable_localnet(prev: &CniResult) -> Result<()> {
    for itf in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
        if Path::new("/proc/sys/net/ipv4/conf")
            .join(&itf.name)
            .is_dir()
        {
            sysctl::set_if("ipv4", &itf.name, "route_localnet", "1")?;
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
            if !nft::available() {
                return Err(CniError::new(
                    ErrorCode::Internal,
                    "nft is not installed",
                    "crius-portmap needs nftables",
                ));
            }
            enable_localnet(&prev)?;
            let _lock = nft::lock()?;
            // A retried ADD replaces its own rules rather than duplicating them.
            nft::delete_tagged("inet", TABLE, &tag)?;
            nft::apply(&script(&maps, &ips, &tag))?;
        }
        Ok(prev.to_json(&args.cni_version))
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let tag = tag(args)?;
        if !nft::available() {
            return Ok(());
        }
        let _lock = nft::lock()?;
        nft::delete_tagged("inet", TABLE, &tag).map(drop)
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let maps = parse_mappings(args)?;
        prev_result(args)?;
        if maps.is_empty() {
            return Ok(());
        }
        let tag = tag(args)?;
        let n = nft::list_rules("inet", TABLE)?
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
