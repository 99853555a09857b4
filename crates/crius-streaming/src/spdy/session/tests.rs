//! A session driven by a hand-written client over an in-memory pipe.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

struct Client {
    io: DuplexStream,
    codec: Codec,
    buf: BytesMut,
}

impl Client {
    fn new(io: DuplexStream) -> Client {
        Client {
            io,
            codec: Codec::new().unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, f: Frame) {
        let mut out = BytesMut::new();
        self.codec.encode(&f, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    async fn open(&mut self, id: u32, stream_type: &str) {
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::new().with("streamType", stream_type),
        })
        .await;
    }

    /// The next frame, or `None` at EOF.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(f);
            }
            let n = tokio::time::timeout(Duration::from_secs(5), self.io.read_buf(&mut self.buf))
                .await
                .expect("a frame within 5s")
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    /// Skips WINDOW_UPDATE frames.
    async fn next_non_window(&mut self) -> Option<Frame> {
        loop {
            match self.next().await? {
                Frame::WindowUpdate { .. } => continue,
                f => return Some(f),
            }
        }
    }
}

fn pair() -> (Session, Client) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (Session::start(a).unwrap(), Client::new(b))
}

#[tokio::test]
async fn streams_are_replied_to_and_carry_data_both_ways() {
    let (mut session, mut client) = pair();
    client.open(1, "stdout").await;
    client.open(3, "stdin").await;
    let out = session.accept().await.unwrap();
    assert_eq!(out.id, 1);
    assert_eq!(out.headers.get("streamtype"), Some("stdout"));
    let mut input = session.accept().await.unwrap();
    assert_eq!(input.headers.get("streamType"), Some("stdin"));
    for id in [1, 3] {
        match client.next().await.unwrap() {
            Frame::SynReply { stream_id, .. } => assert_eq!(stream_id, id),
            f => panic!("{f:?}"),
        }
    }

    // 100 KB out: DATA frames of at most 32 KiB, then FIN.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    out.writer
        .write(Bytes::from(payload.clone()))
        .await
        .unwrap();
    out.writer.close().await.unwrap();
    let mut got = Vec::new();
    loop {
        match client.next().await.unwrap() {
            Frame::Data {
                stream_id: 1,
                flags,
                data,
            } => {
                assert!(data.len() <= MAX_WRITE_FRAME);
                got.extend_from_slice(&data);
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
            f => panic!("{f:?}"),
        }
    }
    assert_eq!(got, payload);

    // In: data, then FIN ends the reader; each read grants the window back.
    client
        .send(Frame::Data {
            stream_id: 3,
            flags: 0,
            data: Bytes::from_static(b"hello"),
        })
        .await;
    client
        .send(Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await;
    assert_eq!(
        input.reader.read().await.unwrap(),
        Bytes::from_static(b"hello")
    );
    assert_eq!(input.reader.read().await, None);
    assert_eq!(
        client.next().await.unwrap(),
        Frame::WindowUpdate {
            stream_id: 3,
            delta: 5
        }
    );

    // Pings are echoed; close sends GOAWAY and ends the connection.
    client.send(Frame::Ping { id: 5 }).await;
    assert_eq!(client.next().await.unwrap(), Frame::Ping { id: 5 });
    session.close().await;
    assert!(matches!(
        client.next().await.unwrap(),
        Frame::GoAway { status: 0, .. }
    ));
    assert_eq!(client.next().await, None);
}

#[tokio::test]
async fn the_send_window_is_kept_once_the_peer_uses_flow_control() {
    let (mut session, mut client) = pair();
    client
        .send(Frame::Settings {
            flags: 0,
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1000)],
        })
        .await;
    client.open(1, "stdout").await;
    let s = session.accept().await.unwrap();
    assert!(matches!(client.next().await, Some(Frame::SynReply { .. })));
    let w = s.writer.clone();
    let writing = tokio::spawn(async move { w.write(Bytes::from(vec![7u8; 2500])).await });
    let mut total = 0;
    match client.next().await.unwrap() {
        Frame::Data { data, .. } => total += data.len(),
        f => panic!("{f:?}"),
    }
    assert_eq!(total, 1000, "no more than the window before an update");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writing.is_finished());
    client
        .send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 5000,
        })
        .await;
    while total < 2500 {
        match client.next().await.unwrap() {
            Frame::Data { data, .. } => total += data.len(),
            f => panic!("{f:?}"),
        }
    }
    writing.await.unwrap().unwrap();
    assert_eq!(total, 2500);
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let (mut session, mut client) = pair();
    let mut held = Vec::new();
    for i in 0..MAX_STREAMS as u32 {
        client.open(2 * i + 1, "data").await;
        held.push(session.accept().await.unwrap());
        assert!(matches!(client.next().await, Some(Frame::SynReply { .. })));
    }
    let over = 2 * MAX_STREAMS as u32 + 1;
    client.open(over, "data").await;
    assert_eq!(
        client.next().await.unwrap(),
        Frame::RstStream {
            stream_id: over,
            status: rst::REFUSED_STREAM
        }
    );
}

