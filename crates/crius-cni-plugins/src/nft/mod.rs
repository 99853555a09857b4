//! nftables spoken directly over NETLINK_NETFILTER: typed rules, lookups, one batch per change.
//!
//! Every rule crius adds carries a comment (its tag) naming the attachment it belongs to, so
//! DEL removes exactly those rules by handle. A table left without rules is deleted. All
//! changes happen under one host-wide flock so a DEL emptying a table cannot race an ADD.
//!
//! Why not the `nft` CLI: every process costs ~5 ms to start and fetch its cache, and a script
//! re-declaring hooked chains makes the kernel re-register them (10+ ms). Here tables and base
//! chains are looked up first, only what is missing is created, and each plugin call commits
//! one batch. The expressions are the ones `nft` generates for the same rule text, so
//! `nft list` shows crius's rules exactly as it did when they were added by scripts.

mod abi;
mod rule;
mod wire;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::fcntl::{Flock, FlockArg};

use crate::error::{CniError, Result};

use abi::k;
pub use rule::*;
use wire::*;

const LOCK_DIR: &str = "/run/crius-cni";
const LOCK_FILE: &str = "/run/crius-cni/nft.lock";
/// nftables comments are limited to 128 bytes including the terminating NUL.
const MAX_COMMENT: usize = 127;

/// Host-wide lock serialising nftables changes made by crius plugins.
pub struct NftLock(#[allow(dead_code)] Flock<File>);

pub fn lock() -> Result<NftLock> {
    fs::create_dir_all(LOCK_DIR).map_err(|e| CniError::io("creating", Path::new(LOCK_DIR), e))?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| CniError::io("opening", Path::new(LOCK_FILE), e))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map(NftLock)
        .map_err(|(_, e)| CniError::io("locking", Path::new(LOCK_FILE), e.into()))
}

/// A comment tag: printable, no quotes, at most 127 bytes.
pub fn tag(parts: &[&str]) -> String {
    let mut t: String = parts
        .join("/")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    t.truncate(MAX_COMMENT);
    t
}

// The conversation with the kernel.

/// A rule in a listing: chain, handle, comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// Big enough for any dump chunk: the kernel sizes those by our receive buffer (≤ 32 KiB).
const RX_BUF: usize = 64 * 1024;
/// Batches and ACK volumes up to this size fit the default socket buffers.
const SMALL_BUF: usize = 128 * 1024;
/// What one queued ACK costs the receive buffer (its skb's truesize, not its 36 bytes).
const ACK_SIZE: usize = 2048;

/// A NETLINK_NETFILTER socket talking nf_tables. Changes need the [`lock`] held.
pub struct Nft {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
}

/// Messages of one transaction, each with what it does (for errors).
struct Batch {
    msgs: Msgs,
    /// What each message does, in order; their sequence numbers follow `begin_seq`.
    ops: Vec<String>,
    begin_seq: u32,
    next_seq: u32,
}

impl Batch {
    fn new(seq: u32) -> Self {
        let mut msgs = Msgs::default();
        let b = msgs.begin(
            k::NFNL_MSG_BATCH_BEGIN,
            k::NLM_F_REQUEST,
            seq,
            k::NFPROTO_UNSPEC,
            k::NFNL_SUBSYS_NFTABLES,
        );
        msgs.end(b);
        Self {
            msgs,
            ops: Vec::new(),
            begin_seq: seq,
            next_seq: seq.wrapping_add(1),
        }
    }

    /// Append a message; every one asks for an ACK so its own error comes back.
    fn op(&mut self, what: String, nft_msg: u8, flags: u16, body: impl FnOnce(&mut Msgs)) {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let s = self.msgs.begin(
            msg_type(nft_msg),
            k::NLM_F_REQUEST | k::NLM_F_ACK | flags,
            seq,
            k::NFPROTO_INET,
            0,
        );
        body(&mut self.msgs);
        self.msgs.end(s);
        self.ops.push(what);
    }

    fn add_table(&mut self, table: &str) {
        self.op(
            format!("creating table inet {table}"),
            k::NFT_MSG_NEWTABLE,
            k::NLM_F_CREATE,
            |m| {
                m.str(k::NFTA_TABLE_NAME, table);
                m.u32(k::NFTA_TABLE_FLAGS, 0);
            },
        );
    }

