//! RuntimeConfig: the cgroup driver, which must match the kubelet's.

use crius_config::CgroupDriver as Driver;
use k8s_cri::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};
use tonic::Status;

use crate::context::Context;

pub fn handle(ctx: &Context, _req: RuntimeConfigRequest) -> Result<RuntimeConfigResponse, Status> {
    let driver = match ctx.config.cgroup_driver() {
        Driver::Systemd => CgroupDriver::Systemd,
        Driver::Cgroupfs => CgroupDriver::Cgroupfs,
    };
    Ok(RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    })
}
