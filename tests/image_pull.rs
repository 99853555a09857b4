//! PullImage through the real criusd against a real registry: every manifest and layer format,
//! the unpacked result compared with `umoci unpack`, hostile and corrupt layers, timeouts,
//! shared downloads and authentication.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use crius_testkit::image::{self, Image};
use crius_testkit::{FaultMode, push_image, push_index};
use k8s_cri::v1::AuthConfig;
use tonic::Code;

/// Pulls `name`, then checks the overlay of its layers equals umoci's extraction of `img`.
async fn assert_matches_reference(env: &Env, name: &str, img: &Image) -> Result<()> {
    let st = status(&env.daemon, name, true).await?;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"])?;
    let lower: Vec<String> = serde_json::from_value(info["lowerDirs"].clone())?;
    assert_eq!(lower.len(), img.layers.len(), "one lower dir per layer");
    let mount = OverlayMount::mount(&env.daemon.root().join("l"), &lower)?;
    // umoci reads only OCI images: a Docker image is compared through an OCI twin with the
    // same layers.
    let twin;
    let img = if img.format == image::Format::Docker {
        twin = img
            .layers
            .iter()
            .fold(image::ImageBuilder::new(image::Format::Oci), |b, l| {
                b.layer(l.clone())
            })
            .build();
        &twin
    } else {
        img
    };
    let reference = image::reference_extract(img)?;
    let diffs = tree_diff(&mount.path(), &reference.rootfs())?;
    assert!(
        diffs.is_empty(),
        "unpacked image differs from umoci's extraction:\n{}",
        diffs.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn busybox_by_short_name_is_normalised_and_unpacked_like_umoci() -> Result<()> {
    let env = Env::start().await?;
    let img = image::busybox_image();
    let pushed = push_image(&env.registry, "library/busybox", "latest", &img).await?;
    let resp = env.pull("busybox").await?;
    assert_eq!(
        resp.image_ref, pushed.config_digest,
        "PullImage returns the image id (config digest)"
    );

    let st = status(&env.daemon, "busybox", false)
        .await?
        .image
        .expect("image present");
    assert_eq!(st.id, pushed.config_digest);
    assert_eq!(
        st.repo_tags,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    assert_eq!(
        st.repo_digests,
        vec![format!(
            "docker.io/library/busybox@{}",
            pushed.manifest_digest
        )]
    );
    assert!(st.size > 0);
    assert_matches_reference(&env, "busybox", &img).await
}

#[tokio::test]
async fn whiteouts_opaque_dirs_links_devices_and_xattrs_match_reference() -> Result<()> {
    let env = Env::start().await?;
    let img = image::multilayer_whiteouts_image();
    push_image(&env.registry, "library/multi", "v1", &img).await?;
    env.pull("multi:v1").await?;
    assert_matches_reference(&env, "multi:v1", &img).await?;
    // The overlay-level representation itself: a char 0/0 whiteout and an opaque xattr.
    let st = status(&env.daemon, "multi:v1", true).await?;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"])?;
    let top = info["lowerDirs"][0].as_str().unwrap().to_string();
    let top_dir = env.daemon.root().join("l").join(top);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(top_dir.join("data/deleted.txt"))?;
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0/0 char device"
    );
    Ok(())
}

#[tokio::test]
async fn zstd_layers_and_docker_schema2_images_pull() -> Result<()> {
    let env = Env::start().await?;
    let zstd = image::zstd_image();
    push_image(&env.registry, "library/zstd", "v1", &zstd).await?;
    let docker = image::docker_schema2_image();
    push_image(&env.registry, "library/docker", "v1", &docker).await?;
    assert_eq!(env.pull("zstd:v1").await?.image_ref, zstd.config_digest);
    assert_matches_reference(&env, "zstd:v1", &zstd).await?;
    assert_eq!(
        env.pull("docker.io/library/docker:v1").await?.image_ref,
        docker.config_digest
    );
    assert_matches_reference(&env, "docker:v1", &docker).await
}

#[tokio::test]
async fn manifest_lists_pick_the_host_platform() -> Result<()> {
    let env = Env::start().await?;
    for (repo, format) in [
        ("library/oci-multi", image::Format::Oci),
        ("library/docker-multi", image::Format::Docker),
    ] {
        let index = image::multiarch_index(format);
        let pushed = push_index(&env.registry, repo, "v1", &index).await?;
        let host = crius_testkit::Platform::host();
        let want = index
            .for_arch(&host.architecture)
            .expect("index has the host arch");
        let name = format!("{}:v1", repo.trim_start_matches("library/"));
        let resp = env.pull(&name).await?;
        assert_eq!(
            resp.image_ref, want.config_digest,
            "{repo}: the host platform's image"
        );
        let st = status(&env.daemon, &name, false).await?.image.unwrap();
        // The repo digest is the index's, which is what the user can pull again by digest.
        assert!(
            st.repo_digests
                .contains(&format!("docker.io/{repo}@{}", pushed.index_digest)),
            "{:?}",
            st.repo_digests
        );
        assert_matches_reference(&env, &name, want).await?;
        // And by digest: the same image.
        let by_digest = env
            .pull(&format!(
                "{}@{}",
                repo.trim_start_matches("library/"),
                pushed.index_digest
            ))
            .await?;
        assert_eq!(by_digest.image_ref, want.config_digest);
    }
    Ok(())
}

/// A hostile layer is rejected with an error naming the entry, and nothing of it remains:
/// not outside the layer directory, not in the store.
#[tokio::test]
async fn hostile_layers_are_rejected_naming_the_entry() -> Result<()> {
    let env = Env::start().await?;
    let cases = [
        ("traversal", image::traversal_image(), "evil"),
        ("absolute", image::absolute_path_image(), "crius"),
        ("symlink", image::symlink_escape_image(), "crius-evil"),
        ("hardlink", image::hardlink_escape_image(), "passwd"),
    ];
    let before_tmp = dir_names(std::path::Path::new("/tmp"));
    for (repo, img, entry_word) in cases {
        push_image(&env.registry, &format!("library/{repo}"), "v1", &img).await?;
        let err = env
            .pull(&format!("{repo}:v1"))
            .await
            .expect_err("hostile image must be rejected");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{repo}: {}",
            err.message()
        );
        assert!(
            err.message().contains("layer entry"),
            "{repo}: error names the entry: {}",
            err.message()
        );
        assert!(
            err.message().contains(entry_word),
            "{repo}: error names the entry: {}",
            err.message()
        );
        assert!(
            status(&env.daemon, &format!("{repo}:v1"), false)
                .await?
                .image
                .is_none()
        );
    }
    let root = env.daemon.root();
    assert!(
        dir_names(&root.join("images/tmp")).is_empty(),
        "no temp data left"
    );
    // Good layers of these images may stay (shared, reusable); none holds a hostile entry.
    for layer in dir_names(&root.join("l")) {
        let entries = walk(&root.join("l").join(&layer))?;
        let bad: Vec<_> = entries
            .keys()
            .filter(|k| k.contains("evil") || k.ends_with("passwd") || k.ends_with("shadow"))
            .collect();
        assert!(
            bad.is_empty(),
            "layer {layer} kept hostile entries: {bad:?}"
        );
    }
    let listed = env
        .daemon
        .images()
        .await?
        .list_images(k8s_cri::v1::ListImagesRequest::default())
        .await?
        .into_inner();
    assert!(listed.images.is_empty(), "no hostile image listed");
    let after_tmp = dir_names(std::path::Path::new("/tmp"));
    let new: Vec<_> = after_tmp
        .iter()
        .filter(|n| n.contains("crius-evil") && !before_tmp.contains(n))
        .collect();
    assert!(
        new.is_empty(),
        "hostile layer wrote outside its directory: {new:?}"
    );
    assert!(!std::path::Path::new("/tmp/crius-evil").exists());
    assert!(!root.join("evil").exists() && !root.parent().unwrap().join("evil").exists());
    Ok(())
}

#[tokio::test]
async fn corrupt_and_truncated_blobs_are_rejected_and_leave_nothing() -> Result<()> {
    let env = Env::start().await?;
    let img = image::busybox_image();
    let pushed = push_image(&env.registry, "library/corrupt", "v1", &img).await?;
    env.registry.corrupt_blob(&pushed.layers[0].0)?;
    let err = env
        .pull("corrupt:v1")
        .await
        .expect_err("corrupt layer must fail");
    assert!(
        matches!(err.code(), Code::DataLoss | Code::InvalidArgument),
        "{err:?}"
    );
    assert!(
        err.message().contains(&pushed.layers[0].0),
        "error names the blob: {}",
        err.message()
    );

    let img2 = image::multilayer_whiteouts_image();
    let pushed2 = push_image(&env.registry, "library/truncated", "v1", &img2).await?;
    let (digest, size) = pushed2.layers[1].clone();
    env.registry.truncate_blob(&digest, size / 2)?;
    let err = env
        .pull("truncated:v1")
        .await
        .expect_err("truncated layer must fail");
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");

    let root = env.daemon.root();
    assert!(
        dir_names(&root.join("images/tmp")).is_empty(),
        "no temp data left"
    );
    let list = env
        .daemon
        .images()
        .await?
        .list_images(k8s_cri::v1::ListImagesRequest::default())
        .await?
        .into_inner();
    assert!(list.images.is_empty());
    Ok(())
}

#[tokio::test]
async fn stalled_pull_times_out_but_a_slow_moving_pull_completes() -> Result<()> {
    let env = Env::start().await?; // pull_progress_timeout = 3s
    let img = image::large_image(2);
    push_image(&env.registry, "library/slow", "v1", &img).await?;

    env.proxy.set_mode(FaultMode::StallAfter { bytes: 4096 });
    let started = Instant::now();
    let err = env
        .pull("slow:v1")
        .await
        .expect_err("stalled pull must fail");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("no progress"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        dir_names(&env.daemon.root().join("images/tmp")).is_empty(),
        "no temp data left"
    );

    // ~2 MB at 256 KiB/s takes about 8 s: well over the 3 s timeout, but always moving.
    env.proxy.set_mode(FaultMode::Throttle {
        bytes_per_sec: 256 * 1024,
    });
    let started = Instant::now();
    let resp = env.pull("slow:v1").await?;
    assert_eq!(resp.image_ref, img.config_digest);
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the pull really was slower than the timeout"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_share_one_download() -> Result<()> {
    let env = Env::start().await?;
    let img = image::large_image(2);
    let pushed = push_image(&env.registry, "library/shared", "v1", &img).await?;
    env.proxy.set_mode(FaultMode::Throttle {
        bytes_per_sec: 1024 * 1024,
    });
    env.proxy.reset_counts();
    let (a, b) = tokio::join!(
        env.pull("shared:v1"),
        env.pull("docker.io/library/shared:v1")
    );
    assert_eq!(a?.image_ref, img.config_digest);
    assert_eq!(b?.image_ref, img.config_digest);
    for (digest, _) in &pushed.layers {
        assert_eq!(
            env.proxy.blob_gets("library/shared", digest),
            1,
            "layer {digest} downloaded once"
        );
    }
    Ok(())
}

#[tokio::test]
async fn tls_registry_with_basic_auth() -> Result<()> {
    let registry = crius_testkit::Registry::start_tls_basic_auth("alice", "s3cret")?;
    let img = image::busybox_image();
    push_image(&registry, "team/app", "v1", &img).await?;
    // The mirror stands in for the registry the credentials are for (issue 10 item 5).
    let config = registry.mirror_toml("registry.example.test") + "mirror_credentials = true\n";
    let daemon =
        crius_testkit::Daemon::start(crius_testkit::DaemonOptions::new(CRIUSD).config(config))
            .await?;

    let name = "registry.example.test/team/app:v1";
    let err = pull(&daemon, name, None).await.expect_err("no credentials");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let wrong = AuthConfig {
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let err = pull(&daemon, name, Some(wrong))
        .await
        .expect_err("wrong password");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("registry.example.test/team/app"),
        "names the image: {}",
        err.message()
    );

    let good = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&daemon, name, Some(good)).await?.image_ref,
        img.config_digest
    );

    // The `auth` form: base64("user:password").
    remove(&daemon, name).await?;
    let encoded = AuthConfig {
        auth: "YWxpY2U6czNjcmV0".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&daemon, name, Some(encoded)).await?.image_ref,
        img.config_digest
    );

    let bad = AuthConfig {
        auth: "%%%".into(),
        ..Default::default()
    };
    let err = pull(&daemon, name, Some(bad))
        .await
        .expect_err("bad auth field");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("auth"), "{}", err.message());
    Ok(())
}

