//! Whole-spec tests: how the parts come together in `container_spec`.

use std::path::{Path, PathBuf};

use crius_error::{ErrorKind, HasKind};
use k8s_cri::v1::{
    ImageSpec, LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    Mount as CriMount, MountPropagation,
};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use super::testutil::Fixture;
use super::*;

fn find<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

fn options(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap_or_default()
}

fn cri_mount(dest: &str, host: &Path, propagation: MountPropagation, readonly: bool) -> CriMount {
    CriMount {
        container_path: dest.into(),
        host_path: host.display().to_string(),
        readonly,
        propagation: propagation as i32,
        ..Default::default()
    }
}

#[test]
fn basic_spec_shape() {
    let f = Fixture::new();
    let spec = container_spec(&f.input()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &vec!["/bin/true".to_string()]);
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!(p.terminal(), Some(false));
    assert!(p.rlimits().is_none());
    assert_eq!(spec.root().as_ref().unwrap().path(), f.rootfs.path());
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/pod1/c1"))
    );
    assert!(
        linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/keys".to_string())
    );
    assert!(linux.rootfs_propagation().is_none());
    // Standard mounts and a private shm when the pod has none.
    for dest in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/shm",
    ] {
        assert!(find(&spec, dest).is_some(), "{dest} missing");
    }
    assert!(options(find(&spec, "/dev/pts").unwrap()).contains(&"ptmxmode=0666".to_string()));
    let ann = spec.annotations().as_ref().unwrap();
    assert_eq!(ann["io.kubernetes.cri.container-type"], "container");
    assert_eq!(ann["io.kubernetes.cri.container-name"], "app");
    assert_eq!(ann["io.kubernetes.cri.sandbox-id"], "sb1");
    assert_eq!(ann["io.kubernetes.cri.sandbox-namespace"], "ns");
    // It serialises into something runc accepts as config.json.
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["ociVersion"], "1.0.2-dev");
    assert_eq!(json["process"]["user"]["uid"], 0);
}

#[test]
fn missing_command_is_invalid_argument() {
    let mut f = Fixture::new();
    f.container.command.clear();
    let err = container_spec(&f.input()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("no command specified"));
}

#[test]
fn hostname_only_with_a_new_uts_namespace() {
    let mut f = Fixture::new();
    let spec = container_spec(&f.input()).unwrap();
    assert_eq!(spec.hostname(), &None);
    let ns: Vec<_> = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    let uts = ns
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Uts)
        .unwrap();
    assert_eq!(uts.path().as_deref(), Some(Path::new("/run/utsns/p")));
    assert!(
        !ns.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup),
        "Host → omitted"
    );

    f.namespaces.uts = NsSource::New;
    let spec = container_spec(&f.input()).unwrap();
    assert_eq!(spec.hostname().as_deref(), Some("pod-host"));

    f.namespaces.uts = NsSource::Host;
    let spec = container_spec(&f.input()).unwrap();
    assert_eq!(spec.hostname(), &None);
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Uts));
}

#[test]
fn propagation_mapping_and_rootfs_propagation() {
    let host = tempfile::tempdir().unwrap();
    let mut f = Fixture::new();
    f.container.mounts = vec![
        cri_mount(
            "/a",
            host.path(),
            MountPropagation::PropagationPrivate,
            true,
        ),
        cri_mount(
            "/b",
            host.path(),
            MountPropagation::PropagationHostToContainer,
            false,
        ),
    ];
    let spec = container_spec(&f.input()).unwrap();
    let a = find(&spec, "/a").unwrap();
    assert_eq!(a.typ().as_deref(), Some("bind"));
    assert_eq!(options(a), ["rbind", "rprivate", "ro"]);
    assert_eq!(
        options(find(&spec, "/b").unwrap()),
        ["rbind", "rslave", "rw"]
    );
    assert_eq!(
        spec.linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .as_deref(),
        Some("rslave")
    );

    f.container.mounts.push(cri_mount(
        "/c",
        host.path(),
        MountPropagation::PropagationBidirectional,
        false,
    ));
    let spec = container_spec(&f.input()).unwrap();
    assert_eq!(
        options(find(&spec, "/c").unwrap()),
        ["rbind", "rshared", "rw"]
    );
    assert_eq!(
        spec.linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .as_deref(),
        Some("rshared")
    );

    f.container.mounts[0].propagation = 7;
    let err = container_spec(&f.input()).unwrap_err();
    assert!(
        err.to_string().starts_with("config.mounts[0].propagation:"),
        "{err}"
    );
}

