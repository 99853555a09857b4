//! The VXLAN overlay across three "nodes" on this machine. Each node is a network namespace
//! made by this test, joined to the others by a veth on a bridge in an "underlay" namespace
//! (also made here), and runs its own criusd (own root, state, socket, CNI conf) and its own
//! crius-overlay agent. etcd runs in the underlay namespace on the bridge address. All
//! traffic stays inside these namespaces; everything is removed at the end.
//!
//! Needs root, `etcd` (Debian's etcd-server), `ip`/`bridge` (iproute2, used only to set up
//! and inspect), busybox and python3, and the workspace binaries built next to criusd:
//! `cargo build -p crius-overlay -p crius-cni-plugins`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::CRIUSD;
use crius_testkit::{Daemon, DaemonOptions};
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest,
};

const NODES: usize = 3;
const UNDERLAY_NET: &str = "192.168.50";
const ETCD_IP: &str = "192.168.50.254";
const CLUSTER: &str = "10.244.0.0/16";
const VXLAN_DEV: &str = "crius.vxlan";
const TTL_SECS: u64 = 6;

/// Echo server: greets each connection with the peer address it sees, then echoes lines.
const SERVER_PY: &str = r#"
import socket, sys, threading
def h(c, a):
    try:
        c.sendall((a[0] + "\n").encode())
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
while True:
    c, a = s.accept()
    threading.Thread(target=h, args=(c, a), daemon=True).start()
"#;

/// Client: prints the address the server saw, then keeps one connection busy for `dur`
/// seconds (a line every 100 ms, each echoed back within 3 s) and prints `ok N`.
const CLIENT_PY: &str = r#"
import socket, sys, time
ip, port, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = socket.create_connection((ip, port), timeout=5)
c.settimeout(3)
f = c.makefile("rb")
print(f.readline().decode().strip(), flush=True)
n = 0
end = time.time() + dur
while time.time() < end:
    c.sendall(b"ping\n")
    if f.readline() != b"ping\n":
        print("broken", flush=True)
        sys.exit(1)
    n += 1
    time.sleep(0.1)
print("ok", n, flush=True)
"#;

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .unwrap();
    u32::from_le_bytes(b)
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

fn in_netns(ns: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.display())).arg("--");
    c
}

fn sibling_bin(name: &str) -> Result<PathBuf> {
    let p = Path::new(CRIUSD).with_file_name(name);
    ensure!(
        p.is_file(),
        "{} is missing: cargo build -p crius-overlay -p crius-cni-plugins",
        p.display()
    );
    Ok(p)
}

struct Node {
    name: String,
    ns: String,
    dir: PathBuf,
    agent: Option<Child>,
    daemon: Option<Daemon>,
}

impl Node {
    fn ns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.ns)
    }
    fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.json")
    }
    fn underlay_ip(i: usize) -> String {
        format!("{UNDERLAY_NET}.{}", i + 1)
    }
}

