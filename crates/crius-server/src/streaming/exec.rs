//! A streaming exec: the pod's monitor runs `<runtime> exec` (`stream-exec` request, then
//! frames: see `crius_monitor::attach`) with pipes or a terminal of its own, and relays its
//! stdio on the connection, then the exit code: the process's own, 128+n when killed by
//! signal n, 127/126 when the command is missing or not executable (what a shell and kubectl
//! report).
//!
//! The process lives as long as the session: when the client goes away the session drops its
//! monitor connection, and the monitor kills the process. If criusd itself dies, every such
//! connection closes with it, so its streaming execs are killed too (the monitor survives).

use std::sync::Arc;
use std::time::Duration;

use crius_monitor::Request;
use crius_runtime::{ContainerManager, ExecStreams};
use crius_streaming::{ExecIo, ExecParams, ExitStatus};

use super::session::{Ended, OpenError, Session};

/// How long a TTY exec waits for the client's terminal size before starting. Clients that
/// speak a resize stream send the size right after the streams are up; on a loaded node that
/// took more than 500 ms, and the process started with a 0x0 terminal.
const FIRST_RESIZE_WAIT: Duration = Duration::from_secs(2);

pub async fn run(containers: Arc<ContainerManager>, p: ExecParams, mut io: ExecIo) -> ExitStatus {
    let streams = ExecStreams {
        tty: p.tty,
        stdin: io.stdin.is_some(),
        stdout: io.stdout.is_some(),
        stderr: io.stderr.is_some(),
    };
    let (id, cmd) = (p.container_id.clone(), p.cmd.clone());
    let conn = crate::status::spawn_blocking(move || {
        containers.stream_exec_connection(&id, &cmd, streams)
    })
    .await;
    let (mut req, pod_id, stream) = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return ExitStatus::Error(e.to_string()),
        Err(e) => return ExitStatus::Error(format!("exec worker failed: {e}")),
    };
    let cid = req.id.clone();
    tracing::info!(container_id = %cid, pod_id = %pod_id, cmd = ?p.cmd, tty = p.tty, "streaming exec");
    // The client sends its size right after opening its streams: it goes with the request,
    // so the runtime starts with it (a resize before its SIGWINCH handler is up would be lost).
    if p.tty
        && let Some(resize) = io.resize.as_mut()
        && let Ok(Some(size)) = tokio::time::timeout(FIRST_RESIZE_WAIT, resize.recv()).await
    {
        (req.width, req.height) = (size.width, size.height);
    }
    let session = match Session::open(stream, &Request::StreamExec(req)).await {
        Ok(s) => s,
        Err(OpenError::Refused(e)) => return ExitStatus::Error(e),
        Err(OpenError::Broken(e)) => {
            return ExitStatus::Error(format!("exec in container {cid}: {e}"));
        }
    };
    match session.relay(&mut io).await {
        Ended::Exit(code) => ExitStatus::Exited(code),
        Ended::Closed => ExitStatus::Error(format!(
            "exec in container {cid}: the pod monitor closed the session before the process exited"
        )),
        Ended::ClientGone => {
            tracing::info!(container_id = %cid, "exec client gone: the monitor kills the process");
            ExitStatus::Error("the client went away".into())
        }
        Ended::Error(e) => ExitStatus::Error(format!("exec in container {cid}: {e}")),
    }
}
