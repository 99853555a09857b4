//! crius configuration.
//!
//! The file is TOML (`/etc/crius/crius.toml` by default). Every table rejects unknown keys so a
//! typo is an error naming the key instead of a silently ignored setting. Command-line flags are
//! applied on top by the daemon (see [`Config::apply_overrides`]).

mod duration;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crius_error::{ErrorKind, HasKind};
use serde::{Deserialize, Serialize};

pub use duration::{HumanDuration, parse_duration};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/crius/crius.toml";
pub const DEFAULT_ROOT: &str = "/var/lib/crius";
pub const DEFAULT_STATE: &str = "/run/crius";
pub const DEFAULT_LISTEN: &str = "/run/crius/crius.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {field}: {message}")]
    Invalid { field: String, message: String },
}

impl HasKind for ConfigError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    /// The kubelet's default choice: systemd when systemd runs the host, else cgroupfs.
    pub fn detect() -> CgroupDriver {
        if Path::new("/run/systemd/system").is_dir()
            && std::fs::read_to_string("/proc/1/comm")
                .map(|c| c.trim() == "systemd")
                .unwrap_or(false)
        {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        }
    }
}

/// The whole configuration, as effective after defaults and flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: images, layers, metadata.
    pub root: PathBuf,
    /// Runtime state that does not survive a reboot.
    pub state: PathBuf,
    /// The CRI Unix socket.
    pub listen: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    /// `None` means detect at start-up.
    pub cgroup_driver: Option<CgroupDriver>,
    /// How long in-flight RPCs may run after SIGTERM before the daemon exits anyway.
    pub shutdown_timeout: HumanDuration,
    pub image: ImageConfig,
    pub network: NetworkConfig,
    /// The runtime handler used when a pod names none; default: `crun` if present, else `runc`.
    pub default_runtime: Option<String>,
    /// Runtime handlers (RuntimeClass handlers) by name. `runc` and `crun` are added
    /// automatically when found in PATH.
    pub runtimes: BTreeMap<String, RuntimeHandlerConfig>,
    /// Per-registry settings keyed by registry host (`docker.io`, `localhost:5000`, ...).
    pub registries: BTreeMap<String, RegistryHostConfig>,
    pub exec: ExecConfig,
    /// The streaming server behind Exec, Attach and PortForward.
    pub streaming: StreamingConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
}

/// Bounds on ExecSync: calls beyond them get ResourceExhausted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// ExecSync calls running at once in one container.
    pub max_per_container: usize,
    /// ExecSync calls running at once on the node (keep below tokio's 512 blocking threads).
    pub max_total: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            max_per_container: 64,
            max_total: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Layers downloaded in parallel within one pull.
    pub max_concurrent_downloads: usize,
    /// A pull that receives no byte for this long fails.
    pub pull_progress_timeout: HumanDuration,
    /// Images reported as `pinned` (never garbage collected by the kubelet).
    pub pinned_images: Vec<String>,
    /// The sandbox ("pause") image, if any; always pinned.
    pub sandbox_image: Option<String>,
    /// Ceiling on the file data one layer may unpack, in bytes (a decompression bomb fails).
    pub max_layer_unpacked_bytes: u64,
    /// Ceiling on the tar entries of one layer.
    pub max_layer_entries: u64,
    /// Hosts (`host` or `host:port`) that foreign layer `urls` may be fetched from; by default
    /// none, so an image cannot direct a request anywhere but its registry.
    pub foreign_layer_hosts: Vec<String>,
}

/// Pod networking through CNI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Network configurations (`.conflist`, `.conf`, `.json`); the lowest file name wins.
    pub conf_dir: PathBuf,
    /// Where plugins are looked for, in order (crius's own plugins are found next to criusd).
    pub bin_dirs: Vec<PathBuf>,
    /// When the conf dir holds no configuration, write crius's default one there.
    pub write_default_config: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            write_default_config: true,
        }
    }
}

/// One OCI runtime a pod can ask for by handler name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandlerConfig {
    /// The runc-compatible binary.
    pub path: PathBuf,
}