/// Concurrent pulls of one image share one pull only when their credentials match: a pull
/// with a wrong password must not succeed by joining a pull whose password was right.
#[tokio::test]
async fn a_pull_with_other_credentials_does_not_join_a_running_pull() -> Result<()> {
    let registry = crius_testkit::Registry::start_tls_basic_auth("alice", "s3cret")?;
    let img = image::large_image(24);
    push_image(&registry, "team/big", "v1", &img).await?;
    // The mirror stands in for the registry the credentials are for (issue 10 item 5).
    let config = registry.mirror_toml("registry.example.test") + "mirror_credentials = true\n";
    let daemon =
        crius_testkit::Daemon::start(crius_testkit::DaemonOptions::new(CRIUSD).config(config))
            .await?;
    let name = "registry.example.test/team/big:v1";
    let auth = |password: &str| AuthConfig {
        username: "alice".into(),
        password: password.into(),
        ..Default::default()
    };
    let (good, wrong, none) = tokio::join!(
        pull(&daemon, name, Some(auth("s3cret"))),
        async {
            // Let the good pull get under way first.
            tokio::time::sleep(Duration::from_millis(30)).await;
            pull(&daemon, name, Some(auth("nope"))).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            pull(&daemon, name, None).await
        }
    );
    assert_eq!(good?.image_ref, img.config_digest);
    let wrong = wrong.expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let none = none.expect_err("no credentials");
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    Ok(())
}

#[tokio::test]
async fn bad_reference_and_unknown_repository() -> Result<()> {
    let env = Env::start().await?;
    let err = env
        .pull("Not:A:Valid//ref")
        .await
        .expect_err("invalid reference");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("Not:A:Valid//ref"),
        "names the reference: {}",
        err.message()
    );

    let err = env.pull("").await.expect_err("empty reference");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image"), "{}", err.message());

    let err = env
        .pull("does-not-exist:v1")
        .await
        .expect_err("unknown repository");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("does-not-exist"),
        "{}",
        err.message()
    );
    Ok(())
}
