//! Seccomp: the CRI `SecurityProfile` (or the deprecated `seccomp_profile_path`) → `linux.seccomp`.
//!
//! Profiles, ours (`profiles/default.json`) and the node's (`Localhost`), are OCI
//! `LinuxSeccomp` JSON with two additions borrowed from moby's format: per-rule
//! `includes`/`excludes` on `caps` (the rule applies only when the container does / does not
//! hold every listed capability) and on `arches` (Go names: `amd64`, `x86`, `x32`, `arm64`,
//! `arm`), and an optional `archMap`. They are resolved here against the container's
//! capabilities, so the runtime only ever sees plain OCI rules.

use std::path::Path;

use k8s_cri::v1::{LinuxContainerSecurityContext, security_profile::ProfileType};
use oci_spec::runtime::{
    Arch, Capabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::{SpecError, invalid, security::parse_cap};

/// The RuntimeDefault profile shipped with crius.
const DEFAULT_PROFILE: &str = include_str!("../../profiles/default.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// Docker's older single-name form.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

/// The host's architecture as seccomp names it, and the Go names of everything it can run.
fn host_arches() -> (Option<Arch>, Vec<Arch>, &'static [&'static str]) {
    match std::env::consts::ARCH {
        "x86_64" => (
            Some(Arch::ScmpArchX86_64),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
            &["amd64", "x86", "x32"],
        ),
        "x86" => (Some(Arch::ScmpArchX86), vec![Arch::ScmpArchX86], &["x86"]),
        "aarch64" => (
            Some(Arch::ScmpArchAarch64),
            vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
            &["arm64", "arm"],
        ),
        "arm" => (Some(Arch::ScmpArchArm), vec![Arch::ScmpArchArm], &["arm"]),
        _ => (None, Vec::new(), &[]),
    }
}

/// `linux.seccomp` for the container, `None` for unconfined. `caps` is its bounding set.
// The deprecated string form is still what older kubelets send.
#[allow(deprecated)]
pub(super) fn container_seccomp(
    sc: &LinuxContainerSecurityContext,
    caps: &Capabilities,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    const FIELD: &str = "config.linux.security_context";
    if let Some(p) = &sc.seccomp {
        let field = format!("{FIELD}.seccomp");
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(default_profile(caps)?)),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => {
                localhost(&p.localhost_ref, &format!("{field}.localhost_ref"), caps).map(Some)
            }
            Err(_) => Err(invalid(
                format!("{field}.profile_type"),
                format!("unknown profile type {}", p.profile_type),
            )),
        };
    }
    // The deprecated string form; empty means unconfined (the kubelet's default).
    let field = format!("{FIELD}.seccomp_profile_path");
    match sc.seccomp_profile_path.as_str() {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(default_profile(caps)?)),
        other => match other.strip_prefix("localhost/") {
            Some(path) => localhost(path, &field, caps).map(Some),
            None => Err(invalid(
                field,
                format!(
                    "{other:?} is not one of \"unconfined\", \"runtime/default\", \"docker/default\" or \"localhost/<path>\""
                ),
            )),
        },
    }
}

pub(super) fn default_profile(caps: &Capabilities) -> Result<LinuxSeccomp, SpecError> {
    let profile: Profile = serde_json::from_str(DEFAULT_PROFILE)
        .map_err(|e| invalid("built-in seccomp profile", e.to_string()))?;
    resolve(profile, caps, "built-in seccomp profile")
}

fn localhost(path: &str, field: &str, caps: &Capabilities) -> Result<LinuxSeccomp, SpecError> {
    if !Path::new(path).is_absolute() {
        return Err(invalid(
            field,
            format!("seccomp profile path {path:?} is not absolute"),
        ));
    }
    let text = read_profile(Path::new(path))
        .map_err(|e| invalid(field, format!("seccomp profile {path}: {e}")))?;
    let profile: Profile = serde_json::from_str(&text)
        .map_err(|e| invalid(field, format!("seccomp profile {path}: invalid JSON: {e}")))?;
    resolve(profile, caps, field).map_err(|e| match e {
        SpecError::InvalidArgument { message, .. } => {
            invalid(field, format!("seccomp profile {path}: {message}"))
        }
        other => other,
    })
}

/// Larger than any real profile (Docker's default is ~20 KiB); the path comes from the request.
const MAX_PROFILE_BYTES: u64 = 1024 * 1024;

