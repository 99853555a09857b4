//! A `criusd` under test: temp root/state dirs, a socket, a log file, gRPC clients.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crius_proto::v1::images_client::ImagesClient;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tempfile::TempDir;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The criusd binary: `PathBuf::from(env!("CARGO_BIN_EXE_criusd"))` in the caller.
    pub bin: PathBuf,
    /// The whole config file. `root`, `state` and `listen` are passed as flags, don't set them.
    pub config_toml: String,
    /// `--log-level`.
    pub log_level: String,
    /// Extra command-line arguments, appended after the standard ones.
    pub extra_args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// How long to wait for readiness.
    pub ready_timeout: Duration,
    /// The state directory's name inside the daemon's temp dir (a long one tests paths that
    /// outgrow `sockaddr_un`).
    pub state_name: String,
    /// Run the daemon inside this network namespace (a file such as `/run/netns/NAME`),
    /// entered with `nsenter --net`, which execs the daemon: its pid stays the child's.
    pub netns: Option<PathBuf>,
}

impl DaemonOptions {
    /// Empty config, `debug` logging, 30 s readiness timeout.
    pub fn new(bin: impl Into<PathBuf>) -> DaemonOptions {
        DaemonOptions {
            bin: bin.into(),
            config_toml: String::new(),
            log_level: "debug".into(),
            extra_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            state_name: "state".into(),
            netns: None,
        }
    }
    pub fn netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }
    pub fn config(mut self, toml: impl Into<String>) -> Self {
        self.config_toml = toml.into();
        self
    }
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }
    pub fn state_name(mut self, name: &str) -> Self {
        self.state_name = name.into();
        self
    }
}

/// A config TOML that sends `docker.io` (and `registry_host` itself) to `mirror_url` over plain
/// HTTP, with a pull progress timeout. Append more tables as needed.
pub fn mirror_config(mirror_url: &str, pull_progress_timeout: &str) -> String {
    format!(
        "[image]\npull_progress_timeout = \"{pull_progress_timeout}\"\n\n\
         [registries.\"docker.io\"]\nmirrors = [\"{mirror_url}\"]\n"
    )
}

/// A gRPC channel to a server on the Unix socket `path` (reconnects go to the same path).
pub async fn uds_channel(path: &Path) -> Result<Channel> {
    let path = path.to_path_buf();
    let ch = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(ch)
}

/// A running criusd. Drop kills it (SIGKILL), kills processes still referring to its temp
/// dir, unmounts everything below it (deepest first, lazily) and removes it.
pub struct Daemon {
    opts: DaemonOptions,
    dir: Option<TempDir>,
    child: Option<Child>,
}

impl Daemon {
    /// Creates temp dirs, writes the config, spawns criusd and waits until `Version` answers.
    pub async fn start(opts: DaemonOptions) -> Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("crius-testkit-daemon-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("root"))?;
        std::fs::create_dir_all(dir.path().join(&opts.state_name))?;
        let config = with_test_network(dir.path(), &with_test_cgroup_driver(&opts.config_toml))?;
        std::fs::write(dir.path().join("config.toml"), config)?;
        let mut d = Daemon {
            opts,
            dir: Some(dir),
            child: None,
        };
        d.spawn_and_wait().await?;
        Ok(d)
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("daemon dir").path()
    }

    /// The temp dir holding root/, state/, the socket, config and log.
    pub fn base_dir(&self) -> &Path {
        self.dir()
    }
    pub fn socket(&self) -> PathBuf {
        self.dir().join("crius.sock")
    }
    /// `unix:///…/crius.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir().join(&self.opts.state_name)
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("config.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("criusd.log")
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `n` lines of the daemon log (stdout and stderr of every start).
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(self.socket());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(&self.opts.bin);
                c
            }
            None => Command::new(&self.opts.bin),
        };
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("--listen")
            .arg(self.socket())
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--log-level")
            .arg(&self.opts.log_level)
            .args(&self.opts.extra_args)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.opts.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + self.opts.ready_timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                self.child = None;
                bail!(
                    "criusd exited during start-up: {status}\n--- log tail ---\n{}",
                    self.log_tail(40)
                );
            }
            if self.socket().exists() && self.version_ok().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "criusd not ready after {:?}\n--- log tail ---\n{}",
                    self.opts.ready_timeout,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn version_ok(&self) -> bool {
        match self.runtime().await {
            Ok(mut rt) => rt
                .version(k8s_cri::v1::VersionRequest {
                    version: "v1".into(),
                })
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    /// A gRPC channel over the daemon's Unix socket.
    pub async fn channel(&self) -> Result<Channel> {
        uds_channel(&self.socket()).await
    }

    pub async fn runtime(&self) -> Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }
    pub async fn images(&self) -> Result<ImageServiceClient<Channel>> {
        Ok(ImageServiceClient::new(self.channel().await?))
    }
    /// crius's internal `crius.v1.Images` service.
    pub async fn crius_images(&self) -> Result<ImagesClient<Channel>> {
        Ok(ImagesClient::new(self.channel().await?))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit (SIGKILL after that and fail).
    pub async fn sigterm_and_wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut c = self.child.take().context("criusd is not running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "criusd did not exit within {timeout:?} of SIGTERM\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts criusd again on the same root, state, config and socket (kills it first if it
    /// still runs).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn_and_wait().await
    }

    /// Replaces the config file (takes effect at the next [`Daemon::restart`]).
    pub fn set_config(&mut self, toml: &str) -> Result<()> {
        self.opts.config_toml = toml.into();
        std::fs::write(self.config_path(), with_test_network(self.dir(), toml)?)?;
        Ok(())
    }

    /// Runs a criusctl binary with `--runtime-endpoint <socket>` then `args`.
    pub fn criusctl(&self, bin: impl AsRef<Path>, args: &[&str]) -> Output {
        Command::new(bin.as_ref())
            .arg("--runtime-endpoint")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.as_ref().display()))
    }
}

