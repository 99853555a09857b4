//! The daemon itself: Version/Status/RuntimeConfig, config errors, the root lock, signals,
//! crash safety of pulls, and criusctl against it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use common::*;
use crius_testkit::image;
use crius_testkit::{Daemon, DaemonOptions, FaultMode, push_image};
use k8s_cri::v1::{
    CheckpointContainerRequest, RuntimeConfigRequest, StatusRequest, VersionRequest,
};

#[tokio::test]
async fn version_status_and_runtime_config() -> Result<()> {
    let d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let mut rt = d.runtime().await?;
    let v = rt
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(v.runtime_name, "crius");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(
        v.runtime_version.starts_with(env!("CARGO_PKG_VERSION")),
        "{}",
        v.runtime_version
    );
    assert!(
        v.runtime_version.contains('+'),
        "version carries the git commit: {}",
        v.runtime_version
    );

    let s = rt
        .status(StatusRequest { verbose: true })
        .await?
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let runtime_ready = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    let have_runtime = Path::new("/usr/bin/crun").exists() || Path::new("/usr/bin/runc").exists();
    assert_eq!(runtime_ready.status, have_runtime);
    let network = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(
        network.status,
        "the test network (loopback only) is ready: {network:?}"
    );
    // Handlers with their features; the default one also under "" (how the kubelet looks up
    // a pod without RuntimeClass); supplemental groups policies are supported.
    let names: Vec<&str> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    if have_runtime {
        assert_eq!(names[0], "", "{names:?}");
        assert!(
            names.contains(&"runc") || names.contains(&"crun"),
            "{names:?}"
        );
    }
    assert!(s.runtime_handlers.iter().all(|h| h.features.is_some()));
    assert!(s.features.unwrap().supplemental_groups_policy);
    let config: serde_json::Value = serde_json::from_str(&s.info["config"])?;
    assert_eq!(config["root"], d.root().display().to_string());
    assert_eq!(config["image"]["max_concurrent_downloads"], 3);

    let c = rt
        .runtime_config(RuntimeConfigRequest {})
        .await?
        .into_inner();
    // This host does not run systemd as PID 1, so the detected driver is cgroupfs.
    let expected = if std::fs::read_to_string("/proc/1/comm")?.trim() == "systemd" {
        k8s_cri::v1::CgroupDriver::Systemd
    } else {
        k8s_cri::v1::CgroupDriver::Cgroupfs
    };
    assert_eq!(c.linux.unwrap().cgroup_driver, expected as i32);
    Ok(())
}

/// The configured driver is reported; the systemd driver needs systemd, without which criusd
/// refuses to start and says how to fix it.
#[tokio::test]
async fn configured_cgroup_driver_is_reported() -> Result<()> {
    let started =
        Daemon::start(DaemonOptions::new(CRIUSD).config("cgroup_driver = \"systemd\"\n")).await;
    if std::fs::read_to_string("/proc/1/comm")?.trim() != "systemd" {
        let err = format!("{:#}", started.err().expect("refused without systemd"));
        for want in [
            "systemd is not reachable",
            "cgroup_driver = \"cgroupfs\"",
            "cgroupDriver",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        let d = Daemon::start(DaemonOptions::new(CRIUSD).config("cgroup_driver = \"cgroupfs\"\n"))
            .await?;
        let c = d
            .runtime()
            .await?
            .runtime_config(RuntimeConfigRequest {})
            .await?
            .into_inner();
        assert_eq!(
            c.linux.unwrap().cgroup_driver,
            k8s_cri::v1::CgroupDriver::Cgroupfs as i32
        );
        return Ok(());
    }
    let d = started?;
    let c = d
        .runtime()
        .await?
        .runtime_config(RuntimeConfigRequest {})
        .await?
        .into_inner();
    assert_eq!(
        c.linux.unwrap().cgroup_driver,
        k8s_cri::v1::CgroupDriver::Systemd as i32
    );
    Ok(())
}

#[tokio::test]
async fn rpcs_not_done_yet_answer_unimplemented_naming_the_rpc() -> Result<()> {
    let d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let err = d
        .runtime()
        .await?
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .expect_err("not implemented");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
    // The RPC is logged by the logging layer with its name and code.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        d.log().contains("CheckpointContainer"),
        "log mentions the RPC"
    );
    Ok(())
}