#[test]
fn mounts_are_ordered_parents_first() {
    let host = tempfile::tempdir().unwrap();
    let mut f = Fixture::new();
    f.container.mounts = vec![
        cri_mount(
            "/data/sub",
            host.path(),
            MountPropagation::PropagationPrivate,
            false,
        ),
        cri_mount(
            "/data",
            host.path(),
            MountPropagation::PropagationPrivate,
            false,
        ),
    ];
    let spec = container_spec(&f.input()).unwrap();
    let dests: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().clone())
        .collect();
    let pos = |d: &str| dests.iter().position(|x| x == Path::new(d)).unwrap();
    assert!(pos("/data") < pos("/data/sub"));
}

#[test]
fn symlinked_and_missing_host_paths() {
    let host = tempfile::tempdir().unwrap();
    let real = host.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = host.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let missing = host.path().join("missing/deeper");
    let mut f = Fixture::new();
    f.container.mounts = vec![
        cri_mount("/l", &link, MountPropagation::PropagationPrivate, false),
        cri_mount("/m", &missing, MountPropagation::PropagationPrivate, false),
    ];
    let spec = container_spec(&f.input()).unwrap();
    let real = std::fs::canonicalize(&real).unwrap();
    assert_eq!(
        find(&spec, "/l").unwrap().source().as_deref(),
        Some(real.as_path())
    );
    // containerd creates a missing host path as a directory.
    assert!(missing.is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&missing).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn bad_mounts_name_the_field() {
    let host = tempfile::tempdir().unwrap();
    let mut f = Fixture::new();
    f.container.mounts = vec![cri_mount(
        "rel",
        host.path(),
        MountPropagation::PropagationPrivate,
        false,
    )];
    let err = container_spec(&f.input()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config.mounts[0].container_path:"),
        "{err}"
    );

    f.container.mounts = vec![CriMount {
        container_path: "/img".into(),
        image: Some(ImageSpec::default()),
        ..Default::default()
    }];
    assert_eq!(
        container_spec(&f.input()).unwrap_err().kind(),
        ErrorKind::Unimplemented
    );
}

#[test]
fn recursive_read_only() {
    let host = tempfile::tempdir().unwrap();
    let mut f = Fixture::new();
    let mut m = cri_mount(
        "/r",
        host.path(),
        MountPropagation::PropagationPrivate,
        true,
    );
    m.recursive_read_only = true;
    f.container.mounts = vec![m];
    let err = container_spec(&f.input()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("recursive_read_only"));

    f.features.recursive_read_only = true;
    let spec = container_spec(&f.input()).unwrap();
    assert_eq!(
        options(find(&spec, "/r").unwrap()),
        ["rbind", "rprivate", "ro", "rro"]
    );

    f.container.mounts[0].readonly = false;
    assert_eq!(
        container_spec(&f.input()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn pod_files_are_bound_unless_overridden() {
    let host = tempfile::tempdir().unwrap();
    let file = |n: &str| {
        let p = host.path().join(n);
        std::fs::write(&p, n).unwrap();
        p
    };
    let mut f = Fixture::new();
    f.pod_files = PodFiles {
        hostname: Some(file("hostname")),
        resolv_conf: Some(file("resolv.conf")),
        hosts: Some(file("hosts")),
        shm: Some(host.path().to_path_buf()),
    };
    let own_hosts = file("my-hosts");
    f.container.mounts = vec![cri_mount(
        "/etc/hosts",
        &own_hosts,
        MountPropagation::PropagationPrivate,
        false,
    )];
    let spec = container_spec(&f.input()).unwrap();
    let h = find(&spec, "/etc/hostname").unwrap();
    assert_eq!(
        h.source().as_deref(),
        Some(host.path().join("hostname").as_path())
    );
    assert_eq!(options(h), ["rbind", "rprivate", "rw"]);
    let shm = find(&spec, "/dev/shm").unwrap();
    assert_eq!(shm.typ().as_deref(), Some("bind"));
    let hosts: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert!(hosts[0].source().as_ref().unwrap().ends_with("my-hosts"));

    // A read-only rootfs makes the pod files read-only too.
    f.container.linux = Some(LinuxContainerConfig {
        security_context: Some(k8s_cri::v1::LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = container_spec(&f.input()).unwrap();
    assert!(options(find(&spec, "/etc/resolv.conf").unwrap()).contains(&"ro".to_string()));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
}

#[test]
fn dev_volume_replaces_default_dev_mounts() {
    let host = tempfile::tempdir().unwrap();
    let mut f = Fixture::new();
    f.container.mounts = vec![cri_mount(
        "/dev",
        host.path(),
        MountPropagation::PropagationPrivate,
        false,
    )];
    let spec = container_spec(&f.input()).unwrap();
    let devs: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination().starts_with("/dev") && m.destination() != Path::new("/dev/shm"))
        .collect();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].typ().as_deref(), Some("bind"));
}

#[test]
fn resources_oom_and_swap_feature() {
    let mut f = Fixture::new();
    f.container.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 1 << 20,
            oom_score_adj: -999,
            ..Default::default()
        }),
        ..Default::default()
    });
    f.floor = Some(-100);
    f.features.memory_swap = true;
    let spec = container_spec(&f.input()).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(-100));
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.memory().as_ref().unwrap().swap(), Some(1 << 20));
    assert!(r.devices().as_ref().unwrap().len() > 1);

    f.features.memory_swap = false;
    let spec = container_spec(&f.input()).unwrap();
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.memory().as_ref().unwrap().swap(), None);
    assert_eq!(r.memory().as_ref().unwrap().limit(), Some(1 << 20));
}

