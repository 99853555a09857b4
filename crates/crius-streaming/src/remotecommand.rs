//! The kubelet's remote-command protocol over SPDY: exec and attach.
//!
//! The client opens one SPDY stream per standard stream, named by its `streamType` header:
//! `error`, `stdin`, `stdout`, `stderr` and (v3+, with a TTY) `resize`. The server waits for
//! the ones the request asked for, runs the command, and reports how it ended on the error
//! stream: plain text in v1-v3, a JSON `Status` in v4 (with the exit code as kubectl reads
//! it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::backend::{Backend, ExecIo, ExitStatus, TermSize};
use crate::spdy::frame::rst;
use crate::spdy::session::{IncomingStream, Session, StreamReader, StreamWriter};
use crate::{AttachParams, ExecParams};

/// The SPDY subprotocols, most preferred first.
pub const PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How long the client has to open its streams (the kubelet's default too).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// A resize message is a small JSON object; more than this without one is an error.
const MAX_RESIZE_BUFFER: usize = 4096;
/// Chunks in flight per standard stream.
const PIPE_DEPTH: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
    V3,
    V4,
}

impl Version {
    pub fn from_protocol(p: &str) -> Option<Version> {
        match p {
            "v4.channel.k8s.io" => Some(Version::V4),
            "v3.channel.k8s.io" => Some(Version::V3),
            "v2.channel.k8s.io" => Some(Version::V2),
            // No header at all is the legacy protocol too.
            "channel.k8s.io" | "" => Some(Version::V1),
            _ => None,
        }
    }
}

/// The first protocol of the client's list (in its order) that crius speaks; `Ok(None)`
/// when the client named none (legacy clients), `Err` when none matches.
pub fn negotiate<'a>(
    offered: impl Iterator<Item = &'a str>,
    supported: &[&'static str],
) -> Result<Option<&'static str>, String> {
    let offered: Vec<&str> = offered
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    for o in &offered {
        if let Some(s) = supported.iter().find(|s| **s == *o) {
            return Ok(Some(*s));
        }
    }
    Err(format!(
        "unable to negotiate a protocol: the client supports {offered:?}, crius supports {supported:?}"
    ))
}

/// Which streams a session needs.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

struct Streams {
    error: Option<StreamWriter>,
    stdin: Option<StreamReader>,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    resize: Option<StreamReader>,
    /// Kept so their writers stay open until the end (the client may wait on them).
    _held: Vec<StreamWriter>,
}

