//! ExecSync: a command in a running container (its namespaces, cgroup, user, env); output and
//! exit code returned; the timeout enforced by killing the process.

use std::time::Duration;

use crius_runtime::ExecCancel;
use k8s_cri::v1::{ExecSyncRequest, ExecSyncResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

/// The CRI caps each stream at 16 MiB (CVE-2022-1708), as the monitor does.
const MAX_OUTPUT: usize = crius_runtime::EXEC_OUTPUT_LIMIT;
/// Both streams share one response, which must fit the 16 MiB message limit (the kubelet's
/// too): what is left after the exit code and protobuf framing.
const MAX_RESPONSE_OUTPUT: usize = crate::MAX_MESSAGE - 1024;

pub async fn handle(ctx: &Context, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    if req.cmd.is_empty() {
        return Err(invalid("cmd", "must not be empty"));
    }
    if req.timeout < 0 {
        return Err(invalid("timeout", "must not be negative"));
    }
    tracing::Span::current().record("container_id", req.container_id.as_str());
    let containers = ctx.containers.clone();
    let timeout = Duration::from_secs(req.timeout as u64);
    let id = req.container_id.clone();
    // A client that goes away drops this future: the guard cancels the exec, so neither the
    // process nor the blocking thread waiting for it outlives the call.
    let cancel = ExecCancel::default();
    let _guard = CancelOnDrop(cancel.clone());
    let mut out = blocking(move || containers.exec_sync(&id, req.cmd, timeout, &cancel)).await?;
    if out.timed_out {
        return Err(Status::deadline_exceeded(format!(
            "command timed out after {}s in container {} and was killed",
            req.timeout, req.container_id
        )));
    }
    // Cut, never refused: a chatty probe still gets its exit code (stdout keeps priority).
    out.stdout.truncate(MAX_OUTPUT.min(MAX_RESPONSE_OUTPUT));
    out.stderr
        .truncate(MAX_OUTPUT.min(MAX_RESPONSE_OUTPUT - out.stdout.len()));
    Ok(ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

/// Cancels the exec when the handler ends, finished or dropped (a finished exec ignores it).
struct CancelOnDrop(ExecCancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
