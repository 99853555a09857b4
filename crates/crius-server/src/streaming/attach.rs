//! A streaming attach: the session joins the container's stdio through its pod's monitor
//! (`attach` request, then frames: see `crius_monitor::attach`). The monitor fans the
//! container's output out to every attacher while it keeps writing the CRI log, and feeds
//! attachers' input to the container's stdin (or console).
//!
//! The container outlives the session: a client that goes away only closes its connection
//! to the monitor, which forgets the attacher (and closes a `stdin_once` container's stdin).

use std::sync::Arc;

use crius_monitor::Request;
use crius_runtime::ContainerManager;
use crius_streaming::{AttachParams, ExecIo, ExitStatus};

use super::session::{Ended, OpenError, Session};

pub async fn run(containers: Arc<ContainerManager>, p: AttachParams, mut io: ExecIo) -> ExitStatus {
    let id = p.container_id.clone();
    let conn = tokio::task::spawn_blocking(move || containers.attach_connection(&id)).await;
    let (cid, pod_id, stream) = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return ExitStatus::Error(e.to_string()),
        Err(e) => return ExitStatus::Error(format!("attach worker failed: {e}")),
    };
    tracing::info!(container_id = %cid, pod_id = %pod_id, tty = p.tty, stdin = io.stdin.is_some(), "streaming attach");
    let req = Request::Attach {
        id: cid.clone(),
        stdin: io.stdin.is_some(),
        stdout: io.stdout.is_some(),
        stderr: io.stderr.is_some(),
    };
    let session = match Session::open(stream, &req).await {
        Ok(s) => s,
        Err(OpenError::Refused(e)) => return ExitStatus::Error(e),
        Err(OpenError::Broken(e)) => {
            return ExitStatus::Error(format!("attach to container {cid}: {e}"));
        }
    };
    match session.relay(&mut io).await {
        Ended::Exit(code) => ExitStatus::Exited(code),
        // Closed without an exit: the container was removed, or the monitor died.
        Ended::Closed => ExitStatus::Exited(0),
        Ended::ClientGone => {
            tracing::info!(container_id = %cid, "attach client gone: detaching");
            ExitStatus::Exited(0)
        }
        Ended::Error(e) => ExitStatus::Error(e),
    }
}