/// Settings for one registry host, in the spirit of containerd's `hosts.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryHostConfig {
    /// Endpoints tried in order before the registry itself, e.g. `http://localhost:5000` or
    /// `https://mirror.example/prefix` (a path prefix is put in front of the repository).
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this registry (its mirrors carry their own scheme).
    pub insecure: bool,
    /// Accept any TLS certificate (testing only).
    pub skip_verify: bool,
    /// Extra CA bundle (PEM) trusted for this registry and its mirrors.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// When false the registry itself is not tried after its mirrors (air-gapped nodes).
    pub fallback_to_upstream: bool,
    /// Send the pull's credentials to the mirrors too: to HTTPS mirrors, and to plain HTTP
    /// mirrors only when the mirror's own registry table says `insecure = true`.
    pub mirror_credentials: bool,
    /// Token services (hosts) besides the registry itself that may receive the credentials
    /// when a token is fetched; HTTPS only. `auth.docker.io` is built in for docker.io.
    pub token_realms: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            listen: DEFAULT_LISTEN.into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            cgroup_driver: None,
            shutdown_timeout: HumanDuration(Duration::from_secs(10)),
            image: ImageConfig::default(),
            network: NetworkConfig::default(),
            default_runtime: None,
            runtimes: BTreeMap::new(),
            registries: BTreeMap::new(),
            exec: ExecConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            max_concurrent_downloads: 3,
            pull_progress_timeout: HumanDuration(Duration::from_secs(60)),
            pinned_images: Vec::new(),
            sandbox_image: None,
            max_layer_unpacked_bytes: 64 << 30,
            max_layer_entries: 10_000_000,
            foreign_layer_hosts: Vec::new(),
        }
    }
}

/// Values given on the command line; each one that is set wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub listen: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// The socket path of an endpoint written as the kubelet and crictl write them
/// (`unix:///run/crius/crius.sock`) or as a plain path.
pub fn socket_path(field: &str, endpoint: &Path) -> Result<PathBuf, ConfigError> {
    let Some(text) = endpoint.to_str() else {
        return Ok(endpoint.to_path_buf());
    };
    match text.split_once("://") {
        None => Ok(endpoint.to_path_buf()),
        Some(("unix", path)) => Ok(PathBuf::from(path)),
        Some((scheme, _)) => Err(ConfigError::Invalid {
            field: field.into(),
            message: format!(
                "{text:?}: only unix:// endpoints are served (scheme {scheme:?}); write unix:///path or /path"
            ),
        }),
    }
}

