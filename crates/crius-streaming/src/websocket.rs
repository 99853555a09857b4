//! The kubelet's streaming protocols over WebSocket (RFC 6455; framing by tokio-tungstenite,
//! the upgrade by hyper).
//!
//! Remote command (`*.channel.k8s.io`): every message starts with its channel (0 stdin,
//! 1 stdout, 2 stderr, 3 error, 4 resize); `base64.*` protocols send text messages whose first
//! character is the channel digit and whose rest is base64. `v5.channel.k8s.io` adds the
//! close signal: a message `[255, channel]` ends that channel (stdin's EOF). The error
//! channel carries how the command ended, as on SPDY.
//!
//! Port-forward (`v4.channel.k8s.io` and friends, ports from the `port` query parameters):
//! port i has data channel 2i and error channel 2i+1; the first message of every channel is
//! the port number (u16 little-endian). `SPDY/3.1+portforward.k8s.io` is SPDY carried in
//! binary messages (kubectl >= 1.30's tunnel), served by the SPDY port-forward code.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::PortForwardParams;
use crate::backend::{Backend, ExecIo, TermSize};
use crate::remotecommand::{Target, Version, status_message};

/// Remote-command subprotocols, most preferred first.
pub const REMOTECOMMAND_PROTOCOLS: [&str; 7] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// The SPDY-over-WebSocket tunnel of port-forward.
pub const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Port-forward subprotocols, most preferred first.
pub const PORTFORWARD_PROTOCOLS: [&str; 6] = [
    SPDY_TUNNEL_PROTOCOL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v4.portforward.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
];

/// Largest message (and frame) a client may send: stdin chunks and resize events are small.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Ports one port-forward session may name.
pub const MAX_PORTS: usize = 64;
const PIPE_DEPTH: usize = 4;
const READ_CHUNK: usize = 32 * 1024;
/// How long the final status and close may take to reach a client that stopped reading.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE_SIGNAL: u8 = 255;

/// How a negotiated subprotocol frames channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    pub version: Version,
    /// v5: `[255, channel]` closes a channel.
    pub close_signal: bool,
    /// Port-forward v4: each channel's first message is its port.
    pub port_prefix: bool,
}

impl Framing {
    /// The framing of `protocol` (`""`: none was offered).
    pub fn of(protocol: &str) -> Option<Framing> {
        let f = |base64, version, close_signal, port_prefix| Framing {
            base64,
            version,
            close_signal,
            port_prefix,
        };
        Some(match protocol {
            "v5.channel.k8s.io" => f(false, Version::V4, true, true),
            "v4.channel.k8s.io" | "v4.portforward.k8s.io" => f(false, Version::V4, false, true),
            "v4.base64.channel.k8s.io" => f(true, Version::V4, false, true),
            "v3.channel.k8s.io" => f(false, Version::V3, false, false),
            "v2.channel.k8s.io" => f(false, Version::V2, false, false),
            "channel.k8s.io" | "portforward.k8s.io" | "" => f(false, Version::V1, false, false),
            "base64.channel.k8s.io" => f(true, Version::V1, false, false),
            _ => return None,
        })
    }

    fn encode(&self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            s.push((b'0' + channel) as char);
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::text(s)
        } else {
            let mut v = Vec::with_capacity(1 + data.len());
            v.push(channel);
            v.extend_from_slice(data);
            Message::binary(v)
        }
    }

    /// `(channel, payload)` of a data message; `None` for anything else or malformed.
    fn decode(&self, msg: &Message) -> Option<(u8, Vec<u8>)> {
        match msg {
            Message::Binary(b) if !self.base64 && !b.is_empty() => Some((b[0], b[1..].to_vec())),
            // Clients send text messages too (the python client writes a `str` as text); the
            // kubelet reads either as bytes.
            Message::Text(t) if !self.base64 && !t.is_empty() => {
                let t = t.as_bytes();
                Some((t[0], t[1..].to_vec()))
            }
            Message::Text(t) if self.base64 && !t.is_empty() => {
                let t = t.as_bytes();
                let ch = t[0].checked_sub(b'0').filter(|c| *c <= 9)?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .ok()?;
                Some((ch, data))
            }
            _ => None,
        }
    }
}

