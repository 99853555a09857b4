//! Self-tests of crius-testkit against the real tools. They start registries and run skopeo and
//! umoci; the `root_` ones need root (umoci applying owners and device nodes, tmpfs mounts).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crius_testkit::image::{self, MT_DOCKER_LIST, MT_OCI_INDEX};
use crius_testkit::{
    Format, Image, Proxy, Registry, RegistryClient, cleanup, push_image, push_index,
};

fn skopeo_raw(reg: &Registry, reference: &str) -> Vec<u8> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw"]);
    match reg.cert_dir() {
        Some(dir) => {
            let (u, p) = reg.credentials().unwrap();
            cmd.arg("--cert-dir")
                .arg(dir)
                .arg("--creds")
                .arg(format!("{u}:{p}"));
        }
        None => {
            cmd.arg("--tls-verify=false");
        }
    }
    cmd.arg(format!("docker://{}/{reference}", reg.addr()));
    let out = cmd.output().expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn all_images() -> Vec<(&'static str, Image)> {
    vec![
        ("busybox", image::busybox_image()),
        ("multilayer", image::multilayer_whiteouts_image()),
        ("zstd", image::zstd_image()),
        ("docker", image::docker_schema2_image()),
        ("large", image::large_image(10)),
        ("traversal", image::traversal_image()),
        ("absolute", image::absolute_path_image()),
        ("symlink-escape", image::symlink_escape_image()),
        ("hardlink-escape", image::hardlink_escape_image()),
    ]
}

#[tokio::test]
async fn plain_registry_push_every_image_and_inspect_with_skopeo() {
    let reg = Registry::start_plain().unwrap();
    for (name, img) in all_images() {
        let pushed = push_image(&reg, &format!("test/{name}"), "v1", &img)
            .await
            .unwrap();
        assert_eq!(pushed.manifest_digest, img.manifest_digest);
        let raw = skopeo_raw(&reg, &format!("test/{name}:v1"));
        assert_eq!(raw, img.manifest, "{name}: manifest served differs");
    }
    for (fmt, mt) in [
        (Format::Oci, MT_OCI_INDEX),
        (Format::Docker, MT_DOCKER_LIST),
    ] {
        let idx = image::multiarch_index(fmt);
        let repo = format!("test/multiarch-{fmt:?}").to_lowercase();
        let pushed = push_index(&reg, &repo, "v1", &idx).await.unwrap();
        assert_eq!(pushed.index_digest, idx.digest);
        assert_eq!(skopeo_raw(&reg, &format!("{repo}:v1")), idx.manifest);
        let (_, ct) = RegistryClient::new(&reg)
            .unwrap()
            .get_manifest(&repo, "v1")
            .await
            .unwrap();
        assert_eq!(ct, mt);
        // The arm64 image is reachable by digest and differs from the amd64 one.
        let arm = idx.for_arch("arm64").unwrap();
        assert_ne!(
            arm.manifest_digest,
            idx.for_arch("amd64").unwrap().manifest_digest
        );
        assert_eq!(
            skopeo_raw(&reg, &format!("{repo}@{}", arm.manifest_digest)),
            arm.manifest
        );
    }
}

