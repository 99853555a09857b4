//! Exec, Attach and PortForward through the real criusd: request checks, and the streaming
//! server's single-use, expiring URLs.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::pods::*;
use k8s_cri::v1::{
    AttachRequest, ExecRequest, PortForwardRequest, StopContainerRequest, StopPodSandboxRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// Sends one HTTP/1.1 request to `url` (plain http) and returns the status code.
async fn http_status(method: &str, url: &str, upgrade: bool) -> Result<u16> {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let upgrade = if upgrade {
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    } else {
        ""
    };
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{upgrade}\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while !buf[..n].windows(2).any(|w| w == b"\r\n") {
        let m = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf[n..])).await??;
        anyhow::ensure!(m > 0, "connection closed before a status line");
        n += m;
    }
    let line = String::from_utf8_lossy(&buf[..n]).to_string();
    Ok(line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}")))
}

fn exec_req(id: &str) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn requests_are_checked_and_urls_are_single_use() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let mut rt = pod.env.daemon.runtime().await?;

    // The checks the kubelet makes, answered with the field named.
    let e = rt
        .exec(ExecRequest {
            stdout: false,
            ..exec_req(&id)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("stdin"), "{e:?}");
    let e = rt
        .exec(ExecRequest {
            tty: true,
            stderr: true,
            ..exec_req(&id)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("stderr"), "{e:?}");
    let e = rt
        .exec(ExecRequest {
            cmd: vec![],
            ..exec_req(&id)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("cmd"), "{e:?}");
    let e = rt.exec(exec_req("nosuchcontainer")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = rt
        .attach(AttachRequest {
            container_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "nosuchpod".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.pod_id.clone(),
            port: vec![70000],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A URL is used once, whatever the first use was; an unknown token is 404 too.
    let url = rt.exec(exec_req(&id)).await?.into_inner().url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.contains("/exec/"), "{url}");
    assert_eq!(http_status("POST", &url, false).await?, 400);
    assert_eq!(http_status("POST", &url, true).await?, 404);
    assert_eq!(http_status("GET", &format!("{url}x"), true).await?, 404);
    let url2 = rt.exec(exec_req(&id)).await?.into_inner().url;
    assert_ne!(url, url2);
    assert_eq!(http_status("PUT", &url2, true).await?, 405);
    // A token only opens the verb it was minted for.
    let attach = rt
        .attach(AttachRequest {
            container_id: id.clone(),
            stdout: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .url;
    assert!(attach.contains("/attach/"), "{attach}");
    assert_eq!(
        http_status("GET", &attach.replace("/attach/", "/exec/"), true).await?,
        404
    );
    let pf = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.pod_id.clone(),
            port: vec![80],
        })
        .await?
        .into_inner()
        .url;
    assert!(pf.contains("/portforward/"), "{pf}");
    assert_eq!(http_status("GET", &pf, false).await?, 400);

    // Exec and Attach need a running container, PortForward a ready pod.
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await?;
    let e = rt.exec(exec_req(&id)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.pod_id.clone(),
    })
    .await?;
    let e = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.pod_id.clone(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    pod.teardown().await
}

#[tokio::test]
async fn an_unused_url_expires() -> Result<()> {
    let pod = pod_with_config("runc", "[streaming]\ntoken_ttl = \"1s\"\n", |_| {}).await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let mut rt = pod.env.daemon.runtime().await?;
    let url = rt.exec(exec_req(&id)).await?.into_inner().url;
    let fresh = rt.exec(exec_req(&id)).await?.into_inner().url;
    assert_eq!(http_status("GET", &fresh, false).await?, 400);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(http_status("GET", &url, false).await?, 404);
    pod.teardown().await
}

/// crictl 1.26.1, a real SPDY client: on PATH, else `../shared/tools/crictl` from the repo.
fn crictl() -> std::path::PathBuf {
    if let Some(p) = crius_config::find_in_path("crictl") {
        return p;
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/crictl");
    assert!(
        p.exists(),
        "crictl not found on PATH nor at {}",
        p.display()
    );
    p
}

/// Runs crictl against the daemon with `stdin` fed in; returns (exit code, stdout, stderr).
async fn crictl_run(
    pod: &Pod,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<(i32, Vec<u8>, Vec<u8>)> {
    let mut cmd = tokio::process::Command::new(crictl());
    cmd.arg("--runtime-endpoint")
        .arg(pod.env.daemon.endpoint())
        .arg("--timeout")
        .arg("30s")
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
        });
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await??;
    Ok((out.status.code().unwrap_or(-1), out.stdout, out.stderr))
}

/// Processes on the host whose command line is exactly `argv`.
fn processes_with_cmdline(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .as_deref()
                == Some(&want[..])
        })
        .collect()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// crictl 1.26 turns a non-zero exit of the command into its own failure: exit status 1 and
/// "command terminated with exit code N" (N from the v4 status crius sent) on stderr.
fn assert_crictl_exit(code: i32, err: &[u8], expected: i32) {
    let err = String::from_utf8_lossy(err);
    if expected == 0 {
        assert_eq!(code, 0, "{err}");
    } else {
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("command terminated with exit code {expected}")),
            "expected exit code {expected}: {err}"
        );
    }
}

#[tokio::test]
async fn crictl_exec_streams_output_stdin_and_exit_codes() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;

    let (code, out, err) = crictl_run(
        &pod,
        &["exec", &id, "sh", "-c", "echo out; echo err >&2; exit 3"],
        None,
    )
    .await?;
    assert_eq!(String::from_utf8_lossy(&out), "out\n");
    assert!(
        String::from_utf8_lossy(&err).contains("err\n"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    assert_crictl_exit(code, &err, 3);
    let (code, out, _) = crictl_run(&pod, &["exec", &id, "true"], None).await?;
    assert_eq!((code, out.len()), (0, 0));
    let (code, _, err) = crictl_run(&pod, &["exec", &id, "sh", "-c", "kill -9 $$"], None).await?;
    assert_crictl_exit(code, &err, 137);
    let (code, _, err) = crictl_run(&pod, &["exec", &id, "/no/such/command"], None).await?;
    assert_crictl_exit(code, &err, 127);

    // stdin through to EOF.
    let (code, out, err) = crictl_run(
        &pod,
        &["exec", "-i", &id, "sh", "-c", "cat; echo done"],
        Some(b"hello\nworld\n".to_vec()),
    )
    .await?;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8_lossy(&out), "hello\nworld\ndone\n");
    pod.teardown().await
}

#[tokio::test]
async fn crictl_exec_carries_100_mb_intact() -> Result<()> {
    use sha2::Digest;
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let r = pod
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "head -c 100000000 /dev/urandom > /big && sha256sum /big",
            ],
            60,
        )
        .await?;
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let want = String::from_utf8_lossy(&r.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let (code, out, err) = crictl_run(&pod, &["exec", &id, "cat", "/big"], None).await?;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), 100_000_000);
    assert_eq!(hex::encode(sha2::Sha256::digest(&out)), want);
    eprintln!(
        "exec stdout: 100 MB in {secs:.2}s = {:.0} MB/s",
        100.0 / secs
    );
    pod.teardown().await
}

