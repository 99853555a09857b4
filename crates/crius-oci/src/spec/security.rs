//! The security context of a container: privileged mode, capabilities, no_new_privs, seccomp,
//! AppArmor/SELinux, masked and read-only paths, read-only rootfs.

use std::collections::HashSet;

use k8s_cri::v1::{LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxSeccomp,
};

use super::lsm::{self, HostLsm};
use super::{SpecError, seccomp};

/// The capabilities Docker and containerd grant by default.
const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub(super) struct Security {
    /// All capabilities, host devices, read-write sysfs/cgroupfs, no masking, no seccomp.
    pub privileged: bool,
    pub capabilities: LinuxCapabilities,
    pub no_new_privileges: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub readonly_rootfs: bool,
    pub seccomp: Option<LinuxSeccomp>,
    pub apparmor_profile: Option<String>,
}

pub(super) fn container_security(
    sc: Option<&LinuxContainerSecurityContext>,
    sandbox: &PodSandboxConfig,
    host: HostLsm,
) -> Result<Security, SpecError> {
    const FIELD: &str = "config.linux.security_context";
    let default = LinuxContainerSecurityContext::default();
    let sc = sc.unwrap_or(&default);
    let privileged = sc.privileged;
    if privileged
        && !sandbox
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged)
    {
        return Err(super::invalid(
            format!("{FIELD}.privileged"),
            "a privileged container needs a privileged pod sandbox \
             (linux.security_context.privileged of the pod)",
        ));
    }

    // Privileged: every capability, whatever was asked to be added or dropped (containerd).
    let mut caps: Capabilities = if privileged {
        all_caps()
    } else {
        DEFAULT_CAPS.into_iter().collect()
    };
    let mut ambient = Capabilities::new();
    if let Some(c) = &sc.capabilities {
        let parse_all =
            |names: &[String], list: &str| -> Result<Vec<Option<Capability>>, SpecError> {
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| parse_cap(n, &format!("{FIELD}.capabilities.{list}[{i}]")))
                    .collect()
            };
        // Drops first, so "drop ALL, add X" leaves exactly X (Docker's order). Names are
        // parsed (and refused when unknown) even when privileged ignores them.
        let drops = parse_all(&c.drop_capabilities, "drop_capabilities")?;
        let adds = parse_all(&c.add_capabilities, "add_capabilities")?;
        if !privileged {
            for cap in drops {
                match cap {
                    None => caps.clear(),
                    Some(cap) => {
                        caps.remove(&cap);
                    }
                }
            }
            for cap in adds {
                match cap {
                    None => caps.extend(all_caps()),
                    Some(cap) => {
                        caps.insert(cap);
                    }
                }
            }
        }
        for cap in parse_all(&c.add_ambient_capabilities, "add_ambient_capabilities")? {
            let set = cap.map(|c| HashSet::from([c])).unwrap_or_else(all_caps);
            caps.extend(set.iter().copied());
            ambient.extend(set);
        }
    }
    // Inheritable only when ambient caps are asked for: an ambient cap must be inheritable,
    // and leaving inheritable empty otherwise keeps file caps from widening privileges.
    let seccomp = if privileged {
        None
    } else {
        seccomp::container_seccomp(sc, &caps)?
    };
    let apparmor_profile = lsm::apparmor_profile(sc, privileged, host)?;
    lsm::check_selinux(sc, privileged, host)?;

    let mut b = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps);
    if !ambient.is_empty() {
        b = b.inheritable(ambient.clone()).ambient(ambient);
    } else {
        b = b
            .inheritable(Capabilities::new())
            .ambient(Capabilities::new());
    }

    // The kubelet sends its own lists (empty for `procMount: Unmasked`); without a security
    // context at all, the defaults apply. Privileged containers get neither.
    let masked_paths = if privileged {
        Vec::new()
    } else if sc.masked_paths.is_empty() && sc.readonly_paths.is_empty() {
        DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
    } else {
        sc.masked_paths.clone()
    };
    let readonly_paths = if privileged {
        Vec::new()
    } else if sc.masked_paths.is_empty() && sc.readonly_paths.is_empty() {
        DEFAULT_READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        sc.readonly_paths.clone()
    };

    Ok(Security {
        privileged,
        capabilities: b.build()?,
        no_new_privileges: sc.no_new_privs,
        masked_paths,
        readonly_paths,
        readonly_rootfs: sc.readonly_rootfs,
        seccomp,
        apparmor_profile,
    })
}

/// `CAP_X` or `X`, any case; `None` for `ALL`.
pub(super) fn parse_cap(name: &str, field: &str) -> Result<Option<Capability>, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(None);
    }
    serde_json::from_value(serde_json::Value::String(format!("CAP_{bare}")))
        .map(Some)
        .map_err(|_| super::invalid(field, format!("unknown capability {name:?}")))
}

/// Every capability crius knows and the daemon itself holds in its bounding set (containerd's
/// "all current capabilities"): a runtime cannot grant a capability its caller lacks, so asking
/// for one would fail the container instead.
fn all_caps() -> Capabilities {
    known_caps()
        .into_iter()
        .filter(|(bit, _)| current_bounding() & (1u64 << bit) != 0)
        .map(|(_, cap)| cap)
        .collect()
}

