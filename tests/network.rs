//! Pod networking through criusd, run twice: with crius's own plugins and with Debian's
//! reference plugins. Traffic stays on this host: loopback, the test bridge and the pods'
//! network namespaces.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use common::CRIUSD;
use crius_testkit::{Daemon, DaemonOptions};
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PortMapping, Protocol,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use tonic::Code;

#[derive(Clone, Copy, Debug)]
enum Plugins {
    Crius,
    Reference,
}

struct Net {
    daemon: Daemon,
    bridge: String,
    subnet_prefix: String,
    /// `fdXX:XXXX::` when the network is dual-stack.
    v6_prefix: Option<String>,
    data_dir: PathBuf,
    conf_dir: PathBuf,
    _dir: tempfile::TempDir,
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .unwrap();
    u16::from_le_bytes(b)
}

fn conflist(plugins: Plugins, bridge: &str, subnets: &[String], data_dir: &Path) -> String {
    let (lo, br, ipam, pm) = match plugins {
        Plugins::Crius => (
            "crius-loopback",
            "crius-bridge",
            "crius-host-local",
            "crius-portmap",
        ),
        Plugins::Reference => ("loopback", "bridge", "host-local", "portmap"),
    };
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("net-{bridge}"),
        "plugins": [
            {"type": lo},
            {"type": br, "bridge": bridge, "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": ipam, "ranges": subnets.iter().map(|s| vec![serde_json::json!({"subnet": s})]).collect::<Vec<_>>(),
                      "dataDir": data_dir}},
            {"type": pm, "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

impl Net {
    async fn start(plugins: Plugins) -> Result<Net> {
        Self::start_with(plugins, false).await
    }

    async fn start_with(plugins: Plugins, dual_stack: bool) -> Result<Net> {
        let dir = tempfile::tempdir()?;
        let n = rand_u16();
        let bridge = format!("crt{n:04x}");
        let subnet_prefix = format!("10.{}.{}", 200 + (n % 50), (n >> 8) % 250);
        let v6_prefix = dual_stack.then(|| format!("fd{:02x}:{n:x}::", n % 256));
        let mut subnets = vec![format!("{subnet_prefix}.0/24")];
        subnets.extend(v6_prefix.iter().map(|p| format!("{p}/64")));
        let conf_dir = dir.path().join("net.d");
        let data_dir = dir.path().join("ipam");
        std::fs::create_dir_all(&conf_dir)?;
        std::fs::write(
            conf_dir.join("10-test.conflist"),
            conflist(plugins, &bridge, &subnets, &data_dir),
        )?;
        let own_plugins = Path::new(CRIUSD).parent().unwrap();
        let config = format!(
            "[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\", \"/usr/lib/cni\"]\nwrite_default_config = false\n",
            conf_dir.display(),
            own_plugins.display()
        );
        let daemon = Daemon::start(DaemonOptions::new(CRIUSD).config(config)).await?;
        Ok(Net {
            daemon,
            bridge,
            subnet_prefix,
            v6_prefix,
            data_dir,
            conf_dir,
            _dir: dir,
        })
    }

    async fn run_pod(&self, name: &str, ports: &[(i32, i32)]) -> Result<String, tonic::Status> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "net".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name.into(),
            port_mappings: ports
                .iter()
                .map(|(c, h)| PortMapping {
                    protocol: Protocol::Tcp as i32,
                    container_port: *c,
                    host_port: *h,
                    host_ip: String::new(),
                })
                .collect(),
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
        let mut rt = self
            .daemon
            .runtime()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
    }

    async fn ip_and_netns(&self, id: &str) -> Result<(String, PathBuf)> {
        let r = self
            .daemon
            .runtime()
            .await?
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await?;
        let r = r.into_inner();
        let info: serde_json::Value = serde_json::from_str(&r.info["info"])?;
        Ok((
            r.status.unwrap().network.unwrap().ip,
            PathBuf::from(info["netns"].as_str().unwrap()),
        ))
    }

    /// PodSandboxStatus's primary IP and additional IPs.
    async fn ips(&self, id: &str) -> Result<(String, Vec<String>)> {
        let r = self
            .daemon
            .runtime()
            .await?
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner();
        let n = r.status.unwrap().network.unwrap();
        Ok((n.ip, n.additional_ips.into_iter().map(|i| i.ip).collect()))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let mut rt = self.daemon.runtime().await?;
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await?;
        Ok(())
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.subnet_prefix)
    }

    /// Nothing of the network left: veths on the bridge, IP allocations, netns files.
    fn assert_clean(&self) {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&out.stdout);
        assert!(
            links.trim().is_empty(),
            "veths left on {}: {links}",
            self.bridge
        );
        let allocations: Vec<String> = walk_files(&self.data_dir)
            .into_iter()
            .filter(|f| {
                f.file_name()
                    .is_some_and(|n| n.to_string_lossy().parse::<std::net::IpAddr>().is_ok())
            })
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            allocations.is_empty(),
            "IP allocations left: {allocations:?}"
        );
        assert!(
            common::dir_names(&self.daemon.state().join("netns")).is_empty(),
            "netns files left"
        );
        let rules = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(
            !rules.contains(&self.subnet_prefix),
            "nft rules for the test subnet left:\n{rules}"
        );
        if let Some(p) = &self.v6_prefix {
            assert!(
                !rules.contains(p.as_str()),
                "nft rules for the test IPv6 subnet left:\n{rules}"
            );
        }
    }
}

