//! ImageFsInfo: bytes and inodes used by images and by container writable layers.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};
use tonic::Status;

use crate::context::Context;

pub async fn handle(
    ctx: &Context,
    _req: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, Status> {
    let store = ctx.images.clone();
    let containers_dir = ctx.config.root.join("containers");
    let (images, containers) =
        tokio::task::spawn_blocking(move || (store.usage(), du(&containers_dir)))
            .await
            .map_err(|e| Status::internal(format!("worker task failed: {e}")))?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1);
    let usage = |mountpoint: PathBuf, bytes: u64, inodes: u64| FilesystemUsage {
        timestamp: now,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: mountpoint.display().to_string(),
        }),
        used_bytes: Some(UInt64Value { value: bytes }),
        inodes_used: Some(UInt64Value { value: inodes }),
    };
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![usage(
            ctx.images.layers_dir().to_path_buf(),
            images.bytes,
            images.inodes,
        )],
        container_filesystems: vec![usage(
            ctx.config.root.join("containers"),
            containers.0,
            containers.1,
        )],
    })
}

/// Bytes (allocated blocks) and inodes under `dir`, not crossing into other filesystems.
fn du(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let mut stack = vec![dir.to_path_buf()];
    let (mut bytes, mut inodes) = (0u64, 0u64);
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}
