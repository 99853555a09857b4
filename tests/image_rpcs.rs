//! ListImages, ImageStatus, RemoveImage and ImageFsInfo through the real criusd.

mod common;

use anyhow::Result;
use common::*;
use crius_testkit::image::{self, ImageBuilder, LayerBuilder};
use crius_testkit::push_image;
use k8s_cri::v1::{ImageFilter, ImageFsInfoRequest, ListImagesRequest};

async fn list(env: &Env, filter: Option<&str>) -> Result<Vec<k8s_cri::v1::Image>> {
    let req = ListImagesRequest {
        filter: filter.map(|f| ImageFilter { image: spec(f) }),
    };
    Ok(env
        .daemon
        .images()
        .await?
        .list_images(req)
        .await?
        .into_inner()
        .images)
}

/// A small image with its own layer on top of busybox's, and a config user.
fn app_image(user: &str, marker: &str) -> image::Image {
    let mut top = LayerBuilder::new();
    top.file("app/marker", marker.as_bytes());
    ImageBuilder::new(image::Format::Oci)
        .layer(image::busybox_layer(image::Compression::Gzip))
        .layer(top.build(image::Compression::Gzip))
        .user(user)
        .cmd(&["sh"])
        .build()
}

#[tokio::test]
async fn status_and_list_by_every_name() -> Result<()> {
    let env = Env::start().await?;
    let img = app_image("1000:1000", "a");
    let pushed = push_image(&env.registry, "library/app", "v1", &img).await?;
    env.pull("app:v1").await?;

    let id = pushed.config_digest.clone();
    let hex = id.trim_start_matches("sha256:");
    for name in [
        "app:v1".to_string(),
        "docker.io/library/app:v1".to_string(),
        id.clone(),
        hex.to_string(),
        hex[..12].to_string(),
        format!("app@{}", pushed.manifest_digest),
    ] {
        let st = status(&env.daemon, &name, false).await?;
        assert_eq!(
            st.image.map(|i| i.id),
            Some(id.clone()),
            "ImageStatus by {name}"
        );
        let l = list(&env, Some(&name)).await?;
        assert_eq!(l.len(), 1, "ListImages filtered by {name}");
    }
    let st = status(&env.daemon, "app:v1", false).await?.image.unwrap();
    assert_eq!(st.uid.map(|u| u.value), Some(1000));
    assert_eq!(st.username, "");
    assert!(!st.pinned);

    // Unknown image: an empty answer, not an error.
    assert!(
        status(&env.daemon, "app:nope", false)
            .await?
            .image
            .is_none()
    );
    assert!(list(&env, Some("app:nope")).await?.is_empty());

    // verbose: the image config.
    let st = status(&env.daemon, "app:v1", true).await?;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"])?;
    assert_eq!(info["imageSpec"]["config"]["User"], "1000:1000");
    assert_eq!(
        info["imageSpec"]["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len()),
        Some(2)
    );

    let err = env
        .daemon
        .images()
        .await?
        .image_status(k8s_cri::v1::ImageStatusRequest {
            image: None,
            verbose: false,
        })
        .await
        .expect_err("missing spec");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("image"), "{}", err.message());
    Ok(())
}

#[tokio::test]
async fn username_from_config_and_pinned_images() -> Result<()> {
    let env = Env::start_with("").await?;
    let img = app_image("nobody", "b");
    push_image(&env.registry, "library/named", "v1", &img).await?;
    env.pull("named:v1").await?;
    let st = status(&env.daemon, "named:v1", false).await?.image.unwrap();
    assert_eq!(st.username, "nobody");
    assert!(st.uid.is_none());
    drop(env);

    // Pinned by configuration (here with the sandbox image setting as well).
    let registry = crius_testkit::Registry::start_plain()?;
    push_image(&registry, "library/pinned", "v1", &image::busybox_image()).await?;
    push_image(&registry, "library/pause", "3.10", &image::busybox_image()).await?;
    let config = format!(
        "{}\n",
        crius_testkit::mirror_config(&registry.url(), "5s")
    )
    .replace("[image]\n", "[image]\npinned_images = [\"pinned:v1\"]\nsandbox_image = \"docker.io/library/pause:3.10\"\n");
    let daemon =
        crius_testkit::Daemon::start(crius_testkit::DaemonOptions::new(CRIUSD).config(config))
            .await?;
    pull(&daemon, "pinned:v1", None).await?;
    assert!(
        status(&daemon, "pinned:v1", false)
            .await?
            .image
            .unwrap()
            .pinned
    );
    pull(&daemon, "pause:3.10", None).await?;
    assert!(
        status(&daemon, "pause:3.10", false)
            .await?
            .image
            .unwrap()
            .pinned
    );
    Ok(())
}

