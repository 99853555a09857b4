//! A server-side SPDY/3.1 session: the peer opens streams (SYN_STREAM), crius answers each
//! with SYN_REPLY and hands it to the caller with a reader and a writer.
//!
//! Bounds against a hostile peer: at most [`MAX_STREAMS`] open streams (more are refused with
//! RST_STREAM), at most [`STREAM_BUFFER`] bytes buffered per stream (the connection is not
//! read further until the consumer catches up), frames and header blocks bounded by the
//! codec, and a bounded queue of frames to write.
//!
//! Flow control: crius grants the peer more window (WINDOW_UPDATE) as the consumer reads.
//! kubectl and the kubelet (moby/spdystream) do not send WINDOW_UPDATE, so crius enforces its
//! send window only once the peer has shown it speaks flow control (a WINDOW_UPDATE or an
//! initial window in SETTINGS); otherwise it would stall after 64 KiB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use super::frame::{FLAG_FIN, SETTINGS_INITIAL_WINDOW_SIZE, goaway, rst};
use super::{Codec, Frame, Headers, SpdyError};

/// Streams open at once on one session (port-forward opens two per connection).
pub const MAX_STREAMS: usize = 512;
/// Bytes buffered per stream before the session stops reading the connection.
pub const STREAM_BUFFER: usize = 256 * 1024;
/// The initial window of SPDY/3.
pub const DEFAULT_WINDOW: i64 = 64 * 1024;
/// Largest DATA frame crius writes.
pub const MAX_WRITE_FRAME: usize = 32 * 1024;
/// Frames queued for the connection before writers wait.
const WRITE_QUEUE: usize = 64;
/// Accepted streams not yet taken by the caller.
const ACCEPT_QUEUE: usize = 32;

struct StreamState {
    /// Dropped on FIN or reset: the reader then sees the end.
    inbound: Option<mpsc::UnboundedSender<(Bytes, u32)>>,
    /// Both halves closed (FIN each way): the stream is forgotten, freeing its slot.
    remote_closed: bool,
    local_closed: bool,
    budget: Arc<Semaphore>,
    send: Arc<SendWindow>,
}

struct SendWindow {
    window: Mutex<i64>,
    changed: Notify,
    reset: AtomicBool,
}

struct Shared {
    streams: Mutex<HashMap<u32, StreamState>>,
    /// The next id of a stream this side opens (odd: the client's side).
    next_id: std::sync::atomic::AtomicU32,
    out: mpsc::Sender<Frame>,
    /// The peer has shown it speaks flow control.
    flow_control: AtomicBool,
    initial_window: Mutex<i64>,
}