impl Drop for Net {
    /// A failed test may leave its pods' NAT rules: remove every rule tagged with this test's
    /// network name, from crius's nft tables and the reference plugins' iptables chains.
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        let tag = format!("net-{}", self.bridge);
        for table in ["crius-nat", "crius-portmap"] {
            let Ok(out) = Command::new("nft")
                .args(["-a", "list", "table", "inet", table])
                .output()
            else {
                continue;
            };
            let listing = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut chain = String::new();
            for line in listing.lines().map(str::trim) {
                if let Some(name) = line.strip_prefix("chain ") {
                    // "chain prerouting { # handle 1"
                    chain = name
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                } else if let Some(handle) = line
                    .contains(&tag)
                    .then(|| line.rsplit("# handle ").next())
                    .flatten()
                {
                    let _ = Command::new("nft")
                        .args(["delete", "rule", "inet", table, &chain, "handle", handle])
                        .status();
                }
            }
        }
        for ipt in ["iptables", "ip6tables"] {
            let Ok(out) = Command::new(format!("{ipt}-save"))
                .args(["-t", "nat"])
                .output()
            else {
                continue;
            };
            let rules = String::from_utf8_lossy(&out.stdout).into_owned();
            for rule in rules
                .lines()
                .filter(|l| l.starts_with("-A ") && l.contains(&tag))
            {
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{ipt} -t nat -D {}", &rule[3..]))
                    .status();
            }
        }
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn ping_from(netns: &Path, ip: &str) -> bool {
    let applet = if ip.contains(':') { "ping6" } else { "ping" };
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["busybox", applet, "-c1", "-W2", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An HTTP server inside the pod's network namespace, on every IPv4 address.
fn serve_in(netns: &Path, port: u16, dir: &Path) -> Child {
    serve_on(netns, "0.0.0.0", port, dir)
}

/// An HTTP server inside the pod's network namespace, bound to `bind` (`::` = both families).
fn serve_on(netns: &Path, bind: &str, port: u16, dir: &Path) -> Child {
    std::fs::write(dir.join("index.html"), "hello from the pod\n").unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args([
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            bind,
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    child
}

/// Whether a response came from the test server in the pod.
fn served(body: &Option<String>) -> bool {
    body.as_deref()
        .is_some_and(|b| b.contains("hello from the pod"))
}

fn http_get(addr: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

async fn pods_talk_and_host_ports_work(plugins: Plugins) -> Result<()> {
    let net = Net::start(plugins).await?;
    let host_port = 30000 + (rand_u16() % 20000);
    let a = net.run_pod("a", &[(8080, host_port as i32)]).await?;
    let b = net.run_pod("b", &[]).await?;
    let (ip_a, ns_a) = net.ip_and_netns(&a).await?;
    let (ip_b, ns_b) = net.ip_and_netns(&b).await?;
    assert!(
        ip_a.starts_with(&net.subnet_prefix) && ip_b.starts_with(&net.subnet_prefix),
        "{plugins:?}: {ip_a} {ip_b}"
    );
    assert_ne!(ip_a, ip_b);
    assert!(ping_from(&ns_a, &ip_b), "{plugins:?}: pod a reaches pod b");
    assert!(
        ping_from(&ns_b, &net.gateway()),
        "{plugins:?}: pod reaches the host"
    );
    let hosts = std::fs::read_to_string(net.daemon.state().join("pods").join(&a).join("hosts"))?;
    assert!(hosts.contains(&ip_a), "/etc/hosts has the pod IP: {hosts}");

    let www = tempfile::tempdir()?;
    let mut server = serve_in(&ns_a, 8080, www.path());
    let direct = http_get(&format!("{ip_a}:8080"));
    let via_localhost = http_get(&format!("127.0.0.1:{host_port}"));
    let via_gateway = http_get(&format!("{}:{host_port}", net.gateway()));
    let from_pod = Command::new("nsenter")
        .arg(format!("--net={}", ns_b.display()))
        // Debian's static busybox wget crashes in its resolver; python's urllib does not.
        .args(["python3", "-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"])
        .arg(format!("http://{}:{host_port}/index.html", net.gateway()))
        .output();
    let _ = server.kill();
    let _ = server.wait();
    let from_pod = from_pod?;
    assert!(served(&direct), "{plugins:?}: host reaches the pod's port");
    assert!(
        served(&via_localhost),
        "{plugins:?}: hostPort via 127.0.0.1"
    );
    assert!(
        served(&via_gateway),
        "{plugins:?}: hostPort via a host address"
    );
    assert!(
        String::from_utf8_lossy(&from_pod.stdout).contains("hello from the pod"),
        "{plugins:?}: hostPort from another pod: {}",
        String::from_utf8_lossy(&from_pod.stderr)
    );

    net.remove(&a).await?;
    net.remove(&b).await?;
    net.remove(&b).await?; // idempotent
    assert!(
        http_get(&format!("127.0.0.1:{host_port}")).is_none(),
        "port mapping removed"
    );
    net.assert_clean();
    Ok(())
}

#[tokio::test]
async fn crius_plugins_pods_talk_and_host_ports_work() -> Result<()> {
    pods_talk_and_host_ports_work(Plugins::Crius).await
}

#[tokio::test]
async fn reference_plugins_pods_talk_and_host_ports_work() -> Result<()> {
    pods_talk_and_host_ports_work(Plugins::Reference).await
}

/// Retries `f` for up to `within`: IPv6 addresses of the reference plugins pass duplicate
/// address detection before they can be used.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn dual_stack_pods(plugins: Plugins) -> Result<()> {
    let net = Net::start_with(plugins, true).await?;
    let v6 = net.v6_prefix.clone().unwrap();
    let gw6 = format!("{v6}1");
    let host_port = 30000 + (rand_u16() % 20000);
    let a = net.run_pod("a", &[(8080, host_port as i32)]).await?;
    let (_, ns_a) = net.ip_and_netns(&a).await?;
    if matches!(plugins, Plugins::Crius) {
        // crius skips duplicate address detection (IPAM already guarantees uniqueness), so
        // the pod's and the gateway's IPv6 addresses are usable as soon as ADD returns.
        let pod_addrs = Command::new("nsenter")
            .arg(format!("--net={}", ns_a.display()))
            .args(["ip", "-6", "addr", "show", "dev", "eth0"])
            .output()?;
        let pod_addrs = String::from_utf8_lossy(&pod_addrs.stdout);
        assert!(
            pod_addrs.contains(&v6) && !pod_addrs.contains("tentative"),
            "pod IPv6 address usable at once: {pod_addrs}"
        );
        let bridge_addrs = Command::new("ip")
            .args(["-6", "addr", "show", "dev", &net.bridge])
            .output()?;
        let bridge_addrs = String::from_utf8_lossy(&bridge_addrs.stdout);
        assert!(
            bridge_addrs.contains(&gw6)
                && !bridge_addrs.contains(&format!("{gw6}/64 scope global tentative")),
            "gateway IPv6 address usable at once: {bridge_addrs}"
        );
    }
    let b = net.run_pod("b", &[]).await?;
    let (a4, a_more) = net.ips(&a).await?;
    let (b4, b_more) = net.ips(&b).await?;
    assert!(
        a4.starts_with(&net.subnet_prefix) && b4.starts_with(&net.subnet_prefix),
        "{plugins:?}: the primary IP is the first range's (IPv4): {a4} {b4}"
    );
    assert!(
        a_more.len() == 1
            && a_more[0].starts_with(&v6)
            && b_more.len() == 1
            && b_more[0].starts_with(&v6),
        "{plugins:?}: the IPv6 address is an additional IP: {a_more:?} {b_more:?}"
    );
    assert_ne!(a_more, b_more);
    let (a6, b6) = (a_more[0].clone(), b_more[0].clone());
    let (_, ns_b) = net.ip_and_netns(&b).await?;
    assert!(
        eventually(Duration::from_secs(5), || ping_from(&ns_b, &a6)),
        "{plugins:?}: pod b reaches pod a over IPv6"
    );
    assert!(
        eventually(Duration::from_secs(5), || ping_from(&ns_a, &gw6)),
        "{plugins:?}: pod a reaches the host over IPv6"
    );
    assert!(
        ping_from(&ns_a, &b6),
        "{plugins:?}: pod a reaches pod b over IPv6"
    );
    assert!(ping_from(&ns_a, &b4), "{plugins:?}: IPv4 still works");

    let www = tempfile::tempdir()?;
    let mut server = serve_on(&ns_a, "::", 8080, www.path());
    let fetch = |addr: String| {
        let mut body = None;
        eventually(Duration::from_secs(5), || {
            body = http_get(&addr);
            body.is_some()
        });
        body
    };
    let direct6 = fetch(format!("[{a6}]:8080"));
    let host_port6 = fetch(format!("[{gw6}]:{host_port}"));
    let host_port4 = http_get(&format!("{}:{host_port}", net.gateway()));
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        served(&direct6),
        "{plugins:?}: host reaches the pod's port over IPv6"
    );
    assert!(
        served(&host_port6),
        "{plugins:?}: hostPort via a host IPv6 address"
    );
    assert!(
        served(&host_port4),
        "{plugins:?}: hostPort via a host IPv4 address"
    );
    net.remove(&a).await?;
    net.remove(&b).await?;
    assert!(
        http_get(&format!("[{gw6}]:{host_port}")).is_none(),
        "IPv6 port mapping removed"
    );
    net.assert_clean();
    Ok(())
}

#[tokio::test]
async fn crius_plugins_dual_stack() -> Result<()> {
    dual_stack_pods(Plugins::Crius).await
}

#[tokio::test]
async fn reference_plugins_dual_stack() -> Result<()> {
    dual_stack_pods(Plugins::Reference).await
}

async fn fifty_pods_in_parallel(plugins: Plugins) -> Result<()> {
    let net = Net::start(plugins).await?;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut rt = net.daemon.runtime().await?;
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: format!("p{i}"),
                namespace: "net".into(),
                uid: format!("u{i}"),
                attempt: 0,
            }),
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
        tasks.push(tokio::spawn(async move {
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await??);
    }
    let mut ips = Vec::new();
    for id in &ids {
        ips.push(net.ip_and_netns(id).await?.0);
    }
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 50, "{plugins:?}: 50 distinct IPs: {ips:?}");
    for id in &ids {
        net.remove(id).await?;
    }
    net.assert_clean();
    Ok(())
}

#[tokio::test]
async fn crius_plugins_fifty_pods_in_parallel() -> Result<()> {
    fifty_pods_in_parallel(Plugins::Crius).await
}

#[tokio::test]
async fn reference_plugins_fifty_pods_in_parallel() -> Result<()> {
    fifty_pods_in_parallel(Plugins::Reference).await
}

/// The daemon is killed between ADD and DEL: after a restart the pod is removed cleanly,
/// with DEL getting the cached config even though the conf dir changed meanwhile.
#[tokio::test]
async fn pod_removed_cleanly_after_a_restart_between_add_and_del() -> Result<()> {
    let mut net = Net::start(Plugins::Crius).await?;
    let id = net.run_pod("survivor", &[(80, 31080)]).await?;
    net.daemon.kill9();
    std::fs::write(net.conf_dir.join("10-test.conflist"), "{ broken")?;
    net.daemon.restart().await?;
    let (ip, _) = net.ip_and_netns(&id).await?;
    assert!(
        ip.starts_with(&net.subnet_prefix),
        "the pod keeps its IP across the restart: {ip}"
    );
    net.remove(&id).await?;
    net.assert_clean();
    Ok(())
}

#[tokio::test]
async fn broken_config_missing_plugin_and_failing_plugin_leave_nothing() -> Result<()> {
    let net = Net::start(Plugins::Crius).await?;
    let conf = net.conf_dir.join("10-test.conflist");
    let good = std::fs::read_to_string(&conf)?;

    std::fs::write(&conf, "{ broken")?;
    let err = net
        .run_pod("broken", &[])
        .await
        .expect_err("broken conflist");
    assert!(
        err.message().contains("10-test.conflist"),
        "names the file: {}",
        err.message()
    );

    let missing = good.replace("\"crius-portmap\"", "\"crius-no-such-plugin\"");
    std::fs::write(&conf, missing)?;
    let err = net
        .run_pod("missing", &[])
        .await
        .expect_err("missing plugin");
    assert!(
        err.message().contains("crius-no-such-plugin"),
        "names the plugin: {}",
        err.message()
    );

    // A plugin that fails after the bridge did its part: the bridge's work is undone.
    let bin = tempfile::tempdir()?;
    let failing = bin.path().join("crius-test-fail");
    std::fs::write(
        &failing,
        "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"test plugin refuses\",\"details\":\"on purpose\"}'\n  exit 1\nfi\necho '{}'\n",
    )?;
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let mut list: serde_json::Value = serde_json::from_str(&good)?;
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "crius-test-fail"}));
    std::fs::write(&conf, list.to_string())?;
    let config = format!(
        "[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\", \"{}\"]\nwrite_default_config = false\n",
        net.conf_dir.display(),
        Path::new(CRIUSD).parent().unwrap().display(),
        bin.path().display()
    );
    let mut net = net;
    net.daemon.set_config(&config)?;
    net.daemon.kill9();
    net.daemon.restart().await?;
    let err = net
        .run_pod("failing", &[])
        .await
        .expect_err("failing plugin");
    assert!(
        err.message().contains("test plugin refuses") && err.message().contains("on purpose"),
        "verbatim: {}",
        err.message()
    );
    assert_ne!(err.code(), Code::Ok);

    let pods = net
        .daemon
        .runtime()
        .await?
        .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    assert!(pods.is_empty(), "no half-built pods");
    net.assert_clean();
    Ok(())
}

