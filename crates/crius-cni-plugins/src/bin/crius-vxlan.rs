//! crius-vxlan: pods on the VXLAN overlay. Like flannel's CNI plugin, it reads the node's
//! lease from the subnet file that `crius-overlay` writes and delegates to crius-bridge (and
//! through it to crius-host-local) with a generated configuration: the node bridge as the
//! pods' gateway, addresses from the leased subnet, the MTU reduced for the encapsulation,
//! and masquerade only for traffic leaving the cluster CIDR. The generated configuration is
//! kept per attachment so DEL releases exactly what ADD set up, even after the lease moved.

use std::io::Read;
use std::path::{Path, PathBuf};

use crius_cni_plugins::error::{CniError, ErrorCode, Result};
use crius_cni_plugins::ipam::{exec_plugin, find_plugin_for};
use crius_cni_plugins::skel::{self, CmdArgs, Plugin, valid_ifname};
use crius_cni_plugins::types::IpNet;
use serde_json::{Value, json};

const DEFAULT_SUBNET_FILE: &str = "/run/crius-overlay/subnet.json";
const DEFAULT_BRIDGE: &str = "crius-vx0";
const DEFAULT_CACHE_DIR: &str = "/var/lib/cni/crius-vxlan";
const DELEGATE: &str = "crius-bridge";
const MAX_SUBNET_FILE: u64 = 64 * 1024;

/// The agent's lease as written to the subnet file.
#[derive(Debug, Clone, PartialEq)]
struct Lease {
    network: IpNet,
    subnet: IpNet,
    mtu: u32,
}

fn read_lease(path: &Path) -> Result<Lease> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SUBNET_FILE + 1).read_to_string(&mut text))
        .map_err(|e| {
            CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "no overlay lease in {} (is crius-overlay running?)",
                    path.display()
                ),
                e.to_string(),
            )
        })?;
    let bad = |what: &str| {
        CniError::new(
            ErrorCode::Decoding,
            format!("subnet file {}: {what}", path.display()),
            "",
        )
    };
    if text.len() as u64 > MAX_SUBNET_FILE {
        return Err(bad("too large"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|_| bad("not JSON"))?;
    let net = |k: &str| -> Result<IpNet> {
        v[k].as_str()
            .and_then(|s| s.parse::<IpNet>().ok())
            .ok_or_else(|| bad(&format!("`{k}` is not a prefix")))
    };
    let lease = Lease {
        network: net("network")?,
        subnet: net("subnet")?,
        mtu: v["mtu"]
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .filter(|m| (68..=65535).contains(m))
            .ok_or_else(|| bad("`mtu` is not 68..=65535"))?,
    };
    if !lease.network.contains(lease.subnet.addr) || lease.subnet.prefix < lease.network.prefix {
        return Err(bad("`subnet` is not inside `network`"));
    }
    Ok(lease)
}

struct VxlanConf {
    network: String,
    subnet_file: PathBuf,
    bridge: String,
    data_dir: Option<String>,
    cache_dir: PathBuf,
    hairpin: bool,
}

impl VxlanConf {
    fn parse(args: &CmdArgs) -> Result<Self> {
        let c = args.conf()?;
        let bridge = c
            .str_opt("bridge")?
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_BRIDGE)
            .to_owned();
        if !valid_ifname(&bridge) {
            return Err(CniError::config(
                "bridge",
                format!("{bridge:?} is not a valid interface name"),
            ));
        }
        Ok(Self {
            network: c.str_req("name")?.to_owned(),
            subnet_file: c
                .str_opt("subnetFile")?
                .filter(|s| !s.is_empty())
                .unwrap_or(DEFAULT_SUBNET_FILE)
                .into(),
            bridge,
            data_dir: c.str_opt("dataDir")?.map(str::to_owned),
            cache_dir: c
                .str_opt("cacheDir")?
                .filter(|s| !s.is_empty())
                .unwrap_or(DEFAULT_CACHE_DIR)
                .into(),
            hairpin: c.bool_or("hairpinMode", true)?,
        })
    }

    /// The configuration handed to crius-bridge for `lease`.
    fn delegate(&self, args: &CmdArgs, lease: &Lease) -> Value {
        let mut ipam = json!({
            "type": "crius-host-local",
            "ranges": [[{"subnet": lease.subnet.trunc().to_string()}]],
        });
        if let Some(d) = &self.data_dir {
            ipam["dataDir"] = json!(d);
        }
        json!({
            "cniVersion": args.cni_version,
            "name": self.network,
            "type": DELEGATE,
            "bridge": self.bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": true,
            "ipMasqExclude": [lease.network.trunc().to_string()],
            "mtu": lease.mtu,
            "hairpinMode": self.hairpin,
            "ipam": ipam,
        })
    }

    /// Where ADD keeps the delegate configuration of one attachment.
    fn cache_path(&self, args: &CmdArgs) -> PathBuf {
        self.cache_dir
            .join(&self.network)
            .join(format!("{}-{}", args.container_id, args.ifname))
    }
}

