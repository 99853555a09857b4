//! SPDY/3.1 frames: parsing from a byte buffer and writing to one, bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::SpdyError;
use super::headers::{HeaderDecoder, HeaderEncoder, Headers};

pub const VERSION: u16 = 3;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Largest DATA payload accepted (clients write 32 KiB at a time).
pub const MAX_DATA_PAYLOAD: usize = 1024 * 1024;
/// Largest control frame payload accepted (a compressed header block and a few fields).
pub const MAX_CONTROL_PAYLOAD: usize = 64 * 1024 + 16;
/// Most SETTINGS entries in one frame (there are eight settings).
pub const MAX_SETTINGS: usize = 64;

const HEADER_LEN: usize = 8;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used by crius.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS ids crius reads.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define (ignored, as the spec says).
    Unknown {
        kind: u16,
    },
}

/// Parses and writes frames of one session; holds the header compression contexts, which
/// live as long as the session.
pub struct Codec {
    /// Made on the first header block written: a session's reading side never needs one.
    enc: Option<HeaderEncoder>,
    dec: HeaderDecoder,
}

impl Codec {
    pub fn new() -> Result<Codec, SpdyError> {
        Ok(Codec {
            enc: None,
            dec: HeaderDecoder::new(),
        })
    }

    fn encode_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let enc = match &mut self.enc {
            Some(e) => e,
            None => self.enc.insert(HeaderEncoder::new()?),
        };
        enc.encode(headers)
    }

    /// The next whole frame in `buf` (consumed), or `None` if more bytes are needed. An error
    /// is fatal to the session: the header contexts may be out of step after it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        let control = word & 0x8000_0000 != 0;
        let limit = if control {
            MAX_CONTROL_PAYLOAD
        } else {
            MAX_DATA_PAYLOAD
        };
        if len > limit {
            return Err(SpdyError::Protocol(format!(
                "frame of {len} bytes, at most {limit} accepted"
            )));
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let mut p = buf.split_to(len).freeze();
        if !control {
            return Ok(Some(Frame::Data {
                stream_id: word & 0x7fff_ffff,
                flags,
                data: p,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Protocol(format!(
                "SPDY version {version}, only 3 is spoken"
            )));
        }
        let kind = (word & 0xffff) as u16;
        let need = |n: usize, p: &Bytes| -> Result<(), SpdyError> {
            if p.len() < n {
                Err(SpdyError::Protocol(format!(
                    "control frame type {kind} of {} bytes is too short",
                    p.len()
                )))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10, &p)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let _slot = p.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers: self.dec.decode(&p)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4, &p)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.dec.decode(&p)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8, &p)?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            SETTINGS => {
                need(4, &p)?;
                let n = p.get_u32() as usize;
                if n > MAX_SETTINGS || p.len() != n * 8 {
                    return Err(SpdyError::Protocol(format!(
                        "SETTINGS with {n} entries in {} bytes",
                        p.len()
                    )));
                }
                let entries = (0..n)
                    .map(|_| {
                        let w = p.get_u32();
                        ((w >> 24) as u8, w & 0x00ff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4, &p)?;
                Frame::Ping { id: p.get_u32() }
            }
            GOAWAY => {
                need(8, &p)?;
                Frame::GoAway {
                    last_good_stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            WINDOW_UPDATE => {
                need(8, &p)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > 0x00ff_ffff {
                    return Err(SpdyError::Protocol("DATA frame over 16 MiB".into()));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(((*flags as u32) << 24) | data.len() as u32);
                out.put_slice(data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let block = self.encode_headers(headers)?;
                control(out, SYN_STREAM, *flags, 10 + block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_to & 0x7fff_ffff);
                out.put_u8((priority & 0x7) << 5);
                out.put_u8(0);
                out.put_slice(&block);
                Ok(())
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let block = self.encode_headers(headers)?;
                control(out, kind, *flags, 4 + block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(&block);
                Ok(())
            }
            Frame::RstStream { stream_id, status } => {
                control(out, RST_STREAM, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
                Ok(())
            }
            Frame::Settings { flags, entries } => {
                control(out, SETTINGS, *flags, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for (f, id, v) in entries {
                    out.put_u32(((*f as u32) << 24) | (id & 0x00ff_ffff));
                    out.put_u32(*v);
                }
                Ok(())
            }
            Frame::Ping { id } => {
                control(out, PING, 0, 4);
                out.put_u32(*id);
                Ok(())
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
                Ok(())
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
                Ok(())
            }
            Frame::Unknown { kind } => Err(SpdyError::Protocol(format!(
                "cannot write a control frame of unknown type {kind}"
            ))),
        }
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(((flags as u32) << 24) | (len as u32 & 0x00ff_ffff));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        let h = Headers::new().with("streamtype", "stdin");
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: h.clone(),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: goaway::OK,
            },
            Frame::Headers {
                stream_id: 5,
                flags: 0,
                headers: h,
            },
            Frame::WindowUpdate {
                stream_id: 5,
                delta: 0x7fff_ffff,
            },
            Frame::Data {
                stream_id: 0x7fff_fffd,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::new(),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_even_split_byte_by_byte() {
        let mut tx = Codec::new().unwrap();
        let mut wire = BytesMut::new();
        for f in all_frames() {
            tx.encode(&f, &mut wire).unwrap();
        }
        // Whole buffer at once.
        let mut rx = Codec::new().unwrap();
        let mut buf = wire.clone();
        let mut got = Vec::new();
        while let Some(f) = rx.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, all_frames());
        assert!(buf.is_empty());
        // One byte at a time: a frame is only returned once complete.
        let mut rx = Codec::new().unwrap();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = rx.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all_frames());
    }

    #[test]
    fn wire_layout_of_fixed_frames() {
        let mut c = Codec::new().unwrap();
        let mut out = BytesMut::new();
        c.encode(&Frame::Ping { id: 0x01020304 }, &mut out).unwrap();
        assert_eq!(
            &out[..],
            b"\x80\x03\x00\x06\x00\x00\x00\x04\x01\x02\x03\x04"
        );
        out.clear();
        c.encode(
            &Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..], b"\x00\x00\x00\x05\x01\x00\x00\x02ab");
        out.clear();
        c.encode(
            &Frame::WindowUpdate {
                stream_id: 1,
                delta: 10,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            b"\x80\x03\x00\x09\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x0a"
        );
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut c = Codec::new().unwrap();
        // A DATA frame announcing 16 MiB - 1: refused from its 8-byte header alone.
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x01\x00\xff\xff\xff"[..]);
        assert!(c.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"\x80\x03\x00\x01\x00\x10\x00\x00"[..]);
        assert!(c.decode(&mut buf).is_err());
    }

    #[test]
    fn malformed_control_frames_are_errors() {
        for bad in [
            &b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"[..], // version 2
            &b"\x80\x03\x00\x06\x00\x00\x00\x02\x00\x00"[..],         // short PING
            &b"\x80\x03\x00\x03\x00\x00\x00\x04\x00\x00\x00\x01"[..], // short RST_STREAM
            &b"\x80\x03\x00\x04\x00\x00\x00\x04\x00\x01\x00\x00"[..], // SETTINGS count lies
            &b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00junk"[..],
        ] {
            let mut c = Codec::new().unwrap();
            let mut buf = BytesMut::from(bad);
            assert!(c.decode(&mut buf).is_err(), "{bad:?}");
        }
        // An unknown control type is skipped, not fatal.
        let mut c = Codec::new().unwrap();
        let mut buf = BytesMut::from(&b"\x80\x03\x00\x0a\x00\x00\x00\x02xy"[..]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Frame::Unknown { kind: 10 })
        );
    }
}
