//! Keeping a daemon's logs beyond its temp dir, for runs whose machine is gone when someone
//! reads the result (hack/test-vm.sh's VM): with `CRIUS_TEST_KEEP_LOGS=DIR` every [`Daemon`]
//! copies its `criusd.log` and its pod monitors' `monitor.log` files, when it is dropped, to
//! `DIR/<test name>/<daemon dir name>/` (the runner keeps those of failed tests).
//!
//! [`Daemon`]: crate::daemon::Daemon

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The variable naming the directory logs are copied to.
pub const ENV: &str = "CRIUS_TEST_KEEP_LOGS";
/// Only the end of a bigger log is kept (a debug-level criusd log of a long test is large).
const MAX_BYTES: u64 = 4 << 20;
/// Pod state sits at `state/pods/<id>/…`: no monitor log is deeper than this below `state`.
const MAX_DEPTH: usize = 4;
/// Bounds the walk of a state dir with many pods.
const MAX_FILES: usize = 256;

/// Where this test's logs go, when keeping them was asked for. The test's name is its
/// thread's (libtest names each test's thread after the test).
pub fn dest_for_current_test() -> Option<PathBuf> {
    let base = std::env::var_os(ENV).filter(|v| !v.is_empty())?;
    let name = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(sanitize)
        .unwrap_or_else(|| "unknown-test".into());
    Some(PathBuf::from(base).join(name))
}

/// A test name as one path component (`mod::test` stays readable).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Copies `dir/criusd.log` and the `*.log` files found below `state` (same filesystem only:
/// container roots are mounts) to `dest/<dir's name>/`, keeping their paths relative to `dir`.
pub fn copy_daemon_logs(dir: &Path, state: &Path, dest: &Path) -> std::io::Result<()> {
    let dest = dest.join(dir.file_name().unwrap_or_default());
    let mut files = vec![dir.join("criusd.log")];
    if let Ok(meta) = fs::metadata(state) {
        find_logs(state, meta.dev(), MAX_DEPTH, &mut files);
    }
    for f in files {
        let Ok(rel) = f.strip_prefix(dir) else {
            continue;
        };
        let to = dest.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        if let Err(e) = copy_tail(&f, &to, MAX_BYTES)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e);
        }
    }
    Ok(())
}

fn find_logs(dir: &Path, dev: u64, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if out.len() >= MAX_FILES {
            return;
        }
        let path = e.path();
        // symlink_metadata: never follow a link out of the state dir.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() && depth > 0 {
            find_logs(&path, dev, depth - 1, out);
        } else if meta.is_file() && path.extension().is_some_and(|x| x == "log") {
            out.push(path);
        }
    }
}

/// Copies the last `max` bytes of `from` (all of it when smaller).
fn copy_tail(from: &Path, to: &Path, max: u64) -> std::io::Result<()> {
    let mut f = fs::File::open(from)?;
    let len = f.metadata()?.len();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    fs::write(to, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_daemon_log_and_monitor_logs_with_their_paths() {
        let src = tempfile::tempdir().unwrap();
        let dir = src.path().join("crius-testkit-daemon-x");
        let pod = dir.join("state/pods/p1");
        fs::create_dir_all(&pod).unwrap();
        fs::write(dir.join("criusd.log"), "daemon\n").unwrap();
        fs::write(pod.join("monitor.log"), "monitor\n").unwrap();
        fs::write(pod.join("config.json"), "{}").unwrap();
        let dest = tempfile::tempdir().unwrap();

        copy_daemon_logs(&dir, &dir.join("state"), dest.path()).unwrap();

        let kept = dest.path().join("crius-testkit-daemon-x");
        assert_eq!(
            fs::read_to_string(kept.join("criusd.log")).unwrap(),
            "daemon\n"
        );
        assert_eq!(
            fs::read_to_string(kept.join("state/pods/p1/monitor.log")).unwrap(),
            "monitor\n"
        );
        assert!(!kept.join("state/pods/p1/config.json").exists());
    }

    #[test]
    fn a_big_log_keeps_its_end() {
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("a.log");
        fs::write(&from, "0123456789").unwrap();
        copy_tail(&from, &d.path().join("b.log"), 4).unwrap();
        assert_eq!(fs::read_to_string(d.path().join("b.log")).unwrap(), "6789");
    }

    #[test]
    fn test_names_become_one_path_component() {
        assert_eq!(sanitize("mod::a_test"), "mod::a_test");
        assert_eq!(sanitize("../x y"), ".._x_y");
    }
}
