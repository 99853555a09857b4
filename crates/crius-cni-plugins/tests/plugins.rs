//! Integration tests: run the built plugin binaries like a runtime does (CNI_* env + stdin).
//! Tests that touch netns/links/nftables need root and skip themselves otherwise. They are
//! serialised by a lock (shared host state: routes, nft tables) and clean up after themselves.

#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const BRIDGE: &str = env!("CARGO_BIN_EXE_crius-bridge");
const HOST_LOCAL: &str = env!("CARGO_BIN_EXE_crius-host-local");
const LOOPBACK: &str = env!("CARGO_BIN_EXE_crius-loopback");
const PORTMAP: &str = env!("CARGO_BIN_EXE_crius-portmap");

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            println!("skipped: needs root");
            return;
        }
    };
}

fn rand_suffix() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:06x}",
        (n ^ std::process::id().rotate_left(16)) & 0xff_ffff
    )
}

fn cni_path() -> String {
    Path::new(BRIDGE).parent().unwrap().display().to_string()
}

struct Call<'a> {
    cmd: &'a str,
    id: &'a str,
    netns: Option<&'a str>,
    ifname: &'a str,
}

fn run(bin: &str, call: &Call<'_>, conf: &Value) -> (Output, Value) {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", call.cmd)
        .env("CNI_CONTAINERID", call.id)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", cni_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = call.netns {
        c.env("CNI_NETNS", ns);
    }
    let mut child = c.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

/// Run and require success; returns stdout JSON.
fn ok(bin: &str, call: &Call<'_>, conf: &Value) -> Value {
    let (out, v) = run(bin, call, conf);
    assert!(
        out.status.success(),
        "{bin} {} failed: stdout={} stderr={}",
        call.cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command")
}

fn sh_ok(args: &[&str]) -> String {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ping_cmd() -> Vec<&'static str> {
    if sh(&["sh", "-c", "command -v ping"]).status.success() {
        vec!["ping"]
    } else {
        vec!["busybox", "ping"]
    }
}

/// A named netns, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Self {
        sh_ok(&["ip", "netns", "add", &name]);
        Netns { name }
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
    fn exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a host link on drop (the bridge of a test).
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.0]);
    }
}

/// Runs DEL on drop so a failing test does not leave links, allocations or nft rules.
struct DelOnDrop {
    bin: &'static str,
    conf: Value,
    id: String,
    netns: String,
    ifname: String,
}

impl DelOnDrop {
    fn new(bin: &'static str, call: &Call<'_>, conf: &Value) -> Self {
        DelOnDrop {
            bin,
            conf: conf.clone(),
            id: call.id.to_owned(),
            netns: call.netns.unwrap_or_default().to_owned(),
            ifname: call.ifname.to_owned(),
        }
    }
}

impl Drop for DelOnDrop {
    fn drop(&mut self) {
        let call = Call {
            cmd: "DEL",
            id: &self.id,
            netns: Some(&self.netns),
            ifname: &self.ifname,
        };
        let _ = run(self.bin, &call, &self.conf);
    }
}

/// Removes a directory on drop.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bridge_conf(net: &str, bridge: &str, subnet: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": net,
        "type": "crius-bridge",
        "bridge": bridge,
        "isGateway": true,
        "isDefaultGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "mtu": 1500,
        "ipam": {
            "type": "crius-host-local",
            "ranges": [[{ "subnet": subnet }]],
            "dataDir": data_dir,
        },
        "dns": { "nameservers": ["10.96.0.10"] },
    })
}

/// Rules of an nft table carrying `tag` in their comment (0 when the table is absent).
fn nft_rules_tagged(table: &str, tag: &str) -> usize {
    let o = sh(&["nft", "-a", "list", "table", "inet", table]);
    if !o.status.success() {
        return 0;
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(&format!("comment \"{tag}")))
        .count()
}