#[tokio::test]
async fn remove_by_tag_id_and_digest_frees_unshared_layers_only() -> Result<()> {
    let env = Env::start().await?;
    let a = app_image("", "a");
    let b = app_image("", "b");
    let pa = push_image(&env.registry, "library/a", "v1", &a).await?;
    let pb = push_image(&env.registry, "library/b", "v1", &b).await?;
    env.pull("a:v1").await?;
    env.pull("b:v1").await?;
    let layers_dir = env.daemon.root().join("l");
    assert_eq!(
        dir_names(&layers_dir).len(),
        3,
        "busybox layer shared, one top layer each"
    );
    let fs_before = fsinfo(&env).await?;

    // By tag: a's own layer goes, the shared busybox layer stays for b.
    remove(&env.daemon, "a:v1").await?;
    assert!(
        status(&env.daemon, &pa.config_digest, false)
            .await?
            .image
            .is_none()
    );
    assert_eq!(dir_names(&layers_dir).len(), 2);
    let fs_after = fsinfo(&env).await?;
    assert!(
        fs_after.0 < fs_before.0 && fs_after.1 < fs_before.1,
        "usage shrinks: {fs_before:?} -> {fs_after:?}"
    );
    // b still unpacked and intact.
    assert!(status(&env.daemon, "b:v1", false).await?.image.is_some());

    // Removing again, or something never pulled: success (CRI idempotence).
    remove(&env.daemon, "a:v1").await?;
    remove(&env.daemon, "never-pulled:latest").await?;

    // By digest reference, then everything is gone.
    remove(&env.daemon, &format!("b@{}", pb.manifest_digest)).await?;
    assert!(list(&env, None).await?.is_empty());
    assert!(dir_names(&layers_dir).is_empty(), "all layers removed");
    let blobs = dir_names(&env.daemon.root().join("images/blobs/sha256"));
    assert!(blobs.is_empty(), "all blobs removed: {blobs:?}");

    // By id.
    env.pull("a:v1").await?;
    remove(&env.daemon, &pa.config_digest).await?;
    assert!(list(&env, None).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_moved_tag_leaves_the_old_image_untagged() -> Result<()> {
    let env = Env::start().await?;
    let v1 = app_image("", "one");
    let v2 = app_image("", "two");
    push_image(&env.registry, "library/moving", "latest", &v1).await?;
    env.pull("moving").await?;
    push_image(&env.registry, "library/moving", "latest", &v2).await?;
    env.pull("moving").await?;
    let images = list(&env, None).await?;
    assert_eq!(images.len(), 2);
    let old = images.iter().find(|i| i.id == v1.config_digest).unwrap();
    let new = images.iter().find(|i| i.id == v2.config_digest).unwrap();
    assert!(old.repo_tags.is_empty(), "{:?}", old.repo_tags);
    assert_eq!(
        new.repo_tags,
        vec!["docker.io/library/moving:latest".to_string()]
    );
    Ok(())
}

async fn fsinfo(env: &Env) -> Result<(u64, u64)> {
    let r = env
        .daemon
        .images()
        .await?
        .image_fs_info(ImageFsInfoRequest {})
        .await?
        .into_inner();
    let fs = &r.image_filesystems[0];
    assert!(fs.timestamp > 0);
    assert!(!fs.fs_id.as_ref().unwrap().mountpoint.is_empty());
    assert_eq!(r.container_filesystems.len(), 1);
    Ok((fs.used_bytes.unwrap().value, fs.inodes_used.unwrap().value))
}

#[tokio::test]
async fn image_fs_info_counts_bytes_and_inodes() -> Result<()> {
    let env = Env::start().await?;
    assert_eq!(fsinfo(&env).await?, (0, 0));
    let img = image::large_image(3);
    push_image(&env.registry, "library/big", "v1", &img).await?;
    env.pull("big:v1").await?;
    let (bytes, inodes) = fsinfo(&env).await?;
    assert!(bytes >= 3_000_000, "{bytes}");
    assert!(inodes > 0);
    Ok(())
}
