//! A streaming attach: the session joins the container's stdio through its pod's monitor
//! (`attach` request, then frames: see `crius_monitor::attach`). The monitor fans the
//! container's output out to every attacher while it keeps writing the CRI log, and feeds
//! attachers' input to the container's stdin (or console).
//!
//! The container outlives the session: a client that goes away only closes its connection
//! to the monitor, which forgets the attacher (and closes a `stdin_once` container's stdin).

use std::sync::Arc;

use bytes::Bytes;
use crius_monitor::attach as frame;
use crius_monitor::{Request, Response};
use crius_runtime::ContainerManager;
use crius_streaming::{AttachParams, ExecIo, ExitStatus};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The monitor's answer to the attach request is one short line.
const MAX_RESPONSE_LINE: u64 = 64 * 1024;

pub async fn run(containers: Arc<ContainerManager>, p: AttachParams, mut io: ExecIo) -> ExitStatus {
    let id = p.container_id.clone();
    let conn = tokio::task::spawn_blocking(move || containers.attach_connection(&id)).await;
    let (cid, pod_id, stream) = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return ExitStatus::Error(e.to_string()),
        Err(e) => return ExitStatus::Error(format!("attach worker failed: {e}")),
    };
    tracing::info!(container_id = %cid, pod_id = %pod_id, tty = p.tty, stdin = io.stdin.is_some(), "streaming attach");
    let stream = match stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(stream))
    {
        Ok(s) => s,
        Err(e) => return ExitStatus::Error(format!("monitor connection: {e}")),
    };
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let req = Request::Attach {
        id: cid.clone(),
        stdin: io.stdin.is_some(),
        stdout: io.stdout.is_some(),
        stderr: io.stderr.is_some(),
    };
    let mut line = Vec::new();
    let answered = async {
        w.write_all(&req.encode()).await?;
        (&mut r)
            .take(MAX_RESPONSE_LINE)
            .read_until(b'\n', &mut line)
            .await
    };
    if let Err(e) = answered.await {
        return ExitStatus::Error(format!("attach to container {cid}: monitor: {e}"));
    }
    match Response::decode(&line) {
        Ok(Response::Ok) => {}
        Ok(Response::Error(e)) => return ExitStatus::Error(e.message),
        other => {
            return ExitStatus::Error(format!(
                "attach to container {cid}: unexpected monitor answer {other:?}"
            ));
        }
    }

    let (mut stdin, mut resize) = (io.stdin.take(), io.resize.take());
    let input = async move {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            tokio::select! {
                b = async { stdin.as_mut().unwrap().recv().await }, if stdin.is_some() => match b {
                    Some(b) => {
                        for chunk in b.chunks(frame::MAX_PAYLOAD) {
                            frame::encode(&mut buf, frame::STDIN, chunk);
                        }
                    }
                    None => {
                        frame::encode(&mut buf, frame::STDIN_EOF, &[]);
                        stdin = None;
                    }
                },
                s = async { resize.as_mut().unwrap().recv().await }, if resize.is_some() => match s {
                    Some(s) => frame::encode(&mut buf, frame::RESIZE, &frame::resize_payload(s.width, s.height)),
                    None => resize = None,
                },
                else => std::future::pending::<()>().await,
            }
            if w.write_all(&buf).await.is_err() {
                // The monitor closed the connection: the output side reports why.
                std::future::pending::<()>().await;
            }
        }
    };
    let (stdout, stderr) = (io.stdout.take(), io.stderr.take());
    let output = async move {
        let mut header = [0u8; frame::HEADER_LEN];
        let mut payload = vec![0u8; frame::MAX_PAYLOAD];
        loop {
            if r.read_exact(&mut header).await.is_err() {
                // Closed without an exit: the container was removed, or the monitor died.
                return ExitStatus::Exited(0);
            }
            let kind = header[0];
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if len > frame::MAX_PAYLOAD {
                return ExitStatus::Error(format!("monitor frame of {len} bytes"));
            }
            if r.read_exact(&mut payload[..len]).await.is_err() {
                return ExitStatus::Exited(0);
            }
            let data = &payload[..len];
            let tx = match kind {
                frame::STDOUT => &stdout,
                frame::STDERR => &stderr,
                frame::EXIT => {
                    let code = data.try_into().map(i32::from_be_bytes).unwrap_or_default();
                    return ExitStatus::Exited(code);
                }
                _ => continue,
            };
            if let Some(tx) = tx
                && tx.send(Bytes::copy_from_slice(data)).await.is_err()
            {
                return ExitStatus::Exited(0); // the client is gone
            }
        }
    };
    let mut gone = io.client_gone.clone();
    tokio::select! {
        status = output => status,
        () = input => unreachable!("the input side never ends by itself"),
        _ = gone.wait_for(|g| *g) => {
            tracing::info!(container_id = %cid, "attach client gone: detaching");
            ExitStatus::Exited(0)
        }
    }
}