fn nft_table(table: &str) -> Option<String> {
    let o = sh(&["nft", "list", "table", "inet", table]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn pod_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    a.split('/').next().unwrap().to_owned()
}

fn allocations(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn bridge_two_pods_ping_and_cleanup() {
    require_root!();
    let _s = serial();
    let r = rand_suffix();
    let net = format!("crius-test-{r}");
    let bridge = format!("crbr{r}");
    let _br = LinkGuard(bridge.clone());
    let data = tempfile::tempdir().unwrap();
    let conf = bridge_conf(&net, &bridge, "10.124.0.0/24", data.path());
    let a = Netns::new(format!("crius-plugins-test-{r}-a"));
    let b = Netns::new(format!("crius-plugins-test-{r}-b"));
    let (pa, pb) = (a.path(), b.path());
    let ca = Call {
        cmd: "ADD",
        id: "ctr-a",
        netns: Some(&pa),
        ifname: "eth0",
    };
    let cb = Call {
        cmd: "ADD",
        id: "ctr-b",
        netns: Some(&pb),
        ifname: "eth0",
    };

    let lo_conf = json!({"cniVersion": "1.0.0", "name": "lo", "type": "crius-loopback"});
    let lo = ok(LOOPBACK, &ca, &lo_conf);
    assert_eq!(lo["interfaces"][0]["name"], "lo");
    assert!(
        String::from_utf8_lossy(&a.exec(&["ip", "-br", "link", "show", "lo"]).stdout)
            .contains("UP")
    );

    let _ga = DelOnDrop::new(BRIDGE, &ca, &conf);
    let _gb = DelOnDrop::new(BRIDGE, &cb, &conf);
    let ra = ok(BRIDGE, &ca, &conf);
    let rb = ok(BRIDGE, &cb, &conf);
    println!("{ra}");
    let (ipa, ipb) = (pod_ip(&ra), pod_ip(&rb));
    assert_ne!(ipa, ipb);
    assert_ne!(ipa, "10.124.0.1", "gateway is never allocated");
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["interfaces"][0]["name"], bridge.as_str());
    assert_eq!(ra["interfaces"][2]["name"], "eth0");
    assert_eq!(ra["interfaces"][2]["sandbox"], pa.as_str());
    assert_eq!(ra["ips"][0]["interface"], 2);
    assert_eq!(ra["ips"][0]["gateway"], "10.124.0.1");
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(ra["dns"]["nameservers"][0], "10.96.0.10");
    let veth_a = ra["interfaces"][1]["name"].as_str().unwrap().to_owned();
    let veth_b = rb["interfaces"][1]["name"].as_str().unwrap().to_owned();
    assert!(link_exists(&veth_a) && link_exists(&veth_b));
    assert!(
        link_exists(&format!("{bridge}/brif/{veth_a}")),
        "veth attached to bridge"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/sys/class/net/{veth_a}/brport/hairpin_mode"))
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(allocations(&data.path().join(&net)).len(), 2);
    let tag_a = format!("ctr-a/eth0/{net}");
    assert_eq!(nft_rules_tagged("crius-nat", &tag_a), 1);

    // CHECK passes on a healthy attachment.
    let mut chk = conf.clone();
    chk["prevResult"] = ra.clone();
    ok(BRIDGE, &Call { cmd: "CHECK", ..ca }, &chk);

    let mut p = ping_cmd();
    let mut pod_ping = vec!["ip", "netns", "exec", &a.name];
    pod_ping.append(&mut p.clone());
    pod_ping.extend(["-c1", "-W1", &ipb]);
    assert!(sh(&pod_ping).status.success(), "pod a pings pod b");
    p.extend(["-c1", "-W1", &ipa]);
    assert!(
        sh(&p).status.success(),
        "host pings pod a via the bridge gateway"
    );

    for (call, veth) in [(&ca, &veth_a), (&cb, &veth_b)] {
        let del = Call {
            cmd: "DEL",
            ..*call
        };
        ok(BRIDGE, &del, &conf);
        assert!(!link_exists(veth), "{veth} removed");
        ok(BRIDGE, &del, &conf); // idempotent
    }
    ok(LOOPBACK, &Call { cmd: "DEL", ..ca }, &lo_conf);
    assert!(
        allocations(&data.path().join(&net)).is_empty(),
        "allocations released"
    );
    assert_eq!(nft_rules_tagged("crius-nat", &tag_a), 0);
    assert_eq!(
        nft_rules_tagged("crius-nat", &format!("ctr-b/eth0/{net}")),
        0
    );
    // DEL once the netns is gone (runtime lost it) is fine too.
    drop(a);
    assert!(!Path::new(&pa).exists(), "netns a removed");
    ok(
        BRIDGE,
        &Call {
            cmd: "DEL",
            id: "ctr-a",
            netns: Some(&pa),
            ifname: "eth0",
        },
        &conf,
    );
    drop(b);
    assert!(!Path::new(&pb).exists(), "netns b removed");
    sh(&["ip", "link", "del", &bridge]);
    assert!(!link_exists(&bridge));
}

#[test]
fn parallel_adds_get_distinct_ips() {
    require_root!();
    let _s = serial();
    let r = rand_suffix();
    let net = format!("crius-par-{r}");
    let bridge = format!("crbr{r}");
    let _br = LinkGuard(bridge.clone());
    let data = tempfile::tempdir().unwrap();
    let conf = bridge_conf(&net, &bridge, "10.124.1.0/24", data.path());
    let nss: Vec<Netns> = (0..20)
        .map(|i| Netns::new(format!("crius-plugins-test-{r}-p{i}")))
        .collect();
    let ids: Vec<String> = (0..20).map(|i| format!("par-{i}")).collect();
    let paths: Vec<String> = nss.iter().map(Netns::path).collect();
    let _guards: Vec<DelOnDrop> = ids
        .iter()
        .zip(&paths)
        .map(|(id, p)| {
            DelOnDrop::new(
                BRIDGE,
                &Call {
                    cmd: "DEL",
                    id,
                    netns: Some(p),
                    ifname: "eth0",
                },
                &conf,
            )
        })
        .collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let conf = &conf;
                s.spawn(move || {
                    let id = format!("par-{i}");
                    let path = ns.path();
                    ok(
                        BRIDGE,
                        &Call {
                            cmd: "ADD",
                            id: &id,
                            netns: Some(&path),
                            ifname: "eth0",
                        },
                        conf,
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results.iter().map(pod_ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "20 distinct IPs");
    assert_eq!(allocations(&data.path().join(&net)).len(), 20);
    std::thread::scope(|s| {
        for (i, ns) in nss.iter().enumerate() {
            let conf = &conf;
            s.spawn(move || {
                let id = format!("par-{i}");
                let path = ns.path();
                ok(
                    BRIDGE,
                    &Call {
                        cmd: "DEL",
                        id: &id,
                        netns: Some(&path),
                        ifname: "eth0",
                    },
                    conf,
                );
            });
        }
    });
    assert!(allocations(&data.path().join(&net)).is_empty());
    for res in &results {
        assert!(!link_exists(res["interfaces"][1]["name"].as_str().unwrap()));
    }
    let nat = nft_table("crius-nat").unwrap_or_default();
    assert!(!nat.contains(&net), "no NAT rules of {net} left: {nat}");
    drop(nss);
    assert!(
        paths.iter().all(|p| !Path::new(p).exists()),
        "all netns removed"
    );
    sh(&["ip", "link", "del", &bridge]);
    assert!(!link_exists(&bridge));
}

fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
    s.shutdown(Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn portmap_forwards_and_cleans_up() {
    require_root!();
    let _s = serial();
    let r = rand_suffix();
    let net = format!("crius-pm-{r}");
    let bridge = format!("crbr{r}");
    let _br = LinkGuard(bridge.clone());
    let data = tempfile::tempdir().unwrap();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello from the pod\n").unwrap();
    let conf = bridge_conf(&net, &bridge, "10.124.2.0/24", data.path());
    let a = Netns::new(format!("crius-plugins-test-{r}-a"));
    let pa = a.path();
    let add = Call {
        cmd: "ADD",
        id: "ctr-pm",
        netns: Some(&pa),
        ifname: "eth0",
    };
    let lo_conf = json!({"cniVersion": "1.0.0", "name": "lo", "type": "crius-loopback"});
    ok(LOOPBACK, &add, &lo_conf);
    let _gbr = DelOnDrop::new(BRIDGE, &add, &conf);
    let res = ok(BRIDGE, &add, &conf);
    let host_port = 20000 + (u16::from_str_radix(&r[..4], 16).unwrap() % 20000);
    let pm = json!({
        "cniVersion": "1.1.0",
        "name": net,
        "type": "crius-portmap",
        "runtimeConfig": { "portMappings": [
            { "hostPort": host_port, "containerPort": 8080, "protocol": "tcp" },
            { "hostPort": host_port, "containerPort": 8080, "protocol": "udp", "hostIP": "127.0.0.1" },
        ]},
        "prevResult": res,
    });
    let before = nft_table("crius-portmap");
    let _gpm = DelOnDrop::new(PORTMAP, &add, &pm);
    let out = ok(PORTMAP, &add, &pm);
    assert_eq!(out["ips"], res["ips"], "prevResult passed through");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))
            .unwrap()
            .trim(),
        "1"
    );
    let tag = format!("ctr-pm/eth0/{net}");
    assert!(nft_rules_tagged("crius-portmap", &tag) >= 4);
    ok(
        PORTMAP,
        &Call {
            cmd: "CHECK",
            ..add
        },
        &pm,
    );

    let server = Command::new("ip")
        .args([
            "netns", "exec", &a.name, "busybox", "httpd", "-f", "-p", "8080", "-h",
        ])
        .arg(www.path())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let direct = format!("{}:8080", pod_ip(&res));
    let mut ready = false;
    for _ in 0..50 {
        if http_get(&direct).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "server in netns came up");
    let gw = res["ips"][0]["gateway"].as_str().unwrap();
    for target in [
        format!("127.0.0.1:{host_port}"),
        format!("{gw}:{host_port}"),
    ] {
        let body = http_get(&target).unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(body.contains("hello from the pod"), "{target}: {body}");
    }
    // Hairpin: the pod reaches itself through the host port.
    let url = format!("http://{gw}:{host_port}/index.html");
    let o = a.exec(&["curl", "-s", "--max-time", "3", &url]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hello from the pod"),
        "hairpin: {o:?}"
    );

    let del = Call { cmd: "DEL", ..add };
    ok(PORTMAP, &del, &pm);
    assert_eq!(nft_rules_tagged("crius-portmap", &tag), 0);
    assert_eq!(
        nft_table("crius-portmap"),
        before,
        "portmap table back to initial state"
    );
    let e = http_get(&format!("127.0.0.1:{host_port}")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    ok(PORTMAP, &del, &pm); // idempotent
    ok(BRIDGE, &del, &conf);
    ok(LOOPBACK, &del, &lo_conf);
    assert!(allocations(&data.path().join(&net)).is_empty());
    assert_eq!(nft_rules_tagged("crius-nat", &tag), 0);
    drop(a);
    assert!(!Path::new(&pa).exists());
    sh(&["ip", "link", "del", &bridge]);
    assert!(!link_exists(&bridge));
}

#[test]
fn portmap_cycles_leave_ruleset_unchanged() {
    require_root!();
    let _s = serial();
    let r = rand_suffix();
    let net = format!("crius-cyc-{r}");
    let before = nft_table("crius-portmap");
    let before_all = sh_ok(&["nft", "list", "tables"]);
    let start = std::time::Instant::now();
    // The issue's bar: nothing left after 1000 ADD/DEL cycles.
    for i in 0..1000u16 {
        let id = format!("cyc-{r}-{}", i % 7);
        let prev = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": format!("nobr{r}")}, {"name": "eth0", "sandbox": "/var/run/netns/none"}],
            "ips": [{"address": format!("10.124.3.{}/24", 2 + i % 200), "gateway": "10.124.3.1", "interface": 1}],
        });
        let pm = json!({
            "cniVersion": "1.1.0", "name": net, "type": "crius-portmap",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 30000 + i, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 30000 + i, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            ]},
            "prevResult": prev,
        });
        let add = Call {
            cmd: "ADD",
            id: &id,
            netns: Some("/var/run/netns/none"),
            ifname: "eth0",
        };
        let _g = DelOnDrop::new(PORTMAP, &add, &pm);
        ok(PORTMAP, &add, &pm);
        ok(PORTMAP, &Call { cmd: "DEL", ..add }, &pm);
    }
    println!("1000 portmap ADD/DEL cycles in {:?}", start.elapsed());
    assert_eq!(nft_table("crius-portmap"), before);
    assert_eq!(
        sh_ok(&["nft", "list", "tables"]),
        before_all,
        "table list unchanged"
    );
}

