//! Namespace pinning against the real kernel. Needs root.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Fixture, fs_type, mounts_under, run};
use crius_error::{ErrorKind, HasKind};
use crius_sandbox::{
    HostMounter, Mounter, NsType, PinRequest, PinnedNamespaces, pin_namespaces_with, unpin,
};
use nix::mount::MsFlags;

fn request(fx: &Fixture, pod: &str, types: &[NsType]) -> PinRequest {
    PinRequest {
        pod_id: pod.to_string(),
        types: types.to_vec(),
        net_dir: fx.net_dir(),
        ns_dir: fx.ns_dir(pod),
        hostname: None,
        sysctls: BTreeMap::new(),
        loopback_up: true,
    }
}

fn read_sysctl_in(ns_flag: &str, file: &Path, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    run(
        "nsenter",
        &[&format!("{ns_flag}={}", file.display()), "cat", &path],
    )
    .trim()
    .to_string()
}

fn host_sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn pins_configures_and_unpins_net_ipc_uts() {
    require_root!();
    let fx = Fixture::new();
    let mut req = request(&fx, "pod-a", &[NsType::Net, NsType::Ipc, NsType::Uts]);
    req.hostname = Some("pod-a-host".into());
    req.sysctls = BTreeMap::from([
        (
            "net/ipv4/ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        ),
        ("kernel.shmmax".to_string(), "123456789".to_string()),
    ]);
    let pinned = pin_namespaces_with(&req, &fx.helpers, &HostMounter).unwrap();

    let net = pinned.net.clone().unwrap();
    let ipc = pinned.ipc.clone().unwrap();
    let uts = pinned.uts.clone().unwrap();
    assert_eq!(net, fx.net_dir().join("pod-a"));
    assert_eq!(ipc, fx.ns_dir("pod-a").join("ipc"));
    assert_eq!(uts, fx.ns_dir("pod-a").join("uts"));
    assert!(pinned.pid.is_none() && pinned.init.is_none());
    for file in [&net, &ipc, &uts] {
        assert_eq!(fs_type(file).as_deref(), Some("nsfs"), "{}", file.display());
    }
    // A different namespace than ours.
    let own_net = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_ne!(std::fs::metadata(&net).unwrap().ino(), own_net);

    let link = run(
        "nsenter",
        &[
            &format!("--net={}", net.display()),
            "ip",
            "link",
            "show",
            "lo",
        ],
    );
    assert!(link.contains("<LOOPBACK,UP,LOWER_UP>"), "{link}");
    let name = run(
        "nsenter",
        &[&format!("--uts={}", uts.display()), "hostname"],
    );
    assert_eq!(name.trim(), "pod-a-host");
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_str(),
        Some("pod-a-host")
    );

    let key = "net.ipv4.ip_unprivileged_port_start";
    assert_eq!(read_sysctl_in("--net", &net, key), "0");
    assert_ne!(host_sysctl(key), "0");
    assert_eq!(read_sysctl_in("--ipc", &ipc, "kernel.shmmax"), "123456789");
    assert_ne!(host_sysctl("kernel.shmmax"), "123456789");

    // The record survives a daemon restart as JSON.
    let json = serde_json::to_string(&pinned).unwrap();
    assert_eq!(
        serde_json::from_str::<PinnedNamespaces>(&json).unwrap(),
        pinned
    );

    unpin(&pinned).unwrap();
    for file in [&net, &ipc, &uts] {
        assert!(!file.exists(), "{}", file.display());
    }
    assert!(!fx.ns_dir("pod-a").exists());
    assert_eq!(mounts_under(&fx.ns_dir("pod-a")), vec![]);
    unpin(&pinned).unwrap();
    fx.finish();
}

#[test]
fn only_requested_namespaces_are_pinned() {
    require_root!();
    let fx = Fixture::new();
    let req = request(&fx, "pod-net", &[NsType::Net]);
    let pinned = pin_namespaces_with(&req, &fx.helpers, &HostMounter).unwrap();
    assert!(pinned.net.is_some());
    assert!(pinned.ipc.is_none() && pinned.uts.is_none() && pinned.ns_dir.is_none());
    assert!(!fx.ns_dir("pod-net").exists());
    unpin(&pinned).unwrap();
    fx.finish();
}

#[test]
fn rejects_bad_requests_before_touching_anything() {
    require_root!();
    let fx = Fixture::new();
    let cases: [(&str, &[NsType], &str, &str); 4] = [
        (
            "vm.swappiness",
            &[NsType::Net, NsType::Ipc],
            "sysctl \"vm.swappiness\" is not namespaced",
            "sysctls",
        ),
        (
            "net.ipv4.ip_forward",
            &[NsType::Ipc],
            "net.ipv4.ip_forward",
            "sysctls",
        ),
        ("kernel.shmmax", &[NsType::Net], "kernel.shmmax", "sysctls"),
        (
            "kernel.hostname",
            &[NsType::Uts],
            "kernel.hostname",
            "sysctls",
        ),
    ];
    for (key, types, needle, field) in cases {
        let mut req = request(&fx, "pod-bad", types);
        req.sysctls.insert(key.into(), "1".into());
        let err = pin_namespaces_with(&req, &fx.helpers, &HostMounter).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let msg = err.to_string();
        assert!(msg.contains(needle) && msg.contains(field), "{msg}");
    }
    let mut req = request(&fx, "../escape", &[NsType::Net]);
    let err = pin_namespaces_with(&req, &fx.helpers, &HostMounter).unwrap_err();
    assert!(err.to_string().contains("pod_id"), "{err}");
    req.pod_id = "pod-bad".into();
    req.hostname = Some("x".into());
    let err = pin_namespaces_with(&req, &fx.helpers, &HostMounter).unwrap_err();
    assert!(err.to_string().contains("hostname"), "{err}");
    assert_eq!(
        std::fs::read_dir(&fx.root).unwrap().count(),
        0,
        "nothing created"
    );
    fx.finish();
}

