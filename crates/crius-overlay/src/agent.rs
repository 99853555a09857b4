//! The agent loop: sync with the backend, then make the vxlan device and its peer entries
//! match, touching only what differs. Errors leave the data path as it is.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Registration};
use crate::config::{Config, VXLAN_OVERHEAD};
use crate::error::{OverlayError, Result};
use crate::netlink::{Netlink, VxlanSpec};
use crate::state::{Mac, Node, PeerState, Plan, vtep_ip};
use crate::subnet::Ipv4Net;

/// Retry delay after a failed round (etcd down, bad static file).
const RETRY: Duration = Duration::from_secs(1);

/// What the CNI side reads: the node's lease and the overlay's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetFile {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub node: String,
}

pub fn read_subnet_file(path: &Path) -> Option<SubnetFile> {
    let text = crate::read_bounded(path, 64 * 1024).ok()?;
    serde_json::from_str(&text).ok()
}

/// Write `path` atomically (temp file + rename) and only when its content changes.
pub fn write_subnet_file(path: &Path, f: &SubnetFile) -> Result<()> {
    if read_subnet_file(path).as_ref() == Some(f) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| OverlayError::io("creating", dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec_pretty(f).expect("serializable");
    std::fs::write(&tmp, data).map_err(|e| OverlayError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| OverlayError::io("renaming onto", path, e))
}

pub struct Agent<B> {
    cfg: Config,
    backend: B,
    nl: Netlink,
    reg: Registration,
    spec: VxlanSpec,
}

impl<B: Backend> Agent<B> {
    /// Find the underlay and work out this node's registration; changes nothing yet.
    pub async fn new(cfg: Config, backend: B) -> Result<Self> {
        let nl = Netlink::connect()?;
        let (underlay, ip) = nl
            .underlay(cfg.underlay_interface.as_deref(), cfg.underlay_address)
            .await?;
        let name = match &cfg.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .map_err(|e| OverlayError::config("node_name", format!("no hostname: {e}")))?
                .to_string_lossy()
                .into_owned(),
        };
        let mac = Mac::for_vtep(ip);
        let preferred = read_subnet_file(&cfg.subnet_file).map(|f| f.subnet);
        let mtu = underlay.mtu.saturating_sub(VXLAN_OVERHEAD).max(68);
        let spec = VxlanSpec {
            name: cfg.device.clone(),
            vni: cfg.vni,
            port: cfg.port,
            local: ip,
            underlay_index: underlay.index,
            mac,
            mtu,
        };
        tracing::info!(node = %name, underlay = %underlay.name, local = %ip, %mac, mtu, "overlay agent starting");
        Ok(Self {
            reg: Registration {
                name,
                public_ip: ip,
                mac,
                preferred,
            },
            cfg,
            backend,
            nl,
            spec,
        })
    }

    /// One round: sync, program, write the subnet file. Returns this node's record.
    pub async fn round(&mut self) -> Result<Node> {
        let view = self.backend.sync(&self.reg).await?;
        let link = self.nl.ensure_vxlan(&self.spec).await?;
        self.nl
            .ensure_only_addr(link.index, vtep_ip(&view.me.subnet))
            .await?;
        let desired = PeerState::desired(&view.me, &view.nodes);
        let actual = self.nl.read(link.index).await?;
        let plan = Plan::new(&desired, &actual);
        if !plan.is_empty() {
            tracing::info!(
                add_routes = ?plan.routes.add.iter().map(|r| r.dst.to_string()).collect::<Vec<_>>(),
                del_routes = ?plan.routes.del.iter().map(|r| r.dst.to_string()).collect::<Vec<_>>(),
                fdb_add = plan.fdb.add.len(),
                fdb_del = plan.fdb.del.len(),
                "programming peers"
            );
            self.nl.apply(link.index, &plan).await?;
        }
        write_subnet_file(
            &self.cfg.subnet_file,
            &SubnetFile {
                network: self.cfg.cluster_cidr,
                subnet: view.me.subnet,
                mtu: self.spec.mtu,
                node: self.reg.name.clone(),
            },
        )?;
        self.reg.preferred = Some(view.me.subnet);
        Ok(view.me)
    }

    /// Run until `stop` resolves. The data path is left in place on exit: pods keep talking
    /// while the agent restarts, and the next agent finds nothing to change.
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let wait = match self.round().await {
                Ok(_) => self.backend.period(),
                Err(e) => {
                    tracing::warn!(error = %e, "overlay sync failed, data path left unchanged");
                    RETRY
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = self.backend.wait(wait) => {}
            }
        }
    }
}
