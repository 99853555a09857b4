//! crius-loopback: brings `lo` up inside CNI_NETNS. DEL is a no-op.

use crius_cni_plugins::error::{CniError, Result};
use crius_cni_plugins::netlink::Netlink;
use crius_cni_plugins::netns::NetNs;
use crius_cni_plugins::runtime;
use crius_cni_plugins::skel::{self, CmdArgs, Plugin};
use crius_cni_plugins::types::{CniResult, Interface, IpConfig};
use serde_json::Value;

struct Loopback;

fn netns_of(args: &CmdArgs) -> Result<NetNs> {
    let path = args
        .netns
        .as_deref()
        .ok_or_else(|| CniError::env("CNI_NETNS", "not set"))?;
    NetNs::open(path)
}

impl Plugin for Loopback {
    fn add(&self, args: &CmdArgs) -> Result<Value> {
        args.network_name()?;
        let ns = netns_of(args)?;
        runtime()?.block_on(async {
            let nl = Netlink::connect_in(&ns)?;
            let lo = nl
                .link_by_name("lo")
                .await?
                .ok_or_else(|| CniError::internal("no lo in netns", ""))?;
            nl.set_up(lo.index).await
        })?;
        let result = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                mtu: None,
                sandbox: ns.path().display().to_string(),
            }],
            ips: ["127.0.0.1/8", "::1/128"]
                .iter()
                .map(|a| IpConfig {
                    version: None,
                    address: a.parse().expect("static"),
                    gateway: None,
                    interface: Some(0),
                })
                .collect(),
            ..Default::default()
        };
        Ok(result.to_json(&args.cni_version))
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        args.network_name()?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        args.network_name()?;
        let ns = netns_of(args)?;
        runtime()?.block_on(async {
            let nl = Netlink::connect_in(&ns)?;
            match nl.link_by_name("lo").await? {
                Some(lo) if lo.up => Ok(()),
                _ => Err(CniError::internal("lo is not up", ns.path().display())),
            }
        })
    }
}

fn main() {
    skel::run(&Loopback)
}