struct Cluster {
    tag: String,
    ul_ns: String,
    etcd: Option<Child>,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn ul_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.ul_ns)
    }

    async fn start() -> Result<Cluster> {
        let tag = format!("{:05x}", rand_u32() & 0xf_ffff);
        let dir = tempfile::Builder::new()
            .prefix("crius-overlay-test-")
            .tempdir()?;
        let mut c = Cluster {
            ul_ns: format!("ovl{tag}u"),
            tag: tag.clone(),
            etcd: None,
            nodes: Vec::new(),
            dir,
        };
        // The underlay: a bridge in its own namespace, one veth per node.
        ip(&["netns", "add", &c.ul_ns])?;
        ip(&["-n", &c.ul_ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &c.ul_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &c.ul_ns,
            "addr",
            "add",
            &format!("{ETCD_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &c.ul_ns, "link", "set", "br0", "up"])?;
        for i in 0..NODES {
            let node = Node {
                name: format!("n{i}"),
                ns: format!("ovl{tag}n{i}"),
                dir: c.dir.path().join(format!("n{i}")),
                agent: None,
                daemon: None,
            };
            std::fs::create_dir_all(&node.dir)?;
            ip(&["netns", "add", &node.ns])?;
            c.nodes.push(node);
            let node = &c.nodes[i];
            ip(&["-n", &node.ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &c.ul_ns,
                "link",
                "add",
                &format!("v{i}"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.ns,
            ])?;
            ip(&[
                "-n",
                &c.ul_ns,
                "link",
                "set",
                &format!("v{i}"),
                "master",
                "br0",
                "up",
            ])?;
            ip(&[
                "-n",
                &node.ns,
                "addr",
                "add",
                &format!("{}/24", Node::underlay_ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &node.ns, "link", "set", "eth0", "up"])?;
        }
        c.start_etcd()?;
        for i in 0..NODES {
            c.write_agent_config(i)?;
            c.start_agent(i)?;
        }
        for i in 0..NODES {
            c.start_daemon(i).await?;
        }
        Ok(c)
    }

    fn start_etcd(&mut self) -> Result<()> {
        let data = self.dir.path().join("etcd");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))?;
        let client = format!("http://{ETCD_IP}:2379");
        let child = in_netns(&self.ul_path())
            .arg("etcd")
            .args(["--name", "ovl", "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "ovl=http://127.0.0.1:2380"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian package etcd-server)")?;
        self.etcd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let up = in_netns(&self.ul_path())
                .args([
                    "python3",
                    "-c",
                    &format!("import socket; socket.create_connection(('{ETCD_IP}', 2379), 1)"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("etcd did not come up: {}", self.tail("etcd.log"))
    }

    fn stop_etcd(&mut self) {
        if let Some(mut e) = self.etcd.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
    }

    fn tail(&self, file: &str) -> String {
        let s = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn write_agent_config(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        std::fs::write(
            n.dir.join("overlay.toml"),
            format!(
                "node_name = \"{}\"\ncluster_cidr = \"{CLUSTER}\"\nunderlay_interface = \"eth0\"\n\
                 lease_ttl_secs = {TTL_SECS}\nsubnet_file = \"{}\"\n\
                 [backend]\ntype = \"etcd\"\nendpoints = [\"http://{ETCD_IP}:2379\"]\nprefix = \"/crius-test-{}\"\n",
                n.name,
                n.subnet_file().display(),
                self.tag
            ),
        )?;
        Ok(())
    }

    fn start_agent(&mut self, i: usize) -> Result<()> {
        let bin = sibling_bin("crius-overlay")?;
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("agent.log"))?;
        let child = in_netns(&n.ns_path())
            .arg(bin)
            .arg("--config")
            .arg(n.dir.join("overlay.toml"))
            .args(["--log-level", "crius_overlay=debug"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        n.agent = Some(child);
        Ok(())
    }

    fn stop_agent(&mut self, i: usize, signal: nix::sys::signal::Signal) {
        if let Some(mut a) = self.nodes[i].agent.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.id() as i32), signal);
            let _ = a.wait();
        }
    }

    async fn start_daemon(&mut self, i: usize) -> Result<()> {
        sibling_bin("crius-vxlan")?;
        let n = &mut self.nodes[i];
        let conf_dir = n.dir.join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        std::fs::write(
            conf_dir.join("10-overlay.conflist"),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "overlay",
                "plugins": [
                    {"type": "crius-loopback"},
                    {"type": "crius-vxlan", "subnetFile": n.subnet_file(),
                     "dataDir": n.dir.join("ipam"), "cacheDir": n.dir.join("cache"),
                     "capabilities": {"ipRanges": true}}
                ]
            })
            .to_string(),
        )?;
        let bins = Path::new(CRIUSD).parent().unwrap();
        let config = format!(
            "[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\nwrite_default_config = false\n",
            conf_dir.display(),
            bins.display()
        );
        let d = Daemon::start(
            DaemonOptions::new(CRIUSD)
                .config(config)
                .log_level("info")
                .netns(n.ns_path()),
        )
        .await?;
        n.daemon = Some(d);
        Ok(())
    }

    fn lease(&self, i: usize) -> Option<String> {
        let text = std::fs::read_to_string(self.nodes[i].subnet_file()).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["subnet"].as_str().map(str::to_owned)
    }

    /// Peer subnets routed over the vxlan device of node `i`.
    fn vxlan_routes(&self, i: usize) -> BTreeSet<String> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.nodes[i].ns,
                "-j",
                "route",
                "show",
                "dev",
                VXLAN_DEV,
            ])
            .output();
        let v: serde_json::Value = out
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["gateway"].is_string())
            .filter_map(|r| r["dst"].as_str().map(str::to_owned))
            .collect()
    }

    /// FDB destinations and permanent neighbours on node `i`'s vxlan device.
    fn vxlan_entries(&self, i: usize) -> (BTreeSet<String>, BTreeSet<String>) {
        let ns = &self.nodes[i].ns;
        let fdb = Command::new("bridge")
            .args(["-n", ns, "-j", "fdb", "show", "dev", VXLAN_DEV])
            .output();
        let fdb: serde_json::Value = fdb
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default();
        let neigh = Command::new("ip")
            .args([
                "-n",
                ns,
                "-j",
                "neigh",
                "show",
                "dev",
                VXLAN_DEV,
                "nud",
                "permanent",
            ])
            .output();
        let neigh: serde_json::Value = neigh
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default();
        (
            fdb.as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["dst"].as_str().map(str::to_owned))
                .collect(),
            neigh
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["dst"].as_str().map(str::to_owned))
                .collect(),
        )
    }

    fn vxlan_tx_packets(&self, i: usize) -> u64 {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.nodes[i].ns,
                "-j",
                "-s",
                "link",
                "show",
                "dev",
                VXLAN_DEV,
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0)
    }

    /// Wait until every live node routes to every other live node's lease.
    fn wait_converged(&self, live: &[usize], within: Duration) -> Result<BTreeMap<usize, String>> {
        let deadline = Instant::now() + within;
        loop {
            let leases: BTreeMap<usize, String> = live
                .iter()
                .filter_map(|&i| self.lease(i).map(|l| (i, l)))
                .collect();
            let ok = leases.len() == live.len()
                && live.iter().all(|&i| {
                    let want: BTreeSet<String> = live
                        .iter()
                        .filter(|&&j| j != i)
                        .map(|j| leases[j].clone())
                        .collect();
                    self.vxlan_routes(i) == want
                });
            if ok {
                return Ok(leases);
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = live
                    .iter()
                    .map(|&i| {
                        format!(
                            "--- n{i}: routes {:?}\n{}",
                            self.vxlan_routes(i),
                            std::fs::read_to_string(self.nodes[i].dir.join("agent.log"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                bail!("overlay did not converge: {leases:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    async fn run_pod(&self, i: usize, name: &str) -> Result<Pod> {
        let d = self.nodes[i].daemon.as_ref().unwrap();
        let mut rt = d.runtime().await?;
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "overlay".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name.into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .with_context(|| format!("pod {name} on n{i}: {}", d.log_tail(20)))?
            .into_inner()
            .pod_sandbox_id;
        let r = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: true,
            })
            .await?
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&r.info["info"])?;
        Ok(Pod {
            node: i,
            id,
            ip: r.status.unwrap().network.unwrap().ip,
            netns: PathBuf::from(info["netns"].as_str().unwrap()),
        })
    }

    async fn remove_pod(&self, pod: &Pod) -> Result<()> {
        let mut rt = self.nodes[pod.node]
            .daemon
            .as_ref()
            .unwrap()
            .runtime()
            .await?;
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_agent(i, nix::sys::signal::Signal::SIGKILL);
            // criusd, its pods and their pinned namespaces (testkit's Drop).
            self.nodes[i].daemon.take();
        }
        self.stop_etcd();
        // Deleting a namespace removes its veths, bridges, vxlan device and nft tables.
        for n in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &n.ns]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ul_ns])
            .status();
    }
}