#[test]
fn existing_pin_is_not_clobbered() {
    require_root!();
    let fx = Fixture::new();
    let req = request(&fx, "pod-dup", &[NsType::Net, NsType::Uts]);
    let first = pin_namespaces_with(&req, &fx.helpers, &HostMounter).unwrap();
    let err = pin_namespaces_with(&req, &fx.helpers, &HostMounter).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    // The failed attempt left the first pod's pins alone.
    assert_eq!(
        fs_type(first.net.as_ref().unwrap()).as_deref(),
        Some("nsfs")
    );
    assert_eq!(
        fs_type(first.uts.as_ref().unwrap()).as_deref(),
        Some("nsfs")
    );
    unpin(&first).unwrap();
    fx.finish();
}

/// Real mounts, except that the `fail_at`-th namespace bind mount fails.
struct FailingMounter {
    fail_at: usize,
    ns_binds: AtomicUsize,
}

impl Mounter for FailingMounter {
    fn bind(&self, source: &Path, target: &Path) -> nix::Result<()> {
        if source.starts_with("/proc")
            && self.ns_binds.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at
        {
            return Err(nix::errno::Errno::EIO);
        }
        HostMounter.bind(source, target)
    }
    fn set_propagation(&self, target: &Path, flags: MsFlags) -> nix::Result<()> {
        HostMounter.set_propagation(target, flags)
    }
    fn tmpfs(&self, target: &Path, flags: MsFlags, data: &str) -> nix::Result<()> {
        HostMounter.tmpfs(target, flags, data)
    }
    fn unmount(&self, target: &Path) -> nix::Result<()> {
        HostMounter.unmount(target)
    }
}

#[test]
fn failed_bind_mount_rolls_back_everything() {
    require_root!();
    let fx = Fixture::new();
    for (fail_at, types) in [
        (1, vec![NsType::Net, NsType::Ipc, NsType::Uts]),
        (2, vec![NsType::Net, NsType::Ipc, NsType::Uts]),
        (3, vec![NsType::Net, NsType::Ipc, NsType::Uts]),
        // The 4th namespace bind is the PID namespace of crius-init.
        (4, vec![NsType::Net, NsType::Ipc, NsType::Uts, NsType::Pid]),
    ] {
        let m = FailingMounter {
            fail_at,
            ns_binds: AtomicUsize::new(0),
        };
        let req = request(&fx, "pod-fail", &types);
        let err = pin_namespaces_with(&req, &fx.helpers, &m).unwrap_err();
        assert!(err.to_string().contains("bind-mounting"), "{err}");
        assert_eq!(m.ns_binds.load(Ordering::SeqCst), fail_at);
        assert!(!fx.net_dir().join("pod-fail").exists(), "fail_at={fail_at}");
        assert!(!fx.ns_dir("pod-fail").exists(), "fail_at={fail_at}");
        // Only the shared net dir's own self-bind may remain.
        let left: Vec<_> = mounts_under(&fx.root).into_iter().map(|(p, _)| p).collect();
        assert_eq!(left, vec![fx.net_dir()]);
        assert_eq!(common::helper_pids(&fx.helpers), Vec::<i32>::new());
    }
    fx.finish();
}

#[test]
fn twenty_pods_in_parallel() {
    require_root!();
    let fx = Fixture::new();
    let pods: Vec<PinnedNamespaces> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let req = request(
                    &fx,
                    &format!("pod-{i}"),
                    &[NsType::Net, NsType::Ipc, NsType::Uts],
                );
                let helpers = &fx.helpers;
                s.spawn(move || pin_namespaces_with(&req, helpers, &HostMounter).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut inodes = std::collections::BTreeSet::new();
    for p in &pods {
        for file in [&p.net, &p.ipc, &p.uts].into_iter().flatten() {
            assert_eq!(fs_type(file).as_deref(), Some("nsfs"));
            assert!(
                inodes.insert(std::fs::metadata(file).unwrap().ino()),
                "namespace shared"
            );
        }
    }
    assert_eq!(inodes.len(), 60);
    // One self-bind for the net dir, one per pod dir, three pins per pod.
    assert_eq!(mounts_under(&fx.root).len(), 1 + 20 + 60);
    std::thread::scope(|s| {
        for p in &pods {
            s.spawn(move || unpin(p).unwrap());
        }
    });
    assert_eq!(mounts_under(&fx.root).len(), 1);
    assert_eq!(std::fs::read_dir(fx.net_dir()).unwrap().count(), 0);
    fx.finish();
}