#[tokio::test]
async fn fifty_concurrent_crictl_execs() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let args: Vec<String> = [
            "exec",
            &id,
            "sh",
            "-c",
            &format!("echo {i}; exit {}", i % 7),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let endpoint = pod.env.daemon.endpoint();
        tasks.push(tokio::spawn(async move {
            let out = tokio::process::Command::new(crictl())
                .arg("--runtime-endpoint")
                .arg(endpoint)
                .arg("--timeout")
                .arg("60s")
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            (i, out)
        }));
    }
    for t in tasks {
        let (i, out) = t.await?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{i}\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_crictl_exit(out.status.code().unwrap_or(-1), &out.stderr, i % 7);
    }
    pod.teardown().await
}

#[tokio::test]
async fn a_killed_client_leaves_nothing_behind() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let daemon_pid = pod.env.daemon.pid().unwrap();
    // One exec first so lazily opened fds (the streaming listener's, a pool) exist already.
    let (code, _, _) = crictl_run(&pod, &["exec", &id, "true"], None).await?;
    assert_eq!(code, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = fd_count(daemon_pid);

    let marker = ["sleep", "4242"];
    let client = tokio::process::Command::new(crictl())
        .arg("--runtime-endpoint")
        .arg(pod.env.daemon.endpoint())
        .args(["exec", &id])
        .args(marker)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    kill_client_and_check_nothing_left(&pod, &id, fds_before, &marker, client).await?;
    pod.teardown().await
}

/// criusd killed mid-exec: the pod's monitor outlives it, but the exec it ran for the lost
/// session is killed with the connection (nothing would relay its stdio any more) and leaves
/// no file; the container runs on and, after a restart, execs work again.
#[tokio::test]
async fn a_streaming_exec_ends_with_criusd() -> Result<()> {
    let mut pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let container_pid = pod.pid_of(&id).await?;
    let m = (5_000_000 + std::process::id()).to_string();
    let marker = ["sleep", m.as_str()];
    let _client = tokio::process::Command::new(crictl())
        .arg("--runtime-endpoint")
        .arg(pod.env.daemon.endpoint())
        .args(["exec", &id])
        .args(marker)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while processes_with_cmdline(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the exec never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pod.env.daemon.kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with_cmdline(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the exec'd process outlived criusd"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        std::path::Path::new(&format!("/proc/{container_pid}")).exists(),
        "the container kept running"
    );
    wait_no_stream_exec_files(&pod).await?;
    pod.env.daemon.restart().await?;
    let (code, out, err) = crictl_run(&pod, &["exec", &id, "echo", "again"], None).await?;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(out, b"again\n");
    pod.teardown().await
}

/// One HTTP/1.0 GET through `addr`; returns the whole response.
async fn http_get(addr: std::net::SocketAddr) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).to_string())
}