impl Shared {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u32, StreamState>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A stream the peer opened.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

pub struct StreamReader {
    id: u32,
    rx: mpsc::UnboundedReceiver<(Bytes, u32)>,
    budget: Arc<Semaphore>,
    out: mpsc::Sender<Frame>,
}

impl StreamReader {
    /// The next chunk of data; `None` once the peer finished or reset the stream, or the
    /// session ended.
    pub async fn read(&mut self) -> Option<Bytes> {
        let (data, permits) = self.rx.recv().await?;
        self.budget.add_permits(permits as usize);
        if !data.is_empty() {
            let _ = self
                .out
                .send(Frame::WindowUpdate {
                    stream_id: self.id,
                    delta: data.len() as u32,
                })
                .await;
        }
        Some(data)
    }
}

#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
    send: Arc<SendWindow>,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends `data` in frames of at most [`MAX_WRITE_FRAME`] bytes, within the peer's
    /// window when it uses one.
    pub async fn write(&self, mut data: Bytes) -> Result<(), SpdyError> {
        while !data.is_empty() {
            let n = self.reserve(data.len().min(MAX_WRITE_FRAME)).await?;
            let chunk = data.split_to(n);
            self.send_frame(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream: an empty DATA frame with FIN.
    pub async fn close(&self) -> Result<(), SpdyError> {
        {
            let mut streams = self.shared.streams();
            if let Some(s) = streams.get_mut(&self.id) {
                if s.local_closed {
                    return Ok(());
                }
                s.local_closed = true;
                if s.remote_closed {
                    streams.remove(&self.id);
                }
            }
        }
        self.send_frame(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Aborts the stream both ways.
    pub async fn reset(&self, status: u32) {
        self.send.reset.store(true, Ordering::Release);
        self.shared.streams().remove(&self.id);
        let _ = self
            .shared
            .out
            .send(Frame::RstStream {
                stream_id: self.id,
                status,
            })
            .await;
    }

    async fn send_frame(&self, f: Frame) -> Result<(), SpdyError> {
        if self.send.reset.load(Ordering::Acquire) {
            return Err(closed("the stream was reset"));
        }
        self.shared
            .out
            .send(f)
            .await
            .map_err(|_| closed("the session is closed"))
    }

    /// Up to `want` bytes of send window (all of it while the peer does no flow control).
    async fn reserve(&self, want: usize) -> Result<usize, SpdyError> {
        loop {
            if self.send.reset.load(Ordering::Acquire) {
                return Err(closed("the stream was reset"));
            }
            if !self.shared.flow_control.load(Ordering::Acquire) {
                return Ok(want);
            }
            let notified = self.send.changed.notified();
            {
                let mut w = self.send.window.lock().unwrap_or_else(|p| p.into_inner());
                if *w > 0 {
                    let n = (*w as usize).min(want);
                    *w -= n as i64;
                    return Ok(n);
                }
            }
            notified.await;
        }
    }
}

fn closed(why: &str) -> SpdyError {
    SpdyError::Io(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        why.to_string(),
    ))
}

/// The running session: accept streams from it, then close it.
pub struct Session {
    accept: mpsc::Receiver<IncomingStream>,
    shared: Arc<Shared>,
    stop_reader: Option<oneshot::Sender<()>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// Becomes true when the peer's side of the connection ends.
    gone: tokio::sync::watch::Receiver<bool>,
    /// Held from taking a stream id to queueing its SYN_STREAM: ids must reach the wire in
    /// increasing order, which concurrent opens would otherwise break (a peer refuses a
    /// stream whose id is below one it has seen).
    opening: tokio::sync::Mutex<()>,
}

impl Session {
    /// Starts reading and writing frames on `io` (the upgraded connection).
    pub fn start<IO>(io: IO) -> Result<Session, SpdyError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        let (acc_tx, acc_rx) = mpsc::channel(ACCEPT_QUEUE);
        let shared = Arc::new(Shared {
            streams: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU32::new(1),
            out: out_tx,
            flow_control: AtomicBool::new(false),
            initial_window: Mutex::new(DEFAULT_WINDOW),
        });
        let writer = tokio::spawn(write_loop(wr, out_rx, Codec::new()?));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (gone_tx, gone_rx) = tokio::sync::watch::channel(false);
        let reader_shared = shared.clone();
        let codec = Codec::new()?;
        tokio::spawn(async move {
            tokio::select! {
                r = read_loop(rd, codec, reader_shared.clone(), acc_tx) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "SPDY session ended by an error");
                        let status = match e {
                            SpdyError::Io(_) => None,
                            _ => Some(goaway::PROTOCOL_ERROR),
                        };
                        if let Some(status) = status {
                            let _ = reader_shared.out.send(Frame::GoAway {
                                last_good_stream_id: 0,
                                status,
                            }).await;
                        }
                    }
                }
                _ = stop_rx => {}
            }
            // Every reader sees the end; writers keep going until the session closes.
            for s in reader_shared.streams().values_mut() {
                s.inbound = None;
            }
            let _ = gone_tx.send(true);
        });
        Ok(Session {
            accept: acc_rx,
            shared,
            stop_reader: Some(stop_tx),
            writer: Some(writer),
            gone: gone_rx,
            opening: tokio::sync::Mutex::new(()),
        })
    }

