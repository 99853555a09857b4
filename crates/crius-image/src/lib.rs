//! The image store: content-addressed blobs, layers unpacked once per chain id, image metadata,
//! and pulls from registries.
//!
//! On-disk layout under the daemon root:
//!
//! ```text
//! images/db.json                 metadata of every image and layer (atomic rewrite)
//! images/blobs/sha256/<hex>      manifests, indexes and configs
//! images/tmp/                    layers being unpacked; emptied at start-up
//! l/<16 hex of the chain id>/    an unpacked layer, an overlayfs lower dir
//! ```
//!
//! Layer directories have short names in their own directory so that a mount of 100+ layers
//! fits the one-page limit of overlayfs mount options when given as paths relative to `l/`.
//! Visibility is ordered so that a crash at any point leaves no half image: a layer is renamed
//! into `l/` only when complete and verified, and an image appears only when `db.json` is
//! replaced after all its layers and blobs are in place. Whatever a crash leaves unreferenced
//! is removed by [`ImageStore::open`].

mod db;
mod error;
mod layer;
mod progress;
mod pull;
mod store;

pub use db::{ImageRecord, LayerRecord};
pub use error::ImageError;
pub use progress::{LayerProgress, LayerState, PullProgress};
pub use pull::{PullHandle, PullOptions, Puller};
pub use store::{FsUsage, ImageStore, StoreOptions};