/// The WebSocket on an upgraded connection, with client messages bounded.
pub async fn accept<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// A task sending queued messages, then a close frame once the queue's senders are gone.
fn writer<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Message>(PIPE_DEPTH * 2);
    let task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    (tx, task)
}

/// Runs one exec or attach over a WebSocket, then closes it.
pub async fn run_remotecommand<S>(
    ws: WebSocketStream<S>,
    framing: Framing,
    target: Target,
    backend: Arc<dyn Backend>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stdin, stdout, stderr, tty) = match &target {
        Target::Exec(p) => (p.stdin, p.stdout, p.stderr, p.tty),
        Target::Attach(p) => (p.stdin, p.stdout, p.stderr, p.tty),
    };
    let (sink, mut stream) = ws.split();
    let (out, writer_task) = writer(sink);
    let (gone_tx, gone_rx) = watch::channel(false);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(PIPE_DEPTH);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(PIPE_DEPTH);
    let reader = tokio::spawn(async move {
        let mut stdin_tx = stdin.then_some(stdin_tx);
        let resize_tx = (tty && framing.version >= Version::V3).then_some(resize_tx);
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
            let Some((ch, data)) = framing.decode(&msg) else {
                continue;
            };
            match ch {
                STDIN if !data.is_empty() => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(Bytes::from(data)).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                RESIZE => {
                    if let (Some(tx), Ok(size)) =
                        (&resize_tx, serde_json::from_slice::<TermSize>(&data))
                    {
                        let _ = tx.send(size).await;
                    }
                }
                CLOSE_SIGNAL if framing.close_signal && data.first() == Some(&STDIN) => {
                    stdin_tx = None; // the process's stdin reads EOF
                }
                _ => {}
            }
        }
        let _ = gone_tx.send(true);
    });
    let mut pumps = Vec::new();
    let mut pump = |on: bool, channel: u8| {
        on.then(|| {
            let (tx, mut rx) = mpsc::channel::<Bytes>(PIPE_DEPTH);
            let out = out.clone();
            pumps.push(tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if out.send(framing.encode(channel, &b)).await.is_err() {
                        return;
                    }
                }
            }));
            tx
        })
    };
    let io = ExecIo {
        stdout: pump(stdout, STDOUT),
        stderr: pump(stderr && !tty, STDERR),
        stdin: stdin.then_some(stdin_rx),
        resize: (tty && framing.version >= Version::V3).then_some(resize_rx),
        client_gone: gone_rx,
    };
    let status = match target {
        Target::Exec(p) => backend.exec(p, io).await,
        Target::Attach(p) => backend.attach(p, io).await,
    };
    for p in pumps {
        let _ = p.await;
    }
    if let Some(msg) = status_message(framing.version, &status) {
        let _ = out.send(framing.encode(ERROR, &msg)).await;
    }
    drop(out);
    let _ = tokio::time::timeout(CLOSE_GRACE, writer_task).await;
    reader.abort();
}

/// The `port` query parameters of a port-forward URL.
pub fn ports_of_query(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for kv in query.unwrap_or("").split('&') {
        let Some(("port", v)) = kv.split_once('=') else {
            continue;
        };
        match v.parse::<u16>() {
            Ok(p) if p > 0 => ports.push(p),
            _ => return Err(format!("invalid port {v:?} in the query")),
        }
        if ports.len() > MAX_PORTS {
            return Err(format!("more than {MAX_PORTS} ports"));
        }
    }
    if ports.is_empty() {
        return Err("port-forward over WebSocket needs at least one port query parameter".into());
    }
    Ok(ports)
}

