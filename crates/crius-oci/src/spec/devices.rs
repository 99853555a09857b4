//! CRI devices → `linux.devices` plus the device-cgroup rules that allow them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use k8s_cri::v1::ContainerConfig;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::{SpecError, invalid};

pub(super) struct Device {
    pub device: LinuxDevice,
    /// The CRI permissions, e.g. `rwm`.
    pub access: String,
}

pub(super) fn container_devices(c: &ContainerConfig) -> Result<Vec<Device>, SpecError> {
    let mut out = Vec::new();
    for (i, d) in c.devices.iter().enumerate() {
        let field = |f: &str| format!("config.devices[{i}].{f}");
        if !d.container_path.starts_with('/') {
            return Err(invalid(
                field("container_path"),
                format!("{:?} is not an absolute path", d.container_path),
            ));
        }
        let access = if d.permissions.is_empty() {
            "rwm".to_string()
        } else {
            d.permissions.clone()
        };
        if !access.chars().all(|ch| matches!(ch, 'r' | 'w' | 'm')) {
            return Err(invalid(
                field("permissions"),
                format!("{access:?} is not a subset of \"rwm\""),
            ));
        }
        // metadata() follows symlinks, as kubelet's /dev/disk/by-id style paths need.
        let meta = std::fs::metadata(&d.host_path)
            .map_err(|e| invalid(field("host_path"), format!("{:?}: {e}", d.host_path)))?;
        let typ = if meta.file_type().is_char_device() {
            LinuxDeviceType::C
        } else if meta.file_type().is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(invalid(
                field("host_path"),
                format!("{:?} is not a device", d.host_path),
            ));
        };
        let rdev = meta.rdev();
        let device = LinuxDeviceBuilder::default()
            .path(&d.container_path)
            .typ(typ)
            .major(nix::sys::stat::major(rdev) as i64)
            .minor(nix::sys::stat::minor(rdev) as i64)
            .file_mode(meta.mode() & 0o777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build()?;
        out.push(Device { device, access });
    }
    Ok(out)
}

/// Directories of /dev that are not device nodes of the host (containerd skips the same).
const HOST_DEV_SKIP: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Privileged containers: every device node under the host's /dev, after the requested ones
/// (which win on a path clash). /dev/console is the container's own terminal, never the host's.
pub(super) fn with_host_devices(mut devices: Vec<Device>) -> Result<Vec<Device>, SpecError> {
    let mut found = Vec::new();
    walk_dev(std::path::Path::new("/dev"), &mut found)?;
    for device in found {
        if devices.iter().any(|d| d.device.path() == device.path()) {
            continue;
        }
        devices.push(Device {
            device,
            access: "rwm".to_string(),
        });
    }
    Ok(devices)
}

fn walk_dev(dir: &std::path::Path, out: &mut Vec<LinuxDevice>) -> Result<(), SpecError> {
    let io = |op, source| SpecError::Io {
        op,
        path: dir.to_path_buf(),
        source,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| io("read host devices", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("read host devices", e))?;
        let path = entry.path();
        // Vanishing entries (a device unplugged meanwhile) are skipped, not fatal.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            let name = entry.file_name();
            if dir == std::path::Path::new("/dev")
                && HOST_DEV_SKIP
                    .iter()
                    .any(|s| name == std::ffi::OsStr::new(s))
            {
                continue;
            }
            walk_dev(&path, out)?;
            continue;
        }
        if path == std::path::Path::new("/dev/console") {
            continue;
        }
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        let rdev = meta.rdev();
        out.push(
            LinuxDeviceBuilder::default()
                .path(&path)
                .typ(typ)
                .major(nix::sys::stat::major(rdev) as i64)
                .minor(nix::sys::stat::minor(rdev) as i64)
                .file_mode(meta.mode() & 0o777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build()?,
        );
    }
    Ok(())
}