/// The pod CIDR the runtime passed (`runtimeConfig.ipRanges`, from UpdateRuntimeConfig) must
/// be the lease; a mismatch is reported loudly on stderr (criusd logs it) and the lease wins.
fn check_runtime_cidr(args: &CmdArgs, lease: &Lease) {
    let given: Vec<&str> = args.config["runtimeConfig"]["ipRanges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|r| r["subnet"].as_str())
        .collect();
    let lease_s = lease.subnet.trunc().to_string();
    if !given.is_empty()
        && !given.iter().any(|g| {
            g.parse::<IpNet>()
                .is_ok_and(|n| n.trunc().to_string() == lease_s)
        })
    {
        eprintln!(
            "crius-vxlan: WARNING: the runtime's pod CIDR {given:?} differs from this node's overlay lease {lease_s}; using the lease"
        );
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CniError::io("creating", dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| CniError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CniError::io("renaming onto", path, e))
}

fn run_delegate(
    args: &CmdArgs,
    command: &str,
    conf: &Value,
) -> Result<Option<crius_cni_plugins::types::CniResult>> {
    let exe = find_plugin_for(args, DELEGATE, "delegate plugin", "type")?;
    let stdin = serde_json::to_vec(conf).expect("serializable");
    exec_plugin(&exe, DELEGATE, "delegate plugin", command, &stdin)
}

/// The cached delegate configuration, or one built from the current lease.
fn cached_or_current(conf: &VxlanConf, args: &CmdArgs) -> Option<Value> {
    let mut cached = Vec::new();
    std::fs::File::open(conf.cache_path(args))
        .and_then(|f| f.take(MAX_SUBNET_FILE).read_to_end(&mut cached))
        .ok()
        .and_then(|_| serde_json::from_slice(&cached).ok())
        .or_else(|| {
            read_lease(&conf.subnet_file)
                .ok()
                .map(|l| conf.delegate(args, &l))
        })
}

struct Vxlan;

impl Plugin for Vxlan {
    fn add(&self, args: &CmdArgs) -> Result<Value> {
        let conf = VxlanConf::parse(args)?;
        let lease = read_lease(&conf.subnet_file)?;
        check_runtime_cidr(args, &lease);
        let d = conf.delegate(args, &lease);
        // Cached before ADD: a DEL after a half-done ADD still finds what to undo.
        let cache = conf.cache_path(args);
        write_atomic(&cache, &serde_json::to_vec(&d).expect("serializable"))?;
        match run_delegate(args, "ADD", &d) {
            Ok(r) => Ok(r.unwrap_or_default().to_json(&args.cni_version)),
            Err(e) => {
                let _ = run_delegate(args, "DEL", &d);
                let _ = std::fs::remove_file(&cache);
                Err(e)
            }
        }
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let conf = VxlanConf::parse(args)?;
        let Some(d) = cached_or_current(&conf, args) else {
            // Never added on this node and no lease: nothing to release.
            return Ok(());
        };
        run_delegate(args, "DEL", &d)?;
        match std::fs::remove_file(conf.cache_path(args)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io("removing", &conf.cache_path(args), e)),
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let conf = VxlanConf::parse(args)?;
        let d = cached_or_current(&conf, args).ok_or_else(|| {
            CniError::new(
                ErrorCode::UnknownContainer,
                format!("no attachment {} {}", args.container_id, args.ifname),
                "",
            )
        })?;
        run_delegate(args, "CHECK", &d).map(drop)
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        let conf = VxlanConf::parse(args)?;
        read_lease(&conf.subnet_file).map(drop)
    }
}

fn main() {
    skel::run(&Vxlan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Value) -> CmdArgs {
        CmdArgs {
            command: skel::Command::Add,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            path: vec![],
            args: vec![],
            stdin: serde_json::to_vec(&config).unwrap(),
            config,
            cni_version: "1.0.0".into(),
        }
    }

    #[test]
    fn delegate_uses_the_lease_and_spares_the_cluster_from_masquerade() {
        let a = args(
            json!({"cniVersion": "1.0.0", "name": "ovl", "type": "crius-vxlan",
                            "dataDir": "/tmp/x", "cacheDir": "/tmp/c"}),
        );
        let conf = VxlanConf::parse(&a).unwrap();
        let lease = Lease {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.3.0/24".parse().unwrap(),
            mtu: 1450,
        };
        let d = conf.delegate(&a, &lease);
        assert_eq!(d["type"], "crius-bridge");
        assert_eq!(d["bridge"], DEFAULT_BRIDGE);
        assert_eq!(d["mtu"], 1450);
        assert_eq!(d["ipMasq"], true);
        assert_eq!(d["ipMasqExclude"], json!(["10.244.0.0/16"]));
        assert_eq!(d["isDefaultGateway"], true);
        assert_eq!(d["ipam"]["type"], "crius-host-local");
        assert_eq!(d["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(d["ipam"]["dataDir"], "/tmp/x");
        assert_eq!(conf.cache_path(&a), Path::new("/tmp/c/ovl/c1-eth0"));
        let bad = args(json!({"name": "ovl", "bridge": "a/b"}));
        let e = VxlanConf::parse(&bad).err().unwrap();
        assert!(e.msg.contains("`bridge`"), "{e}");
    }

    #[test]
    fn lease_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("subnet.json");
        let e = read_lease(&p).unwrap_err();
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        std::fs::write(
            &p,
            r#"{"network":"10.244.0.0/16","subnet":"10.244.3.0/24","mtu":1450,"node":"a"}"#,
        )
        .unwrap();
        let l = read_lease(&p).unwrap();
        assert_eq!(
            (l.subnet.to_string().as_str(), l.mtu),
            ("10.244.3.0/24", 1450)
        );
        for (bad, want) in [
            (
                r#"{"network":"10.244.0.0/16","subnet":"10.9.3.0/24","mtu":1450}"#,
                "not inside",
            ),
            (
                r#"{"network":"10.244.0.0/16","subnet":"10.244.3.0/24","mtu":9}"#,
                "mtu",
            ),
            (
                r#"{"network":"10.244.0.0/16","subnet":"x","mtu":1450}"#,
                "subnet",
            ),
            ("nope", "not JSON"),
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = read_lease(&p).unwrap_err();
            assert!(e.msg.contains(want), "{bad}: {e}");
        }
    }
}