/// Reads a node profile: a regular file under [`MAX_PROFILE_BYTES`]. Opened non-blocking so a
/// FIFO at the path cannot hang the RPC; a device or a FIFO is refused before any read.
fn read_profile(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("is not a regular file"));
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(std::io::Error::other(format!(
            "is larger than {MAX_PROFILE_BYTES} bytes"
        )));
    }
    let mut text = String::new();
    // Bounded even if the file grows after the check.
    file.take(MAX_PROFILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(std::io::Error::other(format!(
            "is larger than {MAX_PROFILE_BYTES} bytes"
        )));
    }
    Ok(text)
}

fn resolve(profile: Profile, caps: &Capabilities, field: &str) -> Result<LinuxSeccomp, SpecError> {
    let (native, host, go_arches) = host_arches();
    let architectures = match (&profile.architectures, profile.arch_map.is_empty()) {
        (Some(a), _) => a.clone(),
        (None, false) => profile
            .arch_map
            .iter()
            .find(|m| Some(m.architecture) == native)
            .map(|m| {
                let mut v = vec![m.architecture];
                v.extend(m.sub_architectures.iter().copied());
                v
            })
            .unwrap_or_default(),
        (None, true) => host,
    };
    let holds = |names: &[String]| -> Result<bool, SpecError> {
        for n in names {
            match parse_cap(n, field)? {
                Some(c) if caps.contains(&c) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    };
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for (i, rule) in profile.syscalls.into_iter().enumerate() {
        let inc = &rule.includes;
        let exc = &rule.excludes;
        if !inc.caps.is_empty() && !holds(&inc.caps)? {
            continue;
        }
        if !exc.caps.is_empty() && holds(&exc.caps)? {
            continue;
        }
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| go_arches.contains(&a.as_str())) {
            continue;
        }
        if exc.arches.iter().any(|a| go_arches.contains(&a.as_str())) {
            continue;
        }
        let mut names = rule.names;
        names.extend(rule.name);
        if names.is_empty() {
            return Err(invalid(field, format!("syscalls[{i}] names no syscall")));
        }
        let mut b = LinuxSyscallBuilder::default()
            .names(names)
            .action(rule.action);
        if let Some(e) = rule.errno_ret {
            b = b.errno_ret(e);
        }
        if let Some(args) = rule.args.filter(|a| !a.is_empty()) {
            b = b.args(args);
        }
        syscalls.push(b.build()?);
    }
    let mut b = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .architectures(architectures)
        .syscalls(syscalls);
    if let Some(e) = profile.default_errno_ret {
        b = b.default_errno_ret(e);
    }
    if let Some(f) = profile.flags {
        b = b.flags(f);
    }
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::SecurityProfile;
    use oci_spec::runtime::Capability;

    fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
        s.syscalls().as_ref().unwrap().iter().any(|r| {
            r.action() == LinuxSeccompAction::ScmpActAllow
                && r.args().is_none()
                && r.names().iter().any(|n| n == name)
        })
    }

    fn caps(list: &[Capability]) -> Capabilities {
        list.iter().copied().collect()
    }

    #[test]
    fn default_profile_blocks_what_needs_privilege() {
        let s = default_profile(&caps(&[Capability::Chown, Capability::SysChroot])).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        for ok in ["read", "execve", "capset", "setgroups", "chroot", "futex"] {
            assert!(allowed(&s, ok), "{ok} allowed");
        }
        for blocked in [
            "unshare",
            "mount",
            "sethostname",
            "setns",
            "reboot",
            "kexec_load",
            "keyctl",
            "ptrace",
            "init_module",
            "bpf",
            "userfaultfd",
            "clone3",
        ] {
            assert!(!allowed(&s, blocked), "{blocked} blocked");
        }
        // clone only without namespace flags; clone3 gets ENOSYS so libc falls back.
        let rules = s.syscalls().as_ref().unwrap();
        let clone = rules
            .iter()
            .find(|r| r.names() == &["clone".to_string()])
            .unwrap();
        assert_eq!(clone.args().as_ref().unwrap()[0].value(), 0x7E02_0000);
        let clone3 = rules
            .iter()
            .find(|r| r.names() == &["clone3".to_string()])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));
        if std::env::consts::ARCH == "x86_64" {
            let json = serde_json::to_value(&s).unwrap();
            assert_eq!(
                json["architectures"],
                serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            );
            assert!(allowed(&s, "arch_prctl"));
            assert!(!allowed(&s, "set_tls"));
        }
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let s = default_profile(&caps(&[
            Capability::SysAdmin,
            Capability::SysPtrace,
            Capability::SysBoot,
        ]))
        .unwrap();
        for ok in [
            "unshare",
            "mount",
            "sethostname",
            "setns",
            "clone3",
            "ptrace",
            "reboot",
        ] {
            assert!(allowed(&s, ok), "{ok} allowed");
        }
        assert!(!allowed(&s, "chroot"), "no CAP_SYS_CHROOT");
        assert!(!allowed(&s, "keyctl"));
        let rules = s.syscalls().as_ref().unwrap();
        assert!(
            !rules.iter().any(|r| r.errno_ret() == Some(38)),
            "the clone3 ENOSYS rule is for containers without CAP_SYS_ADMIN"
        );
    }

    fn sc_profile(t: ProfileType, r: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    #[allow(deprecated)]
    fn profile_selection() {
        let c = caps(&[Capability::Chown]);
        let sc = LinuxContainerSecurityContext::default();
        assert!(container_seccomp(&sc, &c).unwrap().is_none(), "unset");
        let got = container_seccomp(&sc_profile(ProfileType::RuntimeDefault, ""), &c).unwrap();
        assert!(got.is_some());
        let got = container_seccomp(&sc_profile(ProfileType::Unconfined, ""), &c).unwrap();
        assert!(got.is_none());
        for (path, some) in [
            ("unconfined", false),
            ("runtime/default", true),
            ("docker/default", true),
        ] {
            let sc = LinuxContainerSecurityContext {
                seccomp_profile_path: path.into(),
                ..Default::default()
            };
            assert_eq!(
                container_seccomp(&sc, &c).unwrap().is_some(),
                some,
                "{path}"
            );
        }
        let sc = LinuxContainerSecurityContext {
            seccomp_profile_path: "strict".into(),
            ..Default::default()
        };
        let err = container_seccomp(&sc, &c).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config.linux.security_context.seccomp_profile_path:"),
            "{err}"
        );
        // The structured field wins over the deprecated string.
        let mut sc = sc_profile(ProfileType::Unconfined, "");
        sc.seccomp_profile_path = "runtime/default".into();
        assert!(container_seccomp(&sc, &c).unwrap().is_none());
    }

    #[test]
    #[allow(deprecated)]
    fn localhost_profiles() {
        let c = caps(&[Capability::Chown]);
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("p.json");
        std::fs::write(
            &good,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["sethostname"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#,
        )
        .unwrap();
        let p = good.display().to_string();
        let s = container_seccomp(&sc_profile(ProfileType::Localhost, &p), &c)
            .unwrap()
            .unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        let rules = s.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 1, "the CAP_SYS_ADMIN rule does not apply");
        assert_eq!(rules[0].errno_ret(), Some(13));
        let sc = LinuxContainerSecurityContext {
            seccomp_profile_path: format!("localhost/{p}"),
            ..Default::default()
        };
        assert!(container_seccomp(&sc, &c).unwrap().is_some());

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let missing = dir.path().join("missing.json");
        for path in [&bad, &missing] {
            let p = path.display().to_string();
            let err = container_seccomp(&sc_profile(ProfileType::Localhost, &p), &c).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with("config.linux.security_context.seccomp.localhost_ref:")
                    && msg.contains(&p),
                "{msg}"
            );
            assert_eq!(
                crius_error::HasKind::kind(&err),
                crius_error::ErrorKind::InvalidArgument
            );
        }
        let err =
            container_seccomp(&sc_profile(ProfileType::Localhost, "rel.json"), &c).unwrap_err();
        assert!(err.to_string().contains("not absolute"), "{err}");
    }

    #[test]
    fn localhost_profile_must_be_a_small_regular_file() {
        let c = caps(&[Capability::Chown]);
        let dir = tempfile::tempdir().unwrap();
        // A FIFO would block a plain open for ever; a device or /proc file never ends.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = dir.path().join("big.json");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_PROFILE_BYTES + 1).unwrap();
        for (path, why) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
            (big.as_path(), "larger than"),
        ] {
            let p = path.display().to_string();
            let err = container_seccomp(&sc_profile(ProfileType::Localhost, &p), &c).unwrap_err();
            assert!(err.to_string().contains(why), "{p}: {err}");
            assert_eq!(
                crius_error::HasKind::kind(&err),
                crius_error::ErrorKind::InvalidArgument
            );
        }
    }
}
