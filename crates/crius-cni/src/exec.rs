//! Running plugins per the CNI spec: finding the binary, building the environment and the
//! config on stdin, and turning the output into a result or an error.
//!
//! The process itself is behind [`PluginExec`] so tests can stand in for plugins.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::{debug, warn};

use crate::conf::PluginConfig;
use crate::error::CniError;
use crate::types::{NetworkResult, PodArgs, RuntimeConfig};

/// The default bin dir, searched first.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";

/// How long one plugin call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The CNI_COMMAND values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
            CniCommand::Status => "STATUS",
            CniCommand::Gc => "GC",
        }
    }
}

/// One plugin call, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The plugin's `type`, for errors and logs.
    pub plugin: String,
    /// The binary found in the bin dirs.
    pub path: PathBuf,
    /// The CNI_* variables (added to the daemon's own environment).
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
}

impl ExecRequest {
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn command(&self) -> &str {
        self.env_var("CNI_COMMAND").unwrap_or("")
    }
}

/// What a finished plugin process left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs plugin binaries. The real implementation is [`RawExec`]; tests substitute their own.
pub trait PluginExec: Send + Sync {
    /// Finds the binary for `plugin` in `dirs`, in order.
    fn find(&self, plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
        find_plugin(plugin, dirs)
    }

    /// Runs one call. Returns the output of a process that ran (whatever its exit code); an
    /// `Err` only when it could not be run or timed out.
    fn exec(&self, req: &ExecRequest) -> Result<ExecOutput, CniError>;
}

/// Runs the plugin binary as a child process with a deadline.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawExec;

impl PluginExec for RawExec {
    fn exec(&self, req: &ExecRequest) -> Result<ExecOutput, CniError> {
        run_with_timeout(req)
    }
}

/// The first executable regular file named `plugin` in `dirs`.
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt;
    if !plugin.contains('/') && !plugin.is_empty() {
        for dir in dirs {
            let path = dir.join(plugin);
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
            {
                return Ok(path);
            }
        }
    }
    Err(CniError::PluginNotFound {
        plugin: plugin.to_string(),
        dirs: dirs.to_vec(),
    })
}

