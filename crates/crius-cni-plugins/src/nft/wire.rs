//! Netlink encoding and decoding of nf_tables messages.

use std::io;

use super::abi::k;

/// Netlink messages back to back; nested attributes are closed by patching their length.
#[derive(Default)]
pub(super) struct Msgs {
    pub(super) buf: Vec<u8>,
}

impl Msgs {
    /// Start a message: nlmsghdr + nfgenmsg. Returns its offset for [`Msgs::end`].
    pub(super) fn begin(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version NFNETLINK_V0, res_id (big endian).
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    pub(super) fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, ty: u16, data: &[&[u8]]) {
        let len: usize = 4 + data.iter().map(|d| d.len()).sum::<usize>();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        for d in data {
            self.buf.extend_from_slice(d);
        }
        self.pad();
    }

    /// nf_tables integers are big endian.
    pub(super) fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &[&v.to_be_bytes()]);
    }

    pub(super) fn u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &[&v.to_be_bytes()]);
    }

    pub(super) fn str(&mut self, ty: u16, s: &str) {
        self.attr(ty, &[s.as_bytes(), &[0]]);
    }

    pub(super) fn bytes(&mut self, ty: u16, b: &[u8]) {
        self.attr(ty, &[b]);
    }

    /// A value wrapped in `nft_data_attributes`.
    pub(super) fn data(&mut self, ty: u16, value: &[u8]) {
        let n = self.nest(ty);
        self.bytes(k::NFTA_DATA_VALUE, value);
        self.nest_end(n);
    }

    pub(super) fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | k::NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub(super) fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

pub(super) fn msg_type(nft_msg: u8) -> u16 {
    (k::NFNL_SUBSYS_NFTABLES << 8) | u16::from(nft_msg)
}

/// A received netlink message.
pub(super) struct NlMsg<'a> {
    pub(super) ty: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

fn ne_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

pub(super) fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The messages of one datagram; stops at the first malformed header.
pub(super) fn messages(mut buf: &[u8]) -> impl Iterator<Item = NlMsg<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = ne_u32(buf, 0) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let m = NlMsg {
            ty: ne_u16(buf, 4),
            flags: ne_u16(buf, 6),
            seq: ne_u32(buf, 8),
            payload: &buf[16..len],
        };
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(m)
    })
}

/// The attributes in `buf`: (type without flags, value).
pub(super) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(ne_u16(buf, 0));
        if len < 4 || len > buf.len() {
            return None;
        }
        let a = (ne_u16(buf, 2) & k::NLA_TYPE_MASK, &buf[4..len]);
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(a)
    })
}

pub(super) fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// An NLMSG_ERROR payload: the errno (0 for an ACK) and the kernel's message, if any.
pub(super) fn nl_error(m: &NlMsg<'_>) -> (i32, Option<String>) {
    let p = m.payload;
    if p.len() < 4 {
        return (-libc::EPROTO, None);
    }
    let errno = -(ne_u32(p, 0) as i32);
    let mut msg = None;
    if m.flags & k::NLM_F_ACK_TLVS != 0 && p.len() >= 20 {
        // The echoed request is only its header when capped.
        let echoed = if m.flags & k::NLM_F_CAPPED != 0 {
            16
        } else {
            (ne_u32(p, 4) as usize).next_multiple_of(4)
        };
        if let Some(tlvs) = p.get(4 + echoed..) {
            msg = attrs(tlvs)
                .find(|(t, _)| *t == k::NLMSGERR_ATTR_MSG)
                .map(|(_, v)| c_str(v));
        }
    }
    (errno, msg)
}

pub(super) fn os_error(errno: i32, msg: Option<String>) -> String {
    let e = io::Error::from_raw_os_error(errno);
    match msg {
        Some(m) if !m.is_empty() => format!("{e}: {m}"),
        _ => e.to_string(),
    }
}
