//! The operations criusd calls: ADD (with rollback), DEL (from the cache), CHECK, STATUS, GC
//! and the network-readiness check. All of them block; call them from `spawn_blocking`.
//!
//! Callers serialize operations on one attachment (one pod); different pods run in parallel.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::cache::{Cache, CacheEntry};
use crate::conf::{self, DirStamp, NetworkConfigList};
use crate::error::CniError;
use crate::exec::{self, CniCommand, ExecRequest, PluginExec, RawExec};
use crate::types::{Attachment, NetworkResult, PodArgs, RuntimeConfig};

/// Where the manager finds configs and plugins and keeps its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    /// Default `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
    /// Searched in order; default `/opt/cni/bin` only. Also passed to plugins as CNI_PATH.
    pub bin_dirs: Vec<PathBuf>,
    /// Default `/var/lib/crius/cni`; results live in `<cache_dir>/results`.
    pub cache_dir: PathBuf,
    /// Per plugin call; default 60 s.
    pub plugin_timeout: Duration,
}

impl Default for CniOptions {
    fn default() -> Self {
        CniOptions {
            conf_dir: PathBuf::from(conf::DEFAULT_CONF_DIR),
            bin_dirs: vec![PathBuf::from(exec::DEFAULT_BIN_DIR)],
            cache_dir: PathBuf::from("/var/lib/crius/cni"),
            plugin_timeout: exec::DEFAULT_TIMEOUT,
        }
    }
}

impl CniOptions {
    /// `/opt/cni/bin` first, then `extra` in order (duplicates dropped).
    pub fn with_extra_bin_dirs(mut self, extra: impl IntoIterator<Item = PathBuf>) -> Self {
        for d in extra {
            if !self.bin_dirs.contains(&d) {
                self.bin_dirs.push(d);
            }
        }
        self
    }
}

/// The kubelet's view of the network condition (RuntimeStatus `NetworkReady`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// What a plugin answers to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginVersionInfo {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub supported_versions: Vec<String>,
}

struct Loaded {
    stamp: Option<DirStamp>,
    network: Result<Arc<NetworkConfigList>, CniError>,
}

/// The CNI client for one conf dir.
pub struct CniManager {
    opts: CniOptions,
    exec: Arc<dyn PluginExec>,
    cache: Cache,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for CniManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CniManager")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// One attachment's parameters as a call needs them (from the request or from the cache).
struct Call<'a> {
    container_id: &'a str,
    netns: String,
    ifname: &'a str,
    args: &'a PodArgs,
    caps: &'a RuntimeConfig,
}

impl CniManager {
    /// A manager running the real plugin binaries.
    pub fn new(opts: CniOptions) -> CniManager {
        CniManager::with_exec(opts, Arc::new(RawExec))
    }

    /// A manager running plugins through `exec` (tests inject failures this way).
    pub fn with_exec(opts: CniOptions, exec: Arc<dyn PluginExec>) -> CniManager {
        let cache = Cache::new(&opts.cache_dir);
        CniManager {
            opts,
            exec,
            cache,
            loaded: Mutex::new(Loaded {
                stamp: None,
                network: Err(CniError::NoConfig {
                    dir: PathBuf::new(),
                }),
            }),
        }
    }

    pub fn options(&self) -> &CniOptions {
        &self.opts
    }

    /// The default network, re-read from the conf dir when the dir changed since last time.
    pub fn network(&self) -> Result<Arc<NetworkConfigList>, CniError> {
        let stamp = DirStamp::read(&self.opts.conf_dir);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.stamp.as_ref() != Some(&stamp) {
            let network = conf::load_default_network(&self.opts.conf_dir).map(Arc::new);
            match &network {
                Ok(n) => info!(
                    network = %n.name,
                    file = ?n.source,
                    "loaded CNI network config"
                ),
                Err(err) => warn!(%err, "no usable CNI network config"),
            }
            *loaded = Loaded {
                stamp: Some(stamp),
                network,
            };
        }
        loaded.network.clone()
    }

    /// Ok when pods can be networked: a valid config is loaded, every plugin of its chain is
    /// installed and, for CNI 1.1 configs, every plugin answers STATUS.
    pub fn status(&self) -> Result<(), CniError> {
        let network = self.network()?;
        for plugin in &network.plugins {
            self.exec.find(&plugin.plugin_type, &self.opts.bin_dirs)?;
        }
        if conf::compare_versions(&network.cni_version, "1.1.0").is_ge() {
            self.plugin_status(&network)?;
        }
        Ok(())
    }