#[tokio::test]
async fn crictl_port_forward_to_a_busybox_httpd() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    pod.run(
        "httpd",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec busybox httpd -f -p 8080 -h /www",
        ],
    )
    .await?;
    let local = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut fwd = tokio::process::Command::new(crictl())
        .arg("--runtime-endpoint")
        .arg(pod.env.daemon.endpoint())
        .args([
            "port-forward",
            &pod.pod_id,
            &format!("{}:8080", local.port()),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(local).await {
            Ok(r) if r.contains("hello-from-the-pod") => break,
            r => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "port-forward never served: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let started = std::time::Instant::now();
    for i in 0..1000 {
        let r = http_get(local).await?;
        assert!(r.contains("hello-from-the-pod"), "connection {i}: {r:?}");
    }
    eprintln!(
        "port-forward: 1,000 sequential connections in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        tasks.push(tokio::spawn(http_get(local)));
    }
    for t in tasks {
        let r = t.await??;
        assert!(r.contains("hello-from-the-pod"), "{r:?}");
    }
    fwd.kill().await?;
    pod.teardown().await
}

#[tokio::test]
async fn crictl_exec_it_gets_a_terminal_of_the_clients_size() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    // `script` gives crictl a pty of its own; crictl sends its size on the resize stream.
    // runc copies the size onto the container's terminal once it holds the console master,
    // which can be just after the process starts: the command reads it a moment later.
    let inner = format!(
        "stty cols 123 rows 45; {} --runtime-endpoint {} exec -it {id} sh -c 'tty; sleep 1; stty size; exit 5'",
        crictl().display(),
        pod.env.daemon.endpoint()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("script")
            .args(["-qefc", &inner, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "{text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("45 123"), "{text:?}");
    // `script` merges crictl's stderr into the captured terminal output.
    assert_crictl_exit(out.status.code().unwrap_or(-1), text.as_bytes(), 5);
    pod.teardown().await
}

/// A stand-in for the API server + kubelet path of `kubectl exec/port-forward`: GET of the
/// pod object, then the exec/portforward subresource turned into the CRI call and the
/// client's upgrade request proxied, untouched, to the URL crius returns (as the kubelet
/// proxies it).
struct ApiStandIn {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const POD_NAME: &str = "web";

impl ApiStandIn {
    async fn start(pod: &Pod, container_id: &str) -> Result<ApiStandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let rt = pod.env.daemon.runtime().await?;
        let (pod_id, cid) = (pod.pod_id.clone(), container_id.to_string());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (rt, pod_id, cid) = (rt.clone(), pod_id.clone(), cid.clone());
                tokio::spawn(async move {
                    if let Err(e) = Self::serve(conn, rt, &pod_id, &cid).await {
                        eprintln!("stand-in: {e:#}");
                    }
                });
            }
        });
        Ok(ApiStandIn { addr, task })
    }

    async fn serve(
        mut conn: tokio::net::TcpStream,
        mut rt: k8s_cri::v1::runtime_service_client::RuntimeServiceClient<
            tonic::transport::Channel,
        >,
        pod_id: &str,
        cid: &str,
    ) -> Result<()> {
        loop {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte).await? == 0 {
                    return Ok(());
                }
                head.push(byte[0]);
                anyhow::ensure!(head.len() < 64 * 1024, "request head too large");
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let target = text.split(' ').nth(1).unwrap_or("").to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let params: Vec<(String, String)> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), percent_decode(v)))
                .collect();
            let flag = |k: &str| {
                params
                    .iter()
                    .any(|(n, v)| n == k && (v.eq_ignore_ascii_case("true") || v == "1"))
            };
            let pod_path = format!("/api/v1/namespaces/default/pods/{POD_NAME}");
            // Discovery, then the pod: what kubectl reads before it upgrades.
            let body = match path {
                "/api" => Some(serde_json::json!({
                    "kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
                })),
                "/apis" => Some(
                    serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
                ),
                "/api/v1" => Some(serde_json::json!({
                    "kind": "APIResourceList", "groupVersion": "v1",
                    "resources": [
                        {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"]},
                        {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                        {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
                        {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
                    ],
                })),
                p if p == pod_path => Some(serde_json::json!({
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": {"name": POD_NAME, "namespace": "default", "uid": "pod-uid"},
                    "spec": {"containers": [{"name": "web", "image": "busybox", "stdin": true, "stdinOnce": true}]},
                    "status": {"phase": "Running"},
                })),
                _ => None,
            };
            let url = if let Some(body) = body {
                let body = body.to_string();
                conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await?;
                continue;
            } else if path == format!("{pod_path}/exec") {
                rt.exec(ExecRequest {
                    container_id: cid.into(),
                    cmd: params
                        .iter()
                        .filter(|(k, _)| k == "command")
                        .map(|(_, v)| v.clone())
                        .collect(),
                    tty: flag("tty"),
                    stdin: flag("stdin"),
                    stdout: flag("stdout"),
                    stderr: flag("stderr"),
                })
                .await?
                .into_inner()
                .url
            } else if path == format!("{pod_path}/attach") {
                rt.attach(AttachRequest {
                    container_id: cid.into(),
                    tty: flag("tty"),
                    stdin: flag("stdin"),
                    stdout: flag("stdout"),
                    stderr: flag("stderr"),
                })
                .await?
                .into_inner()
                .url
            } else if path == format!("{pod_path}/portforward") {
                rt.port_forward(PortForwardRequest {
                    pod_sandbox_id: pod_id.into(),
                    port: vec![],
                })
                .await?
                .into_inner()
                .url
            } else {
                conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await?;
                continue;
            };
            // Proxy the upgrade request to crius's URL, then bytes both ways.
            let rest = url.strip_prefix("http://").unwrap();
            let (host, upath) = rest.split_at(rest.find('/').unwrap());
            let mut upstream = tokio::net::TcpStream::connect(host).await?;
            // A proxy adds no Nagle delays of its own.
            upstream.set_nodelay(true)?;
            conn.set_nodelay(true)?;
            let mut lines = text.split("\r\n");
            let first = lines.next().unwrap();
            let method = first.split(' ').next().unwrap();
            // The query goes along, `ports` renamed `port` as the API server does.
            let query = query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    kv.strip_prefix("ports=")
                        .map_or(kv.to_string(), |p| format!("port={p}"))
                })
                .collect::<Vec<_>>()
                .join("&");
            let sep = if query.is_empty() { "" } else { "?" };
            let mut fwd = format!("{method} {upath}{sep}{query} HTTP/1.1\r\n");
            for l in lines.filter(|l| !l.is_empty()) {
                if !l.to_ascii_lowercase().starts_with("host:") {
                    fwd.push_str(l);
                    fwd.push_str("\r\n");
                }
            }
            fwd.push_str(&format!("Host: {host}\r\n\r\n"));
            upstream.write_all(fwd.as_bytes()).await?;
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            return Ok(());
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// kubectl from PATH, made to speak SPDY (newer ones try WebSocket first).
fn kubectl(api: &ApiStandIn) -> Option<tokio::process::Command> {
    let bin = crius_config::find_in_path("kubectl")?;
    let mut c = tokio::process::Command::new(bin);
    c.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .env("KUBECONFIG", "/dev/null")
        .arg("--server")
        .arg(format!("http://{}", api.addr))
        .arg("--namespace")
        .arg("default")
        .kill_on_drop(true);
    Some(c)
}

async fn kubectl_run(
    api: &ApiStandIn,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<(i32, Vec<u8>, Vec<u8>)> {
    let mut c = kubectl(api).expect("kubectl on PATH");
    c.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn()?;
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
        });
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await??;
    Ok((out.status.code().unwrap_or(-1), out.stdout, out.stderr))
}

#[tokio::test]
async fn kubectl_exec_over_spdy() -> Result<()> {
    if crius_config::find_in_path("kubectl").is_none() {
        eprintln!("kubectl not on PATH: skipped");
        return Ok(());
    }
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let api = ApiStandIn::start(&pod, &id).await?;

    let (code, out, err) = kubectl_run(
        &api,
        &[
            "exec",
            POD_NAME,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    )
    .await?;
    let err = String::from_utf8_lossy(&err).to_string();
    assert_eq!(String::from_utf8_lossy(&out), "out\n", "{err}");
    assert!(err.contains("err\n"), "{err}");
    assert_eq!(code, 3, "{err}");
    let (code, out, err) = kubectl_run(&api, &["exec", POD_NAME, "--", "true"], None).await?;
    assert_eq!(
        (code, out.len()),
        (0, 0),
        "{}",
        String::from_utf8_lossy(&err)
    );
    let (code, _, _) = kubectl_run(
        &api,
        &["exec", POD_NAME, "--", "sh", "-c", "kill -9 $$"],
        None,
    )
    .await?;
    assert_eq!(code, 137, "killed by SIGKILL");
    let (code, _, err) =
        kubectl_run(&api, &["exec", POD_NAME, "--", "/no/such/command"], None).await?;
    assert_eq!(code, 127, "{}", String::from_utf8_lossy(&err));
    let (code, out, err) = kubectl_run(
        &api,
        &["exec", "-i", POD_NAME, "--", "sh", "-c", "cat; echo done"],
        Some(b"hello\nworld\n".to_vec()),
    )
    .await?;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8_lossy(&out), "hello\nworld\ndone\n");
    pod.teardown().await
}

macro_rules! need_kubectl {
    () => {
        if crius_config::find_in_path("kubectl").is_none() {
            eprintln!("kubectl not on PATH: skipped");
            return Ok(());
        }
    };
}

#[tokio::test]
async fn kubectl_exec_carries_100_mb_intact_and_50_at_once() -> Result<()> {
    use sha2::Digest;
    need_kubectl!();
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let api = ApiStandIn::start(&pod, &id).await?;
    let r = pod
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "head -c 100000000 /dev/urandom > /big && sha256sum /big",
            ],
            60,
        )
        .await?;
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let want = String::from_utf8_lossy(&r.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let (code, out, err) =
        kubectl_run(&api, &["exec", POD_NAME, "--", "cat", "/big"], None).await?;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), 100_000_000);
    assert_eq!(hex::encode(sha2::Sha256::digest(&out)), want);
    eprintln!(
        "kubectl exec stdout: 100 MB in {secs:.2}s = {:.0} MB/s",
        100.0 / secs
    );

    let api = std::sync::Arc::new(api);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let script = format!("echo {i}; exit {}", i % 7);
            (
                i,
                kubectl_run(&api, &["exec", POD_NAME, "--", "sh", "-c", &script], None).await,
            )
        }));
    }
    for t in tasks {
        let (i, r) = t.await?;
        let (code, out, err) = r?;
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("{i}\n"),
            "{}",
            String::from_utf8_lossy(&err)
        );
        assert_eq!(code, i % 7);
    }
    pod.teardown().await
}

