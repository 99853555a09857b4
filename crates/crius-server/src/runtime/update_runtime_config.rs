//! UpdateRuntimeConfig: the kubelet hands over the node's pod CIDR.

use k8s_cri::v1::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};
use tonic::Status;
use tracing::info;

use crate::context::Context;

pub fn handle(
    ctx: &Context,
    req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse, Status> {
    let cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    for part in cidr.split(',').filter(|p| !p.trim().is_empty()) {
        let (addr, len) = part.trim().split_once('/').ok_or_else(|| {
            crate::status::invalid(
                "runtime_config.network_config.pod_cidr",
                format!("{part:?} is not a CIDR"),
            )
        })?;
        let valid = addr.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            len.parse::<u8>()
                .is_ok_and(|l| l <= if ip.is_ipv4() { 32 } else { 128 })
        });
        if !valid {
            return Err(crate::status::invalid(
                "runtime_config.network_config.pod_cidr",
                format!("{part:?} is not a CIDR"),
            ));
        }
    }
    let mut current = ctx
        .network
        .pod_cidr
        .write()
        .unwrap_or_else(|p| p.into_inner());
    if *current != cidr {
        info!(pod_cidr = %cidr, "pod CIDR updated");
        *current = cidr;
    }
    Ok(UpdateRuntimeConfigResponse {})
}
