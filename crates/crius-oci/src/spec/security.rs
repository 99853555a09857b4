//! The security context of a container: capabilities, no_new_privs, masked and read-only
//! paths, read-only rootfs.
//!
//! Still to come here: privileged containers, seccomp, AppArmor, SELinux labels.

use std::collections::HashSet;

use k8s_cri::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use super::SpecError;

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
    pub capabilities: LinuxCapabilities,
    pub no_new_privileges: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub readonly_rootfs: bool,
}

pub(super) fn container_security(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<Security, SpecError> {
    const FIELD: &str = "config.linux.security_context";
    let default = LinuxContainerSecurityContext::default();
    let sc = sc.unwrap_or(&default);
    if sc.privileged {
        return Err(SpecError::Unsupported {
            field: format!("{FIELD}.privileged"),
            message: "privileged containers are not supported yet".to_string(),
        });
    }

    let mut caps: Capabilities = DEFAULT_CAPS.into_iter().collect();
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
        // Drops first, so "drop ALL, add X" leaves exactly X (Docker's order).
        for cap in parse_all(&c.drop_capabilities, "drop_capabilities")? {
            match cap {
                None => caps.clear(),
                Some(cap) => {
                    caps.remove(&cap);
                }
            }
        }
        for cap in parse_all(&c.add_capabilities, "add_capabilities")? {
            match cap {
                None => caps.extend(all_caps()),
                Some(cap) => {
                    caps.insert(cap);
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
    // context at all, the defaults apply.
    let masked_paths = if sc.masked_paths.is_empty() && sc.readonly_paths.is_empty() {
        DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
    } else {
        sc.masked_paths.clone()
    };
    let readonly_paths = if sc.masked_paths.is_empty() && sc.readonly_paths.is_empty() {
        DEFAULT_READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        sc.readonly_paths.clone()
    };

    Ok(Security {
        capabilities: b.build()?,
        no_new_privileges: sc.no_new_privs,
        masked_paths,
        readonly_paths,
        readonly_rootfs: sc.readonly_rootfs,
    })
}

/// `CAP_X` or `X`, any case; `None` for `ALL`.
fn parse_cap(name: &str, field: &str) -> Result<Option<Capability>, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(None);
    }
    serde_json::from_value(serde_json::Value::String(format!("CAP_{bare}")))
        .map(Some)
        .map_err(|_| super::invalid(field, format!("unknown capability {name:?}")))
}

fn all_caps() -> Capabilities {
    // Every name oci-spec knows; unknown to the running kernel ones are dropped by the runtime.
    const NAMES: &[&str] = &[
        "AUDIT_CONTROL",
        "AUDIT_READ",
        "AUDIT_WRITE",
        "BLOCK_SUSPEND",
        "BPF",
        "CHECKPOINT_RESTORE",
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "IPC_LOCK",
        "IPC_OWNER",
        "KILL",
        "LEASE",
        "LINUX_IMMUTABLE",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "MKNOD",
        "NET_ADMIN",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_RAW",
        "PERFMON",
        "SETGID",
        "SETFCAP",
        "SETPCAP",
        "SETUID",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_CHROOT",
        "SYS_MODULE",
        "SYS_NICE",
        "SYS_PACCT",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "SYSLOG",
        "WAKE_ALARM",
    ];
    NAMES
        .iter()
        .filter_map(|n| parse_cap(n, "").ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Capability as CriCaps;

    #[test]
    fn defaults() {
        let s = container_security(None).unwrap();
        let caps = s.capabilities;
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert_eq!(caps.effective(), caps.bounding());
        assert_eq!(caps.permitted(), caps.bounding());
        assert!(caps.inheritable().as_ref().unwrap().is_empty());
        assert!(caps.ambient().as_ref().unwrap().is_empty());
        assert!(!s.no_new_privileges);
        assert!(s.masked_paths.contains(&"/proc/kcore".to_string()));
        assert_eq!(s.readonly_paths.len(), 5);
        assert_eq!(all_caps().len(), 41);
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
        let s = container_security(Some(&sc)).unwrap();
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
        let caps = container_security(Some(&sc)).unwrap().capabilities;
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
        let err = container_security(Some(&sc)).err().unwrap();
        assert!(err.to_string().contains("add_capabilities[0]"), "{err}");
        let sc = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert!(container_security(Some(&sc)).is_err());
    }
}