async fn collect_streams(
    session: &mut Session,
    version: Version,
    want: Wanted,
) -> Result<Streams, String> {
    let mut s = Streams {
        error: None,
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
        _held: Vec::new(),
    };
    let want_resize = want.tty && version >= Version::V3;
    let want_stderr = want.stderr && !want.tty;
    let complete = |s: &Streams| {
        s.error.is_some()
            && (!want.stdin || s.stdin.is_some())
            && (!want.stdout || s.stdout.is_some())
            && (!want_stderr || s.stderr.is_some())
            && (!want_resize || s.resize.is_some())
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !complete(&s) {
        let next = tokio::time::timeout_at(deadline, session.accept()).await;
        let Ok(Some(st)) = next else {
            return Err(match next {
                Err(_) => "timed out waiting for the client to open its streams".into(),
                Ok(_) => "the client went away before opening its streams".into(),
            });
        };
        let IncomingStream {
            headers,
            reader,
            writer,
            ..
        } = st;
        let kind = headers.get("streamtype").unwrap_or("").to_string();
        let refused = match kind.as_str() {
            "error" if s.error.is_none() => {
                s._held.push(writer.clone());
                s.error = Some(writer);
                None
            }
            "stdin" if s.stdin.is_none() => {
                s._held.push(writer);
                s.stdin = Some(reader);
                None
            }
            "stdout" if s.stdout.is_none() => {
                s.stdout = Some(writer);
                None
            }
            "stderr" if s.stderr.is_none() => {
                s.stderr = Some(writer);
                None
            }
            "resize" if s.resize.is_none() => {
                s._held.push(writer);
                s.resize = Some(reader);
                None
            }
            _ => Some(writer),
        };
        if let Some(writer) = refused {
            tracing::debug!(stream_type = %kind, "refusing an unexpected stream");
            writer.reset(rst::REFUSED_STREAM).await;
        }
    }
    Ok(s)
}

pub enum Target {
    Exec(ExecParams),
    Attach(AttachParams),
}

/// Runs one exec or attach session to its end, then closes the connection.
pub async fn run(
    mut session: Session,
    version: Version,
    target: Target,
    backend: Arc<dyn Backend>,
) {
    let want = match &target {
        Target::Exec(p) => Wanted {
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
            tty: p.tty,
        },
        Target::Attach(p) => Wanted {
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
            tty: p.tty,
        },
    };
    let streams = match collect_streams(&mut session, version, want).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, "streaming session not started");
            session.close().await;
            return;
        }
    };
    let (gone_tx, gone_rx) = watch::channel(false);
    let peer_gone = session.peer_gone();
    let watcher = tokio::spawn(async move {
        peer_gone.await;
        let _ = gone_tx.send(true);
    });

    let mut pumps = Vec::new();
    let mut stdin_pump = None;
    let stdin = streams.stdin.map(|mut r| {
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        // Not waited for at the end: the client may keep stdin open after the process ended.
        stdin_pump = Some(tokio::spawn(async move {
            while let Some(b) = r.read().await {
                if b.is_empty() {
                    continue;
                }
                if tx.send(b).await.is_err() {
                    break;
                }
            }
        }));
        rx
    });
    let mut out_pump = |w: Option<StreamWriter>| {
        w.map(|w| {
            let (tx, mut rx) = mpsc::channel::<Bytes>(PIPE_DEPTH);
            pumps.push(tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if w.write(b).await.is_err() {
                        return;
                    }
                }
                let _ = w.close().await;
            }));
            tx
        })
    };
    let stdout = out_pump(streams.stdout);
    let stderr = out_pump(streams.stderr);
    let resize = streams.resize.map(|r| {
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        tokio::spawn(resize_pump(r, tx));
        rx
    });
    let io = ExecIo {
        stdin,
        stdout,
        stderr,
        resize,
        client_gone: gone_rx,
    };
    let status = match target {
        Target::Exec(p) => backend.exec(p, io).await,
        Target::Attach(p) => backend.attach(p, io).await,
    };
    // Output drained to the client before the status goes out.
    for p in pumps {
        let _ = p.await;
    }
    if let Some(p) = stdin_pump {
        p.abort();
    }
    if let Some(err) = streams.error {
        if let Some(msg) = status_message(version, &status) {
            let _ = err.write(msg).await;
        }
        let _ = err.close().await;
    }
    watcher.abort();
    session.close().await;
}

async fn resize_pump(mut r: StreamReader, tx: mpsc::Sender<TermSize>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(b) = r.read().await {
        buf.extend_from_slice(&b);
        // Consecutive JSON objects, possibly split across frames.
        let mut consumed = 0;
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    consumed = it.byte_offset();
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "bad resize message; resize stream ignored");
                    return;
                }
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
        buf.drain(..consumed);
        if buf.len() > MAX_RESIZE_BUFFER {
            tracing::debug!("resize message too large; resize stream ignored");
            return;
        }
    }
}

