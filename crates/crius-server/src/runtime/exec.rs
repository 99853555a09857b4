//! Exec: checks the container runs and the streams asked for make sense, then returns a
//! single-use URL of the streaming server where the command runs once a client connects.

use crius_streaming::{ExecParams, StreamRequest};
use k8s_cri::v1::{ExecRequest, ExecResponse};
use tonic::Status;

use super::container_common::{check_streams, running_container};
use crate::context::Context;
use crate::status::{invalid, streaming_url};

pub async fn handle(ctx: &Context, req: ExecRequest) -> Result<ExecResponse, Status> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    if req.cmd.is_empty() {
        return Err(invalid("cmd", "must not be empty"));
    }
    check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
    let c = running_container(ctx, &req.container_id).await?;
    let url = streaming_url(
        ctx,
        StreamRequest::Exec(ExecParams {
            container_id: c.id,
            cmd: req.cmd,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        }),
    )?;
    Ok(ExecResponse { url })
}