fn current_bounding() -> u64 {
    static BOUNDING: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOUNDING.get_or_init(current_bounding_set)
}

/// `CapBnd` of this process; all bits when it cannot be read.
fn current_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Every capability oci-spec knows, with its kernel bit number.
fn known_caps() -> Vec<(u32, Capability)> {
    // In kernel order: the index is the capability's bit.
    const NAMES: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES
        .iter()
        .enumerate()
        .filter_map(|(bit, n)| Some((bit as u32, parse_cap(n, "").ok().flatten()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Capability as CriCaps;

    #[test]
    fn defaults() {
        let s = container_security(None, &PodSandboxConfig::default(), HostLsm::default()).unwrap();
        let caps = s.capabilities;
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert_eq!(caps.effective(), caps.bounding());
        assert_eq!(caps.permitted(), caps.bounding());
        assert!(caps.inheritable().as_ref().unwrap().is_empty());
        assert!(caps.ambient().as_ref().unwrap().is_empty());
        assert!(!s.no_new_privileges);
        assert!(s.masked_paths.contains(&"/proc/kcore".to_string()));
        assert_eq!(s.readonly_paths.len(), 5);
        assert_eq!(known_caps().len(), 41);
        let bounding = current_bounding_set();
        assert_eq!(
            all_caps().len(),
            (0..41).filter(|b| bounding & (1u64 << b) != 0).count()
        );
    }

    #[test]
    fn add_drop_and_flags() {
        let sc = LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: vec!["sys_admin".into()],
                drop_capabilities: vec!["CAP_NET_RAW".into(), "KILL".into()],
                add_ambient_capabilities: vec![],
            }),
            no_new_privs: true,
            readonly_rootfs: true,
            masked_paths: vec!["/proc/x".into()],
            ..Default::default()
        };
        let s = container_security(Some(&sc), &PodSandboxConfig::default(), HostLsm::default())
            .unwrap();
        let b = s.capabilities.bounding().clone().unwrap();
        assert!(b.contains(&Capability::SysAdmin));
        assert!(!b.contains(&Capability::NetRaw) && !b.contains(&Capability::Kill));
        assert_eq!(b.len(), 13);
        assert!(s.no_new_privileges && s.readonly_rootfs);
        assert_eq!(s.masked_paths, vec!["/proc/x"]);
        assert!(s.readonly_paths.is_empty());

        let sc = LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                drop_capabilities: vec!["ALL".into()],
                add_capabilities: vec!["CHOWN".into()],
                add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
            }),
            ..Default::default()
        };
        let caps = container_security(Some(&sc), &PodSandboxConfig::default(), HostLsm::default())
            .unwrap()
            .capabilities;
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 2);
        assert_eq!(
            caps.ambient().clone().unwrap(),
            HashSet::from([Capability::NetBindService])
        );
    }

    #[test]
    fn unknown_capability_and_privileged() {
        let sc = LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: vec!["FLY".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = container_security(Some(&sc), &PodSandboxConfig::default(), HostLsm::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("add_capabilities[0]"), "{err}");
    }

    fn privileged_pod() -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(k8s_cri::v1::LinuxPodSandboxConfig {
                security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn privileged() {
        use k8s_cri::v1::{SecurityProfile, security_profile::ProfileType};
        let sc = LinuxContainerSecurityContext {
            privileged: true,
            capabilities: Some(CriCaps {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            ..Default::default()
        };
        let err = container_security(Some(&sc), &PodSandboxConfig::default(), HostLsm::default())
            .err()
            .unwrap();
        assert_eq!(
            crius_error::HasKind::kind(&err),
            crius_error::ErrorKind::InvalidArgument
        );
        assert!(err.to_string().contains("privileged pod sandbox"), "{err}");

        let s = container_security(Some(&sc), &privileged_pod(), HostLsm::default()).unwrap();
        assert!(s.privileged);
        assert_eq!(s.capabilities.bounding().clone().unwrap(), all_caps());
        assert!(all_caps().contains(&Capability::Chown));
        assert_eq!(s.capabilities.effective(), s.capabilities.bounding());
        assert!(s.masked_paths.is_empty() && s.readonly_paths.is_empty());
        assert!(s.seccomp.is_none(), "seccomp is not applied");
    }

    #[test]
    fn seccomp_follows_the_final_capabilities() {
        use k8s_cri::v1::{SecurityProfile, security_profile::ProfileType};
        let rd = Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        let allows_unshare = |s: &Security| {
            s.seccomp
                .as_ref()
                .unwrap()
                .syscalls()
                .as_ref()
                .unwrap()
                .iter()
                .any(|r| r.names().iter().any(|n| n == "unshare"))
        };
        let sc = LinuxContainerSecurityContext {
            seccomp: rd.clone(),
            ..Default::default()
        };
        let s = container_security(Some(&sc), &PodSandboxConfig::default(), HostLsm::default())
            .unwrap();
        assert!(!allows_unshare(&s));
        let sc = LinuxContainerSecurityContext {
            seccomp: rd,
            capabilities: Some(CriCaps {
                add_capabilities: vec!["CAP_SYS_ADMIN".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = container_security(Some(&sc), &PodSandboxConfig::default(), HostLsm::default())
            .unwrap();
        assert!(allows_unshare(&s));
    }
}