#[test]
fn version_output() {
    for bin in [BRIDGE, HOST_LOCAL, LOOPBACK, PORTMAP] {
        let (out, v) = run(
            bin,
            &Call {
                cmd: "VERSION",
                id: "",
                netns: None,
                ifname: "",
            },
            &json!({"cniVersion": "1.0.0"}),
        );
        assert!(out.status.success(), "{bin}");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    }
}

/// Config errors: non-zero exit, code 7, msg naming the field. No root needed (validation
/// happens before anything touches the system).
#[test]
fn config_validation_names_the_field() {
    let data = tempfile::tempdir().unwrap();
    let call = Call {
        cmd: "ADD",
        id: "cfg",
        netns: Some("/nonexistent"),
        ifname: "eth0",
    };
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut c = bridge_conf("n", "crbrx", "10.124.0.0/24", data.path());
    c["mtu"] = json!("big");
    cases.push((BRIDGE, c, "`mtu`"));
    let mut c = bridge_conf("n", "crbrx", "10.124.0.0/24", data.path());
    c["bridge"] = json!("a-name-that-is-too-long");
    cases.push((BRIDGE, c, "`bridge`"));
    let mut c = bridge_conf("n", "crbrx", "10.124.0.0/24", data.path());
    c["isGateway"] = json!("yes");
    cases.push((BRIDGE, c, "`isGateway`"));
    let mut c = bridge_conf("n", "crbrx", "10.124.0.0/24", data.path());
    c["ipam"]["ranges"][0][0]["subnet"] = json!("10.124.0.0");
    cases.push((HOST_LOCAL, c.clone(), "`ipam.ranges[0][0].subnet`"));
    let mut c = bridge_conf("n", "crbrx", "10.124.0.0/24", data.path());
    c["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.125.0.9");
    cases.push((HOST_LOCAL, c, "`ipam.ranges[0][0].rangeEnd`"));
    let mut c = bridge_conf("n", "crbrx", "10.124.0.0/24", data.path());
    c.as_object_mut().unwrap().remove("name");
    cases.push((HOST_LOCAL, c, "`name`"));
    let pm = |m: Value| {
        json!({"cniVersion": "1.0.0", "name": "n", "type": "crius-portmap",
        "runtimeConfig": {"portMappings": [m]}, "prevResult": {"ips": [{"address": "10.0.0.2/24"}]}})
    };
    cases.push((
        PORTMAP,
        pm(json!({"hostPort": 0, "containerPort": 80})),
        "`runtimeConfig.portMappings[0].hostPort`",
    ));
    cases.push((
        PORTMAP,
        pm(json!({"hostPort": 80, "containerPort": 80, "protocol": "icmp"})),
        "`runtimeConfig.portMappings[0].protocol`",
    ));
    cases.push((
        PORTMAP,
        pm(json!({"hostPort": 80, "containerPort": 80, "hostIP": "x"})),
        "`runtimeConfig.portMappings[0].hostIP`",
    ));
    for (bin, conf, field) in cases {
        let (out, v) = run(bin, &call, &conf);
        if out.status.success() {
            // Undo whatever the wrongly accepted config created before failing.
            run(bin, &Call { cmd: "DEL", ..call }, &conf);
        }
        assert!(!out.status.success(), "{bin} accepted {conf}");
        assert_eq!(v["code"], 7, "{bin}: {v}");
        assert!(
            v["msg"].as_str().unwrap().contains(field),
            "{bin}: {v} should name {field}"
        );
        assert_eq!(v["cniVersion"], conf["cniVersion"]);
    }
    // Unsupported version: code 1.
    let (out, v) = run(
        HOST_LOCAL,
        &call,
        &json!({"cniVersion": "0.3.1", "name": "n"}),
    );
    assert!(!out.status.success());
    assert_eq!(v["code"], 1);
    // Missing environment: code 4.
    let (_, v) = run(
        HOST_LOCAL,
        &Call {
            cmd: "ADD",
            id: "",
            netns: None,
            ifname: "eth0",
        },
        &json!({"cniVersion": "1.0.0"}),
    );
    assert_eq!(v["code"], 4);
}