#[tokio::test]
async fn a_killed_kubectl_leaves_nothing_behind() -> Result<()> {
    need_kubectl!();
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let api = ApiStandIn::start(&pod, &id).await?;
    let daemon_pid = pod.env.daemon.pid().unwrap();
    let (code, _, _) = kubectl_run(&api, &["exec", POD_NAME, "--", "true"], None).await?;
    assert_eq!(code, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = fd_count(daemon_pid);

    let marker = ["sleep", "4243"];
    let mut client = kubectl(&api).unwrap();
    let client = client
        .args(["exec", POD_NAME, "--"])
        .args(marker)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    kill_client_and_check_nothing_left(&pod, &id, fds_before, &marker, client).await?;
    pod.teardown().await
}

#[tokio::test]
async fn kubectl_exec_it_gets_a_terminal_of_its_size() -> Result<()> {
    need_kubectl!();
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let api = ApiStandIn::start(&pod, &id).await?;
    let inner = format!(
        "stty cols 123 rows 45; KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false KUBECONFIG=/dev/null kubectl --server http://{} exec -it {POD_NAME} -- sh -c 'tty; sleep 1; stty size; exit 5'",
        api.addr
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("script")
            .args(["-qefc", &inner, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "{text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("45 123"), "{text:?}");
    assert_eq!(out.status.code(), Some(5), "{text:?}");
    pod.teardown().await
}

#[tokio::test]
async fn kubectl_port_forward_to_a_busybox_httpd() -> Result<()> {
    need_kubectl!();
    let pod = pod_with_busybox("runc").await?;
    let id = pod
        .run(
            "httpd",
            &[
                "sh",
                "-c",
                "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec busybox httpd -f -p 8080 -h /www",
            ],
        )
        .await?;
    let api = ApiStandIn::start(&pod, &id).await?;
    let local = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut fwd = kubectl(&api).unwrap();
    let _fwd = fwd
        .args([
            "port-forward",
            &format!("pod/{POD_NAME}"),
            &format!("{}:8080", local.port()),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(local).await {
            Ok(r) if r.contains("hello-from-the-pod") => break,
            r => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "port-forward never served: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let started = std::time::Instant::now();
    for i in 0..1000 {
        let r = http_get(local).await?;
        assert!(r.contains("hello-from-the-pod"), "connection {i}: {r:?}");
    }
    eprintln!(
        "kubectl port-forward: 1,000 sequential connections in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        tasks.push(tokio::spawn(http_get(local)));
    }
    for t in tasks {
        let r = t.await??;
        assert!(r.contains("hello-from-the-pod"), "{r:?}");
    }
    pod.teardown().await
}

#[tokio::test]
async fn kubectl_port_forward_into_a_host_network_pod() -> Result<()> {
    use k8s_cri::v1::{
        LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    };
    need_kubectl!();
    let pod = pod_with("runc", |c| {
        c.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    })
    .await?;
    // A free port on the host, where the pod's httpd listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let script = format!(
        "mkdir -p /www && echo hello-from-the-host-pod > /www/index.html && exec busybox httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let id = pod.run("httpd", &["sh", "-c", &script]).await?;
    let api = ApiStandIn::start(&pod, &id).await?;
    let local = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut fwd = kubectl(&api).unwrap();
    let _fwd = fwd
        .args([
            "port-forward",
            &format!("pod/{POD_NAME}"),
            &format!("{}:{port}", local.port()),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(local).await {
            Ok(r) if r.contains("hello-from-the-host-pod") => break,
            r => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "port-forward never served: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for i in 0..20 {
        let r = http_get(local).await?;
        assert!(
            r.contains("hello-from-the-host-pod"),
            "connection {i}: {r:?}"
        );
    }
    pod.teardown().await
}

/// `hack/bench-streaming.sh` runs this: kubectl exec round trips, exec stdout and
/// port-forward throughput, all through real SPDY clients.
#[tokio::test]
#[ignore = "a benchmark: run by hack/bench-streaming.sh"]
async fn bench_streaming() -> Result<()> {
    need_kubectl!();
    let pod = pod_with_busybox("runc").await?;
    let id = pod
        .run(
            "web",
            &[
                "sh",
                "-c",
                "mkdir -p /www && busybox httpd -p 9000 -h /www && exec sleep 100000",
            ],
        )
        .await?;
    let r = pod
        .exec(
            &id,
            &["sh", "-c", "head -c 64000000 /dev/zero > /www/blob"],
            60,
        )
        .await?;
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let api = ApiStandIn::start(&pod, &id).await?;
    let mut rtts = Vec::new();
    for _ in 0..50 {
        let t = std::time::Instant::now();
        let (code, _, err) = kubectl_run(&api, &["exec", POD_NAME, "--", "true"], None).await?;
        assert_eq!(
            code,
            0,
            "{}\n{}",
            String::from_utf8_lossy(&err),
            pod.env.daemon.log_tail(30)
        );
        rtts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    rtts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| rtts[((rtts.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "BENCH kubectl exec true round trip: p50 {:.1} ms, p99 {:.1} ms",
        p(0.5),
        p(0.99)
    );
    // The same round trip straight to crius's URL: crictl (streaming exec) and criusctl
    // (--interactive makes it the streaming exec too, stdin at EOF at once).
    let ctl = std::path::Path::new(common::CRIUSD).with_file_name("criusctl");
    for (name, bin, args) in [
        ("crictl", crictl(), vec!["exec", &id, "true"]),
        ("criusctl", ctl, vec!["exec", "--interactive", &id, "true"]),
    ] {
        let mut rtts = Vec::new();
        for _ in 0..50 {
            let t = std::time::Instant::now();
            let out = tokio::process::Command::new(&bin)
                .arg("--runtime-endpoint")
                .arg(pod.env.daemon.socket())
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .await?;
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            rtts.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        rtts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| rtts[((rtts.len() as f64 - 1.0) * q).round() as usize];
        eprintln!(
            "BENCH {name} exec true round trip: p50 {:.1} ms, p99 {:.1} ms",
            p(0.5),
            p(0.99)
        );
    }
    let t = std::time::Instant::now();
    let (code, out, _) =
        kubectl_run(&api, &["exec", POD_NAME, "--", "cat", "/www/blob"], None).await?;
    assert_eq!((code, out.len()), (0, 64_000_000));
    eprintln!(
        "BENCH exec stdout: {:.0} MB/s",
        64.0 / t.elapsed().as_secs_f64()
    );
    let local = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut fwd = kubectl(&api).unwrap();
    let _fwd = fwd
        .args([
            "port-forward",
            &format!("pod/{POD_NAME}"),
            &format!("{}:9000", local.port()),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        let t = std::time::Instant::now();
        if let Ok(mut s) = tokio::net::TcpStream::connect(local).await
            && s.write_all(b"GET /blob HTTP/1.0\r\n\r\n").await.is_ok()
        {
            let mut n = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(m) = s.read(&mut buf).await {
                if m == 0 {
                    break;
                }
                n += m;
            }
            if n >= 64_000_000 {
                break t.elapsed().as_secs_f64();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "port-forward never served the blob"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("BENCH port-forward: {:.0} MB/s", 64.0 / got);
    pod.teardown().await
}

#[tokio::test]
async fn the_streaming_server_speaks_tls_when_configured() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let config = format!(
        "[streaming]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let pod = pod_with_config("runc", &config, |_| {}).await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let mut rt = pod.env.daemon.runtime().await?;
    let url = rt.exec(exec_req(&id)).await?.into_inner().url;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let curl = |url: String| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .arg(&url)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(curl(url.clone()).await, "400", "over TLS, not an upgrade");
    assert_eq!(curl(url.clone()).await, "404", "used once");
    // Plain HTTP to the TLS port gets nowhere.
    assert_ne!(
        http_status("POST", &url.replace("https://", "http://"), false)
            .await
            .ok(),
        Some(400)
    );
    // criusctl's streaming exec over the https URL (the certificate is not verified, as
    // crictl does not).
    let ctl = std::path::Path::new(common::CRIUSD).with_file_name("criusctl");
    let out = tokio::process::Command::new(&ctl)
        .arg("--runtime-endpoint")
        .arg(pod.env.daemon.socket())
        .args([
            "exec",
            "--interactive",
            &id,
            "sh",
            "-c",
            "echo tls-ok; exit 6",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tls-ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(6));
    pod.teardown().await
}

#[tokio::test]
async fn hostile_streaming_clients_are_bounded() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let mut rt = pod.env.daemon.runtime().await?;

    // A SPDY frame announcing 16 MiB after a real upgrade: the session ends at once, the
    // server never buffers it.
    let url = rt.exec(exec_req(&id)).await?.into_inner().url;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut head = vec![0u8; 512];
    let n = s.read(&mut head).await?;
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    s.write_all(b"\x00\x00\x00\x01\x00\xff\xff\xff").await?;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the server closes the session")?;
    // GOAWAY (type 7) with PROTOCOL_ERROR before the close.
    assert!(
        rest.windows(4).any(|w| w == b"\x80\x03\x00\x07"),
        "{rest:?}"
    );

    // Pending URLs are bounded: the 1,001st unused one is refused.
    let mut last = Ok(());
    for _ in 0..1001 {
        if let Err(e) = rt.exec(exec_req(&id)).await {
            last = Err(e);
            break;
        }
    }
    let e = last.expect_err("too many pending URLs");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    pod.teardown().await
}

#[tokio::test]
async fn criusctl_exec_streams_stdin_tty_and_exit_codes() -> Result<()> {
    let ctl = std::path::Path::new(common::CRIUSD).with_file_name("criusctl");
    assert!(
        ctl.exists(),
        "{} not built: cargo build -p criusctl",
        ctl.display()
    );
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let mut child = tokio::process::Command::new(&ctl)
        .arg("--runtime-endpoint")
        .arg(pod.env.daemon.socket())
        .args([
            "exec",
            "--interactive",
            &id,
            "sh",
            "-c",
            "cat; echo err >&2; exit 4",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut w = child.stdin.take().unwrap();
    w.write_all(b"streamed\n").await?;
    drop(w);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "streamed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(4));

    let inner = format!(
        "stty cols 77 rows 22; {} --runtime-endpoint {} exec --interactive -t {id} sh -c 'tty; sleep 1; stty size'",
        ctl.display(),
        pod.env.daemon.socket().display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("script")
            .args(["-qefc", &inner, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("22 77"), "{text:?}");
    assert_eq!(out.status.code(), Some(0), "{text:?}");
    pod.teardown().await
}

/// Waits until the exec of `marker` runs, kills its client, then checks that nothing of the
/// exec is left: the process, criusd's fds (back to `fds_before`), the per-exec files.
async fn kill_client_and_check_nothing_left(
    pod: &Pod,
    id: &str,
    fds_before: usize,
    marker: &[&str],
    mut client: tokio::process::Child,
) -> Result<()> {
    let daemon_pid = pod.env.daemon.pid().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while processes_with_cmdline(marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the exec never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.kill().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with_cmdline(marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the exec'd process outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fd_count(daemon_pid) > fds_before {
        assert!(
            std::time::Instant::now() < deadline,
            "criusd holds {} fds, {} before",
            fd_count(daemon_pid),
            fds_before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bundle = pod.env.daemon.state().join("containers").join(id);
    let left: Vec<_> = std::fs::read_dir(&bundle)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("stream-exec-"))
        .collect();
    assert!(left.is_empty(), "per-exec files left: {left:?}");
    // The monitor runs the exec now: its files go once it reaped the runtime.
    wait_no_stream_exec_files(pod).await?;
    Ok(())
}

/// A container reading its stdin (`stdin_once`): each line is echoed to stdout and stderr;
/// at EOF it says bye and exits 7.
fn echo_container() -> k8s_cri::v1::ContainerConfig {
    let mut c = container(
        "web",
        &[
            "sh",
            "-c",
            "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done; echo bye; exit 7",
        ],
    );
    c.stdin = true;
    c.stdin_once = true;
    c
}

/// The pid of the pod's monitor.
fn monitor_pid(pod: &Pod) -> u32 {
    let p = pod
        .env
        .daemon
        .state()
        .join("pods")
        .join(&pod.pod_id)
        .join("monitor")
        .join("monitor.pid");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until process `pid` holds more than `n` fds.
async fn wait_fds_above(pid: u32, n: usize, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fd_count(pid) <= n {
        assert!(std::time::Instant::now() < deadline, "{what} never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_fds_at_most(pid: u32, n: usize, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fd_count(pid) > n {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} holds {} fds, {n} before",
            fd_count(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn crictl_attach_shares_output_and_feeds_stdin_once() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run_config(echo_container()).await?;
    let monitor = monitor_pid(&pod);
    let fds = fd_count(monitor);
    // A watcher with output only, attached first...
    let watcher = tokio::process::Command::new(crictl())
        .arg("--runtime-endpoint")
        .arg(pod.env.daemon.endpoint())
        .args(["attach", &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    wait_fds_above(monitor, fds, "the watcher's monitor connection").await;
    // ...then one that types two lines and ends its stdin, which closes the container's.
    let (code, out, err) =
        crictl_run(&pod, &["attach", "-i", &id], Some(b"a\nb\n".to_vec())).await?;
    let (out, err) = (
        String::from_utf8_lossy(&out).to_string(),
        String::from_utf8_lossy(&err).to_string(),
    );
    assert_eq!(out, "got a\ngot b\nbye\n", "{err}");
    assert!(err.contains("err a\nerr b\n"), "{err}");
    assert_crictl_exit(code, err.as_bytes(), 7);
    let w = tokio::time::timeout(Duration::from_secs(30), watcher.wait_with_output()).await??;
    assert_eq!(String::from_utf8_lossy(&w.stdout), "got a\ngot b\nbye\n");
    assert!(String::from_utf8_lossy(&w.stderr).contains("err b\n"));
    assert_eq!(pod.wait_exited(&id).await?.exit_code, 7);
    // Still logged.
    let log = std::fs::read_to_string(pod.log_dir.path().join("web.log"))?;
    assert!(log.contains(" stdout F got b\n"), "{log}");
    assert!(log.contains(" stderr F err a\n"), "{log}");
    pod.teardown().await
}

#[tokio::test]
async fn crictl_attach_shares_a_tty_console_and_resizes_it() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let mut c = container("web", &["sh"]);
    (c.tty, c.stdin) = (true, true);
    let id = pod.run_config(c).await?;
    // `script` gives crictl a terminal of 101x33, whose size crictl sends on attach.
    let inner = format!(
        "stty cols 101 rows 33; {} --runtime-endpoint {} attach -it {id}",
        crictl().display(),
        pod.env.daemon.endpoint()
    );
    let sh = format!(
        "(sleep 3; printf 'stty size; tty\\n'; sleep 2; printf 'exit 3\\n'; sleep 5) | script -qefc \"{inner}\" /dev/null"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("sh")
            .args(["-c", &sh])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("33 101"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert_eq!(pod.wait_exited(&id).await?.exit_code, 3);
    let log = std::fs::read_to_string(pod.log_dir.path().join("web.log"))?;
    assert!(log.contains("33 101"), "the console is still logged: {log}");
    pod.teardown().await
}

#[tokio::test]
async fn a_killed_attacher_leaves_nothing_and_the_container_runs_on() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let mut c = echo_container();
    c.stdin_once = false;
    let id = pod.run_config(c).await?;
    let (daemon, monitor) = (pod.env.daemon.pid().unwrap(), monitor_pid(&pod));
    let (mut daemon_fds, mut monitor_fds) = (0, 0);
    for round in 0..4 {
        let mut client = tokio::process::Command::new(crictl())
            .arg("--runtime-endpoint")
            .arg(pod.env.daemon.endpoint())
            .args(["attach", "-i", &id])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        // Attached once its input comes back (its stdin stays open: the session lasts).
        let line = format!("x{round}\n");
        client
            .stdin
            .as_mut()
            .unwrap()
            .write_all(line.as_bytes())
            .await?;
        let mut got = Vec::new();
        let mut stdout = client.stdout.take().unwrap();
        let want = format!("got x{round}\n");
        while !String::from_utf8_lossy(&got).contains(&want) {
            let mut b = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(20), stdout.read(&mut b)).await??;
            anyhow::ensure!(
                n > 0,
                "attach ended early: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&b[..n]);
        }
        client.kill().await?;
        if round == 0 {
            // The first round opened criusd's lazily created fds: count from here.
            tokio::time::sleep(Duration::from_millis(500)).await;
            (daemon_fds, monitor_fds) = (fd_count(daemon), fd_count(monitor));
            continue;
        }
        wait_fds_at_most(monitor, monitor_fds, "the monitor").await;
        wait_fds_at_most(daemon, daemon_fds, "criusd").await;
    }
    assert_eq!(
        pod.status(&id).await?.state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32,
        "the container outlives its attachers"
    );
    // The container's stdin stayed open (not stdin_once): it still answers.
    let r = pod.exec(&id, &["true"], 10).await?;
    assert_eq!(r.exit_code, 0);
    pod.teardown().await
}

#[tokio::test]
async fn kubectl_attach_over_spdy() -> Result<()> {
    need_kubectl!();
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run_config(echo_container()).await?;
    let api = ApiStandIn::start(&pod, &id).await?;
    let (code, out, err) = kubectl_run(
        &api,
        &["attach", "-i", POD_NAME],
        Some(b"one\ntwo\n".to_vec()),
    )
    .await?;
    let err = String::from_utf8_lossy(&err).to_string();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "got one\ngot two\nbye\n",
        "{err}"
    );
    assert!(err.contains("err one\nerr two\n"), "{err}");
    assert_eq!(code, 7, "{err}");
    assert_eq!(pod.wait_exited(&id).await?.exit_code, 7);
    pod.teardown().await
}

/// The python Kubernetes client (Debian's python3-kubernetes), which speaks WebSocket
/// `v4.channel.k8s.io` to the API server, proxied by the stand-in to crius.
fn python_kubernetes() -> Option<&'static str> {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import kubernetes.stream"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some("/usr/bin/python3")
}

macro_rules! need_python_kubernetes {
    () => {
        if python_kubernetes().is_none() {
            eprintln!("python3-kubernetes not installed: skipped");
            return Ok(());
        }
    };
}

const PY_CLIENT: &str = r#"
import faulthandler, json, sys, time
faulthandler.dump_traceback_later(60, exit=True)
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.api import core_v1_api
from kubernetes.stream import stream

c = Configuration()
c.host = sys.argv[1]
api = core_v1_api.CoreV1Api(ApiClient(c))
what = sys.argv[2]
if what == "exec":
    r = stream(api.connect_get_namespaced_pod_exec, "web", "default",
               command=["sh", "-c", "echo out; echo err >&2; exit 3"],
               stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    r.run_forever(timeout=60)
    print(json.dumps({"out": r.read_stdout(), "err": r.read_stderr(), "code": r.returncode}))
elif what == "stdin":
    r = stream(api.connect_get_namespaced_pod_exec, "web", "default",
               command=["sh", "-c", "read a; read b; echo \"got $a $b\""],
               stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    r.write_stdin("hello\nworld\n")
    r.run_forever(timeout=60)
    print(json.dumps({"out": r.read_stdout(), "code": r.returncode}))
elif what == "portforward":
    from kubernetes.stream import portforward
    pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "default", ports="8080")
    s = pf.socket(8080)
    s.setblocking(True)
    s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    s.close()
    print(json.dumps({"out": data.decode(), "error": pf.error(8080)}))
elif what == "attach":
    r = stream(api.connect_get_namespaced_pod_attach, "web", "default",
               stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    r.write_stdin("one\n")
    out, err = "", ""
    deadline = time.time() + 30
    while ("got one" not in out or "err one" not in err) and time.time() < deadline:
        r.update(timeout=1)
        out += r.read_stdout(timeout=0) or ""
        err += r.read_stderr(timeout=0) or ""
    r.close()
    print(json.dumps({"out": out, "err": err}))
"#;

async fn python_run(api: &ApiStandIn, what: &str) -> Result<serde_json::Value> {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(python_kubernetes().unwrap())
            .args(["-c", PY_CLIENT, &format!("http://{}", api.addr), what])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "python client failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_str(text.trim())?)
}

#[tokio::test]
async fn python_kubernetes_exec_and_attach_over_websocket() -> Result<()> {
    need_python_kubernetes!();
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run_config(echo_container()).await?;
    let api = ApiStandIn::start(&pod, &id).await?;

    let r = python_run(&api, "exec").await?;
    assert_eq!(r["out"], "out\n", "{r}");
    assert_eq!(r["err"], "err\n", "{r}");
    assert_eq!(r["code"], 3, "{r}");
    let r = python_run(&api, "stdin").await?;
    assert_eq!(r["out"], "got hello world\n", "{r}");
    assert_eq!(r["code"], 0, "{r}");
    // Attach: the attacher's line comes back on both streams; when it leaves, the
    // stdin_once container's stdin is closed and it exits.
    let r = python_run(&api, "attach").await?;
    assert!(r["out"].as_str().unwrap().contains("got one\n"), "{r}");
    assert!(r["err"].as_str().unwrap().contains("err one\n"), "{r}");
    assert_eq!(pod.wait_exited(&id).await?.exit_code, 7);
    pod.teardown().await
}

/// A raw WebSocket session on a crius URL with `protocol`; returns every message received
/// until the server closed.
async fn ws_session(
    url: &str,
    protocol: &str,
    send: Vec<tokio_tungstenite::tungstenite::Message>,
) -> Result<Vec<tokio_tungstenite::tungstenite::Message>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.replace("http://", "ws://").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let host = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(host).await?;
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await?;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    for m in send {
        ws.send(m).await?;
    }
    let mut got = Vec::new();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
        match m {
            Ok(m) if m.is_close() => break,
            Ok(m) => got.push(m),
            Err(e) => {
                got.push(tokio_tungstenite::tungstenite::Message::text(format!(
                    "error: {e}"
                )));
                break;
            }
        }
    }
    Ok(got)
}

#[tokio::test]
async fn websocket_base64_and_v5_close_signal() -> Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("web", &["sleep", "1000"]).await?;
    let mut rt = pod.env.daemon.runtime().await?;
    let exec = |cmd: &[&str], stdin: bool| ExecRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        stdout: true,
        stderr: true,
        tty: false,
    };

    // v5: stdin ends with the close signal, so `cat` ends and the status says Success.
    let url = rt.exec(exec(&["cat"], true)).await?.into_inner().url;
    let got = ws_session(
        &url,
        "v5.channel.k8s.io",
        vec![
            Message::binary(b"\x00hello ws".to_vec()),
            Message::binary(vec![255u8, 0]),
        ],
    )
    .await?;
    let bins: Vec<Vec<u8>> = got
        .iter()
        .filter(|m| m.is_binary())
        .map(|m| m.clone().into_data().to_vec())
        .collect();
    let out: Vec<u8> = bins
        .iter()
        .filter(|b| b.first() == Some(&1))
        .flat_map(|b| b[1..].to_vec())
        .collect();
    assert_eq!(out, b"hello ws", "{got:?}");
    let status = bins
        .iter()
        .find(|b| b.first() == Some(&3))
        .expect("a status on the error channel");
    let v: serde_json::Value = serde_json::from_slice(&status[1..])?;
    assert_eq!(v["status"], "Success", "{v}");

    // base64: text messages, the channel as a digit.
    let url = rt
        .exec(exec(&["sh", "-c", "echo hi; echo oops >&2; exit 2"], false))
        .await?
        .into_inner()
        .url;
    let got = ws_session(&url, "base64.channel.k8s.io", vec![]).await?;
    let texts: Vec<String> = got
        .iter()
        .filter(|m| m.is_text())
        .map(|m| m.to_text().unwrap().to_string())
        .collect();
    assert!(texts.contains(&"1aGkK".to_string()), "{texts:?}");
    assert!(texts.contains(&"2b29wcwo=".to_string()), "{texts:?}");
    use base64::Engine;
    let status = texts.iter().find(|t| t.starts_with('3')).expect("a status");
    let status = base64::engine::general_purpose::STANDARD.decode(&status[1..])?;
    assert!(
        String::from_utf8_lossy(&status).contains("exit status 2"),
        "{}",
        String::from_utf8_lossy(&status)
    );

    // A message over the size limit ends the session; the process is killed.
    let url = rt
        .exec(exec(&["sleep", "4244"], true))
        .await?
        .into_inner()
        .url;
    let mut big = vec![0u8; 2 << 20];
    big[0] = 0;
    // Whatever the client sees (a close or a reset), the session is over.
    let _ = ws_session(&url, "v4.channel.k8s.io", vec![Message::binary(big)]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with_cmdline(&["sleep", "4244"]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the process outlived a hostile client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A protocol crius does not speak is refused before the upgrade.
    let url = rt.exec(exec(&["true"], false)).await?.into_inner().url;
    assert!(ws_session(&url, "v9.channel.k8s.io", vec![]).await.is_err());
    pod.teardown().await
}

const HTTPD: &str = "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec busybox httpd -f -p 8080 -h /www";

#[tokio::test]
async fn port_forward_over_websocket() -> Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("httpd", &["sh", "-c", HTTPD]).await?;
    // Wait for the server to listen.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pod
        .exec(
            &id,
            &["sh", "-c", "wget -q -O- http://127.0.0.1:8080/index.html"],
            5,
        )
        .await?
        .exit_code
        != 0
    {
        assert!(std::time::Instant::now() < deadline, "httpd never listened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut rt = pod.env.daemon.runtime().await?;
    // Raw v4 channel framing: each channel opens with its port, then data on channel 0.
    for round in 0..3 {
        let url = rt
            .port_forward(PortForwardRequest {
                pod_sandbox_id: pod.pod_id.clone(),
                port: vec![8080],
            })
            .await?
            .into_inner()
            .url;
        let mut req = vec![0u8];
        req.extend_from_slice(b"GET /index.html HTTP/1.0\r\n\r\n");
        let got = ws_session(
            &format!("{url}?port=8080"),
            "v4.channel.k8s.io",
            vec![Message::binary(req)],
        )
        .await?;
        let bins: Vec<Vec<u8>> = got.iter().map(|m| m.clone().into_data().to_vec()).collect();
        assert_eq!(bins[0], [0, 0x90, 0x1f], "round {round}: {got:?}");
        assert_eq!(bins[1], [1, 0x90, 0x1f], "round {round}: {got:?}");
        let data: Vec<u8> = bins[2..]
            .iter()
            .filter(|b| b.first() == Some(&0))
            .flat_map(|b| b[1..].to_vec())
            .collect();
        assert!(
            String::from_utf8_lossy(&data).contains("hello-from-the-pod"),
            "{got:?}"
        );
    }
    // A port the RPC did not grant is reported on the error channel.
    let url = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.pod_id.clone(),
            port: vec![8080],
        })
        .await?
        .into_inner()
        .url;
    let got = ws_session(&format!("{url}?port=9999"), "v4.channel.k8s.io", vec![]).await?;
    assert!(
        got.iter().any(|m| {
            let d = m.clone().into_data();
            d.first() == Some(&1) && String::from_utf8_lossy(&d).contains("9999")
        }),
        "{got:?}"
    );

    // The python client through the API-server stand-in.
    if python_kubernetes().is_some() {
        let api = ApiStandIn::start(&pod, &id).await?;
        let r = python_run(&api, "portforward").await?;
        assert!(
            r["out"].as_str().unwrap().contains("hello-from-the-pod"),
            "{r}"
        );
    }
    pod.teardown().await
}

#[tokio::test]
async fn criusctl_attach_streams_stdin_and_the_exit_code() -> Result<()> {
    let ctl = std::path::Path::new(common::CRIUSD).with_file_name("criusctl");
    assert!(
        ctl.exists(),
        "{} not built: cargo build -p criusctl",
        ctl.display()
    );
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run_config(echo_container()).await?;
    let mut child = tokio::process::Command::new(&ctl)
        .arg("--runtime-endpoint")
        .arg(pod.env.daemon.socket())
        .args(["attach", "--stdin", &id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut w = child.stdin.take().unwrap();
    w.write_all(b"ctl\n").await?;
    drop(w);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got ctl\nbye\n",
        "{err}"
    );
    assert!(err.contains("err ctl\n"), "{err}");
    assert_eq!(out.status.code(), Some(7), "{err}");
    pod.teardown().await
}

#[tokio::test]
async fn criusctl_port_forward_to_a_busybox_httpd() -> Result<()> {
    let ctl = std::path::Path::new(common::CRIUSD).with_file_name("criusctl");
    let pod = pod_with_busybox("runc").await?;
    pod.run("httpd", &["sh", "-c", HTTPD]).await?;
    let local = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut fwd = tokio::process::Command::new(&ctl)
        .arg("--runtime-endpoint")
        .arg(pod.env.daemon.socket())
        .args([
            "port-forward",
            &pod.pod_id,
            &format!("{}:8080", local.port()),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(local).await {
            Ok(r) if r.contains("hello-from-the-pod") => break,
            r => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "port-forward never served: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for i in 0..100 {
        let r = http_get(local).await?;
        assert!(r.contains("hello-from-the-pod"), "connection {i}: {r:?}");
    }
    let tasks: Vec<_> = (0..20).map(|_| tokio::spawn(http_get(local))).collect();
    for t in tasks {
        let r = t.await??;
        assert!(r.contains("hello-from-the-pod"), "{r:?}");
    }
    fwd.kill().await?;
    pod.teardown().await
}

/// kubectl >= 1.30's port-forward: SPDY carried in WebSocket binary messages. The SPDY side
/// here is crius's own client (kubectl 1.20 predates the tunnel).
#[tokio::test]
async fn port_forward_through_the_spdy_over_websocket_tunnel() -> Result<()> {
    use crius_streaming::spdy::Headers;
    use crius_streaming::spdy::session::Session;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("httpd", &["sh", "-c", HTTPD]).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pod
        .exec(
            &id,
            &["sh", "-c", "wget -q -O- http://127.0.0.1:8080/index.html"],
            5,
        )
        .await?
        .exit_code
        != 0
    {
        assert!(std::time::Instant::now() < deadline, "httpd never listened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = pod
        .env
        .daemon
        .runtime()
        .await?
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.pod_id.clone(),
            port: vec![8080],
        })
        .await?
        .into_inner()
        .url;
    let mut req = url.replace("http://", "ws://").into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "SPDY/3.1+portforward.k8s.io".parse()?,
    );
    let host = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(host).await?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    // Bridge the WebSocket to a byte stream for the SPDY session.
    let (ours, theirs) = tokio::io::duplex(1 << 18);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (mut sink, mut stream) = ws.split();
    let bridge = tokio::spawn(async move {
        let up = async {
            let mut buf = vec![0u8; 1 << 15];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        };
        let down = async {
            while let Some(Ok(Message::Binary(b))) = stream.next().await {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
        };
        tokio::join!(up, down);
    });
    let session = Session::start(theirs)?;
    for i in 0..3 {
        let h = |t: &str| {
            Headers::new()
                .with("streamType", t)
                .with("port", "8080")
                .with("requestID", &i.to_string())
        };
        let (_err, _) = session.open(h("error")).await?;
        let (mut data_r, data_w) = session.open(h("data")).await?;
        data_w
            .write(bytes::Bytes::from_static(
                b"GET /index.html HTTP/1.0\r\n\r\n",
            ))
            .await?;
        let mut got = Vec::new();
        while let Some(b) = tokio::time::timeout(Duration::from_secs(20), data_r.read()).await? {
            got.extend_from_slice(&b);
        }
        assert!(
            String::from_utf8_lossy(&got).contains("hello-from-the-pod"),
            "request {i}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    session.close().await;
    bridge.abort();
    pod.teardown().await
}

/// Waits (10 s at most) until the pod monitor's directory holds no per-exec file: the monitor
/// removes them once it reaped the exec's runtime.
async fn wait_no_stream_exec_files(pod: &Pod) -> Result<()> {
    let monitor_dir = pod
        .env
        .daemon
        .state()
        .join("pods")
        .join(&pod.pod_id)
        .join("monitor");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(&monitor_dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("stream-exec-"))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "per-exec files left in the monitor's dir: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