#[tokio::test]
async fn host_network_pods_skip_cni_and_see_host_interfaces() -> Result<()> {
    let net = Net::start(Plugins::Crius).await?;
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "hostnet".into(),
            namespace: "net".into(),
            uid: "h".into(),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut rt = net.daemon.runtime().await?;
    let id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await?
        .into_inner();
    assert_eq!(
        st.status.unwrap().network.unwrap().ip,
        "",
        "no pod IP for host-network pods"
    );
    assert!(
        walk_files(&net.data_dir).is_empty(),
        "IPAM was never called"
    );
    net.remove(&id).await?;
    Ok(())
}

/// UpdateRuntimeConfig's pod CIDR reaches plugins that declare the ipRanges capability.
#[tokio::test]
async fn pod_cidr_from_update_runtime_config_is_used() -> Result<()> {
    let net = Net::start(Plugins::Crius).await?;
    let conf = net.conf_dir.join("10-test.conflist");
    let mut list: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&conf)?)?;
    list["plugins"][1]["capabilities"] = serde_json::json!({"ipRanges": true});
    std::fs::write(&conf, list.to_string())?;
    let cidr_prefix = format!("{}.{}", net.subnet_prefix.rsplit_once('.').unwrap().0, 251);
    net.daemon
        .runtime()
        .await?
        .update_runtime_config(k8s_cri::v1::UpdateRuntimeConfigRequest {
            runtime_config: Some(k8s_cri::v1::RuntimeConfig {
                network_config: Some(k8s_cri::v1::NetworkConfig {
                    pod_cidr: format!("{cidr_prefix}.0/24"),
                }),
            }),
        })
        .await?;
    let id = net.run_pod("cidr", &[]).await?;
    let (ip, _) = net.ip_and_netns(&id).await?;
    assert!(
        ip.starts_with(&format!("{cidr_prefix}.")),
        "pod IP {ip} from the pod CIDR {cidr_prefix}.0/24"
    );
    net.remove(&id).await?;
    net.assert_clean();
    Ok(())
}

