//! nftables through the `nft` CLI: scripts on stdin, JSON listings, rules tagged by comment.
//!
//! Every rule crius adds carries a comment (its tag) naming the attachment it belongs to, so
//! DEL removes exactly those rules by handle. A table left without rules is deleted. All
//! changes happen under one host-wide flock so a DEL emptying a table cannot race an ADD.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::error::{CniError, Result};

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

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("nft");
    cmd.args(args).stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| CniError::io("executing", Path::new("nft"), e))?;
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(script.as_bytes())
            .map_err(|e| CniError::io("writing to", Path::new("nft"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io("waiting for", Path::new("nft"), e))?;
    if !out.status.success() {
        return Err(CniError::internal(
            format!("nft {} failed", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                stdin.map(|s| format!("\nscript:\n{s}")).unwrap_or_default()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Apply an nft script atomically (`nft -f -`).
pub fn apply(script: &str) -> Result<()> {
    nft(&["-f", "-"], Some(script)).map(drop)
}

/// A rule in a listing: chain, handle, comment.
#[derive(Debug, Clone)]
pub struct RuleRef {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// The rules of `family table`, or `None` when the table does not exist.
pub fn list_rules(family: &str, table: &str) -> Result<Option<Vec<RuleRef>>> {
    let tables = nft(&["-j", "list", "tables", family], None)?;
    let v: Value = serde_json::from_str(&tables)
        .map_err(|e| CniError::internal("parsing nft -j output", e))?;
    let exists = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["table"]["name"] == table && o["table"]["family"] == family);
    if !exists {
        return Ok(None);
    }
    let out = nft(&["-j", "-a", "list", "table", family, table], None)?;
    let v: Value =
        serde_json::from_str(&out).map_err(|e| CniError::internal("parsing nft -j output", e))?;
    let rules = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
        .filter_map(|r| {
            Some(RuleRef {
                chain: r["chain"].as_str()?.to_owned(),
                handle: r["handle"].as_u64()?,
                comment: r["comment"].as_str().map(str::to_owned),
            })
        })
        .collect();
    Ok(Some(rules))
}

/// Delete every rule of `family table` whose comment is `tag`; delete the table when no rule
/// is left. Call with the [`lock`] held. Returns how many rules were removed.
pub fn delete_tagged(family: &str, table: &str, tag: &str) -> Result<usize> {
    let Some(rules) = list_rules(family, table)? else {
        return Ok(0);
    };
    let (mine, others): (Vec<_>, Vec<_>) = rules
        .into_iter()
        .partition(|r| r.comment.as_deref() == Some(tag));
    let mut script = String::new();
    if others.is_empty() {
        script.push_str(&format!("delete table {family} {table}\n"));
    } else {
        for r in &mine {
            script.push_str(&format!(
                "delete rule {family} {table} {} handle {}\n",
                r.chain, r.handle
            ));
        }
    }
    if !script.is_empty() {
        apply(&script)?;
    }
    Ok(mine.len())
}

/// True when the `nft` binary can be run.
pub fn available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_sanitised_and_bounded() {
        assert_eq!(tag(&["abc", "eth0", "my net"]), "abc/eth0/my_net");
        assert_eq!(tag(&[&"x".repeat(300)]).len(), 127);
    }
}
