//! Against Debian's reference CNI plugins in /usr/lib/cni (package containernetworking-plugins).
//! Needs root; skipped with a printed reason otherwise.
//!
//! Every test creates its own network namespaces and a bridge `crius-cni-test0` (the tests
//! are serialized), and [`Fixture::finish`] removes everything and asserts it is gone: the
//! namespaces, the bridge, any `CNI-*` iptables chain that was not there before, and the
//! `net.ipv4.ip_forward` sysctl that the bridge plugin turns on for a gateway.

#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crius_cni::{
    Attachment, CniError, CniManager, CniOptions, PodArgs, PortMapping, RuntimeConfig,
};
use serde_json::{Value, json};

const PLUGIN_DIR: &str = "/usr/lib/cni";
const BRIDGE: &str = "crius-cni-test0";
const NETWORK: &str = "crius-cni-test";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

static SERIAL: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        if !Path::new(PLUGIN_DIR).join(p).exists() {
            return Some(format!(
                "{PLUGIN_DIR}/{p} is missing (install containernetworking-plugins)"
            ));
        }
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the ip command is missing".into());
    }
    None
}

macro_rules! fixture_or_skip {
    () => {
        match skip_reason() {
            Some(reason) => {
                println!("skipping: {reason}");
                return;
            }
            None => Fixture::new(),
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn cni_chains() -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for tool in ["iptables", "ip6tables"] {
        for table in ["nat", "filter"] {
            let (ok, out) = run(tool, &["-w", "-t", table, "-S"]);
            if !ok {
                continue;
            }
            for line in out.lines() {
                if let Some(chain) = line.strip_prefix("-N ")
                    && chain.starts_with("CNI-")
                {
                    set.insert((tool.to_string(), table.to_string(), chain.to_string()));
                }
            }
        }
    }
    set
}

struct Fixture {
    _serial: MutexGuard<'static, ()>,
    tmp: tempfile::TempDir,
    conf_dir: PathBuf,
    cache_dir: PathBuf,
    data_dir: PathBuf,
    fail_bin: PathBuf,
    namespaces: Vec<String>,
    ip_forward: String,
    chains_before: BTreeSet<(String, String, String)>,
    finished: bool,
}

impl Fixture {
    fn new() -> Fixture {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let conf_dir = tmp.path().join("net.d");
        let cache_dir = tmp.path().join("cache");
        let data_dir = tmp.path().join("ipam");
        let fail_bin = tmp.path().join("bin");
        for d in [&conf_dir, &fail_bin] {
            std::fs::create_dir_all(d).unwrap();
        }
        assert!(
            !run("ip", &["link", "show", BRIDGE]).0,
            "{BRIDGE} exists before the test"
        );
        Fixture {
            _serial: serial,
            tmp,
            conf_dir,
            cache_dir,
            data_dir,
            fail_bin,
            namespaces: Vec::new(),
            ip_forward: std::fs::read_to_string(IP_FORWARD).unwrap(),
            chains_before: cni_chains(),
            finished: false,
        }
    }

    /// bridge (gateway, no masquerade) with host-local IPAM, then loopback, then portmap,
    /// then `extra` plugins.
    fn write_conflist(&self, extra: &[Value]) {
        let mut plugins = vec![
            json!({
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.123.0.0/24"}]],
                    "dataDir": self.data_dir,
                }
            }),
            json!({"type": "loopback"}),
            json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        ];
        plugins.extend(extra.iter().cloned());
        let list = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": plugins});
        std::fs::write(self.conf_dir.join("10-test.conflist"), list.to_string()).unwrap();
    }

    fn manager(&self) -> CniManager {
        CniManager::new(CniOptions {
            conf_dir: self.conf_dir.clone(),
            // /opt/cni/bin first (absent here), then the test's own bin dir, then Debian's.
            bin_dirs: vec![
                PathBuf::from("/opt/cni/bin"),
                self.fail_bin.clone(),
                PathBuf::from(PLUGIN_DIR),
            ],
            cache_dir: self.cache_dir.clone(),
            plugin_timeout: Duration::from_secs(60),
        })
    }

    fn netns(&mut self) -> (String, PathBuf) {
        let name = format!(
            "crius-cni-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let (ok, out) = run("ip", &["netns", "add", &name]);
        assert!(ok, "ip netns add {name}: {out}");
        self.namespaces.push(name.clone());
        let path = PathBuf::from("/run/netns").join(&name);
        (name, path)
    }

    fn attachment(&self, id: &str, netns: &Path) -> Attachment {
        Attachment {
            container_id: id.to_string(),
            netns: netns.to_path_buf(),
            ifname: "eth0".into(),
            args: PodArgs {
                namespace: "default".into(),
                name: format!("pod-{id}"),
                uid: format!("uid-{id}"),
            },
            capabilities: RuntimeConfig::default(),
        }
    }

    /// The addresses host-local holds leases for.
    fn allocations(&self) -> Vec<IpAddr> {
        let dir = self.data_dir.join(NETWORK);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut ips: Vec<IpAddr> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        ips.sort();
        ips
    }

    fn veths_on_bridge(&self) -> String {
        run("ip", &["-o", "link", "show", "master", BRIDGE]).1
    }

    fn cleanup(&mut self) {
        for ns in self.namespaces.drain(..) {
            let _ = run("ip", &["netns", "del", &ns]);
        }
        let _ = run("ip", &["link", "del", BRIDGE]);
        // Chains the plugins created (portmap's CNI-HOSTPORT-* and CNI-DN-*): drop the jumps
        // to them, then flush and delete them.
        let new: Vec<_> = cni_chains()
            .difference(&self.chains_before)
            .cloned()
            .collect();
        for (tool, table, chain) in &new {
            let (_, rules) = run(tool, &["-w", "-t", table, "-S"]);
            for rule in rules.lines() {
                let Some(rest) = rule.strip_prefix("-A ") else {
                    continue;
                };
                if rest.contains(&format!("-j {chain}")) || rest.contains(&format!("-g {chain}")) {
                    let parts = split_rule(rest);
                    let mut args = vec!["-w", "-t", table.as_str(), "-D"];
                    args.extend(parts.iter().map(String::as_str));
                    let _ = run(tool, &args);
                }
            }
        }
        for (tool, table, chain) in &new {
            let _ = run(tool, &["-w", "-t", table, "-F", chain]);
        }
        for (tool, table, chain) in &new {
            let _ = run(tool, &["-w", "-t", table, "-X", chain]);
        }
        let _ = std::fs::write(IP_FORWARD, &self.ip_forward);
    }

    /// Cleans up and asserts nothing is left.
    fn finish(mut self) {
        self.finished = true;
        let names = self.namespaces.clone();
        self.cleanup();
        let (_, list) = run("ip", &["netns", "list"]);
        for ns in names {
            assert!(!list.contains(&ns), "netns {ns} left behind");
        }
        assert!(
            !run("ip", &["link", "show", BRIDGE]).0,
            "{BRIDGE} left behind"
        );
        let left: Vec<_> = cni_chains()
            .difference(&self.chains_before)
            .cloned()
            .collect();
        assert!(left.is_empty(), "iptables chains left behind: {left:?}");
        assert_eq!(
            std::fs::read_to_string(IP_FORWARD).unwrap(),
            self.ip_forward
        );
        let tmp = self.tmp.path().to_path_buf();
        drop(self);
        assert!(!tmp.exists(), "temp dir left behind");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !self.finished {
            self.cleanup();
        }
    }
}

/// Splits an `iptables -S` rule into arguments, keeping quoted comments together.
fn split_rule(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn in_subnet(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 123, 0])
}

#[test]
fn add_check_del_with_port_mapping() {
    let mut fx = fixture_or_skip!();
    fx.write_conflist(&[]);
    let mgr = fx.manager();
    mgr.status().unwrap();
    assert!(mgr.network_status().ready);
    let v = mgr.version("bridge").unwrap();
    assert!(v.supported_versions.iter().any(|s| s == "1.0.0"), "{v:?}");

    let (ns, path) = fx.netns();
    let mut att = fx.attachment("pod-a", &path);
    att.capabilities.port_mappings = vec![PortMapping {
        host_port: 18080,
        container_port: 80,
        protocol: "tcp".into(),
        host_ip: String::new(),
    }];
    let result = mgr.add(&att).unwrap();
    let (ip, others) = result.ips().unwrap();
    assert!(in_subnet(ip), "{ip}");
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(fx.allocations(), vec![ip]);
    let (_, addrs) = run("ip", &["-n", &ns, "addr", "show", "eth0"]);
    assert!(addrs.contains(&format!("inet {ip}/24")), "{addrs}");
    let (_, lo) = run("ip", &["-n", &ns, "link", "show", "lo"]);
    assert!(lo.contains("UP"), "loopback is not up: {lo}");
    assert!(!fx.veths_on_bridge().is_empty());
    let (_, nat) = run("iptables", &["-w", "-t", "nat", "-S"]);
    assert!(
        nat.contains("--dport 18080"),
        "no DNAT rule for the host port: {nat}"
    );
    let cache_file = fx
        .cache_dir
        .join("results")
        .join(format!("{NETWORK}-pod-a-eth0"));
    assert!(cache_file.is_file());
    assert_eq!(mgr.cached_result(&att).unwrap().unwrap(), result);

    // bridge and loopback pass CHECK; Debian 12's portmap (plugins 1.1.1) then fails it for
    // an IPv4-only pod by looking for IPv6 rules (containernetworking/plugins#819, fixed
    // upstream later). Its error comes back verbatim.
    match mgr.check(&att) {
        Ok(()) => {}
        Err(CniError::Plugin { plugin, msg, .. })
            if plugin == "portmap" && msg.contains("could not check ipv6 dnat") => {}
        Err(err) => panic!("CHECK: {err}"),
    }

    // DEL as after a daemon restart with a changed conf dir: a new manager, another network
    // in the dir, no capabilities given. The cached config, result and capabilities are used.
    drop(mgr);
    std::fs::write(
        fx.conf_dir.join("10-test.conflist"),
        json!({"cniVersion":"1.0.0","name":"other","plugins":[{"type":"loopback"}]}).to_string(),
    )
    .unwrap();
    let mgr = fx.manager();
    let mut del_att = att.clone();
    del_att.capabilities = RuntimeConfig::default();
    mgr.del(&del_att).unwrap();
    assert_eq!(fx.allocations(), Vec::<IpAddr>::new());
    assert_eq!(fx.veths_on_bridge().trim(), "");
    let (_, links) = run("ip", &["-n", &ns, "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
    let (_, nat) = run("iptables", &["-w", "-t", "nat", "-S"]);
    assert!(!nat.contains("--dport 18080"), "DNAT rule left: {nat}");
    assert!(!cache_file.exists());

    // A second DEL succeeds.
    mgr.del(&del_att).unwrap();
    fx.finish();
}

#[test]
fn del_after_the_netns_is_gone() {
    let mut fx = fixture_or_skip!();
    fx.write_conflist(&[]);
    let mgr = fx.manager();
    let (ns, path) = fx.netns();
    let att = fx.attachment("pod-b", &path);
    let ip = mgr.add(&att).unwrap().ips().unwrap().0;
    assert_eq!(fx.allocations(), vec![ip]);
    // Without port mappings every plugin of the chain passes CHECK.
    mgr.check(&att).unwrap();
    let (ok, out) = run("ip", &["netns", "del", &ns]);
    assert!(ok, "{out}");
    assert!(!path.exists());
    mgr.del(&att).unwrap();
    assert_eq!(fx.allocations(), Vec::<IpAddr>::new());
    // The kernel removes the veth pair with the namespace, in its cleanup work after the last
    // reference is gone: wait for it rather than race it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fx.veths_on_bridge().trim().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(fx.veths_on_bridge().trim(), "");
    mgr.del(&att).unwrap();
    // And with no netns path at all.
    let mut empty = att.clone();
    empty.netns = PathBuf::new();
    mgr.del(&empty).unwrap();
    fx.finish();
}

#[test]
fn failing_second_plugin_rolls_back_everything() {
    let mut fx = fixture_or_skip!();
    let script = fx.fail_bin.join("crius-fail");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         cat >/dev/null\n\
         if [ \"$CNI_COMMAND\" = ADD ]; then\n\
           echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"cannot do it\",\"details\":\"the test said so\"}'\n\
           exit 1\n\
         fi\n\
         exit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    fx.write_conflist(&[json!({"type": "crius-fail"})]);
    let mgr = fx.manager();
    let (ns, path) = fx.netns();
    let att = fx.attachment("pod-c", &path);
    let err = mgr.add(&att).unwrap_err();
    assert!(matches!(err, CniError::Plugin { code: 11, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin crius-fail failed (code 11): cannot do it: the test said so"
    );
    assert_eq!(fx.allocations(), Vec::<IpAddr>::new(), "IP not released");
    assert_eq!(fx.veths_on_bridge().trim(), "", "veth left on the bridge");
    let (_, links) = run("ip", &["-n", &ns, "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
    assert!(
        !fx.cache_dir
            .join("results")
            .join(format!("{NETWORK}-pod-c-eth0"))
            .exists(),
        "cache entry left"
    );
    fx.finish();
}

#[test]
fn missing_plugin_binary_is_named() {
    let mut fx = fixture_or_skip!();
    fx.write_conflist(&[json!({"type": "crius-no-such-plugin"})]);
    let mgr = fx.manager();
    let st = mgr.network_status();
    assert!(!st.ready);
    assert!(
        st.message.contains("crius-no-such-plugin"),
        "{}",
        st.message
    );
    let (_, path) = fx.netns();
    let err = mgr.add(&fx.attachment("pod-d", &path)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CniError::PluginNotFound { .. }), "{msg}");
    assert!(msg.contains("\"crius-no-such-plugin\""), "{msg}");
    assert!(
        msg.contains("/opt/cni/bin") && msg.contains(PLUGIN_DIR),
        "{msg}"
    );
    // The plugins before it were rolled back.
    assert_eq!(fx.allocations(), Vec::<IpAddr>::new());
    assert_eq!(fx.veths_on_bridge().trim(), "");
    fx.finish();
}

#[test]
fn parallel_adds_get_distinct_ips() {
    let mut fx = fixture_or_skip!();
    fx.write_conflist(&[]);
    let mgr = fx.manager();
    let atts: Vec<Attachment> = (0..10)
        .map(|i| {
            let (_, path) = fx.netns();
            fx.attachment(&format!("pod-p{i}"), &path)
        })
        .collect();
    let ips: Vec<IpAddr> = std::thread::scope(|s| {
        let handles: Vec<_> = atts
            .iter()
            .map(|att| s.spawn(|| mgr.add(att).map(|r| r.ips().unwrap().0)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let distinct: BTreeSet<IpAddr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), 10, "{ips:?}");
    assert!(ips.iter().all(|ip| in_subnet(*ip)), "{ips:?}");
    assert_eq!(fx.allocations().len(), 10);
    std::thread::scope(|s| {
        for att in &atts {
            let mgr = &mgr;
            s.spawn(move || mgr.del(att).unwrap());
        }
    });
    assert_eq!(fx.allocations(), Vec::<IpAddr>::new());
    assert_eq!(fx.veths_on_bridge().trim(), "");
    fx.finish();
}
