//! Container root filesystems: an overlay of the image's layers plus an upper and work dir.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// The mount data must fit in one page; leave room for the option names and upper/work.
const MOUNT_DATA_LIMIT: usize = 4000;

/// Mounts `target` as overlay of `lower` (names relative to `layers_dir`, top layer first)
/// with `upper` and `work`.
pub fn mount_overlay(
    layers_dir: &Path,
    lower: &[String],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    if lower.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "image has no layers",
        ));
    }
    let absolute: Vec<String> = lower
        .iter()
        .map(|l| layers_dir.join(l).display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        absolute.join(":"),
        upper.display(),
        work.display()
    );
    if data.len() <= MOUNT_DATA_LIMIT {
        return mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(io::Error::from);
    }
    // Too many layers for absolute paths: mount with names relative to layers_dir from a
    // thread that has a working directory of its own (unshare(CLONE_FS) affects only it).
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    let (layers_dir, target) = (layers_dir.to_path_buf(), target.to_path_buf());
    std::thread::spawn(move || -> io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
        std::env::set_current_dir(&layers_dir)?;
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )?;
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("mount thread panicked"))?
}

/// Unmounts a container rootfs; not mounted is fine.
pub fn unmount(target: &Path) -> io::Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether this host's cgroup hierarchy is the unified (v2) one.
pub fn cgroup_v2() -> bool {
    PathBuf::from("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The cgroup under which crius puts pods the kubelet gave no cgroup_parent.
pub const CRIUS_CGROUP: &str = "/crius";

/// Removes the cgroup directory `rel` (e.g. `/crius/<pod>`) from every mounted hierarchy,
/// deepest first is the caller's business. A directory that does not exist is fine.
pub fn remove_cgroup(rel: &str) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in mountinfo.lines() {
        // Fields after " - " are: fs type, source, options.
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let fs_type = post.split(' ').next().unwrap_or_default();
        if fs_type != "cgroup" && fs_type != "cgroup2" {
            continue;
        }
        let Some(mount_point) = pre.split(' ').nth(4) else {
            continue;
        };
        let dir = Path::new(mount_point).join(rel.trim_start_matches('/'));
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // The shared /crius parent stays while other pods live under it.
            Err(e) if rel == CRIUS_CGROUP && e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => tracing::warn!(path = %dir.display(), error = %e, "removing pod cgroup"),
        }
    }
}

/// Makes the host side of a volume with HOST_TO_CONTAINER or BIDIRECTIONAL propagation a
/// shared mount, so mount events reach the container's rslave/rshared copy (and come back).
/// A path that is not a mount point of its own gets a bind mount onto itself first; then
/// `true` is returned and the caller unmounts it once no container uses it.
pub fn ensure_shared(path: &Path) -> io::Result<bool> {
    let path = std::fs::canonicalize(path)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    // The mount containing `path` is the last (most recent) one with the longest prefix.
    let mut best: Option<(PathBuf, bool)> = None;
    for line in mountinfo.lines() {
        let Some((pre, _)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = pre.split(' ').collect();
        let Some(mp) = fields.get(4).map(PathBuf::from) else {
            continue;
        };
        if path.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len())
        {
            let shared = fields.iter().skip(6).any(|f| f.starts_with("shared:"));
            best = Some((mp, shared));
        }
    }
    let (mount_point, shared) =
        best.ok_or_else(|| io::Error::other("no mount contains the path"))?;
    if shared {
        return Ok(false);
    }
    let created = mount_point != path;
    if created {
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )?;
    }
    mount(
        None::<&str>,
        &path,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )?;
    Ok(created)
}