    fn add_chain(&mut self, table: &str, c: &NatChain) {
        self.op(
            format!("creating chain inet {table} {}", c.name),
            k::NFT_MSG_NEWCHAIN,
            k::NLM_F_CREATE,
            |m| {
                m.str(k::NFTA_CHAIN_TABLE, table);
                m.str(k::NFTA_CHAIN_NAME, c.name);
                let h = m.nest(k::NFTA_CHAIN_HOOK);
                m.u32(k::NFTA_HOOK_HOOKNUM, c.hook.num());
                m.u32(k::NFTA_HOOK_PRIORITY, c.priority as u32);
                m.nest_end(h);
                m.u32(k::NFTA_CHAIN_POLICY, k::NF_ACCEPT);
                m.str(k::NFTA_CHAIN_TYPE, c.hook.chain_type());
            },
        );
    }

    fn add_rule(&mut self, table: &str, r: &Rule) -> Result<()> {
        let exprs = r.exprs()?;
        let udata = r.userdata()?;
        // APPEND: `add rule` puts the rule at the end of the chain, not at its head.
        self.op(
            format!("adding rule `{r}` to table inet {table}"),
            k::NFT_MSG_NEWRULE,
            k::NLM_F_CREATE | k::NLM_F_APPEND,
            |m| {
                m.str(k::NFTA_RULE_TABLE, table);
                m.str(k::NFTA_RULE_CHAIN, &r.chain);
                let list = m.nest(k::NFTA_RULE_EXPRESSIONS);
                for e in &exprs {
                    e.encode(m);
                }
                m.nest_end(list);
                if let Some(u) = &udata {
                    m.bytes(k::NFTA_RULE_USERDATA, u);
                }
            },
        );
        Ok(())
    }

    fn del_rule(&mut self, table: &str, r: &RuleRef) {
        self.op(
            format!(
                "deleting rule handle {} from inet {table} {}",
                r.handle, r.chain
            ),
            k::NFT_MSG_DELRULE,
            0,
            |m| {
                m.str(k::NFTA_RULE_TABLE, table);
                m.str(k::NFTA_RULE_CHAIN, &r.chain);
                m.u64(k::NFTA_RULE_HANDLE, r.handle);
            },
        );
    }

    fn del_table(&mut self, table: &str) {
        self.op(
            format!("deleting table inet {table}"),
            k::NFT_MSG_DELTABLE,
            0,
            |m| m.str(k::NFTA_TABLE_NAME, table),
        );
    }
}

