//! A tiny HTTP/1.1 server on 127.0.0.1 for the client tests: one request per connection, the
//! response computed by a closure, every request recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn new(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Resp {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Resp {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(&Req, &str) -> Resp + Send + Sync;

pub struct Server {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// `handler(request, "http://127.0.0.1:port")`.
    pub async fn start(handler: impl Fn(&Req, &str) -> Resp + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let base = format!("http://{addr}");
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log, base) = (handler.clone(), log2.clone(), base.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, &*handler, &log, &base).await;
                });
            }
        });
        Server { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:port`, usable as a registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r.path_only().to_string())
            .collect()
    }
}

async fn serve(
    mut conn: TcpStream,
    handler: &Handler,
    log: &Mutex<Vec<Req>>,
    base: &str,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Req {
        method,
        path,
        headers,
        body,
    };
    log.lock().unwrap().push(req.clone());
    let resp = handler(&req, base);
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
    // "X-No-Length" makes the body end at connection close, as HTTP/1.1 allows.
    let has_len = resp
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length") || n == "X-No-Length");
    for (n, v) in resp.headers.iter().filter(|(n, _)| n != "X-No-Length") {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !has_len {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes()).await?;
    if req.method != "HEAD" {
        conn.write_all(&resp.body).await?;
    }
    conn.shutdown().await
}