#[test]
fn sysctls_user_devices_and_annotations() {
    let mut f = Fixture::new();
    f.sandbox.linux = Some(LinuxPodSandboxConfig {
        sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
        ..Default::default()
    });
    f.image.user = "app".into();
    f.container.annotations = [("mine".to_string(), "1".to_string())].into();
    f.container.devices = vec![k8s_cri::v1::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let spec = container_spec(&f.input()).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.sysctl().as_ref().unwrap()["net.ipv4.ip_forward"], "1");
    let user = spec.process().as_ref().unwrap().user();
    assert_eq!((user.uid(), user.gid()), (1000, 1000));
    assert_eq!(user.additional_gids().as_ref().unwrap(), &vec![1000, 2000]);
    assert_eq!(
        linux.devices().as_ref().unwrap()[0].path(),
        &PathBuf::from("/dev/mynull")
    );
    assert_eq!(spec.annotations().as_ref().unwrap()["mine"], "1");
}

fn security_context(f: &mut Fixture, sc: k8s_cri::v1::LinuxContainerSecurityContext) {
    f.container.linux = Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
}

#[test]
fn unprivileged_defaults_in_the_spec() {
    let f = Fixture::new();
    let spec = container_spec(&f.input()).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none(), "no seccomp field: unconfined");
    assert!(options(find(&spec, "/sys").unwrap()).contains(&"ro".to_string()));
    assert!(options(find(&spec, "/sys/fs/cgroup").unwrap()).contains(&"ro".to_string()));
    assert!(
        linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string())
    );
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert!(!rules[0].allow(), "deny-all device rule first");
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.no_new_privileges(), Some(false));
    assert!(process.apparmor_profile().is_none());
}

#[test]
#[allow(deprecated)]
fn privileged_spec() {
    let mut f = Fixture::new();
    security_context(
        &mut f,
        k8s_cri::v1::LinuxContainerSecurityContext {
            privileged: true,
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        },
    );
    let err = container_spec(&f.input()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains(".privileged"), "{err}");

    f.sandbox.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = container_spec(&f.input()).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    for m in ["/sys", "/sys/fs/cgroup"] {
        let o = options(find(&spec, m).unwrap());
        assert!(
            o.contains(&"rw".to_string()) && !o.contains(&"ro".to_string()),
            "{m}"
        );
    }
    let devices = linux.devices().as_ref().unwrap();
    assert!(devices.iter().any(|d| d.path() == Path::new("/dev/null")));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow() && rules[0].typ().is_none());
}

#[test]
fn seccomp_and_no_new_privs_in_the_spec() {
    let mut f = Fixture::new();
    security_context(
        &mut f,
        k8s_cri::v1::LinuxContainerSecurityContext {
            seccomp: Some(k8s_cri::v1::SecurityProfile {
                profile_type: k8s_cri::v1::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            no_new_privs: true,
            ..Default::default()
        },
    );
    let spec = container_spec(&f.input()).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["process"]["noNewPrivileges"], true);
}
