use super::*;
use crate::types::IpNet;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn tags_are_sanitised_and_bounded() {
    assert_eq!(tag(&["abc", "eth0", "my net"]), "abc/eth0/my_net");
    assert_eq!(tag(&[&"x".repeat(300)]).len(), 127);
}

#[test]
fn prefixes_lower_like_nft() {
    let nfproto4 = [Expr::Meta(k::NFT_META_NFPROTO), Expr::Cmp(Op::Eq, vec![2])];
    let pl = |off, len| Expr::Payload(k::NFT_PAYLOAD_NETWORK_HEADER, off, len);
    // A host address: full-length compare; the nfproto dependency comes once.
    let r = Rule::new("c")
        .saddr(net("10.99.0.5/32"))
        .daddr_ne(net("10.99.0.0/16"))
        .daddr_ne(net("224.0.0.0/4"));
    let mut want = nfproto4.to_vec();
    want.extend([
        pl(12, 4),
        Expr::Cmp(Op::Eq, vec![10, 99, 0, 5]),
        // Byte-aligned prefix: only its bytes are loaded.
        pl(16, 2),
        Expr::Cmp(Op::Neq, vec![10, 99]),
        // Otherwise the whole address, masked.
        pl(16, 4),
        Expr::Bitwise(vec![0xf0, 0, 0, 0], vec![0; 4]),
        Expr::Cmp(Op::Neq, vec![224, 0, 0, 0]),
    ]);
    assert_eq!(r.exprs().unwrap(), want);

    let e = Rule::new("c")
        .daddr(net("fd00:0:0:10::/60"))
        .exprs()
        .unwrap();
    let mut mask = vec![0xff; 7];
    mask.push(0xf0);
    mask.extend([0; 8]);
    assert_eq!(e[2], pl(24, 16));
    assert_eq!(e[3], Expr::Bitwise(mask, vec![0; 16]));
}

#[test]
fn explicit_nfproto_is_kept_and_conflicts_are_refused() {
    let e = Rule::new("c")
        .fib_daddr_local()
        .nfproto(NfProto::Ipv6)
        .dport(L4Proto::Sctp, 8080)
        .dnat("fd00::5".parse().unwrap(), 80)
        .exprs()
        .unwrap();
    assert_eq!(e[2], Expr::Meta(k::NFT_META_NFPROTO));
    assert_eq!(e[3], Expr::Cmp(Op::Eq, vec![10]));
    assert_eq!(e[5], Expr::Cmp(Op::Eq, vec![132]));
    assert_eq!(e[7], Expr::Cmp(Op::Eq, vec![0x1f, 0x90]));
    assert_eq!(e.last(), Some(&Expr::Dnat(NfProto::Ipv6)));
    assert!(
        Rule::new("c")
            .nfproto(NfProto::Ipv4)
            .daddr(net("fd00::1/128"))
            .exprs()
            .is_err()
    );
}

#[test]
fn comments_are_udata_tlvs() {
    let r = Rule::new("c").masquerade().comment("ab");
    assert_eq!(r.userdata().unwrap().unwrap(), b"\x00\x03ab\x00");
    assert_eq!(udata_comment(b"\x00\x03ab\x00").as_deref(), Some("ab"));
    assert!(Rule::new("c").comment(&"x".repeat(128)).userdata().is_err());
}

#[test]
fn messages_are_aligned_and_nested() {
    let mut m = Msgs::default();
    let s = m.begin(msg_type(k::NFT_MSG_NEWRULE), k::NLM_F_REQUEST, 7, 1, 0);
    Expr::Cmp(Op::Eq, vec![1, 2, 3]).encode(&mut m);
    m.end(s);
    let msgs: Vec<_> = messages(&m.buf).collect();
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].seq, msgs[0].ty), (7, 0x0a06));
    let (ty, elem) = attrs(&msgs[0].payload[4..]).next().unwrap();
    assert_eq!(ty, k::NFTA_LIST_ELEM);
    let inner: Vec<_> = attrs(elem).collect();
    assert_eq!(inner[0], (k::NFTA_EXPR_NAME, &b"cmp\0"[..]));
    let data: Vec<_> = attrs(inner[1].1).collect();
    assert_eq!(data.len(), 3);
    assert_eq!(attrs(data[2].1).next().unwrap().1, &[1, 2, 3]);
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: needs root for nf_tables");
    false
}