    /// [`CniManager::status`] as the kubelet's NetworkReady condition.
    pub fn network_status(&self) -> NetworkStatus {
        match self.status() {
            Ok(()) => NetworkStatus {
                ready: true,
                reason: String::new(),
                message: String::new(),
            },
            Err(err) => NetworkStatus {
                ready: false,
                reason: err.reason().to_string(),
                message: format!("Network plugin returns error: {err}"),
            },
        }
    }

    /// Attaches the pod: ADD on each plugin in order, each getting the previous one's result.
    /// If one fails, DEL runs for the whole chain before the error is returned. The config and
    /// the result are cached for DEL and CHECK.
    pub fn add(&self, att: &Attachment) -> Result<NetworkResult, CniError> {
        let started = std::time::Instant::now();
        let r = self.add_chain(att);
        crius_metrics::global().cni("add", r.is_ok(), started.elapsed());
        r
    }

    fn add_chain(&self, att: &Attachment) -> Result<NetworkResult, CniError> {
        let network = self.network()?;
        let call = Call {
            container_id: &att.container_id,
            netns: att.netns.display().to_string(),
            ifname: &att.ifname,
            args: &att.args,
            caps: &att.capabilities,
        };
        // Record the attachment before touching anything, so a crash part-way still leaves
        // DEL the config it needs.
        let mut entry = CacheEntry::new(
            &network.name,
            &att.container_id,
            &att.ifname,
            &call.netns,
            att.args.clone(),
            att.capabilities.clone(),
            network.to_value(),
        );
        self.cache.save(&entry)?;

        let mut prev: Option<NetworkResult> = None;
        for (index, plugin) in network.plugins.iter().enumerate() {
            let step = self
                .run(
                    &network,
                    plugin,
                    CniCommand::Add,
                    &call,
                    prev.as_ref().map(|r| &r.raw),
                )
                .and_then(|stdout| exec::parse_result(&plugin.plugin_type, &stdout));
            match step {
                Ok(result) => prev = Some(result),
                Err(add_err) => {
                    warn!(
                        container_id = %att.container_id,
                        plugin = %plugin.plugin_type,
                        err = %add_err,
                        "CNI ADD failed, rolling back"
                    );
                    let del_call = Call {
                        netns: usable_netns(&att.netns),
                        ..call
                    };
                    let prev_raw = prev.as_ref().map(|r| &r.raw);
                    return match self.rollback(&network, &del_call, prev_raw, index) {
                        Ok(()) => {
                            self.cache.remove(&entry)?;
                            Err(add_err)
                        }
                        Err(del_err) => Err(CniError::Rollback {
                            add: Box::new(add_err),
                            del: Box::new(del_err),
                        }),
                    };
                }
            }
        }
        let result = prev.expect("a config list has at least one plugin");
        entry.result = Some(result.raw.clone());
        self.cache.save(&entry)?;
        Ok(result)
    }

    /// Detaches the pod: DEL on each plugin in reverse order, with the config and the result
    /// cached by ADD. A missing netns is fine, and so is a second DEL. Without a cache entry
    /// the current config is used (libcni does the same); without either there is nothing to
    /// undo.
    pub fn del(&self, att: &Attachment) -> Result<(), CniError> {
        let started = std::time::Instant::now();
        let r = self.del_attachment(att);
        crius_metrics::global().cni("del", r.is_ok(), started.elapsed());
        r
    }

    fn del_attachment(&self, att: &Attachment) -> Result<(), CniError> {
        let current = self.network();
        let entry = self.cache.find(
            current.as_ref().ok().map(|n| n.name.as_str()),
            &att.container_id,
            &att.ifname,
        )?;
        let netns = usable_netns(&att.netns);
        match entry {
            Some(entry) => {
                let network = self.cached_network(&entry)?;
                let args = if att.args == PodArgs::default() {
                    &entry.pod_args
                } else {
                    &att.args
                };
                let call = Call {
                    container_id: &att.container_id,
                    netns,
                    ifname: &att.ifname,
                    args,
                    caps: &entry.capability_args,
                };
                self.del_chain(&network, &call, entry.result.as_ref())?;
                self.cache.remove(&entry)
            }
            None => {
                let network = match current {
                    Ok(n) => n,
                    Err(err) => {
                        warn!(
                            container_id = %att.container_id,
                            %err,
                            "CNI DEL without a cached attachment or a config: nothing to do"
                        );
                        return Ok(());
                    }
                };
                let call = Call {
                    container_id: &att.container_id,
                    netns,
                    ifname: &att.ifname,
                    args: &att.args,
                    caps: &att.capabilities,
                };
                self.del_chain(&network, &call, None)
            }
        }
    }