fn run_with_timeout(req: &ExecRequest) -> Result<ExecOutput, CniError> {
    let mut cmd = Command::new(&req.path);
    cmd.envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.current_dir("/");
    // Its own process group, so a timeout also kills what it started (an IPAM plugin).
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CniError::io("run CNI plugin", &req.path, e))?;

    // Feed stdin and drain stdout/stderr on threads so a chatty plugin cannot block on a full
    // pipe while we wait for it.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = req.stdin.clone();
    let writer = std::thread::spawn(move || {
        // A plugin that exits without reading its stdin gives EPIPE: not our error.
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });

    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let status = match crius_proc::wait_timeout(&mut child, req.timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            // The plugin is gone; what it started (an IPAM plugin) goes with its group.
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            // The readers end once the pipes close; a grandchild holding them open
            // would keep them alive, so they are not joined here.
            return Err(CniError::Timeout {
                plugin: req.plugin.clone(),
                command: req.command().to_string(),
                timeout: req.timeout,
            });
        }
        Err(e) => return Err(CniError::io("wait for CNI plugin", &req.path, e)),
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(ExecOutput {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// The environment for one call: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
/// CNI_ARGS and CNI_PATH (every variable is set, empty when it does not apply).
pub fn build_env(
    command: CniCommand,
    container_id: &str,
    netns: &str,
    ifname: &str,
    args: Option<(&PodArgs, &str)>,
    bin_dirs: &[PathBuf],
) -> Vec<(String, String)> {
    let cni_path = bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    vec![
        ("CNI_COMMAND".into(), command.as_str().into()),
        ("CNI_CONTAINERID".into(), container_id.into()),
        ("CNI_NETNS".into(), netns.into()),
        ("CNI_IFNAME".into(), ifname.into()),
        (
            "CNI_ARGS".into(),
            args.map(|(a, infra)| cni_args(a, infra))
                .unwrap_or_default(),
        ),
        ("CNI_PATH".into(), cni_path),
    ]
}

/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`
pub fn cni_args(args: &PodArgs, infra_container_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        args.namespace, args.name, infra_container_id, args.uid
    )
}

/// The config a plugin reads on stdin: its object from the list with the network's `name` and
/// `cniVersion`, the previous result (chaining) and `runtimeConfig` holding only the
/// capabilities the plugin declares and the runtime has values for (libcni's buildOneConfig
/// and injectRuntimeConfig).
pub fn build_plugin_config(
    plugin: &PluginConfig,
    network_name: &str,
    cni_version: &str,
    prev_result: Option<&Value>,
    runtime: Option<&RuntimeConfig>,
) -> Map<String, Value> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(network_name.to_string()));
    conf.insert("cniVersion".into(), Value::String(cni_version.to_string()));
    // Not for the plugin: a list-level key.
    conf.remove("cniVersions");
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    if let Some(rt) = runtime {
        let mut rc = Map::new();
        for cap in &plugin.capabilities {
            if let Some(v) = rt.capability(cap) {
                rc.insert(cap.clone(), v);
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    conf
}

/// The CNI error object a failing plugin prints on stdout.
#[derive(Debug, Clone, Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Turns a finished process into its stdout (on exit 0) or the plugin's error, with the
/// plugin's own error object verbatim when it printed one.
pub fn check_output(plugin: &str, out: ExecOutput) -> Result<Vec<u8>, CniError> {
    if out.code == Some(0) {
        return Ok(out.stdout);
    }
    if let Ok(obj) = serde_json::from_slice::<ErrorObject>(&out.stdout)
        && (obj.code != 0 || !obj.msg.is_empty())
    {
        return Err(CniError::Plugin {
            plugin: plugin.to_string(),
            code: obj.code,
            msg: obj.msg,
            details: obj.details,
        });
    }
    let status = match out.code {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    };
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !stdout.is_empty() {
        if !output.is_empty() {
            output.push_str("; ");
        }
        output.push_str(&stdout);
    }
    Err(CniError::PluginCrashed {
        plugin: plugin.to_string(),
        status,
        output,
    })
}

/// Parses the stdout of a successful ADD.
pub fn parse_result(plugin: &str, stdout: &[u8]) -> Result<NetworkResult, CniError> {
    let raw: Value = serde_json::from_slice(stdout).map_err(|e| CniError::BadResult {
        plugin: plugin.to_string(),
        message: format!("{e} in {:?}", String::from_utf8_lossy(stdout)),
    })?;
    NetworkResult::from_value(plugin, raw)
}

/// Runs one plugin call through `exec` and checks its exit status.
pub(crate) fn invoke(exec: &dyn PluginExec, req: &ExecRequest) -> Result<Vec<u8>, CniError> {
    debug!(plugin = %req.plugin, command = req.command(), "running CNI plugin");
    let out = exec.exec(req)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        // Plugins write to stderr what the runtime should see (crius-vxlan: a pod CIDR that
        // disagrees with the overlay lease): a warning, not a debug line.
        warn!(plugin = %req.plugin, stderr = %stderr.trim(), "CNI plugin stderr");
    }
    check_output(&req.plugin, out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::types::{Bandwidth, Dns, PortMapping};

    fn plugin(raw: Value) -> PluginConfig {
        let list = crate::conf::NetworkConfigList::from_bytes(
            Path::new("t.conflist"),
            json!({"cniVersion":"1.0.0","name":"n","plugins":[raw]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        list.plugins[0].clone()
    }

    #[test]
    fn env_has_every_cni_variable() {
        let args = PodArgs {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u-1".into(),
        };
        let env = build_env(
            CniCommand::Add,
            "pod1",
            "/run/netns/x",
            "eth0",
            Some((&args, "pod1")),
            &[PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("CNI_COMMAND"), "ADD");
        assert_eq!(get("CNI_CONTAINERID"), "pod1");
        assert_eq!(get("CNI_NETNS"), "/run/netns/x");
        assert_eq!(get("CNI_IFNAME"), "eth0");
        assert_eq!(get("CNI_PATH"), "/opt/cni/bin:/usr/lib/cni");
        assert_eq!(
            get("CNI_ARGS"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=pod1;K8S_POD_UID=u-1"
        );
        let v = build_env(CniCommand::Version, "", "", "", None, &[]);
        assert_eq!(v.len(), 6);
        assert_eq!(v[0].1, "VERSION");
        assert_eq!(v[4].1, "");
    }

    #[test]
    fn stdin_gets_name_version_and_prev_result() {
        let p = plugin(json!({"type":"portmap","snat":true,"cniVersion":"0.3.1","name":"old"}));
        let prev = json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]});
        let conf = build_plugin_config(&p, "net", "1.0.0", Some(&prev), None);
        assert_eq!(conf["name"], "net");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["snat"], true);
        assert_eq!(conf["prevResult"], prev);
        assert!(!conf.contains_key("runtimeConfig"));
        let first = build_plugin_config(&p, "net", "1.0.0", None, None);
        assert!(!first.contains_key("prevResult"));
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let rt = RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            dns: Some(Dns {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec![],
            }),
            ip_ranges: vec![],
            bandwidth: Some(Bandwidth {
                ingress_rate: 1000,
                ..Default::default()
            }),
        };
        let p = plugin(
            json!({"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false,"ipRanges":true}}),
        );
        let conf = build_plugin_config(&p, "n", "1.0.0", None, Some(&rt));
        // ipRanges is declared but empty: not injected; bandwidth is not declared (false).
        assert_eq!(
            Value::Object(conf)["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
        let p = plugin(json!({"type":"bandwidth","capabilities":{"bandwidth":true,"dns":true}}));
        let conf = build_plugin_config(&p, "n", "1.0.0", None, Some(&rt));
        assert_eq!(
            Value::Object(conf)["runtimeConfig"],
            json!({"bandwidth":{"ingressRate":1000},"dns":{"servers":["10.0.0.10"],"searches":["svc.cluster.local"]}})
        );
        let p = plugin(json!({"type":"bridge"}));
        let conf = build_plugin_config(&p, "n", "1.0.0", None, Some(&rt));
        assert!(!conf.contains_key("runtimeConfig"));
    }

    #[test]
    fn error_object_is_surfaced_verbatim() {
        let out = ExecOutput {
            code: Some(1),
            stdout: br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range full"}"#.to_vec(),
            stderr: b"noise".to_vec(),
        };
        let err = check_output("bridge", out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin bridge failed (code 11): failed to allocate: range full"
        );
        let out = ExecOutput {
            code: Some(1),
            stdout: br#"{"code":7,"msg":"bad"}"#.to_vec(),
            stderr: vec![],
        };
        assert_eq!(
            check_output("x", out).unwrap_err().to_string(),
            "plugin x failed (code 7): bad"
        );
        let out = ExecOutput {
            code: Some(2),
            stdout: b"panic".to_vec(),
            stderr: b"segfault".to_vec(),
        };
        assert_eq!(
            check_output("x", out).unwrap_err().to_string(),
            "plugin x failed (exit status 2): segfault; panic"
        );
        let out = ExecOutput {
            code: None,
            ..Default::default()
        };
        assert!(
            check_output("x", out)
                .unwrap_err()
                .to_string()
                .contains("signal")
        );
        let ok = ExecOutput {
            code: Some(0),
            stdout: b"{}".to_vec(),
            stderr: vec![],
        };
        assert_eq!(check_output("x", ok).unwrap(), b"{}");
    }

    #[test]
    fn result_parsing_and_primary_ip() {
        let r = parse_result(
            "bridge",
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"aa:bb","sandbox":"/run/netns/x"}],
                "ips":[{"address":"fd00::5/64","interface":0},{"address":"10.1.0.5/24","gateway":"10.1.0.1","interface":0}],
                "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["1.1.1.1"]}}"#,
        )
        .unwrap();
        assert_eq!(r.interfaces[0].sandbox, "/run/netns/x");
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
        assert_eq!(r.dns.nameservers, ["1.1.1.1"]);
        let (primary, rest) = r.ips().unwrap();
        assert_eq!(primary.to_string(), "10.1.0.5");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].to_string(), "fd00::5");
        // A 0.4.0 result (with `version`) parses too; IPv6 only → first is primary.
        let r = parse_result(
            "p",
            br#"{"cniVersion":"0.4.0","ips":[{"version":"6","address":"fd00::7/64"}]}"#,
        )
        .unwrap();
        assert_eq!(r.ips().unwrap().0.to_string(), "fd00::7");
        assert!(parse_result("p", b"{}").unwrap().ips().is_none());
        assert!(parse_result("p", b"nope").is_err());
        assert!(parse_result("p", b"[1]").is_err());
    }

    #[test]
    fn find_plugin_searches_dirs_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let mk = |dir: &Path, mode: u32| {
            let p = dir.join("p");
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        mk(a.path(), 0o644); // not executable: skipped
        let good = mk(b.path(), 0o755);
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin("p", &dirs).unwrap(), good);
        let err = find_plugin("nope", &dirs).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"nope\""), "{msg}");
        assert!(msg.contains(&a.path().display().to_string()), "{msg}");
        assert!(msg.contains(&b.path().display().to_string()), "{msg}");
        assert!(find_plugin("../p", &dirs).is_err());
    }

    #[test]
    fn raw_exec_runs_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("echo");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"$CNI_COMMAND:$CNI_IFNAME\"\ncat\necho err >&2\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut req = ExecRequest {
            plugin: "echo".into(),
            path: script.clone(),
            env: build_env(CniCommand::Add, "c", "", "eth0", None, &[]),
            stdin: b"hello".to_vec(),
            timeout: Duration::from_secs(10),
        };
        let out = RawExec.exec(&req).unwrap();
        assert_eq!(out.code, Some(0));
        assert_eq!(out.stdout, b"ADD:eth0\nhello");
        assert_eq!(out.stderr, b"err\n");

        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        req.timeout = Duration::from_millis(200);
        let start = Instant::now();
        let err = RawExec.exec(&req).unwrap_err();
        assert!(matches!(err, CniError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(err.to_string(), "plugin echo ADD timed out after 200ms");
    }
}
