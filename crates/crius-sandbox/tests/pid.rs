//! crius-init as PID 1 of a pod's PID namespace. Needs root.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Fixture, children_of, fs_type, mounts_under};
use crius_sandbox::{
    HostMounter, NsType, PinRequest, pin_namespaces_with, start_pod_init, stop_pod_init, unpin,
};

fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn init_reaps_orphans_and_exits_on_sigterm() {
    require_root!();
    let fx = Fixture::new();
    let ns_dir = fx.ns_dir("pod-pid");
    let init = start_pod_init("pod-pid", &fx.helpers, &ns_dir).unwrap();
    let pin = ns_dir.join("pid");
    assert_eq!(init.pid_ns_path, pin);
    assert_eq!(fs_type(&pin).as_deref(), Some("nsfs"));
    let init_ns = std::fs::metadata(format!("/proc/{}/ns/pid", init.pid))
        .unwrap()
        .ino();
    assert_eq!(std::fs::metadata(&pin).unwrap().ino(), init_ns);
    assert_ne!(
        std::fs::metadata("/proc/self/ns/pid").unwrap().ino(),
        init_ns
    );
    // PID 1 inside: NSpid lists the pid in every namespace level, innermost last.
    let status = std::fs::read_to_string(format!("/proc/{}/status", init.pid)).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "{nspid}");
    let rss = rss_kib(init.pid);
    eprintln!("crius-init VmRSS: {rss} KiB");
    assert!(rss < 4096, "crius-init uses {rss} KiB");

    // The subshell exits at once, orphaning `sleep`, which the kernel hands to crius-init.
    let out = Command::new("nsenter")
        .args([
            &format!("--pid={}", pin.display()),
            "sh",
            "-c",
            "(sleep 0.5 >/dev/null 2>&1 &) ; exit 0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let orphans = children_of(init.pid);
    assert_eq!(
        orphans.len(),
        1,
        "sleep was not reparented to init: {orphans:?}"
    );
    wait_until("the orphan to be reaped", Duration::from_secs(5), || {
        children_of(init.pid).is_empty()
    });

    // A long-lived orphan receives the forwarded SIGTERM, so init exits without SIGKILL.
    let out = Command::new("nsenter")
        .args([
            &format!("--pid={}", pin.display()),
            "sh",
            "-c",
            "(sleep 100 >/dev/null 2>&1 &) ; exit 0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(children_of(init.pid).len(), 1);
    let started = Instant::now();
    stop_pod_init(&init, Duration::from_secs(10)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "init needed SIGKILL"
    );
    assert!(
        std::fs::metadata(format!("/proc/{}", init.pid)).is_err()
            || children_of(init.pid).is_empty()
    );
    // Stopping again is a no-op.
    stop_pod_init(&init, Duration::from_secs(1)).unwrap();

    // The pinned namespace can be unmounted and removed once init is gone.
    let pinned = crius_sandbox::PinnedNamespaces {
        pod_id: "pod-pid".into(),
        pid: Some(pin.clone()),
        ns_dir: Some(ns_dir.clone()),
        ..Default::default()
    };
    unpin(&pinned).unwrap();
    assert!(!pin.exists());
    assert_eq!(mounts_under(&ns_dir), vec![]);
    fx.finish();
}

#[test]
fn init_exits_at_once_without_children() {
    require_root!();
    let fx = Fixture::new();
    let init = start_pod_init("pod-idle", &fx.helpers, &fx.ns_dir("pod-idle")).unwrap();
    let started = Instant::now();
    stop_pod_init(&init, Duration::from_secs(10)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let pinned = crius_sandbox::PinnedNamespaces {
        pod_id: "pod-idle".into(),
        pid: Some(init.pid_ns_path.clone()),
        ns_dir: Some(fx.ns_dir("pod-idle")),
        ..Default::default()
    };
    unpin(&pinned).unwrap();
    fx.finish();
}

#[test]
fn pod_with_all_namespaces_is_stopped_by_unpin() {
    require_root!();
    let fx = Fixture::new();
    let req = PinRequest {
        pod_id: "pod-all".into(),
        types: vec![NsType::Net, NsType::Ipc, NsType::Uts, NsType::Pid],
        net_dir: fx.net_dir(),
        ns_dir: fx.ns_dir("pod-all"),
        hostname: Some("all".into()),
        sysctls: BTreeMap::new(),
        loopback_up: true,
    };
    let pinned = pin_namespaces_with(&req, &fx.helpers, &HostMounter).unwrap();
    let init = pinned.init.clone().unwrap();
    assert_eq!(pinned.pid.as_ref(), Some(&init.pid_ns_path));
    assert_eq!(fs_type(&init.pid_ns_path).as_deref(), Some("nsfs"));
    // A process can join all four pinned namespaces together, as a container would.
    let out = Command::new("nsenter")
        .args([
            &format!("--net={}", pinned.net.as_ref().unwrap().display()),
            &format!("--uts={}", pinned.uts.as_ref().unwrap().display()),
            &format!("--ipc={}", pinned.ipc.as_ref().unwrap().display()),
            &format!("--pid={}", init.pid_ns_path.display()),
            "hostname",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "all");
    unpin(&pinned).unwrap();
    assert!(
        std::fs::read_to_string(format!("/proc/{}/stat", init.pid)).is_err()
            || !std::fs::read_to_string(format!("/proc/{}/cmdline", init.pid))
                .unwrap()
                .contains("crius-init")
    );
    unpin(&pinned).unwrap();
    fx.finish();
}

#[test]
fn missing_init_binary_is_reported_and_rolled_back() {
    require_root!();
    let fx = Fixture::new();
    let mut helpers = fx.helpers.clone();
    helpers.init = fx.root.join("no-such-init");
    let err = start_pod_init("pod-noinit", &helpers, &fx.ns_dir("pod-noinit")).unwrap_err();
    assert!(err.to_string().contains("no-such-init"), "{err}");
    assert!(!fx.ns_dir("pod-noinit").exists());
    fx.finish();
}
