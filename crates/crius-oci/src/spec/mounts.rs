//! The container's mounts: the standard kernel filesystems, the pod's shared files, then the
//! CRI volume mounts.

use std::collections::HashSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::MountPropagation;
use oci_spec::runtime::{Mount, MountBuilder};
use tracing::debug;

use super::{SpecError, SpecInput, invalid};

pub(super) struct Mounts {
    pub mounts: Vec<Mount>,
    /// `rshared`/`rslave` when a volume needs propagation from (or to) the host, which the
    /// rootfs mount must then allow.
    pub rootfs_propagation: Option<&'static str>,
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// containerd's default set. `/dev/shm` is added separately, from the pod. Privileged
/// containers get sysfs and the cgroup filesystem read-write.
fn default_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ])
}

fn bind(dest: &str, source: &Path, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Lexical clean-up so `/data/` and `/data` name the same destination.
fn clean(p: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

pub(super) fn container_mounts(
    input: &SpecInput<'_>,
    readonly_rootfs: bool,
    privileged: bool,
) -> Result<Mounts, SpecError> {
    let cri = &input.container.mounts;
    let mut taken: HashSet<String> = cri.iter().map(|m| clean(&m.container_path)).collect();

    // The pod's files, unless a volume replaces them.
    let rw = if readonly_rootfs { "ro" } else { "rw" };
    let files = &input.pod_files;
    let mut pod_mounts = Vec::new();
    for (dest, source, mode) in [
        ("/etc/hostname", &files.hostname, rw),
        ("/etc/resolv.conf", &files.resolv_conf, rw),
        ("/etc/hosts", &files.hosts, rw),
        ("/dev/shm", &files.shm, "rw"),
    ] {
        if taken.contains(dest) {
            continue;
        }
        match source {
            Some(source) => pod_mounts.push(bind(dest, source, &["rbind", "rprivate", mode])?),
            None if dest == "/dev/shm" => pod_mounts.push(mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            )?),
            None => continue,
        }
        taken.insert(dest.to_string());
    }

    // Defaults a volume overrides are dropped; a volume on /dev replaces everything below it.
    let mut mounts: Vec<Mount> = default_mounts(privileged)?
        .into_iter()
        .filter(|m| {
            let dest = m.destination().to_string_lossy().into_owned();
            let under_dev = taken.contains("/dev") && dest.starts_with("/dev/");
            !(taken.contains(&dest) || under_dev)
        })
        .collect();
    mounts.extend(pod_mounts);

    // Parents before children, whatever order the kubelet sent (as containerd does).
    let mut order: Vec<usize> = (0..cri.len()).collect();
    order.sort_by_key(|&i| {
        Path::new(&clean(&cri[i].container_path))
            .components()
            .count()
    });
    let mut rootfs_propagation = None;
    for i in order {
        let (m, propagation) = cri_mount(input, i)?;
        match propagation {
            MountPropagation::PropagationBidirectional => rootfs_propagation = Some("rshared"),
            MountPropagation::PropagationHostToContainer if rootfs_propagation.is_none() => {
                rootfs_propagation = Some("rslave")
            }
            _ => {}
        }
        mounts.push(m);
    }
    Ok(Mounts {
        mounts,
        rootfs_propagation,
    })
}

fn cri_mount(input: &SpecInput<'_>, i: usize) -> Result<(Mount, MountPropagation), SpecError> {
    let m = &input.container.mounts[i];
    let field = |f: &str| format!("config.mounts[{i}].{f}");
    if !m.container_path.starts_with('/') {
        return Err(invalid(
            field("container_path"),
            format!("{:?} is not an absolute path", m.container_path),
        ));
    }
    if m.host_path.is_empty() {
        if m.image.is_some() {
            return Err(SpecError::Unsupported {
                field: field("image"),
                message: "image volumes are not supported".to_string(),
            });
        }
        return Err(invalid(field("host_path"), "is empty"));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::Unsupported {
            field: field("uidMappings"),
            message: "id-mapped mounts are not supported".to_string(),
        });
    }
    if m.selinux_relabel {
        debug!(host_path = %m.host_path, "selinux_relabel ignored: SELinux is not supported");
    }
    let propagation = MountPropagation::try_from(m.propagation).map_err(|_| {
        invalid(
            field("propagation"),
            format!("unknown value {}", m.propagation),
        )
    })?;
    let mut options = vec![
        "rbind",
        match propagation {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => "rslave",
            MountPropagation::PropagationBidirectional => "rshared",
        },
        if m.readonly { "ro" } else { "rw" },
    ];
    if m.recursive_read_only {
        if !m.readonly {
            return Err(invalid(field("recursive_read_only"), "requires readonly"));
        }
        if propagation != MountPropagation::PropagationPrivate {
            return Err(invalid(
                field("recursive_read_only"),
                "requires propagation PROPAGATION_PRIVATE",
            ));
        }
        if !input.features.recursive_read_only {
            return Err(SpecError::NotAvailable {
                field: field("recursive_read_only"),
                message: "the OCI runtime does not support recursive read-only mounts (rro)"
                    .to_string(),
            });
        }
        options.push("rro");
    }
    let source = host_source(&m.host_path, &field("host_path"))?;
    Ok((bind(&m.container_path, &source, &options)?, propagation))
}

/// containerd's behaviour: a missing host path is created as a directory (0755), and a
/// symlink is replaced by its target so the runtime mounts what the kubelet meant.
fn host_source(host_path: &str, field: &str) -> Result<PathBuf, SpecError> {
    let path = Path::new(host_path);
    if !path.is_absolute() {
        return Err(invalid(
            field,
            format!("{host_path:?} is not an absolute path"),
        ));
    }
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(|source| SpecError::Io {
                    op: "create missing mount source",
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        Err(source) => {
            return Err(SpecError::Io {
                op: "stat mount source",
                path: path.to_path_buf(),
                source,
            });
        }
    }
    std::fs::canonicalize(path).map_err(|source| SpecError::Io {
        op: "resolve mount source",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/data/"), "/data");
        assert_eq!(clean("/a/./b/../c"), "/a/c");
        assert_eq!(clean("/"), "/");
    }
}
