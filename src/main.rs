//! criusd: the crius CRI daemon. Sets up config, logging, the root lock and signals, wires the
//! stores into the gRPC services, and drains on shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Parser;
use crius_config::{Config, LogFormat, Overrides};
mod cgroups;
mod default_network;
mod reaper;

use std::sync::Arc;

use crius_cni::{CniManager, CniOptions};
use crius_image::{ImageStore, PullOptions, Puller, StoreOptions};
use crius_runtime::{
    CniNetwork, ContainerManager, ContainerManagerOptions, HostSandboxOps, PodManager,
    PodManagerOptions,
};
use crius_server::{Context, VersionInfo};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const COMMIT: &str = env!("CRIUS_GIT_COMMIT");

#[derive(Debug, Parser)]
#[command(name = "criusd", version = concat!(env!("CARGO_PKG_VERSION"), "+", env!("CRIUS_GIT_COMMIT")), about = "crius: a Kubernetes CRI container runtime")]
struct Args {
    /// Configuration file (TOML). Without this flag /etc/crius/crius.toml is read if present.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Unix socket to serve the CRI on.
    #[arg(long)]
    listen: Option<PathBuf>,
    /// Directory for persistent data (images, layers, metadata).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Directory for runtime state (cleared by a reboot).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long)]
    log_level: Option<String>,
    /// Log output format.
    #[arg(long, value_enum)]
    log_format: Option<Format>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() {
    let args = Args::parse();
    let config = match load_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("criusd: {e:#}");
            std::process::exit(2);
        }
    };
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => {}
        Err(e) => {
            error!("{e:#}");
            eprintln!("criusd: {e:#}");
            std::process::exit(1);
        }
    }
    // Pulls that outlived the drain are abandoned; their temp data is removed at next start.
    runtime.shutdown_background();
}

fn load_config(args: Args) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(Path::new(crius_config::DEFAULT_CONFIG_PATH), false)?,
    };
    config.apply_overrides(Overrides {
        root: args.root,
        state: args.state,
        listen: args.listen,
        log_level: args.log_level,
        log_format: args.log_format.map(|f| match f {
            Format::Text => LogFormat::Text,
            Format::Json => LogFormat::Json,
        }),
    })?;
    Ok(config)
}

/// Libraries whose debug output is protocol noise (every HTTP/2 frame): kept at info unless
/// the log level names them explicitly.
const QUIET_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "rustls",
    "reqwest",
    "tonic",
];