impl Nft {
    pub fn open() -> Result<Self> {
        let err = |e| CniError::internal("opening a NETLINK_NETFILTER socket for nf_tables", e);
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(err)?;
        sock.bind_auto().map_err(err)?;
        // Errors echo only the failing request's header, plus the kernel's text when it has one.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        // A reply that never comes must not hang the plugin (and the runtime waiting for it).
        let tv = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: valid fd and a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(Self {
            sock,
            seq: 1,
            rx: Vec::with_capacity(RX_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, buf: &[u8], what: &str) -> Result<()> {
        let n = self
            .sock
            .send_to(buf, &SocketAddr::new(0, 0), 0)
            .map_err(|e| CniError::internal(format!("nftables: {what}: sending"), e))?;
        if n != buf.len() {
            return Err(CniError::internal(
                format!("nftables: {what}: sending"),
                format!("short write ({n} of {} bytes)", buf.len()),
            ));
        }
        Ok(())
    }

    /// Receive one datagram into `self.rx`; `Ok(false)` when nonblocking and nothing is queued.
    fn recv(&mut self, what: &str, nonblocking: bool) -> Result<bool> {
        self.rx.clear();
        let flags = libc::MSG_TRUNC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        match self.sock.recv(&mut self.rx, flags) {
            Ok(n) if n > self.rx.capacity() => Err(CniError::internal(
                format!("nftables: {what}"),
                format!("reply of {n} bytes truncated"),
            )),
            Ok(_) => Ok(true),
            Err(e) if nonblocking && e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(CniError::internal(
                format!("nftables: {what}: receiving"),
                e,
            )),
        }
    }

    /// Look up one object (GETTABLE/GETCHAIN): true when it exists, false on ENOENT.
    fn exists(&mut self, what: &str, nft_msg: u8, body: impl FnOnce(&mut Msgs)) -> Result<bool> {
        let seq = self.next_seq();
        let mut m = Msgs::default();
        let s = m.begin(msg_type(nft_msg), k::NLM_F_REQUEST, seq, k::NFPROTO_INET, 0);
        body(&mut m);
        m.end(s);
        self.send(&m.buf, what)?;
        loop {
            self.recv(what, false)?;
            let Some(msg) = messages(&self.rx).find(|m| m.seq == seq) else {
                continue;
            };
            if msg.ty != k::NLMSG_ERROR {
                return Ok(true);
            }
            return match nl_error(&msg) {
                (0, _) => Ok(true),
                (libc::ENOENT, _) => Ok(false),
                (errno, text) => Err(CniError::internal(
                    format!("nftables: {what}"),
                    os_error(errno, text),
                )),
            };
        }
    }

    fn table_exists(&mut self, table: &str) -> Result<bool> {
        self.exists(
            &format!("looking up table inet {table}"),
            k::NFT_MSG_GETTABLE,
            |m| m.str(k::NFTA_TABLE_NAME, table),
        )
    }

    fn chain_exists(&mut self, table: &str, chain: &str) -> Result<bool> {
        self.exists(
            &format!("looking up chain inet {table} {chain}"),
            k::NFT_MSG_GETCHAIN,
            |m| {
                m.str(k::NFTA_CHAIN_TABLE, table);
                m.str(k::NFTA_CHAIN_NAME, chain);
            },
        )
    }

    /// Dump the rules of `inet table` (empty when the table does not exist).
    fn dump_rules(&mut self, table: &str) -> Result<Vec<RuleRef>> {
        let what = format!("listing rules of table inet {table}");
        // A dump interrupted by a concurrent change (someone else's ruleset update) is redone.
        for _ in 0..5 {
            let seq = self.next_seq();
            let mut m = Msgs::default();
            let s = m.begin(
                msg_type(k::NFT_MSG_GETRULE),
                k::NLM_F_REQUEST | k::NLM_F_DUMP,
                seq,
                k::NFPROTO_INET,
                0,
            );
            m.str(k::NFTA_RULE_TABLE, table);
            m.end(s);
            self.send(&m.buf, &what)?;
            let mut rules = Vec::new();
            let mut interrupted = false;
            'dump: loop {
                self.recv(&what, false)?;
                for msg in messages(&self.rx).filter(|m| m.seq == seq) {
                    interrupted |= msg.flags & k::NLM_F_DUMP_INTR != 0;
                    match msg.ty {
                        k::NLMSG_DONE => {
                            let err = msg.payload.get(..4).map_or(0, |b| ne_u32(b, 0) as i32);
                            if err < 0 {
                                return Err(CniError::internal(
                                    format!("nftables: {what}"),
                                    os_error(-err, None),
                                ));
                            }
                            break 'dump;
                        }
                        k::NLMSG_ERROR => match nl_error(&msg) {
                            (0, _) => break 'dump,
                            (errno, text) => {
                                return Err(CniError::internal(
                                    format!("nftables: {what}"),
                                    os_error(errno, text),
                                ));
                            }
                        },
                        t if t == msg_type(k::NFT_MSG_NEWRULE) => {
                            if let Some(r) = parse_rule(msg.payload, table) {
                                rules.push(r);
                            }
                        }
                        _ => {}
                    }
                }
            }
            if !interrupted {
                return Ok(rules);
            }
        }
        Err(CniError::internal(
            format!("nftables: {what}"),
            "the ruleset kept changing during the dump",
        ))
    }

    /// Send a batch and collect the ACK of each of its messages; the first error names the
    /// message that failed. The kernel handles the batch within sendmsg, so every reply is
    /// queued by the time it returns.
    fn commit(&mut self, mut b: Batch) -> Result<()> {
        if b.ops.is_empty() {
            return Ok(());
        }
        let end_seq = b.next_seq;
        let e = b.msgs.begin(
            k::NFNL_MSG_BATCH_END,
            k::NLM_F_REQUEST,
            end_seq,
            k::NFPROTO_UNSPEC,
            k::NFNL_SUBSYS_NFTABLES,
        );
        b.msgs.end(e);
        self.seq = end_seq;
        // The defaults (~208 KiB) fit a few hundred rules and their ACKs; beyond that the
        // kernel would refuse the batch (EMSGSIZE) or drop ACKs, so grow them as nft does.
        let acks = b.ops.len() * ACK_SIZE;
        if b.msgs.buf.len() > SMALL_BUF {
            self.force_buf(libc::SO_SNDBUFFORCE, b.msgs.buf.len() + SMALL_BUF);
        }
        if acks > SMALL_BUF {
            self.force_buf(libc::SO_RCVBUFFORCE, acks + SMALL_BUF);
        }
        let what = "committing a batch";
        self.send(&b.msgs.buf, what)?;
        // Ops have consecutive sequence numbers starting at `first`.
        let first = b.begin_seq.wrapping_add(1);
        let mut acked = vec![false; b.ops.len()];
        let mut left = b.ops.len();
        let mut first_err: Option<(usize, String)> = None;
        while left > 0 && self.recv(what, true)? {
            for msg in messages(&self.rx).filter(|m| m.ty == k::NLMSG_ERROR) {
                let (errno, text) = nl_error(&msg);
                if msg.seq == b.begin_seq && errno != 0 {
                    // The whole batch was refused (e.g. EPERM without CAP_NET_ADMIN).
                    return Err(CniError::internal(
                        "nftables: batch refused",
                        os_error(errno, text),
                    ));
                }
                let i = msg.seq.wrapping_sub(first) as usize;
                if i >= acked.len() || acked[i] {
                    continue;
                }
                acked[i] = true;
                left -= 1;
                if errno != 0 && first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_err = Some((i, os_error(errno, text)));
                }
            }
        }
        if let Some((i, err)) = first_err {
            return Err(CniError::internal(
                format!("nftables: {} failed", b.ops[i]),
                err,
            ));
        }
        if let Some(i) = acked.iter().position(|a| !a) {
            return Err(CniError::internal(
                format!("nftables: {}", b.ops[i]),
                "no acknowledgement from the kernel",
            ));
        }
        Ok(())
    }

    fn force_buf(&self, opt: libc::c_int, size: usize) {
        let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: valid fd and an int of the size passed. Failing leaves the default size,
        // which then shows as an error of the batch itself.
        unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// The rules of `inet table`, or `None` when the table does not exist.
    pub fn list_rules(&mut self, table: &str) -> Result<Option<Vec<RuleRef>>> {
        if !self.table_exists(table)? {
            return Ok(None);
        }
        self.dump_rules(table).map(Some)
    }

    /// In one commit: create `table` and those of its chains that are missing, delete the rules
    /// tagged `tag` (a retried ADD replaces its own rules), append `rules`. The rules should
    /// carry `tag` as comment so [`Nft::delete_tagged`] finds them. Call with the [`lock`] held.
    pub fn replace_tagged(
        &mut self,
        table: &NatTable<'_>,
        tag: &str,
        rules: &[Rule],
    ) -> Result<()> {
        let mut b = Batch::new(self.next_seq());
        if self.table_exists(table.name)? {
            for c in table.chains {
                if !self.chain_exists(table.name, c.name)? {
                    b.add_chain(table.name, c);
                }
            }
            for r in self.dump_rules(table.name)? {
                if r.comment.as_deref() == Some(tag) {
                    b.del_rule(table.name, &r);
                }
            }
        } else {
            b.add_table(table.name);
            for c in table.chains {
                b.add_chain(table.name, c);
            }
        }
        for r in rules {
            b.add_rule(table.name, r)?;
        }
        self.commit(b)
    }

    /// Delete every rule of `inet table` whose comment is `tag`; delete the table when no rule
    /// is left. A missing table is fine. Call with the [`lock`] held. Returns how many rules
    /// were removed.
    pub fn delete_tagged(&mut self, table: &str, tag: &str) -> Result<usize> {
        let Some(rules) = self.list_rules(table)? else {
            return Ok(0);
        };
        let (mine, others): (Vec<_>, Vec<_>) = rules
            .into_iter()
            .partition(|r| r.comment.as_deref() == Some(tag));
        if mine.is_empty() && !others.is_empty() {
            return Ok(0); // nothing of ours: no commit (a repeated DEL stays one lookup)
        }
        let mut b = Batch::new(self.next_seq());
        if others.is_empty() {
            b.del_table(table);
        } else {
            for r in &mine {
                b.del_rule(table, r);
            }
        }
        self.commit(b)?;
        Ok(mine.len())
    }
}

/// A NEWRULE message of a dump: chain, handle and comment, if it belongs to `table`.
fn parse_rule(payload: &[u8], table: &str) -> Option<RuleRef> {
    let (mut t, mut chain, mut handle, mut comment) = (None, None, None, None);
    for (ty, v) in attrs(payload.get(4..)?) {
        match ty {
            k::NFTA_RULE_TABLE => t = Some(c_str(v)),
            k::NFTA_RULE_CHAIN => chain = Some(c_str(v)),
            k::NFTA_RULE_HANDLE if v.len() == 8 => {
                handle = Some(u64::from_be_bytes(v.try_into().ok()?));
            }
            k::NFTA_RULE_USERDATA => comment = udata_comment(v),
            _ => {}
        }
    }
    (t.as_deref() == Some(table)).then_some(())?;
    Some(RuleRef {
        chain: chain?,
        handle: handle?,
        comment,
    })
}

/// The comment in rule userdata (TLVs of one-byte type and length).
fn udata_comment(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (ty, len) = (u[0], usize::from(u[1]));
        let v = u.get(2..2 + len)?;
        if ty == k::UDATA_RULE_COMMENT {
            return Some(c_str(v));
        }
        u = &u[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests;
