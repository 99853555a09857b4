//! criusd driven by clients someone else wrote: crictl 1.26 (grpc-go, which sends the socket
//! path as the HTTP/2 `:authority`) and a raw HTTP/2 client sending each `:authority` real
//! clients send. Every crictl call's JSON output is checked, not only its exit code.
//!
//! crictl is looked up on PATH, then in `../shared/tools` beside the repository.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use common::{CRIUSD, Env};
use crius_testkit::{Daemon, DaemonOptions, Registry, image, push_image};
use prost::Message as _;
use serde_json::Value;

/// crictl: on PATH first (a user's install), else the copy in ../shared/tools.
fn crictl_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("crictl"))
            .find(|p| p.is_file())
    });
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/crictl");
    on_path.unwrap_or(shared)
}

/// crictl pointed at one daemon, with a config file of its own (the host's /etc/crictl.yaml
/// must not leak into the test).
struct Crictl {
    bin: PathBuf,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Crictl {
    fn new(daemon: &Daemon) -> Result<Crictl> {
        let bin = crictl_binary();
        ensure!(
            bin.is_file(),
            "crictl not found on PATH nor at {} (see ../shared/tools/README.md)",
            bin.display()
        );
        let dir = tempfile::tempdir()?;
        let endpoint = daemon.endpoint();
        std::fs::write(
            dir.path().join("crictl.yaml"),
            format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 30\n"),
        )?;
        Ok(Crictl { bin, endpoint, dir })
    }

    fn file(&self, name: &str, content: &str) -> Result<String> {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content)?;
        Ok(p.display().to_string())
    }

    async fn run(&self, args: &[&str]) -> Result<Output> {
        let config = self.dir.path().join("crictl.yaml");
        let out = tokio::process::Command::new(&self.bin)
            .arg("--config")
            .arg(&config)
            .args(["-r", &self.endpoint, "-i", &self.endpoint, "-t", "30s"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.bin.display()))?;
        Ok(out)
    }

