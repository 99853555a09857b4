//! PortForward: checks the pod is ready, then returns a single-use URL of the streaming
//! server that connects to ports inside the pod's network namespace.

use crius_runtime::{PodState, RuntimeError};
use crius_streaming::{PortForwardParams, StreamRequest};
use k8s_cri::v1::{PortForwardRequest, PortForwardResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid, streaming_url};

pub async fn handle(ctx: &Context, req: PortForwardRequest) -> Result<PortForwardResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(invalid("port", format!("{p} is not a TCP port")));
    }
    tracing::Span::current().record("pod_id", req.pod_sandbox_id.as_str());
    let pods = ctx.pods.clone();
    let id = req.pod_sandbox_id.clone();
    let pod = blocking(move || {
        let pod = pods.get(&id)?;
        if pod.state != PodState::Ready {
            return Err(RuntimeError::NotReady { id: pod.id });
        }
        Ok(pod)
    })
    .await?;
    let url = streaming_url(
        ctx,
        StreamRequest::PortForward(PortForwardParams {
            pod_sandbox_id: pod.id,
            ports: req.port,
        }),
    )?;
    Ok(PortForwardResponse { url })
}