impl Config {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            // toml's message names the unknown key and where it is.
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.listen = socket_path("listen", &config.listen)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path`. A missing file is only acceptable when `required` is false (the default
    /// path): then the embedded defaults are used.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn apply_overrides(&mut self, o: Overrides) -> Result<(), ConfigError> {
        if let Some(v) = o.root {
            self.root = v;
        }
        if let Some(v) = o.state {
            self.state = v;
        }
        if let Some(v) = o.listen {
            self.listen = socket_path("--listen", &v)?;
        }
        if let Some(v) = o.log_level {
            self.log_level = v;
        }
        if let Some(v) = o.log_format {
            self.log_format = v;
        }
        self.validate()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: &str| {
            Err(ConfigError::Invalid {
                field: field.into(),
                message: message.into(),
            })
        };
        for (field, path) in [
            ("root", &self.root),
            ("state", &self.state),
            ("listen", &self.listen),
        ] {
            if !path.is_absolute() {
                return invalid(
                    field,
                    &format!("{} is not an absolute path", path.display()),
                );
            }
        }
        if self.image.max_concurrent_downloads == 0 {
            return invalid("image.max_concurrent_downloads", "must be at least 1");
        }
        if self.image.pull_progress_timeout.0.is_zero() {
            return invalid("image.pull_progress_timeout", "must be greater than zero");
        }
        if self.image.max_layer_unpacked_bytes == 0 {
            return invalid("image.max_layer_unpacked_bytes", "must be at least 1");
        }
        if self.image.max_layer_entries == 0 {
            return invalid("image.max_layer_entries", "must be at least 1");
        }
        for (name, rt) in &self.runtimes {
            if name.is_empty() || !rt.path.is_absolute() {
                return invalid(
                    &format!("runtimes.{name:?}.path"),
                    "must be an absolute path",
                );
            }
        }
        if let Some(d) = self
            .default_runtime
            .as_ref()
            .filter(|d| !self.runtimes.contains_key(*d) && !["runc", "crun"].contains(&d.as_str()))
        {
            return invalid(
                "default_runtime",
                &format!("{d:?} is not a configured runtime"),
            );
        }
        for (host, reg) in &self.registries {
            if host.is_empty() || host.contains('/') {
                return invalid(
                    &format!("registries.{host:?}"),
                    "must be a registry host[:port]",
                );
            }
            for m in &reg.mirrors {
                if !(m.starts_with("http://") || m.starts_with("https://")) {
                    return invalid(
                        &format!("registries.{host:?}.mirrors"),
                        &format!("{m:?} must start with http:// or https://"),
                    );
                }
            }
            if reg.client_cert.is_some() != reg.client_key.is_some() {
                return invalid(
                    &format!("registries.{host:?}.client_cert"),
                    "client_cert and client_key must be set together",
                );
            }
        }
        self.streaming.validate()?;
        Ok(())
    }

    /// Every runtime handler: the configured ones plus `runc`/`crun` found in PATH.
    pub fn runtime_handlers(&self) -> BTreeMap<String, PathBuf> {
        let mut out: BTreeMap<String, PathBuf> = self
            .runtimes
            .iter()
            .map(|(k, v)| (k.clone(), v.path.clone()))
            .collect();
        for name in ["crun", "runc"] {
            if let (false, Some(p)) = (out.contains_key(name), find_in_path(name)) {
                out.insert(name.to_string(), p);
            }
        }
        out
    }

    /// The handler used for `""`: configured, else crun, else runc.
    pub fn default_runtime_handler(&self) -> Option<String> {
        self.default_runtime_handler_of(&self.runtime_handlers())
    }

    /// [`Config::default_runtime_handler`] among `handlers` already found.
    pub fn default_runtime_handler_of(
        &self,
        handlers: &BTreeMap<String, PathBuf>,
    ) -> Option<String> {
        match &self.default_runtime {
            Some(d) => Some(d.clone()),
            None => ["crun", "runc"]
                .iter()
                .find(|n| handlers.contains_key(**n))
                .map(|n| n.to_string()),
        }
    }

    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.cgroup_driver.unwrap_or_else(CgroupDriver::detect)
    }

    /// The effective configuration as JSON (for `Status` verbose and `criusctl info`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["cgroup_driver"] = serde_json::to_value(self.cgroup_driver()).unwrap_or_default();
        v
    }
}

/// The first executable `name` in PATH.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl Default for RegistryHostConfig {
    fn default() -> Self {
        RegistryHostConfig {
            mirrors: Vec::new(),
            insecure: false,
            skip_verify: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            fallback_to_upstream: true,
            mirror_credentials: false,
            token_realms: Vec::new(),
        }
    }
}

/// The HTTP server the URLs of Exec, Attach and PortForward point to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// IP address to listen on; loopback by default, as only the kubelet (or crictl on the
    /// node) should reach it.
    pub address: String,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// PEM certificate chain and key: when both are set the server speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long a URL stays valid if unused.
    pub token_ttl: HumanDuration,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: "127.0.0.1".into(),
            port: 0,
            tls_cert: None,
            tls_key: None,
            token_ttl: HumanDuration(Duration::from_secs(60)),
        }
    }
}

impl StreamingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                field: field.into(),
                message,
            })
        };
        if self.address.parse::<std::net::IpAddr>().is_err() {
            return invalid(
                "streaming.address",
                format!("{:?} is not an IP address", self.address),
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid(
                "streaming.tls_cert",
                "tls_cert and tls_key must be set together".into(),
            );
        }
        if self.token_ttl.0.is_zero() {
            return invalid("streaming.token_ttl", "must be greater than zero".into());
        }
        Ok(())
    }
}

/// The Prometheus `/metrics` endpoint of the daemon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `IP:port` to serve `/metrics` on over plain HTTP; unset (the default): no endpoint.
    pub address: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(c.image.max_concurrent_downloads, 3);
        assert_eq!(c.image.pull_progress_timeout.0, Duration::from_secs(60));
    }

    #[test]
    fn image_bounds_and_credential_scopes() {
        let c = parse("").unwrap();
        assert_eq!(c.image.max_layer_unpacked_bytes, 64 << 30);
        assert_eq!(c.image.max_layer_entries, 10_000_000);
        assert!(c.image.foreign_layer_hosts.is_empty());
        let c = parse(
            r#"
            [image]
            max_layer_unpacked_bytes = 1000
            max_layer_entries = 7
            foreign_layer_hosts = ["layers.example:443"]
            [registries."docker.io"]
            mirror_credentials = true
            token_realms = ["auth.example"]
            "#,
        )
        .unwrap();
        assert_eq!(c.image.max_layer_unpacked_bytes, 1000);
        assert_eq!(c.image.max_layer_entries, 7);
        assert_eq!(c.image.foreign_layer_hosts, vec!["layers.example:443"]);
        let r = &c.registries["docker.io"];
        assert!(r.mirror_credentials);
        assert_eq!(r.token_realms, vec!["auth.example"]);
        assert!(!parse("").unwrap().registries.contains_key("docker.io"));
        for key in ["max_layer_unpacked_bytes", "max_layer_entries"] {
            let err = parse(&format!("[image]\n{key} = 0"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("image.{key}")), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("roots = \"/x\"").unwrap_err().to_string();
        assert!(err.contains("roots"), "{err}");
        let err = parse("[image]\nmax_downloads = 2").unwrap_err().to_string();
        assert!(err.contains("max_downloads"), "{err}");
        let err = parse("[registries.\"docker.io\"]\nmirror = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mirror"), "{err}");
    }

    #[test]
    fn registries_and_durations() {
        let c = parse(
            r#"
            [image]
            pull_progress_timeout = "1m30s"
            [registries."docker.io"]
            mirrors = ["http://localhost:5000"]
            "#,
        )
        .unwrap();
        assert_eq!(c.image.pull_progress_timeout.0, Duration::from_secs(90));
        let r = &c.registries["docker.io"];
        assert_eq!(r.mirrors, vec!["http://localhost:5000".to_string()]);
        assert!(r.fallback_to_upstream);
    }

    #[test]
    fn invalid_values_are_named() {
        let err = parse("[image]\nmax_concurrent_downloads = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("image.max_concurrent_downloads"), "{err}");
        let err = parse("root = \"relative\"").unwrap_err().to_string();
        assert!(err.contains("root"), "{err}");
        let err = parse("[registries.\"x\"]\nmirrors = [\"localhost:5000\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mirrors"), "{err}");
    }

    #[test]
    fn overrides_win() {
        let mut c = parse("root = \"/a\"").unwrap();
        c.apply_overrides(Overrides {
            root: Some("/b".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/b"));
    }

    #[test]
    fn listen_takes_unix_endpoints_as_the_kubelet_writes_them() {
        let c = parse("listen = \"unix:///run/x/crius.sock\"").unwrap();
        assert_eq!(c.listen, PathBuf::from("/run/x/crius.sock"));
        let mut c = parse("").unwrap();
        c.apply_overrides(Overrides {
            listen: Some("unix:///tmp/a.sock".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen, PathBuf::from("/tmp/a.sock"));
        let err = parse("listen = \"tcp://127.0.0.1:1\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen") && err.contains("unix://"), "{err}");
        // unix:// with a relative path is still refused as not absolute.
        let err = parse("listen = \"unix://x.sock\"").unwrap_err().to_string();
        assert!(err.contains("not an absolute path"), "{err}");
    }

    #[test]
    fn missing_default_file_is_fine_but_explicit_is_not() {
        let p = Path::new("/nonexistent/crius.toml");
        assert!(Config::load(p, false).is_ok());
        assert!(Config::load(p, true).is_err());
    }

    #[test]
    fn streaming_defaults_and_checks() {
        let c = parse("").unwrap();
        assert_eq!(c.streaming.address, "127.0.0.1");
        assert_eq!(c.streaming.port, 0);
        assert_eq!(c.streaming.token_ttl.0, Duration::from_secs(60));
        let c = parse("[streaming]\naddress = \"::1\"\nport = 10010\ntoken_ttl = \"30s\"").unwrap();
        assert_eq!(c.streaming.port, 10010);
        let err = parse("[streaming]\naddress = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("streaming.address"), "{err}");
        let err = parse("[streaming]\ntls_cert = \"/c.pem\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("streaming.tls_cert"), "{err}");
    }
}
