//! The plugin skeleton: environment parsing, command dispatch, result and error output.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::conf::Obj;
use crate::error::{CniError, ErrorCode, Result};

pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];
/// Version used for output when the configuration does not say (VERSION, early errors).
pub const DEFAULT_VERSION: &str = "1.1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

/// Everything a runtime hands a plugin: the CNI_* environment and the configuration on stdin.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub path: Vec<PathBuf>,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub config: Value,
    pub cni_version: String,
}

impl CmdArgs {
    /// The top level of the configuration.
    pub fn conf(&self) -> Result<Obj<'_>> {
        Obj::root(&self.config)
    }

    /// `name` from the configuration (required for every plugin).
    pub fn network_name(&self) -> Result<&str> {
        self.conf()?.str_req("name")
    }
}

/// What a plugin implements; the skeleton handles the rest.
pub trait Plugin {
    /// ADD: returns the result to print.
    fn add(&self, args: &CmdArgs) -> Result<Value>;
    fn del(&self, args: &CmdArgs) -> Result<()>;
    fn check(&self, _args: &CmdArgs) -> Result<()> {
        Ok(())
    }
    fn status(&self, _args: &CmdArgs) -> Result<()> {
        Ok(())
    }
    fn gc(&self, _args: &CmdArgs) -> Result<()> {
        Ok(())
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Container ids: alphanumerics plus `_ . -`, starting with an alphanumeric.
fn valid_container_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Interface names: Linux rules (1..=15 bytes, no `/`, `:`, whitespace, not `.`/`..`).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Parse the process environment and `stdin` into [`CmdArgs`].
pub fn parse(stdin: Vec<u8>) -> Result<CmdArgs> {
    let command = match env("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("STATUS") => Command::Status,
        Some("GC") => Command::Gc,
        Some("VERSION") => Command::Version,
        Some(other) => {
            return Err(CniError::env(
                "CNI_COMMAND",
                format!("unknown command {other:?}"),
            ));
        }
        None => return Err(CniError::env("CNI_COMMAND", "not set")),
    };
    let config: Value = if stdin.iter().all(u8::is_ascii_whitespace) {
        if command == Command::Version {
            json!({})
        } else {
            return Err(CniError::new(
                ErrorCode::Decoding,
                "empty network configuration on stdin",
                "",
            ));
        }
    } else {
        serde_json::from_slice(&stdin).map_err(|e| {
            CniError::new(
                ErrorCode::Decoding,
                "decoding network configuration",
                e.to_string(),
            )
        })?
    };
    let cni_version = match config.get("cniVersion") {
        None | Some(Value::Null) => "0.1.0".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(CniError::config("cniVersion", "must be a string")),
    };
    let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
    let container_id = env("CNI_CONTAINERID").unwrap_or_default();
    let ifname = env("CNI_IFNAME").unwrap_or_default();
    let netns = env("CNI_NETNS").map(PathBuf::from);
    if per_container {
        if container_id.is_empty() {
            return Err(CniError::env("CNI_CONTAINERID", "not set"));
        }
        if !valid_container_id(&container_id) {
            return Err(CniError::env(
                "CNI_CONTAINERID",
                format!("{container_id:?} has invalid characters"),
            ));
        }
        if !valid_ifname(&ifname) {
            return Err(CniError::env(
                "CNI_IFNAME",
                format!("{ifname:?} is not a valid interface name"),
            ));
        }
        if command != Command::Del && netns.is_none() {
            return Err(CniError::env("CNI_NETNS", "not set"));
        }
    }
    let path = env("CNI_PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .filter(|d| !d.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let args = env("CNI_ARGS")
        .map(|a| {
            a.split(';')
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CmdArgs {
        command,
        container_id,
        netns,
        ifname,
        path,
        args,
        stdin,
        config,
        cni_version,
    })
}

fn dispatch(plugin: &dyn Plugin, args: &CmdArgs) -> Result<Option<Value>> {
    if args.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": if SUPPORTED_VERSIONS.contains(&args.cni_version.as_str()) {
                args.cni_version.as_str()
            } else {
                DEFAULT_VERSION
            },
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    if !SUPPORTED_VERSIONS.contains(&args.cni_version.as_str()) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI version",
            format!(
                "config version {:?}, plugin supports {SUPPORTED_VERSIONS:?}",
                args.cni_version
            ),
        ));
    }
    if (args.command == Command::Status || args.command == Command::Gc)
        && args.cni_version != "1.1.0"
    {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI version",
            format!("{:?} requires cniVersion 1.1.0", args.command),
        ));
    }
    match args.command {
        Command::Add => plugin.add(args).map(Some),
        Command::Del => plugin.del(args).map(|()| None),
        Command::Check => plugin.check(args).map(|()| None),
        Command::Status => plugin.status(args).map(|()| None),
        Command::Gc => plugin.gc(args).map(|()| None),
        Command::Version => unreachable!("handled above"),
    }
}

/// Run a plugin as a CNI executable: never returns.
pub fn run(plugin: &dyn Plugin) -> ! {
    let mut stdin = Vec::new();
    let parsed = std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::new(ErrorCode::Io, "reading stdin", e.to_string()))
        .and_then(|_| parse(stdin));
    let (version, outcome) = match parsed {
        Ok(args) => {
            let v = if SUPPORTED_VERSIONS.contains(&args.cni_version.as_str()) {
                args.cni_version.clone()
            } else {
                DEFAULT_VERSION.to_owned()
            };
            (v, dispatch(plugin, &args))
        }
        Err(e) => (DEFAULT_VERSION.to_owned(), Err(e)),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(value) => {
            if let Some(v) = value {
                let _ = writeln!(out, "{v}");
            }
            let _ = out.flush();
            std::process::exit(0)
        }
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            let _ = out.flush();
            let _ = writeln!(std::io::stderr(), "{e}");
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_ifnames() {
        assert!(valid_container_id("abc-1.2_x"));
        assert!(!valid_container_id("-abc"));
        assert!(!valid_container_id("a/b"));
        assert!(valid_ifname("eth0"));
        assert!(!valid_ifname("a-very-long-interface"));
        assert!(!valid_ifname(".."));
    }
}
