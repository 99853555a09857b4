//! Which sysctls a pod may set: only namespaced ones, and only for namespaces the pod owns
//! (the same rules as runc and the kubelet).

use std::collections::BTreeMap;

use crate::error::{SandboxError, invalid};
use crate::ns::NsType;

/// Converts the `/`-separated form to the dotted one. As in the kubelet, in the slash form a
/// `.` is part of a name, so the two separators swap (`net/ipv4/conf/eth0.100/forwarding` →
/// `net.ipv4.conf.eth0/100.forwarding`). A key whose first separator is `.` is returned as is.
pub fn normalize_sysctl_key(key: &str) -> String {
    match key.find(['.', '/']) {
        Some(i) if key.as_bytes()[i] == b'/' => key
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => key.to_string(),
    }
}

fn needs(key: &str) -> Option<NsType> {
    const IPC_EXACT: [&str; 2] = ["kernel.sem", "kernel.sem_next_id"];
    if key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || IPC_EXACT.contains(&key)
        || key.starts_with("fs.mqueue.")
    {
        Some(NsType::Ipc)
    } else if key.starts_with("net.") {
        Some(NsType::Net)
    } else {
        None
    }
}

/// Checks every sysctl against the namespaces the pod owns (`own`); everything not listed
/// there is the host's and must not be touched.
pub fn validate_sysctls(
    sysctls: &BTreeMap<String, String>,
    own: &[NsType],
) -> Result<(), SandboxError> {
    for (raw, value) in sysctls {
        let key = normalize_sysctl_key(raw);
        let well_formed = !key.is_empty()
            && key.split('.').all(|part| {
                !part.is_empty()
                    && part != "/"
                    && !part.contains("//")
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-/:@+".contains(c))
            });
        if !well_formed {
            return Err(invalid(
                "sysctls",
                format!("sysctl {raw:?} is not a valid key"),
            ));
        }
        if value.contains(['\n', '\0']) {
            return Err(invalid(
                "sysctls",
                format!("sysctl {raw:?} has an invalid value"),
            ));
        }
        if key == "kernel.hostname" || key == "kernel.domainname" {
            return Err(invalid(
                "sysctls",
                format!("sysctl {raw:?} is not allowed, set the pod hostname instead"),
            ));
        }
        match needs(&key) {
            None => {
                return Err(invalid(
                    "sysctls",
                    format!("sysctl {raw:?} is not namespaced"),
                ));
            }
            Some(ns) if !own.contains(&ns) => {
                return Err(invalid(
                    "sysctls",
                    format!(
                        "sysctl {raw:?} needs a pod-owned {ns} namespace, the pod uses the host's"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, own: &[NsType]) -> Result<(), SandboxError> {
        validate_sysctls(&BTreeMap::from([(key.to_string(), "1".to_string())]), own)
    }

    #[test]
    fn normalizes_slash_form() {
        assert_eq!(
            normalize_sysctl_key("net/ipv4/ip_forward"),
            "net.ipv4.ip_forward"
        );
        assert_eq!(
            normalize_sysctl_key("net/ipv4/conf/eth0.100/forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
        assert_eq!(normalize_sysctl_key("kernel.shmmax"), "kernel.shmmax");
    }

    #[test]
    fn accepts_namespaced() {
        let all = [NsType::Net, NsType::Ipc];
        for key in [
            "net.ipv4.ip_unprivileged_port_start",
            "net/ipv4/ip_forward",
            "kernel.shmmax",
            "kernel.shm_rmid_forced",
            "kernel.msgmax",
            "kernel.sem",
            "fs.mqueue.msg_max",
            "net.ipv4.conf.eth0/100.forwarding",
        ] {
            check(key, &all).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn rejects_host_and_bad_keys() {
        let all = [NsType::Net, NsType::Ipc, NsType::Uts];
        let err = check("vm.swappiness", &all).unwrap_err().to_string();
        assert!(
            err.contains("sysctl \"vm.swappiness\" is not namespaced"),
            "{err}"
        );
        assert!(check("kernel.hostname", &all).is_err());
        assert!(check("kernel.semx", &all).is_err());
        assert!(check("net....ipv4", &all).is_err());
        assert!(check("net/../../etc/x", &all).is_err());
        assert!(check("net.ipv4.a b", &all).is_err());
    }

    #[test]
    fn needs_own_namespace() {
        let err = check("net.ipv4.ip_forward", &[NsType::Ipc]).unwrap_err();
        assert_eq!(
            crius_error::HasKind::kind(&err),
            crius_error::ErrorKind::InvalidArgument
        );
        assert!(err.to_string().contains("net.ipv4.ip_forward"));
        assert!(check("kernel.shmmax", &[NsType::Net]).is_err());
    }
}