    /// Opens a stream (the client's side of a session: odd ids, which a server-side session
    /// never uses since only the client opens streams in the kubelet's protocols).
    pub async fn open(&self, headers: Headers) -> Result<(StreamReader, StreamWriter), SpdyError> {
        let _in_order = self.opening.lock().await;
        let stream_id = self.shared.next_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(STREAM_BUFFER));
        let send = Arc::new(SendWindow {
            window: Mutex::new(
                *self
                    .shared
                    .initial_window
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            ),
            changed: Notify::new(),
            reset: AtomicBool::new(false),
        });
        self.shared.streams().insert(
            stream_id,
            StreamState {
                inbound: Some(tx),
                remote_closed: false,
                local_closed: false,
                budget: budget.clone(),
                send: send.clone(),
            },
        );
        self.shared
            .out
            .send(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers,
            })
            .await
            .map_err(|_| closed("the session is closed"))?;
        Ok((
            StreamReader {
                id: stream_id,
                rx,
                budget,
                out: self.shared.out.clone(),
            },
            StreamWriter {
                id: stream_id,
                shared: self.shared.clone(),
                send,
            },
        ))
    }

    /// The next stream the peer opens; `None` once the connection is gone.
    pub async fn accept(&mut self) -> Option<IncomingStream> {
        self.accept.recv().await
    }

    /// Resolves once the peer's side of the connection has ended (EOF, error or GOAWAY).
    pub fn peer_gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut gone = self.gone.clone();
        async move {
            let _ = gone.wait_for(|g| *g).await;
        }
    }

    /// Sends GOAWAY, writes what is queued and closes the connection. Streams still held
    /// by the caller fail their next write.
    pub async fn close(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop_reader.take() {
            let _ = stop.send(());
        }
        let _ = self
            .shared
            .out
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: goaway::OK,
            })
            .await;
        // The writer ends once every sender is gone: ours, and those of stream writers.
        self.shared.streams().clear();
        let _ = self.shared.out.send(Frame::Unknown { kind: 0 }).await;
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_reader.take() {
            let _ = stop.send(());
        }
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Frame>, mut codec: Codec) {
    tokio::pin!(wr);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(f) = rx.recv().await {
        // `Unknown` is the close marker sent by `Session::close`.
        let mut last = matches!(f, Frame::Unknown { .. });
        if !last && let Err(e) = codec.encode(&f, &mut buf) {
            tracing::warn!(error = %e, "SPDY: cannot encode a frame");
            break;
        }
        // Batch what is already queued into one write.
        while !last && buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(Frame::Unknown { .. }) => last = true,
                Ok(f) => {
                    if codec.encode(&f, &mut buf).is_err() {
                        last = true;
                    }
                }
                Err(_) => break,
            }
        }
        if !buf.is_empty() && wr.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        if last {
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead>(
    rd: R,
    mut codec: Codec,
    shared: Arc<Shared>,
    accept: mpsc::Sender<IncomingStream>,
) -> Result<(), SpdyError> {
    tokio::pin!(rd);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut last_id = 0u32;
    loop {
        let frame = loop {
            if let Some(f) = codec.decode(&mut buf)? {
                break f;
            }
            if rd.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                headers,
                flags,
                ..
            } => {
                // Peer-opened streams are odd and increasing.
                if stream_id % 2 == 0 || stream_id <= last_id {
                    return Err(SpdyError::Protocol(format!(
                        "SYN_STREAM with stream id {stream_id} after {last_id}"
                    )));
                }
                last_id = stream_id;
                if shared.streams().len() >= MAX_STREAMS {
                    send(
                        &shared,
                        Frame::RstStream {
                            stream_id,
                            status: rst::REFUSED_STREAM,
                        },
                    )
                    .await;
                    continue;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let budget = Arc::new(Semaphore::new(STREAM_BUFFER));
                let window = *shared
                    .initial_window
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let send_window = Arc::new(SendWindow {
                    window: Mutex::new(window),
                    changed: Notify::new(),
                    reset: AtomicBool::new(false),
                });
                shared.streams().insert(
                    stream_id,
                    StreamState {
                        inbound: if flags & FLAG_FIN != 0 {
                            None
                        } else {
                            Some(tx)
                        },
                        remote_closed: flags & FLAG_FIN != 0,
                        local_closed: false,
                        budget: budget.clone(),
                        send: send_window.clone(),
                    },
                );
                send(
                    &shared,
                    Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Headers::new(),
                    },
                )
                .await;
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    reader: StreamReader {
                        id: stream_id,
                        rx,
                        budget,
                        out: shared.out.clone(),
                    },
                    writer: StreamWriter {
                        id: stream_id,
                        shared: shared.clone(),
                        send: send_window,
                    },
                };
                if accept.send(stream).await.is_err() {
                    return Ok(());
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let entry = {
                    let streams = shared.streams();
                    streams
                        .get(&stream_id)
                        .map(|s| (s.inbound.clone(), s.budget.clone()))
                };
                let Some((inbound, budget)) = entry else {
                    // Data for a stream that is gone (reset by us): dropped.
                    continue;
                };
                if let Some(tx) = inbound.filter(|_| !data.is_empty()) {
                    let permits = data.len().min(STREAM_BUFFER) as u32;
                    // Wait for the consumer rather than buffer without bound.
                    let Ok(p) = budget.acquire_many(permits).await else {
                        continue;
                    };
                    p.forget();
                    if tx.send((data, permits)).is_err() {
                        budget.add_permits(permits as usize);
                    }
                }
                if flags & FLAG_FIN != 0 {
                    let mut streams = shared.streams();
                    if let Some(s) = streams.get_mut(&stream_id) {
                        s.inbound = None;
                        s.remote_closed = true;
                        if s.local_closed {
                            streams.remove(&stream_id);
                        }
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(s) = shared.streams().remove(&stream_id) {
                    s.send.reset.store(true, Ordering::Release);
                    s.send.changed.notify_waiters();
                }
            }
            Frame::WindowUpdate { stream_id, delta } => {
                shared.flow_control.store(true, Ordering::Release);
                if let Some(s) = shared.streams().get(&stream_id) {
                    let mut w = s.send.window.lock().unwrap_or_else(|p| p.into_inner());
                    *w = (*w + delta as i64).min(i32::MAX as i64);
                    s.send.changed.notify_waiters();
                }
            }
            Frame::Settings { entries, .. } => {
                for (_, id, value) in entries {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        shared.flow_control.store(true, Ordering::Release);
                        *shared
                            .initial_window
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = value.min(i32::MAX as u32) as i64;
                    }
                }
            }
            Frame::Ping { id } => {
                // Echo the peer's pings (odd ids); ours would be even and we send none.
                if id % 2 == 1 {
                    send(&shared, Frame::Ping { id }).await;
                }
            }
            Frame::GoAway { .. } => return Ok(()),
            Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Unknown { .. } => {}
        }
    }
}

async fn send(shared: &Shared, f: Frame) {
    let _ = shared.out.send(f).await;
}

#[cfg(test)]
mod tests;