#[derive(Debug, Clone)]
struct Pod {
    node: usize,
    id: String,
    ip: String,
    netns: PathBuf,
}

fn ping(from: &Pod, to: &str) -> bool {
    in_netns(&from.netns)
        .args(["busybox", "ping", "-c1", "-W2", to])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn serve(netns: &Path, port: u16) -> Result<Child> {
    let c = in_netns(netns)
        .args(["python3", "-c", SERVER_PY, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(c)
}

/// Connect from `netns` to `ip:port`, hold the connection for `secs`; returns the address
/// the server saw. Retries the connect while the server starts.
fn client(netns: &Path, ip: &str, port: u16, secs: f64) -> Result<String> {
    let mut last = anyhow::anyhow!("never tried");
    for _ in 0..25 {
        match client_once(netns, ip, port, secs) {
            Ok(seen) => return Ok(seen),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// One connection, no retry: fails if that connection breaks at any point.
fn client_once(netns: &Path, ip: &str, port: u16, secs: f64) -> Result<String> {
    let out = in_netns(netns)
        .args([
            "python3",
            "-c",
            CLIENT_PY,
            ip,
            &port.to_string(),
            &secs.to_string(),
        ])
        .output()?;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && s.lines().last().is_some_and(|l| l.starts_with("ok")) {
        return Ok(s.lines().next().unwrap_or_default().to_owned());
    }
    bail!(
        "client {ip}:{port}: {s}{}",
        String::from_utf8_lossy(&out.stderr)
    )
}

struct KillOnDrop(Vec<Child>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn in_subnet(ip: &str, subnet: &str) -> bool {
    let (net, len) = subnet.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let ip: Ipv4Addr = ip.parse().unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    u32::from(ip) & mask == u32::from(net)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_talk_over_the_vxlan_overlay() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return Ok(());
    }
    let mut c = Cluster::start().await?;
    let leases = c.wait_converged(&[0, 1, 2], Duration::from_secs(30))?;
    let distinct: BTreeSet<&String> = leases.values().collect();
    assert_eq!(distinct.len(), NODES, "{leases:?}");

    // Every peer has its FDB entry (→ its underlay address) and permanent neighbour.
    let (fdb, neigh) = c.vxlan_entries(0);
    assert_eq!(
        fdb,
        BTreeSet::from([Node::underlay_ip(1), Node::underlay_ip(2)]),
        "fdb of n0"
    );
    assert_eq!(neigh.len(), 2, "neighbours of n0: {neigh:?}");

    let a0 = c.run_pod(0, "a0").await?;
    let a1 = c.run_pod(0, "a1").await?;
    let b0 = c.run_pod(1, "b0").await?;
    let c0 = c.run_pod(2, "c0").await?;
    for (p, i) in [(&a0, 0), (&a1, 0), (&b0, 1), (&c0, 2)] {
        assert!(
            in_subnet(&p.ip, &leases[&i]),
            "{} not in {}",
            p.ip,
            leases[&i]
        );
    }

    // Ping across nodes, every direction.
    for (from, to) in [(&a0, &b0), (&b0, &c0), (&c0, &a0), (&b0, &a1)] {
        assert!(ping(from, &to.ip), "ping {} -> {}", from.ip, to.ip);
    }

    // TCP both ways; the server sees the pod's own address (no masquerade inside the cluster).
    let _servers = KillOnDrop(vec![
        serve(&a0.netns, 8080)?,
        serve(&b0.netns, 8080)?,
        serve(&c.ul_path(), 8080)?,
    ]);
    assert_eq!(client(&a0.netns, &b0.ip, 8080, 0.3)?, a0.ip);
    assert_eq!(client(&b0.netns, &a0.ip, 8080, 0.3)?, b0.ip);
    // Leaving the cluster CIDR (to the underlay network): masqueraded to the node address.
    assert_eq!(client(&a0.netns, ETCD_IP, 8080, 0.0)?, Node::underlay_ip(0));

    // Same-node traffic stays on the bridge: the vxlan device sends nothing for it...
    let before = c.vxlan_tx_packets(0);
    for _ in 0..5 {
        assert!(ping(&a0, &a1.ip));
    }
    assert_eq!(client(&a1.netns, &a0.ip, 8080, 0.3)?, a1.ip);
    let same_node = c.vxlan_tx_packets(0) - before;
    assert_eq!(same_node, 0, "same-node traffic went over {VXLAN_DEV}");
    // ...while cross-node traffic does (the counter works).
    assert!(ping(&a0, &b0.ip));
    assert!(c.vxlan_tx_packets(0) > before);

    // Restarting etcd and every agent breaks no established connection.
    let holder = {
        let ns = a0.netns.clone();
        let ip = b0.ip.clone();
        std::thread::spawn(move || client_once(&ns, &ip, 8080, 20.0))
    };
    std::thread::sleep(Duration::from_secs(2));
    c.stop_etcd();
    for i in 0..NODES {
        c.stop_agent(i, nix::sys::signal::Signal::SIGTERM);
    }
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..NODES {
        c.start_agent(i)?;
    }
    std::thread::sleep(Duration::from_secs(3));
    // etcd down: the agents run, the data path is unchanged.
    assert_eq!(
        c.wait_converged(&[0, 1, 2], Duration::from_secs(1))?,
        leases
    );
    c.start_etcd()?;
    let after = c.wait_converged(&[0, 1, 2], Duration::from_secs(30))?;
    assert_eq!(after, leases, "leases moved across the restart");
    let seen = holder.join().unwrap()?;
    assert_eq!(seen, a0.ip);

    // 100 pods across the nodes get distinct addresses, each from its node's lease.
    let per_node = |i: usize| {
        let c = &c;
        async move {
            let mut pods = Vec::new();
            for k in 0..(100 / NODES + usize::from(i < 100 % NODES)) {
                pods.push(c.run_pod(i, &format!("many-{i}-{k}")).await?);
            }
            anyhow::Ok(pods)
        }
    };
    let many: Vec<Pod> = futures_util::future::try_join_all((0..NODES).map(per_node))
        .await?
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(many.len(), 100);
    let ips: BTreeSet<&String> = many.iter().map(|p| &p.ip).collect();
    assert_eq!(ips.len(), 100, "duplicate pod addresses");
    for p in &many {
        assert!(
            in_subnet(&p.ip, &leases[&p.node]),
            "{} not in {}",
            p.ip,
            leases[&p.node]
        );
    }
    for p in &many {
        c.remove_pod(p).await?;
    }

    // A pod CIDR from UpdateRuntimeConfig that disagrees with the lease: the lease wins and
    // criusd's log says so.
    c.nodes[0]
        .daemon
        .as_ref()
        .unwrap()
        .runtime()
        .await?
        .update_runtime_config(k8s_cri::v1::UpdateRuntimeConfigRequest {
            runtime_config: Some(k8s_cri::v1::RuntimeConfig {
                network_config: Some(k8s_cri::v1::NetworkConfig {
                    pod_cidr: "10.99.0.0/24".into(),
                }),
            }),
        })
        .await?;
    let odd = c.run_pod(0, "cidr-mismatch").await?;
    assert!(
        in_subnet(&odd.ip, &leases[&0]),
        "{} not in {}",
        odd.ip,
        leases[&0]
    );
    let log = c.nodes[0].daemon.as_ref().unwrap().log();
    assert!(
        log.contains("differs from this node's overlay lease"),
        "no mismatch warning in criusd's log"
    );
    c.remove_pod(&odd).await?;

    // Removing a node: its routes, FDB entries and neighbours leave the others within the TTL.
    let gone_ip = Node::underlay_ip(2);
    c.stop_agent(2, nix::sys::signal::Signal::SIGKILL);
    let t = Instant::now();
    let converged = c.wait_converged(&[0, 1], Duration::from_secs(TTL_SECS + 4));
    let took = t.elapsed();
    converged?;
    for i in [0, 1] {
        let (fdb, neigh) = c.vxlan_entries(i);
        assert!(
            !fdb.contains(&gone_ip),
            "n{i} fdb still has {gone_ip}: {fdb:?}"
        );
        assert_eq!(neigh.len(), 1, "n{i} neighbours: {neigh:?}");
    }
    eprintln!("node removal propagated in {took:?} (TTL {TTL_SECS} s)");

    for p in [&a0, &a1, &b0, &c0] {
        c.remove_pod(p).await?;
    }
    // DEL released every address and dropped every cached delegate configuration.
    for n in &c.nodes {
        let left: Vec<String> = std::fs::read_dir(n.dir.join("ipam/overlay"))?
            .chain(std::fs::read_dir(n.dir.join("cache/overlay"))?)
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| !f.starts_with("last_reserved_ip") && f != "lock")
            .collect();
        assert!(left.is_empty(), "{}: left behind {left:?}", n.name);
    }
    Ok(())
}
