//! Test support shared by the plugins' unit tests (included with `#[path]`): the rules a plugin
//! adds over netlink must read back from `nft list` exactly like the same rules added by the
//! `nft` script the plugin used to run, down to the bytecode. Needs root and the `nft` binary; tables are throwaway
//! (`crius-test-<pid>-<case>-…`) and deleted even when the test fails.

use std::io::Write;
use std::process::{Command, Stdio};

use crius_cni_plugins::nft::{NatChain, NatTable, Nft, Rule};

/// Root and `nft` present; otherwise says why the test is skipped.
pub fn usable() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root to change nftables");
        return false;
    }
    let nft = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !nft.is_ok_and(|s| s.success()) {
        eprintln!("skipping: the nft binary is needed as the reference");
        return false;
    }
    true
}

/// Deletes its tables on drop, also when an assertion failed.
struct Scratch(Vec<String>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", t])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn nft_script(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nft -a list table inet <table>` with the table name and handles taken out, or `None`.
fn listing(table: &str) -> Option<String> {
    let out = Command::new("nft")
        .args(["-a", "list", "table", "inet", table])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).replace(table, "T");
    Some(
        text.lines()
            .map(|l| l.split(" # handle ").next().unwrap_or(l).trim_end())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// `nft --debug=netlink list table inet <table>`: the bytecode and userdata of every rule as
/// the kernel holds it, then the rule text; table name, handles and positions taken out.
/// `nft --debug=netlink` prints each rule as it fills its cache; when the ruleset changes
/// meanwhile (other tests run nft at the same time) it fetches again and prints every rule
/// twice. A listing with more rule blocks than the table holds is such a one: read again.
fn bytecode(table: &str, rules: usize) -> String {
    let mut text = bytecode_once(table);
    for _ in 0..20 {
        if text.lines().filter(|l| l.starts_with("inet T ")).count() <= rules {
            break;
        }
        text = bytecode_once(table);
    }
    text
}

fn bytecode_once(table: &str) -> String {
    let out = Command::new("nft")
        .args(["--debug=netlink", "list", "table", "inet", table])
        .output()
        .unwrap();
    assert!(out.status.success(), "listing {table}");
    String::from_utf8_lossy(&out.stdout)
        .replace(table, "T")
        .lines()
        .map(|l| match l.strip_prefix("inet T ") {
            // "inet T <chain> <handle> [<position>]"
            Some(rest) => format!("inet T {}", rest.split(' ').next().unwrap_or("")),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Adds `rules` (tagged `tag`) over netlink to one table and runs `script(table)` (the old
/// plugin script) for another, and compares the listings; then checks a retried ADD
/// replaces the rules and DEL removes them with the table.
pub fn assert_same_rules(
    case: &str,
    chains: &[NatChain],
    tag: &str,
    rules: &[Rule],
    script: impl Fn(&str) -> String,
) {
    let cli = format!("crius-test-{}-{case}-cli", std::process::id());
    let nl = format!("crius-test-{}-{case}-nl", std::process::id());
    let _cleanup = Scratch(vec![cli.clone(), nl.clone()]);
    let table = NatTable { name: &nl, chains };

    nft_script(&script(&cli));
    let want = listing(&cli).expect("reference table");
    assert_eq!(
        want.matches(&format!("comment \"{tag}\"")).count(),
        rules.len(),
        "case {case}: the script and the typed rules differ in number\n{want}"
    );
    let want_code = bytecode(&cli, rules.len());
    let mut n = Nft::open().unwrap();
    n.replace_tagged(&table, tag, rules).unwrap();
    assert_eq!(listing(&nl).as_deref(), Some(want.as_str()), "case {case}");
    assert_eq!(
        bytecode(&nl, rules.len()),
        want_code,
        "case {case}: bytecode"
    );

    // A retried ADD finds table, chains and its own rules: same result, no duplicates.
    n.replace_tagged(&table, tag, rules).unwrap();
    assert_eq!(
        listing(&nl).as_deref(),
        Some(want.as_str()),
        "case {case}, retried"
    );
    assert_eq!(
        bytecode(&nl, rules.len()),
        want_code,
        "case {case}, retried: bytecode"
    );
    let listed = n.list_rules(&nl).unwrap().unwrap();
    assert_eq!(listed.len(), rules.len());
    assert!(listed.iter().all(|r| r.comment.as_deref() == Some(tag)));

    assert_eq!(n.delete_tagged(&nl, tag).unwrap(), rules.len());
    assert_eq!(listing(&nl), None, "case {case}: table left after DEL");
    assert_eq!(n.delete_tagged(&nl, tag).unwrap(), 0);
}
