//! The pod's /dev/shm tmpfs. Needs root.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Fixture, mounts_under};
use crius_sandbox::{DEFAULT_SHM_SIZE, mount_shm, unmount_shm};

#[test]
fn shm_has_size_mode_and_flags() {
    require_root!();
    let fx = Fixture::new();
    let dir = fx.root.join("pods/p/shm");
    mount_shm(&dir, 1024 * 1024).unwrap();
    let line = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap()))
        .unwrap()
        .to_string();
    assert!(line.contains(" - tmpfs shm "), "{line}");
    let opts = line.split(' ').nth(5).unwrap();
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(opts.split(',').any(|o| o == flag), "{line}");
    }
    assert!(line.contains("size=1024k"), "{line}");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777);
    let vfs = nix::sys::statvfs::statvfs(&dir).unwrap();
    assert_eq!(vfs.blocks() * vfs.fragment_size(), 1024 * 1024);

    unmount_shm(&dir).unwrap();
    unmount_shm(&dir).unwrap();
    assert_eq!(mounts_under(&dir), vec![]);
    assert!(mount_shm(&dir, 0).is_err());
    assert_eq!(DEFAULT_SHM_SIZE, 64 << 20);
    fx.finish();
}
