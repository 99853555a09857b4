//! Test support for crius: real registries, deterministic test images, a criusd under test,
//! a fault-injecting registry proxy and host leak checks.
//!
//! Everything here starts real processes (`docker-registry`, `criusd`, `umoci`, `skopeo`) and
//! cleans them up on drop. `hack/install-deps.sh` installs the tools. Tests that need root say
//! so in their name (`root_…`) or doc.
//!
//! ```ignore
//! use crius_testkit::{image, Daemon, DaemonOptions, FaultMode, Proxy, Registry, push_image};
//!
//! #[tokio::test]
//! async fn root_pull_busybox_through_mirror() -> anyhow::Result<()> {
//!     let reg = Registry::start_plain()?;
//!     let img = image::busybox_image();
//!     let pushed = push_image(&reg, "library/busybox", "latest", &img).await?;
//!     let proxy = Proxy::start(&reg.addr(), FaultMode::PassThrough)?;
//!     let config = crius_testkit::mirror_config(&proxy.url(), "5s");
//!     let d = Daemon::start(DaemonOptions::new(env!("CARGO_BIN_EXE_criusd")).config(config)).await?;
//!     let resp = d.images().await?.pull_image(k8s_cri::v1::PullImageRequest {
//!         image: Some(k8s_cri::v1::ImageSpec { image: "busybox".into(), ..Default::default() }),
//!         ..Default::default()
//!     }).await;
//!     assert!(resp.is_ok(), "{resp:?}\n{}", d.log_tail(50));
//!     assert_eq!(proxy.blob_gets("library/busybox", &pushed.layers[0].0), 1);
//!     Ok(())
//! }
//! ```

pub mod cleanup;
pub mod daemon;
pub mod image;
pub mod keep_logs;
pub mod proxy;
pub mod push;
pub mod registry;

pub use cleanup::{HostSnapshot, assert_no_leaks};
pub use daemon::{Daemon, DaemonOptions, mirror_config};
pub use image::{
    Compression, Format, Image, ImageBuilder, Index, IndexBuilder, Layer, LayerBuilder, Platform,
};
pub use proxy::{FaultMode, Proxy};
pub use push::{
    PushedImage, PushedIndex, RegistryClient, push_blob, push_image, push_index, push_manifest,
};
pub use registry::Registry;
