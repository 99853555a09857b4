//! crius-overlay: the per-node VXLAN overlay agent. See the crate docs.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use crius_overlay::agent::Agent;
use crius_overlay::backend::{Backend, etcd::Etcd, static_file::StaticFile};
use crius_overlay::config::{BackendConfig, Config};

#[derive(Parser)]
#[command(version, about = "crius VXLAN overlay agent")]
struct Args {
    /// Configuration file (TOML, or JSON when it ends in .json).
    #[arg(
        long,
        short,
        env = "CRIUS_OVERLAY_CONFIG",
        default_value = "/etc/crius/overlay.toml"
    )]
    config: PathBuf,
    /// Overrides `node_name`.
    #[arg(long)]
    node_name: Option<String>,
    /// tracing filter, e.g. `info` or `crius_overlay=debug`.
    #[arg(long, env = "CRIUS_OVERLAY_LOG", default_value = "info")]
    log_level: String,
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping; the data path stays as it is");
}

async fn run<B: Backend>(cfg: Config, backend: B) -> anyhow::Result<()> {
    let mut agent = Agent::new(cfg, backend)
        .await
        .context("starting the agent")?;
    agent.run(stop_signal()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_writer(std::io::stderr)
        .init();
    let mut cfg =
        Config::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    if let Some(n) = args.node_name {
        cfg.node_name = Some(n);
        cfg.validate()?;
    }
    let pool = cfg.pool()?;
    match cfg.backend.clone() {
        BackendConfig::Static { path } => run(cfg, StaticFile::new(path, pool)).await,
        BackendConfig::Etcd { endpoints, prefix } => {
            let ttl = cfg.ttl();
            run(cfg, Etcd::new(endpoints, &prefix, pool, ttl)).await
        }
    }
}
