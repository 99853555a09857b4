//! AppArmor and SELinux: what the request asks for, checked against what the host has.
//!
//! crius ships no AppArmor profile of its own and does not label containers for SELinux.
//! RuntimeDefault and unconfined therefore mean "no profile"; anything naming a profile or a
//! label is applied where the host can (AppArmor `Localhost`) and refused where it cannot —
//! never silently dropped.

use std::sync::OnceLock;

use k8s_cri::v1::{LinuxContainerSecurityContext, security_profile::ProfileType};

use super::{SpecError, invalid};

/// Which Linux security modules the host has enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostLsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl HostLsm {
    /// Reads `/sys/module/apparmor/parameters/enabled` and `/sys/fs/selinux/enforce` once.
    pub fn detect() -> HostLsm {
        static HOST: OnceLock<HostLsm> = OnceLock::new();
        *HOST.get_or_init(|| HostLsm {
            apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|s| s.trim() == "Y"),
            selinux: std::path::Path::new("/sys/fs/selinux/enforce").exists(),
        })
    }
}

const FIELD: &str = "config.linux.security_context";

/// `process.apparmorProfile`: `Some` only for a `Localhost` profile on an AppArmor host.
// The deprecated string form is still what older kubelets send.
#[allow(deprecated)]
pub(super) fn apparmor_profile(
    sc: &LinuxContainerSecurityContext,
    privileged: bool,
    host: HostLsm,
) -> Result<Option<String>, SpecError> {
    let (name, field) = if let Some(p) = &sc.apparmor {
        let field = format!("{FIELD}.apparmor");
        match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault | ProfileType::Unconfined) => return Ok(None),
            Ok(ProfileType::Localhost) => {
                let name = p.localhost_ref.trim_start_matches("localhost/");
                if name.is_empty() {
                    return Err(invalid(
                        format!("{field}.localhost_ref"),
                        "is empty for a Localhost profile",
                    ));
                }
                (name.to_string(), format!("{field}.localhost_ref"))
            }
            Err(_) => {
                return Err(invalid(
                    format!("{field}.profile_type"),
                    format!("unknown profile type {}", p.profile_type),
                ));
            }
        }
    } else {
        let field = format!("{FIELD}.apparmor_profile");
        match sc.apparmor_profile.as_str() {
            "" | "runtime/default" | "unconfined" => return Ok(None),
            other => match other.strip_prefix("localhost/") {
                Some(name) if !name.is_empty() => (name.to_string(), field),
                _ => {
                    return Err(invalid(
                        field,
                        format!(
                            "{other:?} is not one of \"runtime/default\", \"unconfined\" or \"localhost/<profile>\""
                        ),
                    ));
                }
            },
        }
    };
    // Privileged containers run unconfined (CRI: "AppArmor confinement is not applied").
    if privileged {
        return Ok(None);
    }
    if !host.apparmor {
        return Err(SpecError::NotAvailable {
            field,
            message: format!(
                "AppArmor profile {name:?} requested, but AppArmor is not enabled on this node"
            ),
        });
    }
    Ok(Some(name))
}

/// SELinux options are refused: on a host without SELinux they cannot be applied, and crius
/// does not implement labelling on hosts with it.
pub(super) fn check_selinux(
    sc: &LinuxContainerSecurityContext,
    privileged: bool,
    host: HostLsm,
) -> Result<(), SpecError> {
    let Some(o) = &sc.selinux_options else {
        return Ok(());
    };
    if privileged
        || [&o.user, &o.role, &o.r#type, &o.level]
            .iter()
            .all(|s| s.is_empty())
    {
        return Ok(());
    }
    let field = format!("{FIELD}.selinux_options");
    let label = format!("{}:{}:{}:{}", o.user, o.role, o.r#type, o.level);
    if host.selinux {
        Err(SpecError::Unsupported {
            field,
            message: format!(
                "SELinux label {label:?} requested: SELinux labelling is not implemented"
            ),
        })
    } else {
        Err(SpecError::NotAvailable {
            field,
            message: format!(
                "SELinux label {label:?} requested, but SELinux is not enabled on this node"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_error::{ErrorKind, HasKind};
    use k8s_cri::v1::{SeLinuxOption, SecurityProfile};

    const NONE: HostLsm = HostLsm {
        apparmor: false,
        selinux: false,
    };
    const BOTH: HostLsm = HostLsm {
        apparmor: true,
        selinux: true,
    };

    fn profile(t: ProfileType, r: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    #[allow(deprecated)]
    fn apparmor() {
        for sc in [
            LinuxContainerSecurityContext::default(),
            profile(ProfileType::RuntimeDefault, ""),
            profile(ProfileType::Unconfined, ""),
        ] {
            assert_eq!(apparmor_profile(&sc, false, NONE).unwrap(), None);
        }
        for s in ["runtime/default", "unconfined"] {
            let sc = LinuxContainerSecurityContext {
                apparmor_profile: s.into(),
                ..Default::default()
            };
            assert_eq!(apparmor_profile(&sc, false, NONE).unwrap(), None);
        }
        let sc = profile(ProfileType::Localhost, "my-prof");
        let err = apparmor_profile(&sc, false, NONE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(
            err.to_string()
                .starts_with("config.linux.security_context.apparmor.localhost_ref:")
                && err.to_string().contains("my-prof"),
            "{err}"
        );
        assert_eq!(
            apparmor_profile(&sc, false, BOTH).unwrap().as_deref(),
            Some("my-prof")
        );
        assert_eq!(apparmor_profile(&sc, true, NONE).unwrap(), None);
        let sc = LinuxContainerSecurityContext {
            apparmor_profile: "localhost/other".into(),
            ..Default::default()
        };
        let err = apparmor_profile(&sc, false, NONE).unwrap_err();
        assert!(err.to_string().contains("apparmor_profile"), "{err}");
        let sc = LinuxContainerSecurityContext {
            apparmor_profile: "weird".into(),
            ..Default::default()
        };
        let err = apparmor_profile(&sc, false, BOTH).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn selinux() {
        let empty = LinuxContainerSecurityContext {
            selinux_options: Some(SeLinuxOption::default()),
            ..Default::default()
        };
        check_selinux(&empty, false, NONE).unwrap();
        let sc = LinuxContainerSecurityContext {
            selinux_options: Some(SeLinuxOption {
                level: "s0:c1,c2".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = check_selinux(&sc, false, NONE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(
            err.to_string()
                .starts_with("config.linux.security_context.selinux_options:"),
            "{err}"
        );
        assert_eq!(
            check_selinux(&sc, false, BOTH).unwrap_err().kind(),
            ErrorKind::Unimplemented
        );
        check_selinux(&sc, true, NONE).unwrap();
    }
}