/// What the error stream carries at the end; `None` for nothing (success before v4).
pub fn status_message(version: Version, status: &ExitStatus) -> Option<Bytes> {
    let text = match status {
        ExitStatus::Exited(0) => None,
        ExitStatus::Exited(code) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        ExitStatus::Error(msg) => Some(msg.clone()),
    };
    if version < Version::V4 {
        return text.map(Bytes::from);
    }
    let v = match status {
        ExitStatus::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        ExitStatus::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": text,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        ExitStatus::Error(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    Some(Bytes::from(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::backend::{BoxFuture, Connection};
    use crate::spdy::frame::FLAG_FIN;
    use crate::spdy::{Codec, Frame, Headers};

    /// Echoes stdin to stdout, says hi on stderr, reports its resize events on stdout,
    /// and exits with 3.
    struct Fake;

    impl Backend for Fake {
        fn exec(&self, _p: ExecParams, mut io: ExecIo) -> BoxFuture<ExitStatus> {
            Box::pin(async move {
                if let Some(err) = &io.stderr {
                    err.send(Bytes::from_static(b"hi")).await.unwrap();
                }
                if let (Some(r), Some(out)) = (io.resize.as_mut(), &io.stdout) {
                    let s = r.recv().await.unwrap();
                    out.send(Bytes::from(format!("{}x{};", s.width, s.height)))
                        .await
                        .unwrap();
                }
                if let (Some(i), Some(out)) = (io.stdin.as_mut(), &io.stdout) {
                    while let Some(b) = i.recv().await {
                        out.send(b).await.unwrap();
                    }
                }
                ExitStatus::Exited(3)
            })
        }
        fn attach(&self, p: AttachParams, _io: ExecIo) -> BoxFuture<ExitStatus> {
            Box::pin(async move { ExitStatus::Error(format!("no attach to {}", p.container_id)) })
        }
        fn port_forward(
            &self,
            _: String,
            _: u16,
        ) -> BoxFuture<Result<Box<dyn Connection>, String>> {
            Box::pin(async { Err("none".to_string()) })
        }
    }

    /// Runs one exec session with a hand-written client; returns (stdout, stderr, error).
    async fn session(version: Version, tty: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let p = ExecParams {
            container_id: "c".into(),
            cmd: vec!["x".into()],
            tty,
            stdin: true,
            stdout: true,
            stderr: !tty,
        };
        let server = tokio::spawn(run(
            Session::start(a).unwrap(),
            version,
            Target::Exec(p),
            Arc::new(Fake),
        ));
        let mut c = Codec::new().unwrap();
        let mut out = BytesMut::new();
        let mut kinds = vec!["error", "stdin", "stdout"];
        kinds.push(if tty { "resize" } else { "stderr" });
        for (i, k) in kinds.iter().enumerate() {
            c.encode(
                &Frame::SynStream {
                    stream_id: 2 * i as u32 + 1,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers: Headers::new().with("streamType", k),
                },
                &mut out,
            )
            .unwrap();
        }
        if tty {
            c.encode(
                &Frame::Data {
                    stream_id: 7,
                    flags: 0,
                    data: Bytes::from_static(b"{\"Width\":80,\"Height\":24}\n"),
                },
                &mut out,
            )
            .unwrap();
        }
        for (flags, data) in [(0, &b"in"[..]), (FLAG_FIN, &b""[..])] {
            c.encode(
                &Frame::Data {
                    stream_id: 3,
                    flags,
                    data: Bytes::copy_from_slice(data),
                },
                &mut out,
            )
            .unwrap();
        }
        b.write_all(&out).await.unwrap();
        // The server closes the connection at the end of the session.
        let mut raw = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), b.read_to_end(&mut raw))
            .await
            .expect("the session ends")
            .unwrap();
        server.await.unwrap();
        let mut wire = BytesMut::from(&raw[..]);
        let mut rx = Codec::new().unwrap();
        let (mut o, mut e, mut err) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(f) = rx.decode(&mut wire).unwrap() {
            if let Frame::Data {
                stream_id, data, ..
            } = f
            {
                match stream_id {
                    1 => err.extend_from_slice(&data),
                    5 => o.extend_from_slice(&data),
                    7 => e.extend_from_slice(&data),
                    _ => {}
                }
            }
        }
        (o, e, err)
    }

    #[tokio::test]
    async fn v4_exec_carries_streams_and_a_json_exit_status() {
        let (out, err, status) = session(Version::V4, false).await;
        assert_eq!(out, b"in");
        assert_eq!(err, b"hi");
        let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(v["details"]["causes"][0]["message"], "3");
    }

    #[tokio::test]
    async fn v2_reports_the_exit_as_text() {
        let (out, _, status) = session(Version::V2, false).await;
        assert_eq!(out, b"in");
        assert!(String::from_utf8_lossy(&status).contains("exit status 3"));
    }

    #[tokio::test]
    async fn v3_tty_sessions_carry_resize_events() {
        let (out, _, _) = session(Version::V3, true).await;
        assert_eq!(out, b"80x24;in");
    }

    #[test]
    fn the_clients_order_wins_and_no_header_is_legacy() {
        let p = negotiate(
            ["v2.channel.k8s.io", "v4.channel.k8s.io"].into_iter(),
            &PROTOCOLS,
        );
        assert_eq!(p, Ok(Some("v2.channel.k8s.io")));
        let p = negotiate(["v5.x, v4.channel.k8s.io"].into_iter(), &PROTOCOLS);
        assert_eq!(p, Ok(Some("v4.channel.k8s.io")));
        assert_eq!(negotiate(std::iter::empty(), &PROTOCOLS), Ok(None));
        assert!(negotiate(["v9.channel.k8s.io"].into_iter(), &PROTOCOLS).is_err());
    }

    #[test]
    fn v4_status_carries_the_exit_code_as_kubectl_reads_it() {
        let s = status_message(Version::V4, &ExitStatus::Exited(3)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let s = status_message(Version::V4, &ExitStatus::Exited(0)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
        assert_eq!(v["status"], "Success");
        assert_eq!(status_message(Version::V3, &ExitStatus::Exited(0)), None);
        let s = status_message(Version::V2, &ExitStatus::Exited(2)).unwrap();
        assert!(String::from_utf8_lossy(&s).contains("exit code"));
    }
}