/// The VM stage (hack/test-vm.sh) runs the same tests under each cgroup driver: it names the
/// driver in `CRIUS_TEST_CGROUP_DRIVER`, and every daemon whose test did not choose one gets it.
fn with_test_cgroup_driver(config: &str) -> String {
    with_cgroup_driver(
        config,
        std::env::var("CRIUS_TEST_CGROUP_DRIVER").ok().as_deref(),
    )
}

fn with_cgroup_driver(config: &str, driver: Option<&str>) -> String {
    match driver {
        Some(driver) if !driver.is_empty() && !config.contains("cgroup_driver") => {
            // A top-level key: it must come before the config's first table.
            format!("cgroup_driver = \"{driver}\"\n{config}")
        }
        _ => config.to_string(),
    }
}

/// A daemon under test must never read or write the host's /etc/cni/net.d: unless the test's
/// config has a `[network]` table of its own, pods get a loopback-only network from a conf
/// dir inside the daemon's temp dir (Debian's reference `loopback` plugin).
fn with_test_network(dir: &Path, config: &str) -> Result<String> {
    if config.contains("[network]") {
        return Ok(config.to_string());
    }
    let conf_dir = dir.join("cni-conf");
    std::fs::create_dir_all(&conf_dir)?;
    std::fs::write(
        conf_dir.join("10-loopback.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "crius-test-lo", "plugins": [{"type": "loopback"}]}"#,
    )?;
    Ok(format!(
        "{config}\n[network]\nconf_dir = \"{}\"\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\nwrite_default_config = false\n",
        conf_dir.display()
    ))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let Some(dir) = self.dir.take() else { return };
        // After the kill (the log is complete), before anything is removed.
        if let Some(dest) = crate::keep_logs::dest_for_current_test() {
            let state = dir.path().join(&self.opts.state_name);
            if let Err(e) = crate::keep_logs::copy_daemon_logs(dir.path(), &state, &dest) {
                eprintln!("crius-testkit: keeping logs in {}: {e}", dest.display());
            }
        }
        // Containers, shims and the like started by the daemon.
        for p in crate::cleanup::processes_referring_to(dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Pod processes (crius-init, containers) live in namespaces pinned under the dir.
        crate::cleanup::kill_processes_in_pinned_namespaces(dir.path());
        let left = crate::cleanup::unmount_all_under(dir.path());
        if !left.is_empty() {
            eprintln!(
                "crius-testkit: could not unmount {left:?}; leaving {}",
                dir.path().display()
            );
            let _ = dir.keep();
            return;
        }
        if let Err(e) = dir.close() {
            eprintln!("crius-testkit: removing daemon dir: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_cgroup_driver;

    #[test]
    fn cgroup_driver_goes_before_the_first_table_unless_the_test_chose_one() {
        let cfg = "[image]\npull_progress_timeout = \"5s\"\n";
        let out = with_cgroup_driver(cfg, Some("systemd"));
        assert_eq!(out, format!("cgroup_driver = \"systemd\"\n{cfg}"));

        let chosen = "cgroup_driver = \"cgroupfs\"\n";
        assert_eq!(with_cgroup_driver(chosen, Some("systemd")), chosen);
        assert_eq!(with_cgroup_driver(cfg, None), cfg);
        assert_eq!(with_cgroup_driver(cfg, Some("")), cfg);
    }
}
