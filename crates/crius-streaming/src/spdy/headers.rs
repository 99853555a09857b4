//! Header blocks: the name/value list of SYN_STREAM, SYN_REPLY and HEADERS, zlib-compressed
//! against the SPDY/3 dictionary with one compression context per direction per session.
//!
//! Decoding is bounded: the inflated block may not exceed [`MAX_HEADER_BLOCK`] (a few hundred
//! compressed bytes could otherwise inflate to megabytes), nor hold more than
//! [`MAX_HEADERS`] pairs.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;
use super::dictionary::dictionary;

/// Largest inflated header block accepted.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Most name/value pairs in one block.
pub const MAX_HEADERS: usize = 128;

/// Name/value pairs in order. Names are lower case on the wire; a value may hold several
/// values separated by NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    pub fn with(mut self, name: &str, value: &str) -> Headers {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }

    /// The uncompressed block: count, then each name and value behind its 32-bit length.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (n, v) in &self.0 {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    pub fn decode_block(mut b: &[u8]) -> Result<Headers, SpdyError> {
        let count = take_u32(&mut b)? as usize;
        if count > MAX_HEADERS {
            return Err(SpdyError::Protocol(format!(
                "{count} headers in one block, at most {MAX_HEADERS} accepted"
            )));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take_str(&mut b)?;
            if name.is_empty() {
                return Err(SpdyError::Protocol("empty header name".into()));
            }
            let value = take_str(&mut b)?;
            pairs.push((name.to_ascii_lowercase(), value));
        }
        if !b.is_empty() {
            return Err(SpdyError::Protocol(
                "trailing bytes after the header block".into(),
            ));
        }
        Ok(Headers(pairs))
    }
}

fn take_u32(b: &mut &[u8]) -> Result<u32, SpdyError> {
    let Some((head, rest)) = b.split_first_chunk::<4>() else {
        return Err(SpdyError::Protocol("header block truncated".into()));
    };
    *b = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_str(b: &mut &[u8]) -> Result<String, SpdyError> {
    let n = take_u32(b)? as usize;
    if n > b.len() {
        return Err(SpdyError::Protocol("header block truncated".into()));
    }
    let (s, rest) = b.split_at(n);
    *b = rest;
    String::from_utf8(s.to_vec())
        .map_err(|_| SpdyError::Protocol("a header name or value is not UTF-8".into()))
}

/// Compresses outgoing header blocks (one per direction per session).
pub struct HeaderEncoder {
    z: Compress,
}

impl HeaderEncoder {
    pub fn new() -> Result<HeaderEncoder, SpdyError> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary())
            .map_err(|e| SpdyError::Compression(e.to_string()))?;
        Ok(HeaderEncoder { z })
    }

    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let block = headers.encode_block();
        let mut out = Vec::with_capacity(block.len() + 64);
        let start_in = self.z.total_in();
        loop {
            let consumed = (self.z.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(block.len() + 64);
            }
            self.z
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let done = (self.z.total_in() - start_in) as usize == block.len();
            // A sync flush is complete once all input is in and the output did not fill.
            if done && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Inflates incoming header blocks (one per direction per session), within the bounds.
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder::new()
    }
}

impl HeaderDecoder {
    pub fn new() -> HeaderDecoder {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }

    pub fn decode(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let mut input = compressed;
        loop {
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let r = self.z.decompress(input, &mut chunk, FlushDecompress::Sync);
            let used = (self.z.total_in() - in0) as usize;
            let made = (self.z.total_out() - out0) as usize;
            input = &input[used..];
            if out.len() + made > MAX_HEADER_BLOCK {
                return Err(SpdyError::Protocol(format!(
                    "header block inflates past {MAX_HEADER_BLOCK} bytes"
                )));
            }
            out.extend_from_slice(&chunk[..made]);
            match r {
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::Compression(
                        "the header compression stream ended".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            if input.is_empty() && made < chunk.len() {
                break;
            }
            if used == 0 && made == 0 {
                return Err(SpdyError::Compression(
                    "header block does not end on a flush".into(),
                ));
            }
        }
        Headers::decode_block(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn block_round_trip_through_one_context_per_direction() {
        let mut enc = HeaderEncoder::new().unwrap();
        let mut dec = HeaderDecoder::new();
        for i in 0..20 {
            let h = Headers::new()
                .with("streamType", "stdout")
                .with("port", &format!("{}", 8000 + i))
                .with("requestid", &i.to_string());
            let z = enc.encode(&h).unwrap();
            assert_eq!(dec.decode(&z).unwrap(), h, "block {i}");
        }
        let empty = Headers::new();
        assert_eq!(dec.decode(&enc.encode(&empty).unwrap()).unwrap(), empty);
    }

    #[test]
    fn decodes_blocks_made_by_c_zlib() {
        // Two successive blocks of one stream, compressed by C zlib (Python's zlib module)
        // with the dictionary, as Go's framer and kubectl send them.
        let mut dec = HeaderDecoder::new();
        let h = dec
            .decode(&unhex(
                "78bbe3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff",
            ))
            .unwrap();
        assert_eq!(h, Headers::new().with("streamtype", "error"));
        let h = dec
            .decode(&unhex("c22a054ccc29f9a52500000000ffff"))
            .unwrap();
        assert_eq!(h.get("streamType"), Some("stdout"));
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        // One header whose value is 1 MiB of zeros: compresses to about a kilobyte.
        let h = Headers::new().with("x", &"\0".repeat(1 << 20));
        let z = HeaderEncoder::new().unwrap().encode(&h).unwrap();
        assert!(z.len() < 8 * 1024, "{}", z.len());
        let err = HeaderDecoder::new().decode(&z).unwrap_err();
        assert!(err.to_string().contains("inflates past"), "{err}");
    }

    #[test]
    fn too_many_headers_and_truncation_are_refused() {
        let mut h = Headers::new();
        for i in 0..=MAX_HEADERS {
            h = h.with(&format!("h{i}"), "v");
        }
        let err = Headers::decode_block(&h.encode_block()).unwrap_err();
        assert!(err.to_string().contains("headers in one block"), "{err}");
        let block = Headers::new().with("a", "b").encode_block();
        for cut in 0..block.len() {
            assert!(
                Headers::decode_block(&block[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // A length that runs past the block.
        let mut bad = block.clone();
        bad[7] = 200;
        assert!(Headers::decode_block(&bad).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut dec = HeaderDecoder::new();
        assert!(dec.decode(b"\x00\x01\x02\x03garbage").is_err());
    }
}
