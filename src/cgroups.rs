//! The cgroup driver criusd runs with: the configured one (detected when unset). The systemd
//! driver needs systemd on D-Bus; without it criusd refuses to start rather than put
//! containers where the kubelet does not look for them.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use crius_cgroups::systemd::Busctl;
use crius_cgroups::{CgroupManager, CgroupfsManager, Hierarchy, SystemdManager};
use crius_config::{CgroupDriver, Config};
use tracing::info;

pub fn manager(config: &Config) -> Result<Arc<dyn CgroupManager>> {
    let h = Hierarchy::host();
    let driver = config.cgroup_driver();
    info!(driver = ?driver, v2 = h.is_v2_only(), "cgroup driver");
    match driver {
        CgroupDriver::Cgroupfs => Ok(Arc::new(CgroupfsManager::new(h))),
        CgroupDriver::Systemd => {
            let bus = Busctl::connect().map_err(|e| {
                anyhow!(
                    "cgroup_driver = \"systemd\", but systemd is not reachable over D-Bus \
                     ({e}); run crius where systemd is the init system, or use the cgroupfs \
                     driver: cgroup_driver = \"cgroupfs\" in crius.toml and cgroupDriver: \
                     cgroupfs in the kubelet configuration"
                )
            })?;
            Ok(Arc::new(SystemdManager::new(h, Arc::new(bus))))
        }
    }
}