/// Another network (here a bridge standing for another runtime's) already routes
/// the pod subnet: crius's bridge refuses the pod with the route named, and leaves nothing.
#[tokio::test]
async fn pod_subnet_routed_by_another_network_is_refused_clearly() -> Result<()> {
    let net = Net::start(Plugins::Crius).await?;
    let other = format!("crbr{:04x}", rand_u16());
    let ip = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?}");
    };
    struct DelLink(String);
    impl Drop for DelLink {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    ip(&["link", "add", &other, "type", "bridge"]);
    let _guard = DelLink(other.clone());
    ip(&[
        "addr",
        "add",
        &format!("{}.200/24", net.subnet_prefix),
        "dev",
        &other,
    ]);
    ip(&["link", "set", &other, "up"]);

    let err = net.run_pod("overlap", &[]).await.unwrap_err();
    let route = format!("{}.0/24 dev {other}", net.subnet_prefix);
    assert!(
        err.message().contains("overlaps the host route") && err.message().contains(&route),
        "{err:?}"
    );
    net.assert_clean();

    // With the other network gone, the same pod runs.
    drop(_guard);
    let id = net.run_pod("overlap", &[]).await?;
    net.remove(&id).await?;
    net.assert_clean();
    Ok(())
}

/// PodSandboxStats reports the pod's interfaces from inside its network namespace: bytes the
/// host sends to the pod show as the pod's rx, the replies as its tx.
#[tokio::test]
async fn pod_network_stats_count_traffic() -> Result<()> {
    let net = Net::start(Plugins::Crius).await?;
    let id = net.run_pod("stats", &[]).await?;
    let (ip, _) = net.ip_and_netns(&id).await?;
    let eth0 = |s: k8s_cri::v1::PodSandboxStats| {
        let n = s.linux.unwrap().network.unwrap();
        let d = n.default_interface.unwrap();
        assert_eq!(d.name, "eth0");
        assert!(n.interfaces.iter().all(|i| i.name != "lo"));
        (d.rx_bytes.unwrap().value, d.tx_bytes.unwrap().value)
    };
    let stats = || async {
        net.daemon
            .runtime()
            .await?
            .pod_sandbox_stats(k8s_cri::v1::PodSandboxStatsRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?
            .into_inner()
            .stats
            .ok_or_else(|| anyhow::anyhow!("no stats"))
    };
    let (rx0, tx0) = eth0(stats().await?);
    let ok = Command::new("ping")
        .args(["-c", "10", "-i", "0.05", "-s", "1000", "-W", "2", &ip])
        .stdout(Stdio::null())
        .status()
        .or_else(|_| {
            Command::new("busybox")
                .args(["ping", "-c", "10", "-s", "1000", "-W", "2", &ip])
                .stdout(Stdio::null())
                .status()
        })?
        .success();
    assert!(ok, "the host pings the pod");
    let (rx1, tx1) = eth0(stats().await?);
    assert!(rx1 - rx0 >= 10_000, "rx grew by {}", rx1 - rx0);
    assert!(tx1 - tx0 >= 10_000, "tx grew by {}", tx1 - tx0);
    net.remove(&id).await?;
    net.assert_clean();
    Ok(())
}

/// CVE-2020-8558: the route_localnet that hostPort on 127.0.0.1 needs must not let a pod reach
/// the host's loopback-only services. The pod routes 127.0.0.1 to its gateway (what a pod with
/// NET_RAW does with a crafted packet); its SYN must get no answer, while hostPort via
/// 127.0.0.1 keeps working.
#[tokio::test]
async fn pods_cannot_reach_host_loopback_services() -> Result<()> {
    let net = Net::start(Plugins::Crius).await?;
    let host_port = 30000 + (rand_u16() % 20000);
    let a = net.run_pod("a", &[(8080, host_port as i32)]).await?;
    let (_, ns) = net.ip_and_netns(&a).await?;
    let localnet = || {
        std::fs::read_to_string(format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            net.bridge
        ))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
    };
    assert_eq!(
        localnet(),
        "1",
        "hostPort on 127.0.0.1 needs route_localnet"
    );

    let service = std::net::TcpListener::bind("127.0.0.1:0")?;
    service.set_nonblocking(true)?;
    let port = service.local_addr()?.port();
    let datagrams = std::net::UdpSocket::bind("127.0.0.1:0")?;
    datagrams.set_nonblocking(true)?;
    let udp_port = datagrams.local_addr()?.port();
    let script = format!(
        "ip route del local 127.0.0.0/8 dev lo table local; \
         ip route del local 127.0.0.1 dev lo table local; \
         echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet; \
         ip route add 127.0.0.1/32 via {} dev eth0 onlink || exit 2; \
         exec python3 -c 'import socket; \
         socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\", (\"127.0.0.1\", {udp_port})); \
         socket.create_connection((\"127.0.0.1\", {port}), timeout=2)'",
        net.gateway()
    );
    let attack = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["sh", "-c", &script])
        .output()?;
    // The host answered the SYN if the listener holds a half-open connection (SYN_RECV) or
    // a full one; the datagram arrived if it can be read.
    let listener_addr = format!("0100007F:{port:04X}");
    let answered = std::fs::read_to_string("/proc/net/tcp")?.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&listener_addr.as_str()) && f.get(3) == Some(&"03")
    }) || service.accept().is_ok();
    let delivered = datagrams.recv(&mut [0u8; 8]).is_ok();
    // The pod's own loopback routes are gone: later requests to it go over eth0 anyway.
    let www = tempfile::tempdir()?;
    let mut server = serve_in(&ns, 8080, www.path());
    let via_localhost = http_get(&format!("127.0.0.1:{host_port}"));
    let _ = server.kill();
    let _ = server.wait();

    net.remove(&a).await?;
    let localnet_after = localnet();
    net.assert_clean();
    assert_ne!(
        attack.status.code(),
        Some(2),
        "the pod could not set up its route: {}",
        String::from_utf8_lossy(&attack.stderr)
    );
    assert!(
        !answered,
        "the host answered a pod's SYN to a service bound to 127.0.0.1"
    );
    assert!(
        !delivered,
        "a pod's datagram reached a host service bound to 127.0.0.1"
    );
    assert!(served(&via_localhost), "hostPort via 127.0.0.1 still works");
    assert_eq!(
        localnet_after, "0",
        "route_localnet is closed again with the last port mapping"
    );
    Ok(())
}
