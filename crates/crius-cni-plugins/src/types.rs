//! CNI result types (spec 1.0/1.1, with 0.4.0 output conversion) and an IP prefix type.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address with a prefix length, e.g. `10.124.0.5/24`. The address need not be the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= max_prefix(addr)).then_some(Self { addr, prefix })
    }

    /// A single address: the full-length prefix.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: max_prefix(addr),
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        from_bits(self.addr, to_bits(self.addr) & self.mask())
    }

    /// The last address of the prefix (the IPv4 broadcast address).
    pub fn last(&self) -> IpAddr {
        from_bits(
            self.addr,
            to_bits(self.addr) | !self.mask() & full_mask(self.addr),
        )
    }

    pub fn trunc(&self) -> IpNet {
        IpNet {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && to_bits(ip) & self.mask() == to_bits(self.addr) & self.mask()
    }

    fn mask(&self) -> u128 {
        let bits = u32::from(max_prefix(self.addr));
        let host = bits - u32::from(self.prefix);
        if host >= 128 {
            0
        } else {
            (full_mask(self.addr) >> host) << host
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn full_mask(ip: IpAddr) -> u128 {
    if ip.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// An address of the same family as `like` from its integer form.
pub fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((bits & u128::from(u32::MAX)) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{p:?} is not a prefix length"))?;
        IpNet::new(addr, prefix)
            .ok_or_else(|| format!("prefix length {prefix} too long for {addr}"))
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only emitted for cniVersion 0.4.0 results ("4" or "6").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// The success result of ADD (also the shape of `prevResult`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Parse a result (a delegate's stdout or a `prevResult`) of any supported version.
    pub fn from_value(v: serde_json::Value) -> Result<Self, serde_json::Error> {
        let mut r: CniResult = serde_json::from_value(v)?;
        for ip in &mut r.ips {
            ip.version = None;
        }
        Ok(r)
    }

    /// The result as JSON in the wire format of `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut r = self.clone();
        r.cni_version = cni_version.to_owned();
        let legacy = cni_version.starts_with("0.");
        for ip in &mut r.ips {
            ip.version =
                legacy.then(|| if ip.address.addr.is_ipv4() { "4" } else { "6" }.to_owned());
        }
        serde_json::to_value(&r).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipnet_math() {
        let n: IpNet = "10.124.0.5/24".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.124.0.0");
        assert_eq!(n.last().to_string(), "10.124.0.255");
        assert!(n.contains("10.124.0.200".parse().unwrap()));
        assert!(!n.contains("10.124.1.1".parse().unwrap()));
        let z: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(z.contains("1.2.3.4".parse().unwrap()));
        let v6: IpNet = "fd00::1/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00::");
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("10.0.0.0".parse::<IpNet>().is_err());
    }

    #[test]
    fn legacy_result_has_ip_version() {
        let r = CniResult {
            ips: vec![IpConfig {
                version: None,
                address: "10.1.0.2/24".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            ..Default::default()
        };
        assert_eq!(r.to_json("0.4.0")["ips"][0]["version"], "4");
        assert!(r.to_json("1.0.0")["ips"][0].get("version").is_none());
    }
}
