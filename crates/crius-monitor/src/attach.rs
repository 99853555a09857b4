//! Framing of an attach connection.
//!
//! After `v1 attach id=<id> stdin=<0|1> stdout=<0|1> stderr=<0|1>` is answered `v1 ok`, the
//! connection stops carrying lines and carries frames both ways until either side closes it:
//!
//! ```text
//! kind: u8 | length: u32 big-endian | payload (length bytes, at most MAX_PAYLOAD)
//! ```
//!
//! From the client: [`STDIN`] data, [`STDIN_EOF`] (empty), [`RESIZE`] (width and height, two
//! u16 big-endian). From the monitor: [`STDOUT`] and [`STDERR`] data (a TTY container's
//! console is `STDOUT`), then [`EXIT`] (the exit code, i32 big-endian) once the container
//! exited, after which the monitor closes the connection. A frame of an unknown kind or over
//! the size limit ends the connection.
//!
//! A `stream-exec` connection carries the same frames after its `v1 ok`: the exec'd process's
//! stdio instead of the container's, and [`EXIT`] with the process's exit code. Closing it
//! from the client side kills the process.

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STDIN_EOF: u8 = 3;
pub const RESIZE: u8 = 4;
pub const EXIT: u8 = 5;

pub const HEADER_LEN: usize = 5;
/// Largest payload either side accepts.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Appends one frame to `out`.
pub fn encode(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A frame that breaks the rules: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attach frame: {}", self.0)
    }
}

impl std::error::Error for FrameError {}

/// A decoded frame: `(kind, payload, bytes used)`.
pub type Frame<'a> = (u8, &'a [u8], usize);

/// The first frame in `buf`, or `None` if it is incomplete.
pub fn decode(buf: &[u8]) -> Result<Option<Frame<'_>>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[0];
    if kind > EXIT {
        return Err(FrameError(format!("unknown frame kind {kind}")));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError(format!(
            "frame of {len} bytes, more than {MAX_PAYLOAD}"
        )));
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    Ok(Some((
        kind,
        &buf[HEADER_LEN..HEADER_LEN + len],
        HEADER_LEN + len,
    )))
}

/// The payload of a [`RESIZE`] frame.
pub fn resize_payload(width: u16, height: u16) -> [u8; 4] {
    let (w, h) = (width.to_be_bytes(), height.to_be_bytes());
    [w[0], w[1], h[0], h[1]]
}

/// `(width, height)` from a [`RESIZE`] payload.
pub fn parse_resize(p: &[u8]) -> Option<(u16, u16)> {
    match p {
        [a, b, c, d] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_and_are_bounded() {
        let mut b = Vec::new();
        encode(&mut b, STDOUT, b"hello");
        encode(&mut b, RESIZE, &resize_payload(80, 24));
        let (k, p, n) = decode(&b).unwrap().unwrap();
        assert_eq!((k, p, n), (STDOUT, &b"hello"[..], 10));
        let (k, p, _) = decode(&b[n..]).unwrap().unwrap();
        assert_eq!((k, parse_resize(p)), (RESIZE, Some((80, 24))));
        assert_eq!(decode(&b[..7]).unwrap(), None);
        assert!(decode(&[9, 0, 0, 0, 0]).is_err());
        let big = ((MAX_PAYLOAD + 1) as u32).to_be_bytes();
        assert!(decode(&[STDIN, big[0], big[1], big[2], big[3]]).is_err());
    }
}
