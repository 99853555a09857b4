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

/// The mount holding a path and its propagation, as /proc/self/mountinfo tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOf {
    pub mount_point: PathBuf,
    pub shared: bool,
    pub slave: bool,
}

/// The mount that holds `path` (which must exist): the last (most recent) one whose mount
/// point is the longest prefix of its canonical form.
pub fn mount_of(path: &Path) -> io::Result<MountOf> {
    let path = std::fs::canonicalize(path)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mount_of_in(&path, &mountinfo)
        .ok_or_else(|| io::Error::other(format!("no mount holds {}", path.display())))
}

fn mount_of_in(path: &Path, mountinfo: &str) -> Option<MountOf> {
    let mut best: Option<MountOf> = None;
    for line in mountinfo.lines() {
        let Some((pre, _)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = pre.split(' ').collect();
        let Some(mp) = fields.get(4).map(|m| PathBuf::from(unescape(m))) else {
            continue;
        };
        if path.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|b| mp.as_os_str().len() >= b.mount_point.as_os_str().len())
        {
            let optional = fields.iter().skip(6);
            best = Some(MountOf {
                shared: optional.clone().any(|f| f.starts_with("shared:")),
                slave: optional.clone().any(|f| f.starts_with("master:")),
                mount_point: mp,
            });
        }
    }
    best
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:50 / /var/lib/kubelet rw,relatime master:7 - ext4 /dev/vdb rw
41 27 0:51 / /data\\040dir rw,relatime - tmpfs tmpfs rw
42 27 0:52 / /var rw,relatime - tmpfs tmpfs rw
";

    #[test]
    fn mount_of_finds_the_longest_prefix_and_its_propagation() {
        let m = |p: &str| mount_of_in(Path::new(p), MOUNTINFO).unwrap();
        assert_eq!(
            m("/usr/bin"),
            MountOf {
                mount_point: "/".into(),
                shared: true,
                slave: false
            }
        );
        let k = m("/var/lib/kubelet/pods/x");
        assert_eq!((k.shared, k.slave), (false, true));
        assert_eq!(m("/var/lib/other").mount_point, Path::new("/var"));
        // Component-wise: /data dir2 is not under "/data dir".
        assert_eq!(m("/data dir/x").mount_point, Path::new("/data dir"));
        assert_eq!(m("/data dir2").mount_point, Path::new("/"));
    }
}
