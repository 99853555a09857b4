//! Pull benchmark: pushes `large_image(MB)` to a local registry, then measures a cold and a warm
//! CRI PullImage through criusd (registry configured as the docker.io mirror) and `skopeo copy`
//! of the same image as the reference point.
//!
//! Usage: crius-bench-pull --criusd <path> [--mb 100]   (or CRIUSD=<path>)

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crius_testkit::{Daemon, DaemonOptions, Registry, image, mirror_config, push_image};
use k8s_cri::v1::{ImageSpec, PullImageRequest};

fn usage() -> ! {
    eprintln!("usage: crius-bench-pull --criusd <path> [--mb <size>]  (CRIUSD env works too)");
    std::process::exit(2)
}

fn rate(mb: f64, d: Duration) -> String {
    format!(
        "{:>8.2} s  {:>8.1} MB/s",
        d.as_secs_f64(),
        mb / d.as_secs_f64()
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut criusd = std::env::var_os("CRIUSD").map(PathBuf::from);
    let mut mb: usize = 100;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--criusd" => criusd = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--mb" => {
                mb = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let criusd = criusd.unwrap_or_else(|| usage());
    if !criusd.is_file() {
        bail!("criusd binary {} not found", criusd.display());
    }

    let t = Instant::now();
    let img = image::large_image(mb);
    let size_mb = img.compressed_size() as f64 / 1_000_000.0;
    println!(
        "built image: {} layers, {size_mb:.1} MB compressed in {:?}",
        img.layers.len(),
        t.elapsed()
    );

    let reg = Registry::start_plain()?;
    push_image(&reg, "bench/large", "v1", &img).await?;
    println!("registry {} (log {})", reg.url(), reg.log_path().display());

    let out = tempfile::Builder::new()
        .prefix("crius-bench-skopeo-")
        .tempdir()?;
    let t = Instant::now();
    let st = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/bench/large:v1", reg.addr()))
        .arg(format!("dir:{}", out.path().join("img").display()))
        .status()
        .context("running skopeo")?;
    let skopeo = t.elapsed();
    if !st.success() {
        bail!("skopeo copy failed: {st}");
    }
    println!(
        "skopeo copy (dir): {}  (download only, no unpack)",
        rate(size_mb, skopeo)
    );
    drop(out);

    let daemon = Daemon::start(
        DaemonOptions::new(criusd)
            .config(mirror_config(&reg.url(), "30s"))
            .log_level("info"),
    )
    .await?;
    let mut images = daemon.images().await?;
    let pull = || PullImageRequest {
        image: Some(ImageSpec {
            image: "docker.io/bench/large:v1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };

    let t = Instant::now();
    let r = images.pull_image(pull()).await;
    let cold = t.elapsed();
    if let Err(e) = r {
        bail!(
            "cold pull failed: {e}\n--- criusd log ---\n{}",
            daemon.log_tail(40)
        );
    }
    println!(
        "criusd cold pull : {}  (download + unpack)",
        rate(size_mb, cold)
    );
    let t = Instant::now();
    images.pull_image(pull()).await.context("warm pull")?;
    let warm = t.elapsed();

    println!("criusd warm pull : {:>8.3} s", warm.as_secs_f64());
    Ok(())
}
