//! SPDY/3.1, the framing kubectl, crictl and the kubelet speak on a streaming connection
//! after the HTTP upgrade. No maintained Rust crate speaks it, so it lives here: frames and
//! header compression ([`frame`], [`headers`]) and, on top, sessions of streams.
//!
//! Every size a peer controls is bounded: frame payloads, header blocks (inflated size and
//! pair count), SETTINGS entries.

pub mod dictionary;
pub mod frame;
pub mod headers;
pub mod session;

pub use frame::{Codec, Frame};
pub use headers::Headers;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    #[error("SPDY header compression: {0}")]
    Compression(String),
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
}