fn init_tracing(config: &Config) {
    let mut directives = config.log_level.clone();
    if !directives.contains('=') {
        for t in QUIET_TARGETS {
            directives.push_str(&format!(",{t}=info"));
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!(
            "criusd: invalid log level {:?} ({e}); using info",
            config.log_level
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: Config) -> Result<()> {
    let lock = acquire_root_lock(&config.root).await?;
    // Pod init processes and container processes whose parents exit are reparented to us
    // rather than to the host's init, which may never reap them.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    tokio::spawn(reaper::reap_adopted_orphans());
    crius_state::create_dir_all(&config.state, 0o711)?;
    info!(version = VERSION, commit = COMMIT, root = %config.root.display(), state = %config.state.display(), "criusd starting");

    // Before anything else is made: a driver that cannot work refuses to start.
    let cgroups = tokio::task::spawn_blocking({
        let config = config.clone();
        move || cgroups::manager(&config)
    })
    .await??;

    let mut pinned = config.image.pinned_images.clone();
    pinned.extend(config.image.sandbox_image.clone());
    let store = tokio::task::spawn_blocking({
        let root = config.root.clone();
        move || ImageStore::open(&root, StoreOptions { pinned })
    })
    .await??;
    let client = crius_registry::Client::new(&registry_hosts(&config))?
        .with_foreign_layer_hosts(&config.image.foreign_layer_hosts)?;
    let puller = Puller::new(
        store.clone(),
        client,
        PullOptions {
            max_concurrent_downloads: config.image.max_concurrent_downloads,
            progress_timeout: config.image.pull_progress_timeout.0,
            max_layer_bytes: config.image.max_layer_unpacked_bytes,
            max_layer_entries: config.image.max_layer_entries,
        },
    );

    let network = Arc::new(CniNetwork::new(CniManager::new(cni_options(&config))));
    if config.network.write_default_config
        && let Err(e) = default_network::write_if_missing(&config.network.conf_dir)
    {
        warn!(error = %e, dir = %config.network.conf_dir.display(), "could not write the default network config");
    }
    // Runtime handlers are found once: Status and every pod and container use this set.
    let handlers = config.runtime_handlers();
    let pods = Arc::new(
        tokio::task::spawn_blocking({
            let opts = PodManagerOptions {
                records_dir: config.root.join("pods"),
                state_dir: config.state.clone(),
                default_handler: config.default_runtime_handler_of(&handlers),
                handlers: handlers.clone(),
                cgroups,
            };
            let network = network.clone();
            move || PodManager::open(opts, Arc::new(HostSandboxOps), network)
        })
        .await??,
    );

    let containers = Arc::new(
        tokio::task::spawn_blocking({
            let opts = ContainerManagerOptions {
                root_dir: config.root.join("containers"),
                state_dir: config.state.join("containers"),
                runtime_root: config.state.join("runtime"),
                monitor_binary: crius_sandbox::helper_path("crius-monitor"),
                monitor_socket_dir: config.state.join("m"),
                handlers,
            };
            let pods = pods.clone();
            move || ContainerManager::open(opts, pods)
        })
        .await??,
    );
    if let Err(e) = containers.watch_exits() {
        warn!(error = %e, "cannot watch for container exits; they are noticed on the next status query");
    }
    containers.set_exec_limits(crius_runtime::ExecLimits {
        per_container: config.exec.max_per_container,
        total: config.exec.max_total,
    });

    let listener = bind(&config.listen)?;
    info!(socket = %config.listen.display(), "serving the CRI");
    let shutdown_timeout = config.shutdown_timeout.0;
    let socket = config.listen.clone();
    let _metrics = match config.metrics.address {
        Some(addr) => {
            let server = crius_metrics::serve(addr).await?;
            info!(address = %server.local_addr(), "serving Prometheus /metrics");
            Some(server)
        }
        None => None,
    };
    let (streaming, streaming_listener) =
        crius_streaming::Streaming::bind(&config.streaming).await?;
    info!(address = %streaming.local_addr(), "streaming server listening");
    let ctx = Context::new(
        config,
        VersionInfo {
            version: VERSION.into(),
            commit: COMMIT.into(),
        },
        store,
        puller,
        pods,
        containers,
        network,
    )
    .with_streaming(streaming, streaming_listener);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crius_server::serve(ctx, listener, async {
        let _ = stop_rx.await;
    }));
    let signal_name = wait_for_signal().await?;
    info!(
        signal = signal_name,
        "shutting down: no new connections, draining in-flight RPCs"
    );
    let _ = stop_tx.send(());
    match tokio::time::timeout(shutdown_timeout, server).await {
        Ok(Ok(Ok(()))) => info!("drained"),
        Ok(Ok(Err(e))) => warn!(error = %e, "server ended with an error"),
        Ok(Err(e)) => warn!(error = %e, "server task failed"),
        Err(_) => {
            warn!(timeout = ?shutdown_timeout, "in-flight RPCs did not finish in time; exiting anyway")
        }
    }
    let _ = std::fs::remove_file(&socket);
    drop(lock);
    info!("criusd stopped");
    Ok(())
}

/// CNI settings: the configured bin dirs, then the directory crius's own plugins are
/// installed in (next to criusd).
fn cni_options(config: &Config) -> CniOptions {
    let mut bin_dirs = config.network.bin_dirs.clone();
    let helper = crius_sandbox::helper_path("crius-bridge");
    if let Some(own) = helper
        .parent()
        .filter(|own| !bin_dirs.iter().any(|d| d == own))
    {
        bin_dirs.push(own.to_path_buf());
    }
    CniOptions {
        conf_dir: config.network.conf_dir.clone(),
        bin_dirs,
        cache_dir: config.root.join("cni"),
        ..CniOptions::default()
    }
}

/// The root lock. A predecessor killed a moment ago may still share the lock through a
/// child it forked that has not yet exec'd (the fd is close-on-exec): wait a little for that
/// before reporting another criusd.
async fn acquire_root_lock(root: &Path) -> Result<crius_state::RootLock> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match crius_state::RootLock::acquire(root) {
            Err(crius_state::StateError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            r => return Ok(r?),
        }
    }
}

async fn wait_for_signal() -> Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Binds the CRI socket: parent directories created, a stale socket replaced (we hold the
/// root lock, so no other criusd owns it), mode 0660 from the start.
fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(parent) = path.parent() {
        crius_state::create_dir_all(parent, 0o711)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", path.display()));
        }
    }
    // Bound in a private directory with its final mode, then moved into place: no moment
    // where anyone else could connect.
    let listener = crius_state::bind_private_socket(path, 0o660)
        .with_context(|| format!("binding {}", path.display()))?;
    Ok(tokio::net::UnixListener::from_std(listener)?)
}

/// The `[registries."host"]` tables as the registry client takes them.
fn registry_hosts(config: &Config) -> BTreeMap<String, crius_registry::HostOptions> {
    config
        .registries
        .iter()
        .map(|(host, r)| {
            let options = crius_registry::HostOptions {
                mirrors: r.mirrors.clone(),
                insecure: r.insecure,
                skip_verify: r.skip_verify,
                ca_file: r.ca_file.clone(),
                client_cert: r.client_cert.clone(),
                client_key: r.client_key.clone(),
                fallback_to_upstream: r.fallback_to_upstream,
                mirror_credentials: r.mirror_credentials,
                token_realms: r.token_realms.clone(),
            };
            (host.clone(), options)
        })
        .collect()
}
