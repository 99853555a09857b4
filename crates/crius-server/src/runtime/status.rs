//! Status: readiness conditions that tell the truth, and the effective config when verbose.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1::{RuntimeCondition, RuntimeStatus, StatusRequest, StatusResponse};
use tonic::Status;

use crate::context::Context;

const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

/// OCI runtimes crius can drive, in order of preference.
const OCI_RUNTIMES: &[&str] = &["crun", "runc"];

fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn handle(ctx: &Context, req: StatusRequest) -> Result<StatusResponse, Status> {
    let runtime = OCI_RUNTIMES.iter().find_map(|r| find_in_path(r));
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
            message: format!("none of {} found in PATH", OCI_RUNTIMES.join(", ")),
        },
    };
    // Pod networking (CNI) is not wired yet, and saying otherwise would make the kubelet
    // schedule pods that cannot get an address.
    let network_condition = RuntimeCondition {
        r#type: NETWORK_READY.into(),
        status: false,
        reason: "NetworkPluginNotReady".into(),
        message: "crius has no pod network support yet (CNI is not configured)".into(),
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
        runtime_handlers: Vec::new(),
        features: None,
    })
}