/// Deletes the table even when the test fails.
struct Scratch(String);
impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut n) = Nft::open() {
            let mut b = Batch::new(n.next_seq());
            b.del_table(&self.0);
            let _ = n.commit(b);
        }
    }
}

const CHAINS: &[NatChain] = &[NatChain {
    name: "postrouting",
    hook: Hook::Postrouting,
    priority: PRIO_SRCNAT,
}];

fn masq(ip: &str, tag: &str) -> Rule {
    Rule::new("postrouting")
        .saddr(IpNet::host(ip.parse().unwrap()))
        .masquerade()
        .comment(tag)
}

#[test]
fn tagged_rules_are_replaced_and_deleted() {
    if !root() {
        return;
    }
    let name = format!("crius-test-{}-tags", std::process::id());
    let _guard = Scratch(name.clone());
    let table = NatTable {
        name: &name,
        chains: CHAINS,
    };
    let mut n = Nft::open().unwrap();
    assert_eq!(n.list_rules(&name).unwrap(), None);
    assert_eq!(n.delete_tagged(&name, "a").unwrap(), 0);
    n.replace_tagged(&table, "a", &[masq("10.1.0.1", "a"), masq("fd00::1", "a")])
        .unwrap();
    n.replace_tagged(&table, "b", &[masq("10.1.0.2", "b")])
        .unwrap();
    // Retried: replaces, does not duplicate.
    n.replace_tagged(&table, "a", &[masq("10.1.0.1", "a"), masq("fd00::1", "a")])
        .unwrap();
    let rules = n.list_rules(&name).unwrap().unwrap();
    let tags: Vec<_> = rules
        .iter()
        .map(|r| r.comment.as_deref().unwrap())
        .collect();
    assert_eq!(tags, ["b", "a", "a"]);
    assert!(rules.iter().all(|r| r.chain == "postrouting"));
    assert_eq!(n.delete_tagged(&name, "a").unwrap(), 2);
    let rules = n.list_rules(&name).unwrap().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(n.delete_tagged(&name, "b").unwrap(), 1);
    assert_eq!(n.list_rules(&name).unwrap(), None);
}

#[test]
fn large_batches_and_dumps() {
    if !root() {
        return;
    }
    let name = format!("crius-test-{}-large", std::process::id());
    let _guard = Scratch(name.clone());
    let table = NatTable {
        name: &name,
        chains: CHAINS,
    };
    // ~2 MB of rules in one batch, thousands of ACKs, a dump of many chunks.
    let rules: Vec<Rule> = (0..3000u32)
        .map(|i| masq(&format!("10.{}.{}.1", i / 250, i % 250), "big"))
        .collect();
    let mut n = Nft::open().unwrap();
    n.replace_tagged(&table, "big", &rules).unwrap();
    n.replace_tagged(&table, "small", &[masq("10.254.0.1", "small")])
        .unwrap();
    let listed = n.list_rules(&name).unwrap().unwrap();
    assert_eq!(listed.len(), 3001);
    assert_eq!(n.delete_tagged(&name, "big").unwrap(), 3000);
    assert_eq!(n.delete_tagged(&name, "small").unwrap(), 1);
    assert_eq!(n.list_rules(&name).unwrap(), None);
}

#[test]
fn errors_name_what_failed() {
    if !root() {
        return;
    }
    let name = format!("crius-test-{}-err", std::process::id());
    let _guard = Scratch(name.clone());
    let table = NatTable {
        name: &name,
        chains: CHAINS,
    };
    let mut n = Nft::open().unwrap();
    let bad = Rule::new("nochain").masquerade().comment("x");
    let e = n
        .replace_tagged(&table, "x", &[masq("10.1.0.1", "x"), bad])
        .unwrap_err();
    assert!(e.msg.contains("adding rule `nochain: masquerade"), "{e}");
    assert!(e.msg.contains(&name), "{e}");
    assert!(e.details.contains("No such file or directory"), "{e}");
    // Atomic: nothing of the failed batch is left, not even the table.
    assert_eq!(n.list_rules(&name).unwrap(), None);
}