#[tokio::test]
async fn tls_basic_auth_registry() {
    let reg = Registry::start_tls_basic_auth("alice", "s3cret").unwrap();
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let img = image::busybox_image();
    push_image(&reg, "secure/busybox", "v1", &img)
        .await
        .unwrap();
    assert_eq!(skopeo_raw(&reg, "secure/busybox:v1"), img.manifest);

    // Without credentials: 401; with the CA not trusted: TLS failure.
    let pem = std::fs::read(reg.ca_path().unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let r = c.get(format!("{}/v2/", reg.url())).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // localhost is in the SAN too.
    let r = c
        .get(format!("https://localhost:{}/v2/", reg.port()))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await;
    assert_eq!(r.unwrap().status(), 200);
    assert!(
        reqwest::Client::new()
            .get(format!("{}/v2/", reg.url()))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn corrupt_and_truncate_blobs_on_disk() {
    let reg = Registry::start_plain().unwrap();
    let img = image::busybox_image();
    let pushed = push_image(&reg, "c/busybox", "v1", &img).await.unwrap();
    let client = RegistryClient::new(&reg).unwrap();
    let (digest, size) = pushed.layers[0].clone();
    assert_eq!(
        client.get_blob("c/busybox", &digest).await.unwrap(),
        img.layers[0].blob
    );
    reg.corrupt_blob(&digest).unwrap();
    let served = client.get_blob("c/busybox", &digest).await.unwrap();
    assert_eq!(served.len() as u64, size);
    assert_ne!(image::sha256_digest(&served), digest);
    reg.truncate_blob(&digest, size / 2).unwrap();
    let served = client.get_blob("c/busybox", &digest).await.unwrap();
    assert_eq!(served.len() as u64, size / 2);

    // A manifest whose layer descriptor lies about the size is accepted by the registry.
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    m["layers"][0]["size"] = serde_json::json!(size + 100);
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = client
        .push_manifest("c/busybox", "wrong-size", &bytes, img.manifest_media_type())
        .await
        .unwrap();
    assert_eq!(d, image::sha256_digest(&bytes));
    let edited = img.edit_manifest(|m| m["layers"][0]["size"] = serde_json::json!(size - 1));
    let p = push_image(&reg, "c/busybox", "wrong-size-2", &edited)
        .await
        .unwrap();
    assert_eq!(p.manifest_digest, edited.manifest_digest);
}

#[tokio::test]
async fn registry_process_is_gone_after_drop() {
    let reg = Registry::start_plain().unwrap();
    let pid = reg.pid().unwrap();
    let storage = reg.storage_dir();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(reg);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "registry {pid} still running"
    );
    assert!(!storage.exists());
}

/// Needs root: umoci applies owners, modes and device nodes.
#[test]
fn root_umoci_unpacks_good_images() {
    for img in [image::busybox_image(), image::zstd_image()] {
        let r = image::reference_extract(&img).unwrap();
        assert!(r.rootfs().join("bin/busybox").is_file());
        assert_eq!(
            std::fs::read_link(r.rootfs().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
    }
    let r = image::reference_extract(&image::multilayer_whiteouts_image()).unwrap();
    let root = r.rootfs();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert_eq!(
        std::fs::read(root.join("data/keep.txt")).unwrap(),
        b"keep\n"
    );
    assert!(!root.join("data/deleted.txt").exists());
    let opq: Vec<_> = std::fs::read_dir(root.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(opq, vec![std::ffi::OsString::from("new.txt")]);
    let keep = std::fs::metadata(root.join("data/keep.txt")).unwrap();
    assert_eq!(
        std::fs::metadata(root.join("data/hard")).unwrap().ino(),
        keep.ino()
    );
    assert_eq!(
        std::fs::symlink_metadata(root.join("bin/suid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
    let secret = std::fs::metadata(root.join("secret")).unwrap();
    assert_eq!(
        (secret.mode() & 0o7777, secret.uid(), secret.gid()),
        (0o600, 1000, 1000)
    );
    let dev = std::fs::symlink_metadata(root.join("dev/null2")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(
        std::fs::symlink_metadata(root.join("dev/loopx"))
            .unwrap()
            .file_type()
            .is_block_device()
    );
    assert!(
        std::fs::symlink_metadata(root.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(root.join("replaced").is_dir());
    assert_eq!(
        std::fs::read(root.join("replaced/inner")).unwrap(),
        b"inner\n"
    );
    let x = Command::new("getfattr")
        .args(["-n", "user.crius.test", "--only-values"])
        .arg(root.join("xattr.txt"))
        .output();
    // getfattr comes from the `attr` package (hack/install-deps.sh); skip when absent.
    if let Ok(out) = x {
        assert!(
            out.status.success(),
            "xattr missing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"hello");
    }
}

#[tokio::test]
async fn proxy_counts_and_passes_through_with_keepalive() {
    let reg = Registry::start_plain().unwrap();
    let img = image::busybox_image();
    let pushed = push_image(&reg, "p/busybox", "v1", &img).await.unwrap();
    let proxy = Proxy::start(&reg.addr(), crius_testkit::FaultMode::PassThrough).unwrap();
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let b = c
            .get(format!(
                "{}/v2/p/busybox/blobs/{}",
                proxy.url(),
                pushed.layers[0].0
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(b.bytes().await.unwrap(), img.layers[0].blob);
    }
    let m = c
        .get(format!("{}/v2/p/busybox/manifests/v1", proxy.url()))
        .header("Accept", img.manifest_media_type())
        .send()
        .await
        .unwrap();
    assert_eq!(m.bytes().await.unwrap(), img.manifest);
    assert_eq!(proxy.blob_gets("p/busybox", &pushed.layers[0].0), 3);
    assert_eq!(proxy.count("/v2/p/busybox/manifests/"), 1);
    // skopeo through the proxy works too.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/p/busybox:v1", proxy.addr()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.reset_counts();
    assert_eq!(proxy.requests().len(), 0);
}

#[tokio::test]
async fn proxy_stalls_after_n_bytes_and_throttles() {
    let reg = Registry::start_plain().unwrap();
    let img = image::large_image(1);
    let pushed = push_image(&reg, "s/large", "v1", &img).await.unwrap();
    let (digest, size) = pushed.layers.iter().max_by_key(|l| l.1).unwrap().clone();
    let proxy = Proxy::start(
        &reg.addr(),
        crius_testkit::FaultMode::StallAfter { bytes: 1000 },
    )
    .unwrap();
    let c = reqwest::Client::new();
    let url = format!("{}/v2/s/large/blobs/{digest}", proxy.url());

    // Stall: headers and 1000 bytes arrive, then nothing.
    let mut resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(size));
    let mut got = 0usize;
    let r = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            got += chunk.len();
        }
    })
    .await;
    assert!(r.is_err(), "body finished although stalled");
    assert_eq!(got, 1000);

    // Manifests are not affected.
    let m = c
        .get(format!("{}/v2/s/large/manifests/v1", proxy.url()))
        .header("Accept", img.manifest_media_type())
        .send()
        .await
        .unwrap();
    assert_eq!(m.bytes().await.unwrap(), img.manifest);

    // Throttle: ~200 KiB at 200 KiB/s takes about a second.
    proxy.set_mode(crius_testkit::FaultMode::Throttle {
        bytes_per_sec: 200 * 1024,
    });
    let start = Instant::now();
    let body = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    let took = start.elapsed();
    assert_eq!(body.len() as u64, size);
    let expected = Duration::from_secs_f64(size as f64 / (200.0 * 1024.0));
    assert!(
        took >= expected.mul_f64(0.7),
        "throttled {size} bytes in {took:?}, expected ~{expected:?}"
    );

    proxy.set_mode(crius_testkit::FaultMode::ErrorStatus { status: 503 });
    assert_eq!(c.get(&url).send().await.unwrap().status(), 503);
    assert_eq!(proxy.blob_gets("s/large", &digest), 3);
}

/// Needs root: mounts tmpfs.
#[test]
fn root_unmount_all_under_and_leak_check() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = a.join("b");
    std::fs::create_dir_all(&a).unwrap();
    use nix::mount::{MsFlags, mount};
    mount(
        Some("tmpfs"),
        &a,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::create_dir_all(&b).unwrap();
    mount(
        Some("tmpfs"),
        &b,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    assert_eq!(
        cleanup::mounts_under(dir.path()),
        vec![b.clone(), a.clone()]
    );
    assert!(cleanup::check_no_leaks(dir.path()).is_err());
    assert!(cleanup::unmount_all_under(dir.path()).is_empty());
    cleanup::assert_no_leaks(dir.path());
}

#[tokio::test]
async fn daemon_start_reports_early_exit() {
    let opts = crius_testkit::DaemonOptions::new("/bin/false");
    let err = match crius_testkit::Daemon::start(opts).await {
        Ok(_) => panic!("/bin/false became ready"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("exited during start-up"), "{err}");
}

#[test]
fn host_snapshot_sees_new_process() {
    let snap = cleanup::HostSnapshot::capture();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let d = snap.diff();
    assert!(d.new_processes.iter().any(|p| p.pid == child.id() as i32));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The Unix-socket gRPC transport used by `Daemon::runtime()` reaches a tonic server.
#[tokio::test]
async fn uds_channel_reaches_a_grpc_server() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let ch = crius_testkit::daemon::uds_channel(&sock).await.unwrap();
    let mut rt = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(ch);
    let err = rt
        .version(k8s_cri::v1::VersionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
    server.abort();
}

fn fake_daemon_opts() -> crius_testkit::DaemonOptions {
    crius_testkit::DaemonOptions::new(env!("CARGO_BIN_EXE_crius-fake-criusd")).config("[image]\n")
}

/// Needs root (mounts tmpfs under the daemon root to check Drop unmounts it).
#[tokio::test]
async fn root_daemon_harness_with_fake_criusd() {
    let mut d = crius_testkit::Daemon::start(fake_daemon_opts())
        .await
        .unwrap();
    let base = d.base_dir().to_path_buf();
    let v = d
        .runtime()
        .await
        .unwrap()
        .version(k8s_cri::v1::VersionRequest::default())
        .await
        .unwrap();
    assert_eq!(v.into_inner().runtime_name, "crius-fake");
    assert!(d.log_tail(5).contains("listening on"), "{}", d.log_tail(5));
    // The test's config, plus a loopback-only network inside the daemon's own dir so a daemon
    // under test never touches the host's /etc/cni/net.d.
    let written = std::fs::read_to_string(d.config_path()).unwrap();
    assert!(written.starts_with("[image]\n"), "{written}");
    let conf_dir = base.join("cni-conf");
    assert!(
        written.contains(&format!("[network]\nconf_dir = \"{}\"", conf_dir.display())),
        "{written}"
    );
    assert!(conf_dir.join("10-loopback.conflist").is_file());
    let out = d.criusctl("/bin/echo", &["images"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("--runtime-endpoint {} images", d.socket().display())
    );

    // Graceful stop, restart on the same dirs, hard kill, restart.
    let status = d.sigterm_and_wait(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status}");
    d.restart().await.unwrap();
    let pid1 = d.pid().unwrap();
    d.kill9();
    assert!(!Path::new(&format!("/proc/{pid1}")).exists());
    d.restart().await.unwrap();
    assert_ne!(d.pid().unwrap(), pid1);
    d.images().await.unwrap();
    d.crius_images().await.unwrap();

    // Drop cleans up mounts and processes under the daemon's dirs.
    let m = d.root().join("mnt");
    std::fs::create_dir_all(&m).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &m,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let mut straggler = Command::new("sleep")
        .arg("300")
        .current_dir(&m)
        .spawn()
        .unwrap();
    let pid = d.pid().unwrap();
    drop(d);
    let _ = straggler.wait();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(cleanup::mounts_under(&base).is_empty());
    assert!(!base.exists(), "{} left behind", base.display());
}

#[tokio::test]
async fn daemon_start_failure_shows_log_tail() {
    let mut opts = fake_daemon_opts();
    opts.env.push(("FAKE_CRIUSD_EXIT".into(), "3".into()));
    let err = match crius_testkit::Daemon::start(opts).await {
        Ok(_) => panic!("fake daemon told to exit became ready"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("exit status: 3") && err.contains("exiting with 3 as told"),
        "{err}"
    );
}

#[tokio::test]
async fn daemon_sigterm_timeout_kills() {
    let mut opts = fake_daemon_opts();
    opts.env
        .push(("FAKE_CRIUSD_IGNORE_SIGTERM".into(), "1".into()));
    let mut d = crius_testkit::Daemon::start(opts).await.unwrap();
    let pid = d.pid().unwrap();
    assert!(
        d.sigterm_and_wait(Duration::from_millis(500))
            .await
            .is_err()
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// skopeo copies (and so digest-verifies) every blob of the good images.
#[tokio::test]
async fn skopeo_copies_good_images() {
    let reg = Registry::start_plain().unwrap();
    let out = tempfile::tempdir().unwrap();
    let images = [
        ("busybox", image::busybox_image()),
        ("multilayer", image::multilayer_whiteouts_image()),
        ("zstd", image::zstd_image()),
        ("docker", image::docker_schema2_image()),
    ];
    for (name, img) in images {
        push_image(&reg, &format!("copy/{name}"), "v1", &img)
            .await
            .unwrap();
        let st = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}/copy/{name}:v1", reg.addr()))
            .arg(format!("dir:{}", out.path().join(name).display()))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
}