#[test]
fn unknown_config_key_is_an_error_naming_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("crius.toml");
    std::fs::write(&cfg, "[image]\nmax_downloads = 3\n")?;
    let out = Command::new(CRIUSD)
        .arg("--config")
        .arg(&cfg)
        .arg("--root")
        .arg(dir.path().join("r"))
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_downloads"), "{stderr}");
    assert!(
        !dir.path().join("r").exists(),
        "nothing created on a config error"
    );
    Ok(())
}

#[tokio::test]
async fn a_second_daemon_on_the_same_root_refuses_to_start() -> Result<()> {
    let d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let other_socket = d.base_dir().join("other.sock");
    let out = tokio::process::Command::new(CRIUSD)
        .arg("--root")
        .arg(d.root())
        .arg("--state")
        .arg(d.base_dir().join("state2"))
        .arg("--listen")
        .arg(&other_socket)
        .output()
        .await?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another criusd is already running"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&d.pid().unwrap().to_string()),
        "names the holder: {stderr}"
    );
    assert!(!other_socket.exists());
    // The first one is unaffected.
    d.runtime()
        .await?
        .version(VersionRequest::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() -> Result<()> {
    let mut d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    d.runtime()
        .await?
        .version(VersionRequest::default())
        .await?;
    let status = d.sigterm_and_wait(Duration::from_secs(20)).await?;
    assert!(status.success(), "{status:?}");
    assert!(!d.socket().exists(), "socket removed on exit");
    assert!(d.log().contains("criusd stopped"));
    Ok(())
}

/// kill -9 in the middle of a pull: after a restart no half image is visible and no temp data
/// or unreferenced layer is left; the pull then works.
#[tokio::test]
async fn kill9_during_a_pull_leaves_no_half_image() -> Result<()> {
    let mut env = Env::start().await?;
    let img = image::large_image(8);
    push_image(&env.registry, "library/crash", "v1", &img).await?;
    // Slow enough that the kill lands mid-pull, with some layers done and others partial.
    env.proxy.set_mode(FaultMode::Throttle {
        bytes_per_sec: 2 * 1024 * 1024,
    });
    let images = env.daemon.images().await?;
    let pull_task = tokio::spawn(async move {
        let mut images = images;
        images
            .pull_image(k8s_cri::v1::PullImageRequest {
                image: spec("crash:v1"),
                ..Default::default()
            })
            .await
    });
    let root = env.daemon.root();
    // Wait until at least one layer has been committed into l/.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dir_names(&root.join("l")).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !dir_names(&root.join("l")).is_empty(),
        "a layer got committed before the kill"
    );
    assert!(
        !dir_names(&root.join("images/tmp")).is_empty(),
        "a layer was in progress at the kill"
    );
    env.daemon.kill9();
    assert!(
        pull_task.await?.is_err(),
        "the interrupted pull reports an error"
    );

    env.proxy.set_mode(FaultMode::PassThrough);
    env.daemon.restart().await?;
    assert!(
        status(&env.daemon, "crash:v1", false)
            .await?
            .image
            .is_none(),
        "no half image"
    );
    assert!(
        dir_names(&root.join("images/tmp")).is_empty(),
        "temp data removed"
    );
    assert!(
        dir_names(&root.join("l")).is_empty(),
        "unreferenced layers removed"
    );
    assert!(
        dir_names(&root.join("images/blobs/sha256")).is_empty(),
        "unreferenced blobs removed"
    );

    assert_eq!(env.pull("crash:v1").await?.image_ref, img.config_digest);
    Ok(())
}

