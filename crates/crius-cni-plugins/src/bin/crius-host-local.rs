//! crius-host-local: host-local compatible IPAM (allocations as files under dataDir).

use crius_cni_plugins::error::{CniError, ErrorCode, Result};
use crius_cni_plugins::ipam::{HostLocalConf, host_local_add, host_local_del, host_local_lookup};
use crius_cni_plugins::skel::{self, CmdArgs, Plugin};
use serde_json::Value;

struct HostLocal;

impl Plugin for HostLocal {
    fn add(&self, args: &CmdArgs) -> Result<Value> {
        let conf = HostLocalConf::parse(args)?;
        Ok(host_local_add(&conf, &args.container_id, &args.ifname)?.to_json(&args.cni_version))
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let conf = HostLocalConf::parse(args)?;
        host_local_del(&conf, &args.container_id, &args.ifname)
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let conf = HostLocalConf::parse(args)?;
        if host_local_lookup(&conf, &args.container_id, &args.ifname)?.is_empty() {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!("no IP allocated to {} {}", args.container_id, args.ifname),
                "",
            ));
        }
        Ok(())
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        HostLocalConf::parse(args).map(drop)
    }

    /// GC (CNI 1.1): drop allocations whose attachment is not in `cni.dev/valid-attachments`.
    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let conf = HostLocalConf::parse(args)?;
        let valid: Vec<(String, String)> = args.config["cni.dev/valid-attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a["containerID"].as_str()?.to_owned(),
                    a["ifname"].as_str()?.to_owned(),
                ))
            })
            .collect();
        conf.store()?
            .release_where(|content| {
                let mut lines = content.lines().map(str::trim);
                let id = lines.next().unwrap_or_default();
                let ifname = lines.next();
                !valid
                    .iter()
                    .any(|(vid, vif)| vid == id && ifname.is_none_or(|i| i == vif))
            })
            .map(drop)
    }
}

fn main() {
    skel::run(&HostLocal)
}
