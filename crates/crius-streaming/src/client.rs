//! The client side: upgrading a streaming URL to a SPDY session (criusctl uses it).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spdy::SpdyError;
use crate::spdy::session::Session;

/// Largest response head accepted from the server.
const MAX_HEAD: usize = 16 * 1024;

fn err(m: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(m.into())
}

/// Connects to `url` (plain http), asks to upgrade to SPDY/3.1 with `protocols` (most
/// preferred first), and returns the session and the protocol the server chose.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<(Session, String), SpdyError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err(format!("{url}: only http:// streaming URLs are supported")))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let _ = s.set_nodelay(true);
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // Byte by byte: nothing after the head may be swallowed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 || head.len() > MAX_HEAD {
            return Err(err("the streaming server closed the connection"));
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        let status = head.lines().next().unwrap_or("").to_string();
        // The body, if any, says why.
        let mut body = vec![0u8; 1024];
        let n = s.read(&mut body).await.unwrap_or(0);
        return Err(err(format!(
            "upgrade refused: {status}: {}",
            String::from_utf8_lossy(&body[..n]).trim()
        )));
    }
    let protocol = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("x-stream-protocol-version")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((Session::start(s)?, protocol))
}