/// Serves port-forward with the channel framing: one connection per port for the session.
pub async fn run_portforward<S>(
    ws: WebSocketStream<S>,
    framing: Framing,
    ports: Vec<u16>,
    params: PortForwardParams,
    backend: Arc<dyn Backend>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out, writer_task) = writer(sink);
    let mut to_pod: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    let mut tasks = Vec::new();
    // The pod-to-client copies: once all have ended, so has the session (as the kubelet's).
    let mut downstream = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        if framing.port_prefix {
            for ch in [data_ch, err_ch] {
                let _ = out.send(framing.encode(ch, &port.to_le_bytes())).await;
            }
        }
        let allowed = params.ports.is_empty() || params.ports.contains(&(port as i32));
        let conn = if allowed {
            backend
                .port_forward(params.pod_sandbox_id.clone(), port)
                .await
        } else {
            Err(format!("port {port} was not requested"))
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                let msg = format!(
                    "error forwarding port {port} to pod {}: {e}",
                    params.pod_sandbox_id
                );
                let _ = out.send(framing.encode(err_ch, msg.as_bytes())).await;
                to_pod.push(None);
                continue;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(conn);
        let (tx, mut rx) = mpsc::channel::<Bytes>(PIPE_DEPTH);
        to_pod.push(Some(tx));
        tasks.push(tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        }));
        let out = out.clone();
        downstream.spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                if out.send(framing.encode(data_ch, &buf[..n])).await.is_err() {
                    return;
                }
            }
        });
    }
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            () = async { while downstream.join_next().await.is_some() {} } => break,
        };
        let Some(Ok(msg)) = msg else { break };
        if msg.is_close() {
            break;
        }
        let Some((ch, data)) = framing.decode(&msg) else {
            continue;
        };
        let i = (ch / 2) as usize;
        if ch == CLOSE_SIGNAL && framing.close_signal {
            if let Some(&c) = data.first()
                && let Some(slot) = to_pod.get_mut((c / 2) as usize)
            {
                *slot = None; // half-close towards the pod
            }
            continue;
        }
        if ch % 2 != 0 || data.is_empty() {
            continue;
        }
        if let Some(Some(tx)) = to_pod.get(i)
            && tx.send(Bytes::from(data)).await.is_err()
        {
            to_pod[i] = None;
        }
    }
    for t in tasks {
        t.abort();
    }
    downstream.abort_all();
    drop(out);
    let _ = tokio::time::timeout(CLOSE_GRACE, writer_task).await;
}

/// SPDY carried in binary messages: a byte stream for the SPDY session.
pub fn spdy_tunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        let up = async {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => return,
                    Message::Close(_) => return,
                    _ => {}
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; READ_CHUNK];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        };
        // Either side ending ends the tunnel (dropping both halves closes the SPDY session).
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_roundtrips() {
        for p in [
            "v4.channel.k8s.io",
            "base64.channel.k8s.io",
            "v5.channel.k8s.io",
        ] {
            let f = Framing::of(p).unwrap();
            let m = f.encode(STDERR, b"\x00\xffhello");
            assert_eq!(m.is_text(), p.starts_with("base64"));
            assert_eq!(f.decode(&m), Some((STDERR, b"\x00\xffhello".to_vec())));
        }
        let b64 = Framing::of("base64.channel.k8s.io").unwrap();
        assert_eq!(b64.encode(STDOUT, b"hi"), Message::text("1aGk="));
        assert_eq!(b64.decode(&Message::text("0!!")), None);
        assert!(Framing::of("v9.channel.k8s.io").is_none());
        let v4 = Framing::of("v4.channel.k8s.io").unwrap();
        assert_eq!(
            v4.decode(&Message::text("\u{0}hi")),
            Some((STDIN, b"hi".to_vec()))
        );
    }

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(
            ports_of_query(Some("port=80&port=8080")),
            Ok(vec![80, 8080])
        );
        assert!(ports_of_query(Some("port=0")).is_err());
        assert!(ports_of_query(None).is_err());
        let many = vec!["port=1"; MAX_PORTS + 1].join("&");
        assert!(ports_of_query(Some(&many)).is_err());
    }
}
