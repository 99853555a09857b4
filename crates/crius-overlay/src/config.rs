//! The agent's configuration file (TOML, or JSON when the name ends in `.json`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{OverlayError, Result};
use crate::subnet::{Ipv4Net, SubnetPool};

pub const DEFAULT_PORT: u16 = 8472;
pub const DEFAULT_DEVICE: &str = "crius.vxlan";
pub const DEFAULT_SUBNET_FILE: &str = "/run/crius-overlay/subnet.json";
pub const DEFAULT_ETCD_PREFIX: &str = "/crius.io/overlay";
/// Bytes VXLAN adds to every frame over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's name in the backend (default: the hostname).
    #[serde(default)]
    pub node_name: Option<String>,
    pub cluster_cidr: Ipv4Net,
    #[serde(default = "default_subnet_len")]
    pub subnet_len: u8,
    #[serde(default = "default_vni")]
    pub vni: u32,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_device")]
    pub device: String,
    /// Interface carrying the encapsulated traffic; found from `underlay_address` when unset.
    #[serde(default)]
    pub underlay_interface: Option<String>,
    /// Source of encapsulated traffic; the interface's first IPv4 address when unset.
    #[serde(default)]
    pub underlay_address: Option<Ipv4Addr>,
    /// Where the lease is written for the CNI plugin.
    #[serde(default = "default_subnet_file")]
    pub subnet_file: PathBuf,
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: u64,
    pub backend: BackendConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// A file listing every node; reloaded when it changes.
    Static { path: PathBuf },
    Etcd {
        endpoints: Vec<String>,
        #[serde(default = "default_prefix")]
        prefix: String,
    },
}

fn default_subnet_len() -> u8 {
    24
}
fn default_vni() -> u32 {
    1
}
fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_device() -> String {
    DEFAULT_DEVICE.into()
}
fn default_subnet_file() -> PathBuf {
    DEFAULT_SUBNET_FILE.into()
}
fn default_ttl() -> u64 {
    30
}
fn default_prefix() -> String {
    DEFAULT_ETCD_PREFIX.into()
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::read_bounded(path, MAX_CONFIG_BYTES)?;
        let c: Config = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .map_err(|e| OverlayError::config("(file)", e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| OverlayError::config("(file)", e.to_string()))?
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        self.pool()?;
        if self.vni == 0 || self.vni >= 1 << 24 {
            return Err(OverlayError::config(
                "vni",
                format!("{} is outside 1..2^24", self.vni),
            ));
        }
        if self.port == 0 {
            return Err(OverlayError::config("port", "must not be 0"));
        }
        if !valid_ifname(&self.device) {
            return Err(OverlayError::config(
                "device",
                format!("{:?} is not an interface name", self.device),
            ));
        }
        if let Some(i) = &self.underlay_interface
            && !valid_ifname(i)
        {
            return Err(OverlayError::config(
                "underlay_interface",
                format!("{i:?} is not an interface name"),
            ));
        }
        if self.underlay_interface.is_none() && self.underlay_address.is_none() {
            return Err(OverlayError::config(
                "underlay_interface",
                "set underlay_interface or underlay_address",
            ));
        }
        if !(3..=3600).contains(&self.lease_ttl_secs) {
            return Err(OverlayError::config(
                "lease_ttl_secs",
                format!("{} is outside 3..=3600", self.lease_ttl_secs),
            ));
        }
        if let Some(n) = &self.node_name
            && (n.is_empty() || n.len() > 253 || n.contains(['/', '\0']))
        {
            return Err(OverlayError::config(
                "node_name",
                format!("{n:?} is not a node name"),
            ));
        }
        match &self.backend {
            BackendConfig::Static { .. } => {}
            BackendConfig::Etcd { endpoints, prefix } => {
                if endpoints.is_empty() || endpoints.len() > 16 {
                    return Err(OverlayError::config(
                        "backend.endpoints",
                        "give 1 to 16 endpoints",
                    ));
                }
                for e in endpoints {
                    let hostport = e.strip_prefix("http://").unwrap_or(e).trim_end_matches('/');
                    if hostport.parse::<SocketAddr>().is_err() && !hostport.contains(':') {
                        return Err(OverlayError::config(
                            "backend.endpoints",
                            format!("{e:?} is not host:port"),
                        ));
                    }
                }
                if !prefix.starts_with('/') || prefix.len() > 256 {
                    return Err(OverlayError::config(
                        "backend.prefix",
                        "must start with / and be at most 256 bytes",
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn pool(&self) -> Result<SubnetPool> {
        SubnetPool::new(self.cluster_cidr, self.subnet_len)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
}

pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config> {
        let c: Config =
            toml::from_str(s).map_err(|e| OverlayError::config("(file)", e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_backends() {
        let c = parse(
            r#"cluster_cidr = "10.244.0.0/16"
underlay_interface = "eth0"
backend = { type = "etcd", endpoints = ["http://127.0.0.1:2379"] }"#,
        )
        .unwrap();
        assert_eq!(
            (c.port, c.vni, c.subnet_len, c.lease_ttl_secs),
            (8472, 1, 24, 30)
        );
        assert!(
            matches!(c.backend, BackendConfig::Etcd { ref prefix, .. } if prefix == DEFAULT_ETCD_PREFIX)
        );
        let c = parse(
            r#"cluster_cidr = "10.244.0.0/16"
underlay_address = "192.168.0.1"
port = 4789
[backend]
type = "static"
path = "/etc/crius/nodes.json""#,
        )
        .unwrap();
        assert_eq!(c.port, 4789);
    }

    #[test]
    fn errors_name_the_field() {
        let base = r#"cluster_cidr = "10.244.0.0/16"
underlay_interface = "eth0"
backend = { type = "static", path = "/x" }
"#;
        for (extra, field) in [
            ("vni = 0", "vni"),
            ("subnet_len = 31", "subnet_len"),
            ("lease_ttl_secs = 1", "lease_ttl_secs"),
            ("device = \"a/b\"", "device"),
        ] {
            let e = parse(&format!("{extra}\n{base}")).unwrap_err().to_string();
            assert!(e.contains(field), "{extra}: {e}");
        }
        let e = parse(
            "cluster_cidr = \"10.244.0.0/16\"\nbackend = { type = \"static\", path = \"/x\" }",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("underlay_interface"), "{e}");
        let e = parse(&format!("bogus = 1\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
