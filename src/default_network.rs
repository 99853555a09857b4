//! crius's default pod network, written when the CNI conf dir has none: crius's own bridge
//! with host-local IPAM and port mappings (the same file as deploy/cni/). No loopback plugin:
//! crius brings `lo` up itself when it creates the pod's network namespace.

use std::path::Path;

/// deploy/cni/10-crius.conflist
pub const DEFAULT_CONFLIST: &str = include_str!("../deploy/cni/10-crius.conflist");

pub fn write_if_missing(dir: &Path) -> std::io::Result<()> {
    let has_config = std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            [".conflist", ".conf", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
    });
    if has_config {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    crius_state::atomic_write(&dir.join("10-crius.conflist"), DEFAULT_CONFLIST.as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::info!(dir = %dir.display(), "wrote the default pod network config");
    Ok(())
}
