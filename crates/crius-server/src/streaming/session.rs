//! criusd's side of a monitor connection that carries frames (`attach`, `stream-exec`: see
//! `crius_monitor::attach`): the request line and its answer, then the client's input and
//! terminal sizes to the monitor and the monitor's output to the client, until its exit frame.

use std::time::Duration;

use bytes::Bytes;
use crius_monitor::attach as frame;
use crius_monitor::{Request, Response};
use crius_streaming::ExecIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The monitor's answer to the request is one short line.
const MAX_RESPONSE_LINE: u64 = 64 * 1024;
/// The monitor answers at once (an exec: once the runtime is spawned); a hung monitor must
/// not hold the session, which does not watch its client until it runs.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Session {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

/// Why a session did not open.
pub enum OpenError {
    /// The monitor answered with an error: its message, for the user.
    Refused(String),
    /// The connection broke or the answer made no sense.
    Broken(String),
}

/// How a session ended.
pub enum Ended {
    /// The monitor's exit frame: the container's or exec'd process's exit code.
    Exit(i32),
    /// The monitor closed the connection without an exit frame.
    Closed,
    /// The client went away (dropping the session closes the monitor connection).
    ClientGone,
    Error(String),
}

impl Session {
    /// Sends `req` on `stream` (a fresh monitor connection) and waits for its `ok`.
    pub async fn open(
        stream: std::os::unix::net::UnixStream,
        req: &Request,
    ) -> Result<Session, OpenError> {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(stream))
            .map_err(|e| OpenError::Broken(format!("monitor connection: {e}")))?;
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        let answered = async {
            w.write_all(&req.encode()).await?;
            (&mut r)
                .take(MAX_RESPONSE_LINE)
                .read_until(b'\n', &mut line)
                .await
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, answered).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(OpenError::Broken(format!("monitor: {e}"))),
            Err(_) => {
                return Err(OpenError::Broken(format!(
                    "the pod monitor did not answer within {ANSWER_TIMEOUT:?}"
                )));
            }
        }
        match Response::decode(&line) {
            Ok(Response::Ok) => Ok(Session { r, w }),
            Ok(Response::Error(e)) => Err(OpenError::Refused(e.message)),
            other => Err(OpenError::Broken(format!(
                "unexpected monitor answer {other:?}"
            ))),
        }
    }

    /// Relays until the exit frame, the monitor closing, or the client going away.
    pub async fn relay(self, io: &mut ExecIo) -> Ended {
        let Session { mut r, mut w } = self;
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
                    return Ended::Closed;
                }
                let kind = header[0];
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                if len > frame::MAX_PAYLOAD {
                    return Ended::Error(format!("monitor frame of {len} bytes"));
                }
                if r.read_exact(&mut payload[..len]).await.is_err() {
                    return Ended::Closed;
                }
                let data = &payload[..len];
                let tx = match kind {
                    frame::STDOUT => &stdout,
                    frame::STDERR => &stderr,
                    frame::EXIT => {
                        let code = data.try_into().map(i32::from_be_bytes).unwrap_or_default();
                        return Ended::Exit(code);
                    }
                    _ => continue,
                };
                if let Some(tx) = tx
                    && tx.send(Bytes::copy_from_slice(data)).await.is_err()
                {
                    return Ended::ClientGone;
                }
            }
        };
        let mut gone = io.client_gone.clone();
        tokio::select! {
            ended = output => ended,
            () = input => unreachable!("the input side never ends by itself"),
            _ = gone.wait_for(|g| *g) => Ended::ClientGone,
        }
    }
}
