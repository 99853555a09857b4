//! Status: readiness conditions that tell the truth, and the effective config when verbose.

use std::collections::HashMap;

use k8s_cri::v1::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus,
    StatusRequest, StatusResponse,
};
use tonic::Status;

use crate::context::Context;

const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

pub async fn handle(ctx: &Context, req: StatusRequest) -> Result<StatusResponse, Status> {
    let (handlers, default) = ctx.pods.runtime_handlers();
    let runtime = default.and_then(|h| handlers.get(h).cloned());
    let runtime_condition = match &runtime {
        Some(_) => RuntimeCondition {
            r#type: RUNTIME_READY.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        None => RuntimeCondition {
            r#type: RUNTIME_READY.into(),
            status: false,
            reason: "NoOCIRuntime".into(),
            message: "no OCI runtime: neither crun nor runc is in PATH, and none is configured"
                .into(),
        },
    };
    let network = ctx.network.clone();
    let net = crate::status::spawn_blocking(move || network.status())
        .await
        .map_err(|e| Status::internal(format!("worker task failed: {e}")))?;
    let network_condition = RuntimeCondition {
        r#type: NETWORK_READY.into(),
        status: net.ready,
        reason: net.reason,
        message: net.message,
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("config".to_string(), ctx.config.to_json().to_string());
        if let Some(r) = &runtime {
            info.insert("ociRuntime".to_string(), r.display().to_string());
        }
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime_condition, network_condition],
        }),
        info,
        // The default handler is listed under "" too, as containerd does: the kubelet looks a
        // pod without RuntimeClass up by the empty name. Recursive read-only mounts and user
        // namespaces are not done yet, so those features say false.
        runtime_handlers: runtime
            .iter()
            .map(|_| String::new())
            .chain(handlers.keys().cloned())
            .map(|name| RuntimeHandler {
                name,
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            })
            .collect(),
        features: Some(RuntimeFeatures {
            supplemental_groups_policy: true,
        }),
    })
}