    /// CHECK on each plugin in order with the cached result (CNI ≥ 0.4.0).
    pub fn check(&self, att: &Attachment) -> Result<(), CniError> {
        let current = self.network();
        let key = format!("{}/{}", att.container_id, att.ifname);
        let entry = self
            .cache
            .find(
                current.as_ref().ok().map(|n| n.name.as_str()),
                &att.container_id,
                &att.ifname,
            )?
            .ok_or_else(|| CniError::NotAttached { key: key.clone() })?;
        let result = entry.result.clone().ok_or(CniError::NotAttached { key })?;
        let network = self.cached_network(&entry)?;
        if conf::compare_versions(&network.cni_version, "0.4.0").is_lt() {
            return Err(CniError::Unsupported {
                operation: "CHECK".into(),
                version: network.cni_version.clone(),
            });
        }
        if network.disable_check {
            return Ok(());
        }
        let call = Call {
            container_id: &att.container_id,
            netns: att.netns.display().to_string(),
            ifname: &att.ifname,
            args: &att.args,
            caps: &entry.capability_args,
        };
        for plugin in &network.plugins {
            self.run(&network, plugin, CniCommand::Check, &call, Some(&result))?;
        }
        Ok(())
    }

    /// The result cached by the ADD of this attachment, if any (PodSandboxStatus after a
    /// restart).
    pub fn cached_result(&self, att: &Attachment) -> Result<Option<NetworkResult>, CniError> {
        let entry = self.cache.find(None, &att.container_id, &att.ifname)?;
        match entry.and_then(|e| e.result) {
            Some(raw) => NetworkResult::from_value("cache", raw).map(Some),
            None => Ok(None),
        }
    }

    /// VERSION of one plugin binary.
    pub fn version(&self, plugin_type: &str) -> Result<PluginVersionInfo, CniError> {
        let path = self.exec.find(plugin_type, &self.opts.bin_dirs)?;
        let req = ExecRequest {
            plugin: plugin_type.to_string(),
            path,
            env: exec::build_env(CniCommand::Version, "", "", "", None, &self.opts.bin_dirs),
            stdin: json!({"cniVersion": "1.1.0"}).to_string().into_bytes(),
            timeout: self.opts.plugin_timeout,
        };
        let stdout = exec::invoke(self.exec.as_ref(), &req)?;
        serde_json::from_slice(&stdout).map_err(|e| CniError::BadResult {
            plugin: plugin_type.to_string(),
            message: format!("VERSION: {e}"),
        })
    }

    /// CNI 1.1 STATUS on each plugin of `network`; a no-op for older versions.
    pub fn plugin_status(&self, network: &NetworkConfigList) -> Result<(), CniError> {
        if conf::compare_versions(&network.cni_version, "1.1.0").is_lt() {
            return Ok(());
        }
        for plugin in &network.plugins {
            let path = self.exec.find(&plugin.plugin_type, &self.opts.bin_dirs)?;
            let conf =
                exec::build_plugin_config(plugin, &network.name, &network.cni_version, None, None);
            let req = ExecRequest {
                plugin: plugin.plugin_type.clone(),
                path,
                env: exec::build_env(CniCommand::Status, "", "", "", None, &self.opts.bin_dirs),
                stdin: Value::Object(conf).to_string().into_bytes(),
                timeout: self.opts.plugin_timeout,
            };
            exec::invoke(self.exec.as_ref(), &req)?;
        }
        Ok(())
    }

