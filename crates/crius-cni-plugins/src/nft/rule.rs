//! Tables, chains and rules: the statements crius's plugins use, as nf_tables expressions.

use std::fmt;
use std::net::IpAddr;

use super::MAX_COMMENT;
use super::abi::k;
use super::wire::Msgs;
use crate::error::{CniError, Result};
use crate::types::IpNet;

/// The hooks of crius's base chains: NAT chains, and one filter chain on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Output,
    Postrouting,
    /// A `type filter` chain (input has no NAT chains here).
    Input,
}

impl Hook {
    pub(super) fn num(self) -> u32 {
        match self {
            Hook::Prerouting => k::NF_INET_PRE_ROUTING,
            Hook::Output => k::NF_INET_LOCAL_OUT,
            Hook::Postrouting => k::NF_INET_POST_ROUTING,
            Hook::Input => k::NF_INET_LOCAL_IN,
        }
    }

    /// The chain type a base chain on this hook gets.
    pub(super) fn chain_type(self) -> &'static str {
        match self {
            Hook::Input => "filter",
            _ => "nat",
        }
    }
}

/// `priority dstnat`
pub const PRIO_DSTNAT: i32 = -100;
/// `priority srcnat`
pub const PRIO_SRCNAT: i32 = 100;

/// A base chain `{ type nat hook <hook> priority <priority>; policy accept; }` (`type filter`
/// on the input hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatChain {
    pub name: &'static str,
    pub hook: Hook,
    pub priority: i32,
}

/// A table `inet <name>` holding NAT base chains.
#[derive(Debug, Clone, Copy)]
pub struct NatTable<'a> {
    pub name: &'a str,
    pub chains: &'a [NatChain],
}

/// The layer-3 protocol of a rule (`meta nfproto`), which `ip`/`ip6` matches depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfProto {
    Ipv4,
    Ipv6,
}

impl NfProto {
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            NfProto::Ipv4
        } else {
            NfProto::Ipv6
        }
    }

    fn num(self) -> u8 {
        match self {
            NfProto::Ipv4 => k::NFPROTO_IPV4,
            NfProto::Ipv6 => k::NFPROTO_IPV6,
        }
    }

    /// The nft keyword of the address family (`ip`, `ip6`).
    fn family(self) -> &'static str {
        match self {
            NfProto::Ipv4 => "ip",
            NfProto::Ipv6 => "ip6",
        }
    }
}

/// Transport protocols a port can be matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Proto {
    Tcp,
    Udp,
    Sctp,
}

impl L4Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
            L4Proto::Sctp => "sctp",
        }
    }

    fn num(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
            L4Proto::Sctp => 132,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stmt {
    NfProto(NfProto),
    Addr { src: bool, neq: bool, net: IpNet },
    FibDaddrLocal,
    Dport(L4Proto, u16),
    CtStatusDnat,
    CtStatusNotDnat,
    IifnameNe(String),
    Masquerade,
    Dnat(IpAddr, u16),
    Drop,
}

/// A rule in one of the table's chains, built from the statements crius's plugins use.
///
/// ```
/// # use crius_cni_plugins::{nft::Rule, types::IpNet};
/// let ip: IpNet = "10.99.0.5/16".parse().unwrap();
/// let r = Rule::new("postrouting")
///     .saddr(IpNet::host(ip.addr))
///     .daddr_ne(ip.trunc())
///     .masquerade()
///     .comment("abc/eth0/net");
/// assert_eq!(
///     r.to_string(),
///     r#"postrouting: ip saddr 10.99.0.5 ip daddr != 10.99.0.0/16 masquerade comment "abc/eth0/net""#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub(super) chain: String,
    stmts: Vec<Stmt>,
    comment: Option<String>,
}

impl Rule {
    pub fn new(chain: &str) -> Self {
        Self {
            chain: chain.to_owned(),
            stmts: Vec::new(),
            comment: None,
        }
    }