/// Privileged containers: the device cgroup allows everything.
pub(super) fn allow_all_rules() -> Vec<LinuxDeviceCgroup> {
    vec![rule(true, None, None, None, "rwm")]
}

fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access(access);
    if let Some(t) = typ {
        b = b.typ(t);
    }
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build()
        .expect("every field of a device rule has a default")
}

/// Deny everything, then allow what every container needs (containerd's default list: mknod,
/// the /dev nodes the runtime creates, ptys), then the requested devices.
pub(super) fn cgroup_rules(devices: &[Device]) -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let mut rules = vec![
        rule(false, None, None, None, "rwm"),
        rule(true, Some(C), None, None, "m"),
        rule(true, Some(B), None, None, "m"),
        rule(true, Some(C), Some(1), Some(3), "rwm"), // null
        rule(true, Some(C), Some(1), Some(8), "rwm"), // random
        rule(true, Some(C), Some(1), Some(7), "rwm"), // full
        rule(true, Some(C), Some(5), Some(0), "rwm"), // tty
        rule(true, Some(C), Some(1), Some(5), "rwm"), // zero
        rule(true, Some(C), Some(1), Some(9), "rwm"), // urandom
        rule(true, Some(C), Some(136), None, "rwm"),  // pts
        rule(true, Some(C), Some(5), Some(2), "rwm"), // ptmx
    ];
    rules.extend(devices.iter().map(|d| {
        rule(
            true,
            Some(d.device.typ()),
            Some(d.device.major()),
            Some(d.device.minor()),
            &d.access,
        )
    }));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Device as CriDevice;

    fn config(host: &str, perms: &str) -> ContainerConfig {
        ContainerConfig {
            devices: vec![CriDevice {
                container_path: "/dev/xnull".into(),
                host_path: host.into(),
                permissions: perms.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn char_device_and_rule() {
        let devs = container_devices(&config("/dev/null", "rw")).unwrap();
        let d = &devs[0].device;
        assert_eq!((d.typ(), d.major(), d.minor()), (LinuxDeviceType::C, 1, 3));
        assert_eq!(d.path().to_str(), Some("/dev/xnull"));
        assert_eq!(d.file_mode(), Some(0o666));
        let rules = cgroup_rules(&devs);
        let last = rules.last().unwrap();
        assert!(last.allow());
        assert_eq!(
            (last.major(), last.minor(), last.access().as_deref()),
            (Some(1), Some(3), Some("rw"))
        );
        assert!(!rules[0].allow(), "deny-all comes first");
    }

    #[test]
    fn symlinked_device_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let devs = container_devices(&config(link.to_str().unwrap(), "rwm")).unwrap();
        assert_eq!((devs[0].device.major(), devs[0].device.minor()), (1, 5));
    }

    #[test]
    fn host_devices_for_privileged() {
        let requested = container_devices(&config("/dev/zero", "r")).unwrap();
        let all = with_host_devices(requested).unwrap();
        assert_eq!(
            all[0].access, "r",
            "the requested device comes first and wins"
        );
        let paths: Vec<_> = all.iter().map(|d| d.device.path().clone()).collect();
        assert!(paths.iter().any(|p| p.to_str() == Some("/dev/null")));
        assert!(!paths.iter().any(|p| p.starts_with("/dev/pts")));
        assert!(!paths.iter().any(|p| p.to_str() == Some("/dev/console")));
        let rules = allow_all_rules();
        assert!(rules[0].allow() && rules[0].typ().is_none());
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn bad_devices_are_rejected() {
        for (host, perms, field) in [
            ("/etc/hostname", "rwm", "host_path"),
            ("/nonexistent/dev", "rwm", "host_path"),
            ("/dev/null", "rwx", "permissions"),
        ] {
            let err = container_devices(&config(host, perms)).err().unwrap();
            assert!(
                err.to_string()
                    .starts_with(&format!("config.devices[0].{field}:")),
                "{err}"
            );
        }
    }
}