#[tokio::test]
async fn a_stream_that_is_not_read_stops_the_connection_being_read() {
    let (mut session, mut client) = pair();
    client.open(1, "stdin").await;
    let mut s = session.accept().await.unwrap();
    // Twice the buffer: the session buffers STREAM_BUFFER and then stops reading.
    let chunk = Bytes::from(vec![1u8; 32 * 1024]);
    let n = 2 * STREAM_BUFFER / chunk.len();
    let sending = tokio::spawn(async move {
        for _ in 0..n {
            client
                .send(Frame::Data {
                    stream_id: 1,
                    flags: 0,
                    data: chunk.clone(),
                })
                .await;
        }
        client
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.reader.budget.available_permits() == 0);
    let mut total = 0;
    while total < 2 * STREAM_BUFFER {
        total += s.reader.read().await.unwrap().len();
    }
    let _client = sending.await.unwrap();
}

#[tokio::test]
async fn a_protocol_error_ends_the_session_with_goaway() {
    let (mut session, mut client) = pair();
    client.open(2, "stdout").await; // even: server-side ids
    assert!(matches!(
        client.next_non_window().await.unwrap(),
        Frame::GoAway {
            status: goaway::PROTOCOL_ERROR,
            ..
        }
    ));
    assert!(session.accept().await.is_none());
}

#[tokio::test]
async fn closed_streams_free_their_slot() {
    let (mut session, mut client) = pair();
    // More streams over time than the limit, each closed both ways.
    for i in 0..(MAX_STREAMS as u32 + 10) {
        let id = 2 * i + 1;
        client.open(id, "data").await;
        let mut s = session.accept().await.unwrap();
        assert!(matches!(client.next().await, Some(Frame::SynReply { .. })));
        client
            .send(Frame::Data {
                stream_id: id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await;
        assert_eq!(s.reader.read().await, None);
        s.writer.close().await.unwrap();
        assert!(matches!(
            client.next().await,
            Some(Frame::Data {
                flags: FLAG_FIN,
                ..
            })
        ));
    }
    assert!(session.shared.streams().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_reach_the_peer_in_stream_id_order() {
    // Port-forward clients open two streams per local connection from many tasks at once;
    // the peer refuses (as a protocol error) any SYN_STREAM whose id is below one it saw.
    // A tiny pipe keeps the writer (and so every open) waiting, which is when opens used to
    // overtake each other.
    let (a, b) = tokio::io::duplex(64);
    let client = Arc::new(Session::start(a).unwrap());
    let mut server = Session::start(b).unwrap();
    let opens: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let kind = if i % 2 == 0 { "data" } else { "error" };
                client.open(Headers::new().with("streamType", kind)).await
            })
        })
        .collect();
    for n in 0..200 {
        let st = tokio::time::timeout(Duration::from_secs(10), server.accept())
            .await
            .unwrap_or_else(|_| panic!("stream {n} never arrived"));
        assert!(st.is_some(), "the session broke after {n} streams");
    }
    for o in opens {
        assert!(o.await.unwrap().is_ok());
    }
}