    /// `meta nfproto ipv4|ipv6`
    pub fn nfproto(mut self, p: NfProto) -> Self {
        self.stmts.push(Stmt::NfProto(p));
        self
    }

    fn addr(mut self, src: bool, neq: bool, net: IpNet) -> Self {
        self.stmts.push(Stmt::Addr { src, neq, net });
        self
    }

    /// `ip saddr <net>` / `ip6 saddr <net>` (a full-length prefix matches one address).
    pub fn saddr(self, net: IpNet) -> Self {
        self.addr(true, false, net)
    }

    /// `ip daddr <net>` / `ip6 daddr <net>`
    pub fn daddr(self, net: IpNet) -> Self {
        self.addr(false, false, net)
    }

    /// `ip daddr != <net>` / `ip6 daddr != <net>`
    pub fn daddr_ne(self, net: IpNet) -> Self {
        self.addr(false, true, net)
    }

    /// `fib daddr type local`
    pub fn fib_daddr_local(mut self) -> Self {
        self.stmts.push(Stmt::FibDaddrLocal);
        self
    }

    /// `tcp|udp|sctp dport <port>`
    pub fn dport(mut self, proto: L4Proto, port: u16) -> Self {
        self.stmts.push(Stmt::Dport(proto, port));
        self
    }

    /// `ct status dnat`
    pub fn ct_status_dnat(mut self) -> Self {
        self.stmts.push(Stmt::CtStatusDnat);
        self
    }

    /// `ct status & dnat == 0`: the connection was not DNATed.
    pub fn ct_status_not_dnat(mut self) -> Self {
        self.stmts.push(Stmt::CtStatusNotDnat);
        self
    }

    /// `iifname != "<name>"`
    pub fn iifname_ne(mut self, name: &str) -> Self {
        self.stmts.push(Stmt::IifnameNe(name.to_owned()));
        self
    }

    /// `drop`
    pub fn drop_packet(mut self) -> Self {
        self.stmts.push(Stmt::Drop);
        self
    }

    /// `masquerade`
    pub fn masquerade(mut self) -> Self {
        self.stmts.push(Stmt::Masquerade);
        self
    }

    /// `dnat ip to <addr>:<port>` / `dnat ip6 to [<addr>]:<port>`
    pub fn dnat(mut self, addr: IpAddr, port: u16) -> Self {
        self.stmts.push(Stmt::Dnat(addr, port));
        self
    }

    /// `comment "<text>"`, at most 127 bytes.
    pub fn comment(mut self, text: &str) -> Self {
        self.comment = Some(text.to_owned());
        self
    }