/// host-local alone: allocations are files owned by id + ifname, DEL releases only the
/// matching one, state survives across invocations, and 0.4.0 results carry `version`.
#[test]
fn host_local_allocations_by_id_and_ifname() {
    let data = tempfile::tempdir().unwrap();
    let _dg = DirGuard(data.path().to_owned());
    let conf = json!({"cniVersion": "0.4.0", "name": "hl", "type": "crius-host-local",
        "ipam": {"type": "crius-host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.124.5.0/29", "rangeStart": "10.124.5.1", "gateway": "10.124.5.1"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}});
    let add0 = Call {
        cmd: "ADD",
        id: "c1",
        netns: Some("/x"),
        ifname: "eth0",
    };
    let add1 = Call {
        ifname: "net1",
        ..add0
    };
    let r0 = ok(HOST_LOCAL, &add0, &conf);
    let r1 = ok(HOST_LOCAL, &add1, &conf);
    assert_eq!(r0["ips"][0]["version"], "4");
    assert_eq!(r0["ips"][0]["address"], "10.124.5.2/29", "gateway skipped");
    assert_eq!(r1["ips"][0]["address"], "10.124.5.3/29");
    assert_eq!(r0["routes"][0]["dst"], "0.0.0.0/0");
    let dir = data.path().join("hl");
    assert_eq!(
        std::fs::read_to_string(dir.join("10.124.5.2")).unwrap(),
        "c1\r\neth0"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
        "10.124.5.3"
    );
    assert!(dir.join("lock").exists());
    // Retried ADD: same address.
    assert_eq!(ok(HOST_LOCAL, &add0, &conf)["ips"], r0["ips"]);
    ok(
        HOST_LOCAL,
        &Call {
            cmd: "CHECK",
            ..add0
        },
        &conf,
    );
    // Exhaust the range: .4 .5 .6 remain (.7 is broadcast).
    for id in ["c2", "c3", "c4"] {
        ok(HOST_LOCAL, &Call { id, ..add0 }, &conf);
    }
    let (out, v) = run(HOST_LOCAL, &Call { id: "c5", ..add0 }, &conf);
    assert!(!out.status.success());
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("no IP addresses available"),
        "{v}"
    );
    ok(HOST_LOCAL, &Call { cmd: "DEL", ..add0 }, &conf);
    let mut left = allocations(&dir);
    left.sort();
    assert_eq!(
        left,
        ["10.124.5.3", "10.124.5.4", "10.124.5.5", "10.124.5.6"]
    );
    ok(HOST_LOCAL, &Call { cmd: "DEL", ..add0 }, &conf);
    // GC (1.1) keeps only valid attachments.
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c2", "ifname": "eth0"}]);
    ok(
        HOST_LOCAL,
        &Call {
            cmd: "GC",
            id: "",
            netns: None,
            ifname: "",
        },
        &gc,
    );
    assert_eq!(allocations(&dir), ["10.124.5.4"]);
}

/// `runtimeConfig.ipRanges` (the ipRanges capability, e.g. the node pod CIDR) overrides
/// `ipam.ranges`.
#[test]
fn host_local_runtime_ip_ranges_override() {
    let data = tempfile::tempdir().unwrap();
    let conf = json!({"cniVersion": "1.0.0", "name": "hl-rt", "type": "crius-host-local",
        "runtimeConfig": {"ipRanges": [[{"subnet": "10.124.6.0/24"}]]},
        "ipam": {"type": "crius-host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.124.5.0/24"}]]}});
    let add = Call {
        cmd: "ADD",
        id: "c1",
        netns: Some("/x"),
        ifname: "eth0",
    };
    let r = ok(HOST_LOCAL, &add, &conf);
    assert_eq!(r["ips"][0]["address"], "10.124.6.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.124.6.1");
    ok(HOST_LOCAL, &Call { cmd: "DEL", ..add }, &conf);
    assert!(allocations(&data.path().join("hl-rt")).is_empty());
}
