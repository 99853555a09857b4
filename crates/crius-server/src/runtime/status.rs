//! Status: readiness conditions that tell the truth, and the effective config when verbose.

use std::collections::HashMap;

use k8s_cri::v1::{RuntimeCondition, RuntimeHandler, RuntimeStatus, StatusRequest, StatusResponse};
use tonic::Status;

use crate::context::Context;

const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

pub fn handle(ctx: &Context, req: StatusRequest) -> Result<StatusResponse, Status> {
    let handlers = ctx.config.runtime_handlers();
    let runtime = ctx
        .config
        .default_runtime_handler()
        .and_then(|h| handlers.get(&h).cloned());
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
    let net = ctx.network.manager.network_status();
    let network_condition = RuntimeCondition {
        r#type: NETWORK_READY.into(),
        status: net.ready,
        reason: net.reason,
        message: net.message,
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("config".to_string(), ctx.config.to_json().to_string());
        if let Some(r) = runtime {
            info.insert("ociRuntime".to_string(), r.display().to_string());
        }
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime_condition, network_condition],
        }),
        info,
        runtime_handlers: handlers
            .keys()
            .map(|name| RuntimeHandler {
                name: name.clone(),
                features: None,
            })
            .collect(),
        features: None,
    })
}