    /// The expressions `nft` generates for the rule's text, in order. Like nft in an `inet`
    /// table, an `ip`/`ip6` match first checks `meta nfproto` and a port match first checks
    /// `meta l4proto`, unless the rule already established them.
    pub(super) fn exprs(&self) -> Result<Vec<Expr>> {
        let bad = |why: &str| CniError::internal(format!("invalid nftables rule `{self}`"), why);
        let mut out = Vec::new();
        let mut l3: Option<NfProto> = None;
        let mut l4: Option<L4Proto> = None;
        let require_l3 = |out: &mut Vec<Expr>, l3: &mut Option<NfProto>, p: NfProto| match l3 {
            Some(have) if *have == p => Ok(()),
            Some(_) => Err(bad("it mixes ipv4 and ipv6")),
            None => {
                out.push(Expr::Meta(k::NFT_META_NFPROTO));
                out.push(Expr::Cmp(Op::Eq, vec![p.num()]));
                *l3 = Some(p);
                Ok(())
            }
        };
        for s in &self.stmts {
            match *s {
                Stmt::NfProto(p) => {
                    if l3.is_some_and(|have| have != p) {
                        return Err(bad("it mixes ipv4 and ipv6"));
                    }
                    out.push(Expr::Meta(k::NFT_META_NFPROTO));
                    out.push(Expr::Cmp(Op::Eq, vec![p.num()]));
                    l3 = Some(p);
                }
                Stmt::Addr { src, neq, net } => {
                    let p = NfProto::of(net.addr);
                    require_l3(&mut out, &mut l3, p)?;
                    let (bytes, offset) = match (net.addr, src) {
                        (IpAddr::V4(a), true) => (a.octets().to_vec(), 12),
                        (IpAddr::V4(a), false) => (a.octets().to_vec(), 16),
                        (IpAddr::V6(a), true) => (a.octets().to_vec(), 8),
                        (IpAddr::V6(a), false) => (a.octets().to_vec(), 24),
                    };
                    let full = bytes.len() as u32;
                    let prefix = u32::from(net.prefix);
                    if prefix > full * 8 {
                        return Err(bad("address prefix too long"));
                    }
                    let op = if neq { Op::Neq } else { Op::Eq };
                    let net_bytes = masked(&bytes, prefix);
                    if prefix == full * 8 {
                        out.push(Expr::Payload(k::NFT_PAYLOAD_NETWORK_HEADER, offset, full));
                        out.push(Expr::Cmp(op, bytes));
                    } else if prefix > 0 && prefix % 8 == 0 {
                        // nft loads only the prefix bytes of a byte-aligned prefix.
                        let len = prefix / 8;
                        out.push(Expr::Payload(k::NFT_PAYLOAD_NETWORK_HEADER, offset, len));
                        out.push(Expr::Cmp(op, net_bytes[..len as usize].to_vec()));
                    } else {
                        out.push(Expr::Payload(k::NFT_PAYLOAD_NETWORK_HEADER, offset, full));
                        let mask = masked(&vec![0xff; full as usize], prefix);
                        out.push(Expr::Bitwise(mask, vec![0; full as usize]));
                        out.push(Expr::Cmp(op, net_bytes));
                    }
                }
                Stmt::FibDaddrLocal => {
                    out.push(Expr::Fib(k::NFT_FIB_RESULT_ADDRTYPE, k::NFTA_FIB_F_DADDR));
                    // The address type is a host-endian u32 (RTN_*).
                    out.push(Expr::Cmp(Op::Eq, k::RTN_LOCAL.to_ne_bytes().to_vec()));
                }
                Stmt::Dport(proto, port) => {
                    if l4 != Some(proto) {
                        out.push(Expr::Meta(k::NFT_META_L4PROTO));
                        out.push(Expr::Cmp(Op::Eq, vec![proto.num()]));
                        l4 = Some(proto);
                    }
                    out.push(Expr::Payload(k::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
                    out.push(Expr::Cmp(Op::Eq, port.to_be_bytes().to_vec()));
                }
                Stmt::CtStatusDnat => {
                    // ct status is a host-endian bit set.
                    out.push(Expr::Ct(k::NFT_CT_STATUS));
                    out.push(Expr::Bitwise(
                        k::IPS_DST_NAT.to_ne_bytes().to_vec(),
                        vec![0; 4],
                    ));
                    out.push(Expr::Cmp(Op::Neq, vec![0; 4]));
                }
                Stmt::CtStatusNotDnat => {
                    out.push(Expr::Ct(k::NFT_CT_STATUS));
                    out.push(Expr::Bitwise(
                        k::IPS_DST_NAT.to_ne_bytes().to_vec(),
                        vec![0; 4],
                    ));
                    out.push(Expr::Cmp(Op::Eq, vec![0; 4]));
                }
                Stmt::IifnameNe(ref name) => {
                    if name.is_empty() || name.len() >= k::IFNAMSIZ || name.contains('\0') {
                        return Err(bad("invalid interface name"));
                    }
                    // An exact match compares the NUL-padded IFNAMSIZ bytes, as nft does.
                    let mut bytes = name.as_bytes().to_vec();
                    bytes.resize(k::IFNAMSIZ, 0);
                    out.push(Expr::Meta(k::NFT_META_IIFNAME));
                    out.push(Expr::Cmp(Op::Neq, bytes));
                }
                Stmt::Drop => out.push(Expr::Verdict(k::NF_DROP)),
                Stmt::Masquerade => out.push(Expr::Masq),
                Stmt::Dnat(addr, port) => {
                    let p = NfProto::of(addr);
                    if l3.is_some_and(|have| have != p) {
                        return Err(bad("it mixes ipv4 and ipv6"));
                    }
                    let bytes = match addr {
                        IpAddr::V4(a) => a.octets().to_vec(),
                        IpAddr::V6(a) => a.octets().to_vec(),
                    };
                    out.push(Expr::Immediate(k::NFT_REG_1, bytes));
                    out.push(Expr::Immediate(k::NFT_REG_2, port.to_be_bytes().to_vec()));
                    out.push(Expr::Dnat(p));
                }
            }
        }
        Ok(out)
    }

    /// NFTA_RULE_USERDATA: libnftnl's TLVs, here only the NUL-terminated comment.
    pub(super) fn userdata(&self) -> Result<Option<Vec<u8>>> {
        let Some(c) = &self.comment else {
            return Ok(None);
        };
        if c.len() > MAX_COMMENT || c.contains('\0') {
            return Err(CniError::internal(
                format!("invalid nftables rule `{self}`"),
                "comment longer than 127 bytes or containing NUL",
            ));
        }
        let mut u = vec![k::UDATA_RULE_COMMENT, (c.len() + 1) as u8];
        u.extend_from_slice(c.as_bytes());
        u.push(0);
        Ok(Some(u))
    }
}

/// `bytes` with all but the first `prefix` bits cleared.
fn masked(bytes: &[u8], prefix: u32) -> Vec<u8> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let keep = prefix.saturating_sub(i as u32 * 8).min(8);
            if keep == 0 {
                0
            } else {
                b & (0xffu8 << (8 - keep))
            }
        })
        .collect()
}

