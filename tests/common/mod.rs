//! Shared helpers for the integration tests: a registry with test images behind a proxy, a
//! criusd configured to use it as the docker.io mirror, and tree comparison.
#![allow(dead_code)]

pub mod pods;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use crius_testkit::{Daemon, DaemonOptions, FaultMode, Proxy, Registry};
use k8s_cri::v1::{
    AuthConfig, ImageSpec, ImageStatusRequest, PullImageRequest, PullImageResponse,
    RemoveImageRequest,
};

pub const CRIUSD: &str = env!("CARGO_BIN_EXE_criusd");

/// A plain registry, a proxy in front of it, and a daemon that uses the proxy as its
/// docker.io mirror.
pub struct Env {
    pub registry: Registry,
    pub proxy: Proxy,
    pub daemon: Daemon,
}

impl Env {
    pub async fn start() -> Result<Env> {
        Env::start_with("").await
    }

    /// `extra` is appended to the generated config.
    pub async fn start_with(extra: &str) -> Result<Env> {
        let registry = Registry::start_plain()?;
        let proxy = Proxy::start(&registry.addr(), FaultMode::PassThrough)?;
        // The mirror is the only source: an unknown repository is NotFound, not a failed
        // attempt at the real docker.io.
        let config = format!(
            "{}fallback_to_upstream = false\n{extra}",
            crius_testkit::mirror_config(&proxy.url(), "3s")
        );
        let daemon = Daemon::start(DaemonOptions::new(CRIUSD).config(config)).await?;
        Ok(Env {
            registry,
            proxy,
            daemon,
        })
    }

    pub async fn pull(&self, image: &str) -> Result<PullImageResponse, tonic::Status> {
        pull(&self.daemon, image, None).await
    }
}

pub fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

pub async fn pull(
    d: &Daemon,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<PullImageResponse, tonic::Status> {
    let mut c = d
        .images()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    c.pull_image(PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner())
}

pub async fn status(
    d: &Daemon,
    image: &str,
    verbose: bool,
) -> Result<k8s_cri::v1::ImageStatusResponse> {
    let mut c = d.images().await?;
    Ok(c.image_status(ImageStatusRequest {
        image: spec(image),
        verbose,
    })
    .await?
    .into_inner())
}

pub async fn remove(d: &Daemon, image: &str) -> Result<(), tonic::Status> {
    let mut c = d
        .images()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    c.remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

/// Entries of a directory tree, for comparing an unpacked image with a reference extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content digest for files, target for symlinks, rdev for devices.
    pub detail: String,
    /// Seconds; only for non-directories (directory times change as children are added).
    pub mtime: Option<i64>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

pub fn walk(root: &Path) -> Result<BTreeMap<String, Entry>> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let path = e.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&path)?;
            let ft = m.file_type();
            use std::os::unix::fs::FileTypeExt;
            let (kind, detail) = if ft.is_dir() {
                stack.push(path.clone());
                ("dir", String::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&path)?.to_string_lossy().into_owned(),
                )
            } else if ft.is_file() {
                let data = std::fs::read(&path)?;
                // Hard links show as a link count, the same in both trees when kept.
                let link = if m.nlink() > 1 {
                    format!(" nlink={}", m.nlink())
                } else {
                    String::new()
                };
                (
                    "file",
                    format!("{}{link}", hex::encode(sha2::Sha256::digest(&data))),
                )
            } else if ft.is_char_device() {
                ("char", format!("{}", m.rdev()))
            } else if ft.is_block_device() {
                ("block", format!("{}", m.rdev()))
            } else if ft.is_fifo() {
                ("fifo", String::new())
            } else {
                ("other", String::new())
            };
            let mut xattrs = BTreeMap::new();
            if !ft.is_symlink() {
                for name in xattr_names(&path) {
                    if name.starts_with("user.") {
                        xattrs.insert(name.clone(), xattr_get(&path, &name));
                    }
                }
            }
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    detail,
                    mtime: (kind != "dir").then_some(m.mtime()),
                    xattrs,
                },
            );
        }
    }
    Ok(out)
}

fn xattr_names(path: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn xattr_get(path: &Path, name: &str) -> Vec<u8> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Vec::new();
    }
    buf.truncate(len as usize);
    buf
}

/// Differences between two trees, as readable lines.
pub fn tree_diff(ours: &Path, reference: &Path) -> Result<Vec<String>> {
    let a = walk(ours)?;
    let b = walk(reference)?;
    let mut diffs = Vec::new();
    for (k, v) in &b {
        match a.get(k) {
            None => diffs.push(format!("missing in ours: {k} ({v:?})")),
            Some(x) if x != v => diffs.push(format!("differs: {k}\n  ours: {x:?}\n  ref:  {v:?}")),
            _ => {}
        }
    }
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        diffs.push(format!("extra in ours: {k} ({:?})", a[k]));
    }
    Ok(diffs)
}

/// A read-only overlay mount of an image's layers, unmounted on drop.
pub struct OverlayMount {
    pub target: tempfile::TempDir,
    _empty: tempfile::TempDir,
}

impl OverlayMount {
    /// `lower` are names relative to `layers_dir`, top layer first (as ImageStatus verbose
    /// reports them). The mount runs with `layers_dir` as its working directory so the short
    /// relative names are what goes into the mount options.
    pub fn mount(layers_dir: &Path, lower: &[String]) -> Result<OverlayMount> {
        let target = tempfile::tempdir()?;
        let empty = tempfile::tempdir()?;
        let mut dirs: Vec<String> = lower.to_vec();
        // overlayfs needs two lower dirs when there is no upper dir.
        dirs.push(empty.path().display().to_string());
        let out = Command::new("mount")
            .current_dir(layers_dir)
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={}", dirs.join(":")))
            .arg(target.path())
            .output()?;
        if !out.status.success() {
            bail!("mount overlay: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(OverlayMount {
            target,
            _empty: empty,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.target.path().to_path_buf()
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.target.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Names of the entries of a directory (empty when it does not exist).
pub fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