    /// Garbage collection, as libcni's GCNetworkList: every cached attachment not in `valid`
    /// (container id, ifname) gets a DEL; then, for a CNI 1.1 config that allows it, each
    /// plugin gets GC with the valid attachments. Every failure is logged; the first is
    /// returned after all were tried.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<(), CniError> {
        let mut first_err = None;
        for entry in self.cache.list()? {
            let keep = valid
                .iter()
                .any(|(c, i)| *c == entry.container_id && *i == entry.if_name);
            if keep {
                continue;
            }
            let att = Attachment {
                container_id: entry.container_id.clone(),
                netns: PathBuf::from(&entry.netns),
                ifname: entry.if_name.clone(),
                args: entry.pod_args.clone(),
                capabilities: entry.capability_args.clone(),
            };
            if let Err(err) = self.del(&att) {
                warn!(container_id = %entry.container_id, %err, "CNI GC: DEL of a stale attachment failed");
                first_err.get_or_insert(err);
            }
        }
        if let Ok(network) = self.network()
            && conf::compare_versions(&network.cni_version, "1.1.0").is_ge()
            && !network.disable_gc
        {
            let attachments: Vec<Value> = valid
                .iter()
                .map(|(c, i)| json!({"containerID": c, "ifname": i}))
                .collect();
            for plugin in &network.plugins {
                let mut conf = exec::build_plugin_config(
                    plugin,
                    &network.name,
                    &network.cni_version,
                    None,
                    None,
                );
                conf.insert(
                    "cni.dev/valid-attachments".into(),
                    Value::Array(attachments.clone()),
                );
                let res = self
                    .exec
                    .find(&plugin.plugin_type, &self.opts.bin_dirs)
                    .and_then(|path| {
                        let req = ExecRequest {
                            plugin: plugin.plugin_type.clone(),
                            path,
                            env: exec::build_env(
                                CniCommand::Gc,
                                "",
                                "",
                                "",
                                None,
                                &self.opts.bin_dirs,
                            ),
                            stdin: Value::Object(conf).to_string().into_bytes(),
                            timeout: self.opts.plugin_timeout,
                        };
                        exec::invoke(self.exec.as_ref(), &req)
                    });
                if let Err(err) = res {
                    warn!(plugin = %plugin.plugin_type, %err, "CNI GC failed");
                    first_err.get_or_insert(err);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn cached_network(&self, entry: &CacheEntry) -> Result<NetworkConfigList, CniError> {
        let path = self
            .cache
            .path(&entry.network_name, &entry.container_id, &entry.if_name);
        let bytes = serde_json::to_vec(&entry.config).unwrap_or_default();
        NetworkConfigList::from_bytes(&path, &bytes)
    }

    /// DEL for the whole chain, last plugin first. Stops at the first failure (the cache is
    /// kept so a retry sees the same config).
    fn del_chain(
        &self,
        network: &NetworkConfigList,
        call: &Call<'_>,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        // CNI < 0.4.0 plugins get no prevResult on DEL.
        let prev = if conf::compare_versions(&network.cni_version, "0.4.0").is_ge() {
            prev
        } else {
            None
        };
        for plugin in network.plugins.iter().rev() {
            self.run(network, plugin, CniCommand::Del, call, prev)?;
        }
        Ok(())
    }

    /// The DEL after a failed ADD: every plugin, last first, carrying on past failures (the
    /// first is returned) so one broken plugin does not strand what the others set up. A
    /// plugin that is not installed at or after `failed` never ran, so it is skipped.
    fn rollback(
        &self,
        network: &NetworkConfigList,
        call: &Call<'_>,
        prev: Option<&Value>,
        failed: usize,
    ) -> Result<(), CniError> {
        let prev = if conf::compare_versions(&network.cni_version, "0.4.0").is_ge() {
            prev
        } else {
            None
        };
        let mut first_err = None;
        for (index, plugin) in network.plugins.iter().enumerate().rev() {
            match self.run(network, plugin, CniCommand::Del, call, prev) {
                Ok(_) => {}
                Err(CniError::PluginNotFound { .. }) if index >= failed => {}
                Err(err) => {
                    warn!(plugin = %plugin.plugin_type, %err, "CNI rollback DEL failed");
                    first_err.get_or_insert(err);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn run(
        &self,
        network: &NetworkConfigList,
        plugin: &conf::PluginConfig,
        command: CniCommand,
        call: &Call<'_>,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let path = self.exec.find(&plugin.plugin_type, &self.opts.bin_dirs)?;
        let conf = exec::build_plugin_config(
            plugin,
            &network.name,
            &network.cni_version,
            prev,
            Some(call.caps),
        );
        let req = ExecRequest {
            plugin: plugin.plugin_type.clone(),
            path,
            env: exec::build_env(
                command,
                call.container_id,
                &call.netns,
                call.ifname,
                Some((call.args, call.container_id)),
                &self.opts.bin_dirs,
            ),
            stdin: Value::Object(conf).to_string().into_bytes(),
            timeout: self.opts.plugin_timeout,
        };
        exec::invoke(self.exec.as_ref(), &req)
    }
}

/// The netns path for DEL: empty when it is unset or already gone (plugins then only release
/// what lives outside the pod, like IPAM leases and host rules).
fn usable_netns(netns: &Path) -> String {
    if netns.as_os_str().is_empty() || !netns.exists() {
        String::new()
    } else {
        netns.display().to_string()
    }
}
