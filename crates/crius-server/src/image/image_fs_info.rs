//! ImageFsInfo: bytes and inodes used by images and by container writable layers.

use std::path::PathBuf;

use k8s_cri::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};
use tonic::Status;

use crate::context::Context;

pub async fn handle(
    ctx: &Context,
    _req: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, Status> {
    let (store, runtime) = (ctx.images.clone(), ctx.runtime.clone());
    let (images, containers) =
        crate::status::spawn_blocking(move || (store.usage(), runtime.container_fs_usage()))
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
            containers.mountpoint,
            containers.bytes,
            containers.inodes,
        )],
    })
}