/// nft syntax, for error messages.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.chain)?;
        for s in &self.stmts {
            match s {
                Stmt::NfProto(NfProto::Ipv4) => f.write_str(" meta nfproto ipv4")?,
                Stmt::NfProto(NfProto::Ipv6) => f.write_str(" meta nfproto ipv6")?,
                Stmt::Addr { src, neq, net } => {
                    let fam = NfProto::of(net.addr).family();
                    let dir = if *src { "saddr" } else { "daddr" };
                    let op = if *neq { "!= " } else { "" };
                    let full = if net.addr.is_ipv4() { 32 } else { 128 };
                    if net.prefix == full {
                        write!(f, " {fam} {dir} {op}{}", net.addr)?;
                    } else {
                        write!(f, " {fam} {dir} {op}{net}")?;
                    }
                }
                Stmt::FibDaddrLocal => f.write_str(" fib daddr type local")?,
                Stmt::Dport(p, port) => write!(f, " {} dport {port}", p.as_str())?,
                Stmt::CtStatusDnat => f.write_str(" ct status dnat")?,
                Stmt::CtStatusNotDnat => f.write_str(" ct status & dnat == 0")?,
                Stmt::IifnameNe(name) => write!(f, " iifname != \"{name}\"")?,
                Stmt::Drop => f.write_str(" drop")?,
                Stmt::Masquerade => f.write_str(" masquerade")?,
                Stmt::Dnat(IpAddr::V4(a), port) => write!(f, " dnat ip to {a}:{port}")?,
                Stmt::Dnat(IpAddr::V6(a), port) => write!(f, " dnat ip6 to [{a}]:{port}")?,
            }
        }
        if let Some(c) = &self.comment {
            write!(f, " comment \"{c}\"")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Neq,
}