#[tokio::test]
async fn criusctl_image_commands() -> Result<()> {
    let env = Env::start().await?;
    let ctl = Path::new(CRIUSD).with_file_name("criusctl");
    if !ctl.exists() {
        panic!(
            "{} not built: run `cargo build --workspace` first (hack/test.sh does)",
            ctl.display()
        );
    }
    let img = image::busybox_image();
    push_image(&env.registry, "library/busybox", "1.36", &img).await?;
    let run = |args: &[&str]| env.daemon.criusctl(&ctl, args);

    let out = run(&["version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("RuntimeName:  crius"));

    let out = run(&["pull", "busybox:1.36"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&img.config_digest));

    let out = run(&["images"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("IMAGE"), "{table}");
    let short = &img.config_digest.trim_start_matches("sha256:")[..13];
    assert!(
        table.contains("docker.io/library/busybox")
            && table.contains("1.36")
            && table.contains(short),
        "{table}"
    );

    let out = run(&["inspecti", "busybox:1.36"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["status"]["id"], img.config_digest);

    let out = run(&["imagefsinfo"]);
    assert!(out.status.success());

    let out = run(&["pull", "Bad:Ref"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Bad:Ref"));

    let out = run(&["rmi", "busybox:1.36"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["inspecti", "busybox:1.36"]);
    assert!(!out.status.success());
    Ok(())
}

/// NetworkReady tells the truth: false with a reason naming the problem until a valid network
/// config whose plugins exist is in the conf dir, true after.
#[tokio::test]
async fn network_ready_follows_the_cni_conf_dir() -> Result<()> {
    let conf = tempfile::tempdir()?;
    let config = format!(
        "[network]\nconf_dir = \"{}\"\nbin_dirs = [\"/usr/lib/cni\"]\nwrite_default_config = false\n",
        conf.path().display()
    );
    let d = Daemon::start(DaemonOptions::new(CRIUSD).config(config)).await?;
    let n = network_condition(&d).await?;
    assert!(!n.status && !n.reason.is_empty(), "{n:?}");
    assert!(
        n.message.contains(&conf.path().display().to_string()),
        "names the dir: {n:?}"
    );

    std::fs::write(conf.path().join("10-bad.conflist"), "{ not json")?;
    let n = network_condition(&d).await?;
    assert!(
        !n.status && n.message.contains("10-bad.conflist"),
        "names the bad file: {n:?}"
    );

    std::fs::write(
        conf.path().join("20-missing.conflist"),
        r#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"no-such-plugin"}]}"#,
    )?;
    let n = network_condition(&d).await?;
    assert!(
        !n.status && n.message.contains("no-such-plugin"),
        "names the missing plugin: {n:?}"
    );

    std::fs::write(
        conf.path().join("05-good.conflist"),
        r#"{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}"#,
    )?;
    let n = network_condition(&d).await?;
    assert!(n.status, "{n:?}");
    Ok(())
}

async fn network_condition(d: &Daemon) -> Result<k8s_cri::v1::RuntimeCondition> {
    let s = d
        .runtime()
        .await?
        .status(StatusRequest { verbose: false })
        .await?
        .into_inner();
    Ok(s.status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap())
}

/// With an empty conf dir and write_default_config, criusd writes crius's default network
/// (its own plugins, found next to criusd) and reports the network ready.
#[tokio::test]
async fn default_network_config_is_written_to_an_empty_conf_dir() -> Result<()> {
    let conf = tempfile::tempdir()?;
    let own_plugins = Path::new(CRIUSD).parent().unwrap();
    let config = format!(
        "[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\nwrite_default_config = true\n",
        conf.path().display(),
        own_plugins.display()
    );
    let d = Daemon::start(DaemonOptions::new(CRIUSD).config(config)).await?;
    let written = std::fs::read_to_string(conf.path().join("10-crius.conflist"))?;
    assert!(
        written.contains("crius-bridge") && written.contains("crius-host-local"),
        "{written}"
    );
    let n = network_condition(&d).await?;
    assert!(n.status, "the default network is ready: {n:?}");
    Ok(())
}