    /// Runs crictl, fails with its stderr unless it succeeded, returns stdout.
    async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        if !out.status.success() {
            bail!(
                "crictl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    async fn json(&self, args: &[&str]) -> Result<Value> {
        let text = self.ok(args).await?;
        serde_json::from_str(&text).with_context(|| format!("crictl {args:?} printed {text:?}"))
    }

    /// Runs crictl expecting failure; returns stderr.
    async fn fails(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        ensure!(
            !out.status.success(),
            "crictl {} succeeded but should not have:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn env_with_busybox() -> Result<Env> {
    let env = Env::start().await?;
    push_image(
        &env.registry,
        "library/busybox",
        "latest",
        &image::busybox_image(),
    )
    .await?;
    Ok(env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_version_info_and_images() -> Result<()> {
    let env = env_with_busybox().await?;
    let crictl = Crictl::new(&env.daemon)?;

    let version = crictl.ok(&["version"]).await?;
    assert!(version.contains("RuntimeName:  crius"), "{version}");
    assert!(version.contains("RuntimeApiVersion:  v1"), "{version}");

    let info = crictl.json(&["info"]).await?;
    let conditions = info["status"]["conditions"]
        .as_array()
        .context("info has status.conditions")?;
    let runtime_ready = conditions
        .iter()
        .find(|c| c["type"] == "RuntimeReady")
        .context("RuntimeReady condition")?;
    assert_eq!(runtime_ready["status"], true, "{info}");

    let pulled = crictl.ok(&["pull", "busybox"]).await?;
    assert!(
        pulled.contains("Image is up to date for sha256:"),
        "{pulled}"
    );
    let images = crictl.json(&["images", "-o", "json"]).await?;
    let list = images["images"].as_array().context("images list")?;
    assert_eq!(list.len(), 1, "{images}");
    assert_eq!(
        list[0]["repoTags"],
        serde_json::json!(["docker.io/library/busybox:latest"])
    );
    let id = list[0]["id"].as_str().context("image id")?.to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    let size: u64 = list[0]["size"].as_str().context("size")?.parse()?;
    assert!(size > 100_000, "busybox is not {size} bytes");

    let inspected = crictl.json(&["inspecti", "-o", "json", "busybox"]).await?;
    assert_eq!(inspected["status"]["id"], id.as_str(), "{inspected}");
    let quiet = crictl.ok(&["images", "-q"]).await?;
    assert_eq!(quiet.trim(), id);

    let fs = crictl.json(&["imagefsinfo", "-o", "json"]).await?;
    let mountpoint = fs["status"]["fsId"]["mountpoint"]
        .as_str()
        .context("imagefsinfo status.fsId.mountpoint")?;
    assert!(Path::new(mountpoint).starts_with(env.daemon.root()), "{fs}");
    let used: u64 = fs["status"]["usedBytes"]["value"]
        .as_str()
        .context("usedBytes")?
        .parse()?;
    assert!(used >= size / 2, "image fs uses {used} bytes: {fs}");

    let err = crictl.fails(&["inspecti", "no-such-image"]).await?;
    assert!(err.contains("no-such-image"), "{err}");

    crictl.ok(&["rmi", "busybox"]).await?;
    let images = crictl.json(&["images", "-o", "json"]).await?;
    assert!(ids(&images, "images").is_empty(), "{images}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_pull_with_credentials() -> Result<()> {
    let registry = Registry::start_tls_basic_auth("crius", "s3cret")?;
    push_image(&registry, "private/busybox", "v1", &image::busybox_image()).await?;
    // Pulled by its own loopback address: with a CA configured it is spoken to over HTTPS.
    let daemon = Daemon::start(DaemonOptions::new(CRIUSD).config(registry.direct_toml())).await?;
    let crictl = Crictl::new(&daemon)?;
    let reference = &registry.image_ref("private/busybox", "v1");

    let err = crictl.fails(&["pull", reference]).await?;
    assert!(
        err.contains("Unauthenticated") || err.contains("unauthorized") || err.contains("401"),
        "{err}"
    );
    let err = crictl
        .fails(&["pull", "--creds", "crius:wrong", reference])
        .await?;
    assert!(!err.is_empty());
    let out = crictl
        .ok(&["pull", "--creds", "crius:s3cret", reference])
        .await?;
    assert!(out.contains("Image is up to date for sha256:"), "{out}");
    let images = crictl.json(&["images", "-o", "json"]).await?;
    assert_eq!(
        images["images"][0]["repoTags"],
        serde_json::json!([reference]),
        "{images}"
    );
    Ok(())
}

/// A pod config as a user writes it for crictl: no hostname, a name as long as critest's.
fn pod_json(name: &str, log_dir: &Path, app: &str) -> String {
    serde_json::json!({
        "metadata": {"name": name, "namespace": "interop", "uid": format!("uid-{name}"), "attempt": 0},
        "log_directory": log_dir,
        "labels": {"app": app},
        "linux": {}
    })
    .to_string()
}

fn container_json(name: &str, cmd: &[&str]) -> String {
    serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": "busybox"},
        "command": cmd,
        "log_path": format!("{name}.log"),
        "labels": {"container": name},
        "linux": {}
    })
    .to_string()
}

async fn pod_lifecycle(handler: &str) -> Result<()> {
    common::pods::prepare_runtime(handler);
    let env = env_with_busybox().await?;
    let crictl = Crictl::new(&env.daemon)?;
    crictl.ok(&["pull", "busybox"]).await?;
    let logs = tempfile::tempdir()?;

    // critest's pods have names of 60-70 characters and no hostname.
    let long_name = format!(
        "create-PodSandbox-for-container-{}-abcdefghijklmnopqrstuvwxyz-0123456789",
        handler
    );
    assert!(long_name.len() > 63);
    let pod_file = crictl.file("pod.json", &pod_json(&long_name, logs.path(), "web"))?;
    let pod = crictl
        .ok(&["runp", "--runtime", handler, &pod_file])
        .await?
        .trim()
        .to_string();
    assert_eq!(pod.len(), 64, "runp prints the pod id: {pod:?}");

    // The same kind of config as YAML.
    let yaml = format!(
        "metadata:\n  name: second\n  namespace: interop\n  uid: uid-second\n  attempt: 0\n\
         hostname: second-host\nlog_directory: {}\nlabels:\n  app: db\nlinux: {{}}\n",
        logs.path().display()
    );
    let yaml_file = crictl.file("pod2.yaml", &yaml)?;
    let pod2 = crictl
        .ok(&["runp", "--runtime", handler, &yaml_file])
        .await?
        .trim()
        .to_string();

    let all = crictl.json(&["pods", "-o", "json"]).await?;
    let mut listed = ids(&all, "items");
    listed.sort();
    let mut expected = vec![pod.clone(), pod2.clone()];
    expected.sort();
    assert_eq!(listed, expected, "{all}");
    let web = crictl
        .json(&["pods", "-o", "json", "--label", "app=web"])
        .await?;
    assert_eq!(ids(&web, "items"), vec![pod.clone()], "{web}");
    assert_eq!(web["items"][0]["state"], "SANDBOX_READY");
    assert_eq!(web["items"][0]["metadata"]["name"], long_name.as_str());
    let by_name = crictl
        .json(&["pods", "-o", "json", "--name", "^second$"])
        .await?;
    assert_eq!(ids(&by_name, "items"), vec![pod2.clone()], "{by_name}");
    let none = crictl
        .json(&["pods", "-o", "json", "--namespace", "other"])
        .await?;
    assert!(ids(&none, "items").is_empty(), "{none}");
    let ready = crictl
        .json(&["pods", "-o", "json", "--state", "ready", "--id", &pod[..12]])
        .await?;
    assert_eq!(ids(&ready, "items"), vec![pod.clone()], "{ready}");

    let inspected = crictl.json(&["inspectp", "-o", "json", &pod]).await?;
    assert_eq!(inspected["status"]["id"], pod.as_str());
    assert_eq!(inspected["status"]["state"], "SANDBOX_READY");
    assert_eq!(inspected["status"]["labels"]["app"], "web");

    // A container with no namespace_options and a shell that ignores nothing special.
    let c_file = crictl.file(
        "c.json",
        &container_json(
            "main",
            &[
                "sh",
                "-c",
                "echo line1; echo line2; echo line3; exec sleep 3600",
            ],
        ),
    )?;
    let ctr = crictl
        .ok(&["create", &pod, &c_file, &pod_file])
        .await?
        .trim()
        .to_string();
    let created = crictl.json(&["inspect", "-o", "json", &ctr]).await?;
    assert_eq!(created["status"]["state"], "CONTAINER_CREATED", "{created}");
    crictl.ok(&["start", &ctr]).await?;
    let ps = crictl.json(&["ps", "-o", "json", "--pod", &pod]).await?;
    assert_eq!(ids(&ps, "containers"), vec![ctr.clone()], "{ps}");
    assert_eq!(ps["containers"][0]["state"], "CONTAINER_RUNNING");
    assert_eq!(ps["containers"][0]["metadata"]["name"], "main");
    let labelled = crictl
        .json(&["ps", "-o", "json", "--label", "container=main"])
        .await?;
    assert_eq!(ids(&labelled, "containers"), vec![ctr.clone()]);
    let inspected = crictl.json(&["inspect", "-o", "json", &ctr]).await?;
    assert_eq!(inspected["status"]["state"], "CONTAINER_RUNNING");
    assert_eq!(
        inspected["status"]["image"]["image"],
        "docker.io/library/busybox:latest"
    );

    // The derived hostname: the pod name cut to 63 characters.
    let hostname = crictl
        .ok(&["exec", "-s", &ctr, "cat", "/etc/hostname"])
        .await?;
    assert_eq!(hostname.trim(), &long_name[..63]);
    let uname = crictl.ok(&["exec", "-s", &ctr, "hostname"]).await?;
    assert_eq!(uname.trim(), &long_name[..63]);
    // pid mode POD (the proto's zero value): the shell is not PID 1, the pod's init is.
    let pid1 = crictl
        .ok(&["exec", "-s", &ctr, "cat", "/proc/1/cmdline"])
        .await?;
    assert!(
        !pid1.starts_with("sleep"),
        "the container is its own PID 1: {pid1:?}"
    );
    let out = crictl
        .run(&[
            "exec",
            "-s",
            &ctr,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await?;
    // crictl 1.26 reports a non-zero exit as its own failure, with the code and the stderr.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exited with 3: err"), "{stderr}");
    let both = crictl
        .ok(&["exec", "-s", &ctr, "sh", "-c", "echo out; echo err >&2"])
        .await?;
    // crictl prints each non-empty stream with Println, both on its stdout.
    assert_eq!(both, "out\n\nerr\n\n");

    // Logs: all, --tail, --since.
    let all_logs = wait_for_logs(&crictl, &ctr, "line3").await?;
    assert_eq!(all_logs, "line1\nline2\nline3\n");
    let tail = crictl.ok(&["logs", "--tail", "1", &ctr]).await?;
    assert_eq!(tail, "line3\n");
    let since = crictl.ok(&["logs", "--since", "1h", &ctr]).await?;
    assert_eq!(since, all_logs);
    let future = chrono_like_future();
    let none = crictl.ok(&["logs", "--since", &future, &ctr]).await?;
    assert_eq!(none, "", "logs since a future time");

    // update: the memory limit reaches the container's cgroup.
    crictl.ok(&["update", "--memory", "67108864", &ctr]).await?;
    let limit = crictl
        .ok(&[
            "exec",
            "-s",
            &ctr,
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ])
        .await?;
    assert_eq!(limit.trim(), "67108864");

    // stats and statsp: the container's and the pod's usage, as crictl prints them.
    let stats = crictl.json(&["stats", "-o", "json", "--id", &ctr]).await?;
    let list = stats["stats"].as_array().context("stats list")?;
    assert_eq!(list.len(), 1, "{stats}");
    assert_eq!(list[0]["attributes"]["id"], ctr.as_str());
    let cpu_ns: u64 = list[0]["cpu"]["usageCoreNanoSeconds"]["value"]
        .as_str()
        .context("cpu usage")?
        .parse()?;
    assert!(cpu_ns > 0, "{stats}");
    let ws: u64 = list[0]["memory"]["workingSetBytes"]["value"]
        .as_str()
        .context("working set")?
        .parse()?;
    assert!(ws > 0, "{stats}");
    assert!(
        list[0]["writableLayer"]["usedBytes"]["value"].is_string(),
        "{stats}"
    );
    let table = crictl.ok(&["stats", "--pod", &pod]).await?;
    assert!(table.contains(&ctr[..13]), "{table}");
    let podstats = crictl.json(&["statsp", "-o", "json", "--id", &pod]).await?;
    let list = podstats["stats"].as_array().context("statsp list")?;
    assert_eq!(list.len(), 1, "{podstats}");
    assert_eq!(list[0]["attributes"]["id"], pod.as_str());
    assert_eq!(
        list[0]["linux"]["containers"][0]["attributes"]["id"],
        ctr.as_str(),
        "{podstats}"
    );
    assert!(
        list[0]["linux"]["memory"]["workingSetBytes"]["value"].is_string(),
        "{podstats}"
    );

    // logs -f ends when the container does.
    let f_file = crictl.file(
        "f.json",
        &container_json("follow", &["sh", "-c", "echo a; sleep 1; echo b"]),
    )?;
    let follow = crictl
        .ok(&["create", &pod, &f_file, &pod_file])
        .await?
        .trim()
        .to_string();
    crictl.ok(&["start", &follow]).await?;
    let followed =
        tokio::time::timeout(Duration::from_secs(20), crictl.ok(&["logs", "-f", &follow]))
            .await
            .context("logs -f did not end when the container exited")??;
    assert_eq!(followed, "a\nb\n");
    let exited = crictl.json(&["inspect", "-o", "json", &follow]).await?;
    assert_eq!(exited["status"]["state"], "CONTAINER_EXITED");
    assert_eq!(exited["status"]["exitCode"], 0);

    // stop: SIGTERM reaches the shell's `sleep` (not PID 1), so the 30 s grace is not used up.
    let start = Instant::now();
    crictl.ok(&["stop", "--timeout", "30", &ctr]).await?;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "stop waited {took:?}: SIGTERM was ignored (the container is its own PID 1?)"
    );
    let stopped = crictl.json(&["inspect", "-o", "json", &ctr]).await?;
    assert_eq!(stopped["status"]["state"], "CONTAINER_EXITED");
    assert_eq!(stopped["status"]["exitCode"], 143);
    let exited_list = crictl
        .json(&["ps", "-o", "json", "-a", "--state", "exited", "--pod", &pod])
        .await?;
    let mut exited_ids = ids(&exited_list, "containers");
    exited_ids.sort();
    let mut both = vec![ctr.clone(), follow.clone()];
    both.sort();
    assert_eq!(exited_ids, both, "{exited_list}");

    crictl.ok(&["rm", &ctr, &follow]).await?;
    let ps = crictl.json(&["ps", "-a", "-o", "json"]).await?;
    assert!(ids(&ps, "containers").is_empty(), "{ps}");
    let err = crictl.fails(&["inspect", &ctr]).await?;
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    crictl.ok(&["stopp", &pod, &pod2]).await?;
    let notready = crictl
        .json(&["pods", "-o", "json", "--state", "notready"])
        .await?;
    assert_eq!(ids(&notready, "items").len(), 2, "{notready}");
    crictl.ok(&["rmp", &pod, &pod2]).await?;
    let all = crictl.json(&["pods", "-o", "json"]).await?;
    assert!(ids(&all, "items").is_empty(), "{all}");
    // Removing again is not an error for the kubelet, but crictl looks the id up first.
    let err = crictl.fails(&["rmp", &pod]).await?;
    assert!(
        err.contains(&pod[..12]) || err.contains("not found"),
        "{err}"
    );
    Ok(())
}

/// An RFC 3339 time an hour from now (crictl's `--since` takes one).
fn chrono_like_future() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{now}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn wait_for_logs(crictl: &Crictl, id: &str, last: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = crictl.ok(&["logs", id]).await?;
        if logs.contains(last) {
            return Ok(logs);
        }
        ensure!(
            Instant::now() < deadline,
            "logs of {id} never showed {last:?}: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_pod_and_container_lifecycle_runc() -> Result<()> {
    pod_lifecycle("runc").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_pod_and_container_lifecycle_crun() -> Result<()> {
    pod_lifecycle("crun").await
}

/// A TTY container in a daemon whose state directory is long: its console socket path would
/// not fit `sockaddr_un`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_container_with_a_long_state_dir() -> Result<()> {
    let registry = Registry::start_plain()?;
    push_image(
        &registry,
        "library/busybox",
        "latest",
        &image::busybox_image(),
    )
    .await?;
    let config = format!(
        "{}fallback_to_upstream = false\n",
        crius_testkit::mirror_config(&registry.url(), "10s")
    );
    let daemon = Daemon::start(
        DaemonOptions::new(CRIUSD)
            .config(config)
            .state_name(&format!("state-{}", "long".repeat(20))),
    )
    .await?;
    let crictl = Crictl::new(&daemon)?;
    crictl.ok(&["pull", "busybox"]).await?;
    let logs = tempfile::tempdir()?;
    let pod_file = crictl.file("pod.json", &pod_json("tty", logs.path(), "tty"))?;
    let pod = crictl.ok(&["runp", "--runtime", "runc", &pod_file]).await?;
    let pod = pod.trim();
    let mut config: Value = serde_json::from_str(&container_json(
        "tty",
        &["sh", "-c", "tty; exec sleep 3600"],
    ))?;
    config["tty"] = Value::Bool(true);
    let c_file = crictl.file("c.json", &config.to_string())?;
    let ctr = crictl
        .ok(&["create", pod, &c_file, &pod_file])
        .await?
        .trim()
        .to_string();
    crictl.ok(&["start", &ctr]).await?;
    let out = wait_for_logs(&crictl, &ctr, "/dev/pts/").await?;
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    crictl.ok(&["stop", "--timeout", "5", &ctr]).await?;
    crictl.ok(&["rm", &ctr]).await?;
    crictl.ok(&["stopp", pod]).await?;
    crictl.ok(&["rmp", pod]).await?;
    Ok(())
}

// ---- raw HTTP/2: the :authority values real gRPC clients send ----

const FRAME_DATA: u8 = 0;
const FRAME_HEADERS: u8 = 1;
const FRAME_RST_STREAM: u8 = 3;
const FRAME_SETTINGS: u8 = 4;
const FRAME_GOAWAY: u8 = 7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK "literal header field without indexing, new name", no Huffman (RFC 7541 6.2.2).
fn hpack_literal(block: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127);
    block.push(0x00);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

/// Calls RuntimeService/Version on a fresh connection with the given `:authority` (none when
/// `None`) and returns the runtime name from the reply.
fn version_with_authority(socket: &Path, authority: Option<&str>) -> Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
    let mut block = Vec::new();
    hpack_literal(&mut block, ":method", "POST");
    hpack_literal(&mut block, ":scheme", "http");
    hpack_literal(&mut block, ":path", "/runtime.v1.RuntimeService/Version");
    if let Some(a) = authority {
        hpack_literal(&mut block, ":authority", a);
    }
    hpack_literal(&mut block, "content-type", "application/grpc");
    hpack_literal(&mut block, "te", "trailers");
    out.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
    let request = k8s_cri::v1::VersionRequest {
        version: "v1".into(),
    }
    .encode_to_vec();
    let mut message = vec![0u8];
    message.extend_from_slice(&(request.len() as u32).to_be_bytes());
    message.extend_from_slice(&request);
    out.extend(frame(FRAME_DATA, FLAG_END_STREAM, 1, &message));
    s.write_all(&out)?;

    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)
            .context("connection closed before the reply")?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)?;
        match kind {
            FRAME_SETTINGS if flags & FLAG_ACK == 0 => {
                s.write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))?;
            }
            FRAME_RST_STREAM if stream == 1 => {
                let code = u32::from_be_bytes(payload[..4].try_into()?);
                bail!("the server reset the stream (HTTP/2 error code {code})");
            }
            FRAME_GOAWAY => bail!("the server sent GOAWAY"),
            FRAME_DATA if stream == 1 => body.extend_from_slice(&payload),
            FRAME_HEADERS if stream == 1 && flags & FLAG_END_STREAM != 0 => break,
            _ => {}
        }
    }
    ensure!(body.len() >= 5, "no gRPC message in the reply");
    let reply = k8s_cri::v1::VersionResponse::decode(&body[5..])?;
    Ok(reply.runtime_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_authority_reaches_the_cri() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let socket = daemon.socket();
    let path = socket.display().to_string();
    let encoded = path.replace('/', "%2F");
    let authorities: [Option<String>; 6] = [
        Some(path.clone()),       // grpc-go with a custom dialer: crictl, kubelet <= 1.26
        Some(encoded),            // grpc-python >= 1.57
        Some("localhost".into()), // grpc-go's default for unix: targets
        Some(String::new()),      // empty
        Some("unix:/run/x.sock".into()), // other clients' target strings
        None,                     // no :authority at all
    ];
    for authority in authorities {
        let socket = socket.clone();
        let sent = authority.clone();
        let name = tokio::task::spawn_blocking(move || {
            version_with_authority(&socket, authority.as_deref())
        })
        .await?
        .with_context(|| format!(":authority {sent:?}"))?;
        assert_eq!(name, "crius", ":authority {sent:?}");
    }
    Ok(())
}