/// One nf_tables expression; every load goes to register 1, as nft does for these rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expr {
    /// meta load <key> => reg 1
    Meta(u32),
    /// cmp <op> reg 1 <data>
    Cmp(Op, Vec<u8>),
    /// payload load <len>b @ <base> + <offset> => reg 1
    Payload(u32, u32, u32),
    /// bitwise reg 1 = (reg 1 & mask) ^ xor
    Bitwise(Vec<u8>, Vec<u8>),
    /// fib <flags> <result> => reg 1
    Fib(u32, u32),
    /// ct load <key> => reg 1
    Ct(u32),
    /// immediate reg <n> <data>
    Immediate(u32, Vec<u8>),
    Masq,
    /// nat dnat <family> addr_min reg 1 proto_min reg 2
    Dnat(NfProto),
    /// immediate reg 0 <verdict>
    Verdict(u32),
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta(_) => "meta",
            Expr::Cmp(..) => "cmp",
            Expr::Payload(..) => "payload",
            Expr::Bitwise(..) => "bitwise",
            Expr::Fib(..) => "fib",
            Expr::Ct(_) => "ct",
            Expr::Immediate(..) | Expr::Verdict(_) => "immediate",
            Expr::Masq => "masq",
            Expr::Dnat(_) => "nat",
        }
    }

    pub(super) fn encode(&self, m: &mut Msgs) {
        let elem = m.nest(k::NFTA_LIST_ELEM);
        m.str(k::NFTA_EXPR_NAME, self.name());
        let data = m.nest(k::NFTA_EXPR_DATA);
        match self {
            Expr::Meta(key) => {
                m.u32(k::NFTA_META_DREG, k::NFT_REG_1);
                m.u32(k::NFTA_META_KEY, *key);
            }
            Expr::Cmp(op, value) => {
                m.u32(k::NFTA_CMP_SREG, k::NFT_REG_1);
                m.u32(k::NFTA_CMP_OP, *op as u32);
                m.data(k::NFTA_CMP_DATA, value);
            }
            Expr::Payload(base, offset, len) => {
                m.u32(k::NFTA_PAYLOAD_DREG, k::NFT_REG_1);
                m.u32(k::NFTA_PAYLOAD_BASE, *base);
                m.u32(k::NFTA_PAYLOAD_OFFSET, *offset);
                m.u32(k::NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Bitwise(mask, xor) => {
                m.u32(k::NFTA_BITWISE_SREG, k::NFT_REG_1);
                m.u32(k::NFTA_BITWISE_DREG, k::NFT_REG_1);
                m.u32(k::NFTA_BITWISE_LEN, mask.len() as u32);
                m.data(k::NFTA_BITWISE_MASK, mask);
                m.data(k::NFTA_BITWISE_XOR, xor);
            }
            Expr::Fib(result, flags) => {
                m.u32(k::NFTA_FIB_DREG, k::NFT_REG_1);
                m.u32(k::NFTA_FIB_RESULT, *result);
                m.u32(k::NFTA_FIB_FLAGS, *flags);
            }
            Expr::Ct(key) => {
                m.u32(k::NFTA_CT_DREG, k::NFT_REG_1);
                m.u32(k::NFTA_CT_KEY, *key);
            }
            Expr::Immediate(reg, value) => {
                m.u32(k::NFTA_IMMEDIATE_DREG, *reg);
                m.data(k::NFTA_IMMEDIATE_DATA, value);
            }
            Expr::Verdict(code) => {
                m.u32(k::NFTA_IMMEDIATE_DREG, k::NFT_REG_VERDICT);
                let data = m.nest(k::NFTA_IMMEDIATE_DATA);
                let verdict = m.nest(k::NFTA_DATA_VERDICT);
                m.u32(k::NFTA_VERDICT_CODE, *code);
                m.nest_end(verdict);
                m.nest_end(data);
            }
            Expr::Masq => {}
            Expr::Dnat(p) => {
                m.u32(k::NFTA_NAT_TYPE, k::NFT_NAT_DNAT);
                m.u32(k::NFTA_NAT_FAMILY, u32::from(p.num()));
                m.u32(k::NFTA_NAT_REG_ADDR_MIN, k::NFT_REG_1);
                m.u32(k::NFTA_NAT_REG_PROTO_MIN, k::NFT_REG_2);
                m.u32(k::NFTA_NAT_FLAGS, k::NF_NAT_RANGE_PROTO_SPECIFIED);
            }
        }
        m.nest_end(data);
        m.nest_end(elem);
    }
}
