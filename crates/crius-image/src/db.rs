//! Image and layer metadata, persisted as one JSON document replaced atomically.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Db {
    pub version: u32,
    /// By image id (the config digest).
    pub images: BTreeMap<String, ImageRecord>,
    /// By chain id.
    pub layers: BTreeMap<String, LayerRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, `sha256:<hex>`.
    pub id: String,
    /// Normalised `name:tag` references.
    pub repo_tags: Vec<String>,
    /// Normalised `name@digest` references (digest of what the registry served at top level).
    pub repo_digests: Vec<String>,
    /// Digest of the platform-specific manifest.
    pub manifest_digest: String,
    /// Chain ids, bottom layer first.
    pub layers: Vec<String>,
    /// Unpacked size in bytes (layers plus config).
    pub size: u64,
    /// The image config's `User`, as written there.
    pub user: String,
    /// Manifests, index and config kept in the blob store.
    pub blobs: Vec<String>,
    /// Unix nanoseconds of the pull that created it.
    pub pulled_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Digest of the compressed blob it was unpacked from.
    pub blob_digest: String,
    /// Directory name under `l/`.
    pub dir: String,
    /// Bytes of regular file content.
    pub size: u64,
    pub inodes: u64,
}

impl Db {
    /// 2: every committed layer has a completion marker (see `ImageStore::recover`).
    pub const VERSION: u32 = 2;

    pub fn referenced_layers(&self) -> BTreeSet<String> {
        self.images
            .values()
            .flat_map(|i| i.layers.iter().cloned())
            .collect()
    }

    pub fn referenced_blobs(&self) -> BTreeSet<String> {
        self.images
            .values()
            .flat_map(|i| i.blobs.iter().cloned())
            .collect()
    }
}
