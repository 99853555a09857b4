//! The data exchanged with plugins: capability arguments (`runtimeConfig`) and results.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;

/// One pod's attachment to the network: what a CNI operation is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// CNI_CONTAINERID: the pod sandbox id.
    pub container_id: String,
    /// CNI_NETNS: the path of the pod's network namespace (may be gone for DEL).
    pub netns: PathBuf,
    /// CNI_IFNAME, normally `eth0`.
    pub ifname: String,
    /// The kubernetes identity of the pod, passed in CNI_ARGS.
    pub args: PodArgs,
    /// Capability arguments, injected as `runtimeConfig` into the plugins that declare them.
    pub capabilities: RuntimeConfig,
}

/// The `K8S_POD_*` values of CNI_ARGS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodArgs {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The capability arguments crius knows about (CNI conventions document).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_ranges: Vec<Vec<IpRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

impl RuntimeConfig {
    /// The value of one capability as it goes into `runtimeConfig`, or `None` when unset (an
    /// unset capability is not injected at all).
    pub fn capability(&self, name: &str) -> Option<Value> {
        match name {
            "portMappings" if !self.port_mappings.is_empty() => {
                serde_json::to_value(&self.port_mappings).ok()
            }
            "dns" => self.dns.as_ref().and_then(|d| serde_json::to_value(d).ok()),
            "ipRanges" if !self.ip_ranges.is_empty() => serde_json::to_value(&self.ip_ranges).ok(),
            "bandwidth" => self
                .bandwidth
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (lower case, as the portmap plugin expects).
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The `dns` capability: the pod's resolver settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub range_start: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub range_end: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

/// The `bandwidth` capability, in bits per second and bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_burst: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_burst: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A CNI result (1.0 layout; 0.3/0.4 results parse too). The plugin's JSON is kept verbatim in
/// `raw` so it can be passed on as `prevResult` and cached without loss.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: DnsResult,
    pub raw: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The netns path for an interface inside the container; empty for host interfaces.
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpConfig {
    /// CIDR notation, e.g. `10.1.0.5/24`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length, if it parses.
    pub fn ip(&self) -> Option<IpAddr> {
        let addr = self.address.split('/').next()?;
        addr.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default)]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DnsResult {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultWire {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    interfaces: Option<Vec<Interface>>,
    #[serde(default)]
    ips: Option<Vec<IpConfig>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    dns: Option<DnsResult>,
}

impl NetworkResult {
    /// Parses a plugin's result. `plugin` is only used in the error.
    pub fn from_value(plugin: &str, raw: Value) -> Result<NetworkResult, CniError> {
        if !raw.is_object() {
            return Err(CniError::BadResult {
                plugin: plugin.to_string(),
                message: format!("expected a JSON object, got {raw}"),
            });
        }
        let wire: ResultWire =
            serde_json::from_value(raw.clone()).map_err(|e| CniError::BadResult {
                plugin: plugin.to_string(),
                message: e.to_string(),
            })?;
        Ok(NetworkResult {
            cni_version: wire.cni_version,
            interfaces: wire.interfaces.unwrap_or_default(),
            ips: wire.ips.unwrap_or_default(),
            routes: wire.routes.unwrap_or_default(),
            dns: wire.dns.unwrap_or_default(),
            raw,
        })
    }

    /// The pod's primary IP (the first IPv4 address, else the first address) and the others,
    /// in result order, as PodSandboxStatus.network wants them.
    pub fn ips(&self) -> Option<(IpAddr, Vec<IpAddr>)> {
        let all: Vec<IpAddr> = self.ips.iter().filter_map(IpConfig::ip).collect();
        let primary =
            all.iter()
                .position(IpAddr::is_ipv4)
                .or(if all.is_empty() { None } else { Some(0) })?;
        let mut rest = all.clone();
        let p = rest.remove(primary);
        Some((p, rest))
    }
}
