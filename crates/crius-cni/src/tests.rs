//! Manager tests with a scripted [`PluginExec`]: no plugin binaries, no root.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::*;

/// Records every call and answers from a script: a plugin fails when its `type` and command
/// are in `fail`; ADD returns a result naming the plugin.
#[derive(Default)]
struct Scripted {
    calls: Mutex<Vec<(String, String, Value, String)>>,
    fail: Mutex<Vec<(String, &'static str)>>,
}

impl Scripted {
    fn calls(&self) -> Vec<(String, String)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(p, c, _, _)| (p.clone(), c.clone()))
            .collect()
    }

    fn stdin_of(&self, i: usize) -> Value {
        self.calls.lock().unwrap()[i].2.clone()
    }

    fn netns_of(&self, i: usize) -> String {
        self.calls.lock().unwrap()[i].3.clone()
    }

    fn fail_on(&self, plugin: &str, command: &'static str) {
        self.fail.lock().unwrap().push((plugin.into(), command));
    }

    fn clear(&self) {
        self.calls.lock().unwrap().clear();
        self.fail.lock().unwrap().clear();
    }
}

impl PluginExec for Scripted {
    fn find(&self, plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
        if plugin == "missing" {
            return Err(CniError::PluginNotFound {
                plugin: plugin.into(),
                dirs: dirs.to_vec(),
            });
        }
        Ok(PathBuf::from("/fake").join(plugin))
    }

    fn exec(&self, req: &ExecRequest) -> Result<ExecOutput, CniError> {
        let stdin: Value = serde_json::from_slice(&req.stdin).unwrap();
        let command = req.command().to_string();
        self.calls.lock().unwrap().push((
            req.plugin.clone(),
            command.clone(),
            stdin.clone(),
            req.env_var("CNI_NETNS").unwrap_or("").to_string(),
        ));
        let fails = self
            .fail
            .lock()
            .unwrap()
            .iter()
            .any(|(p, c)| *p == req.plugin && *c == command);
        if fails {
            return Ok(ExecOutput {
                code: Some(1),
                stdout: json!({"cniVersion":"1.0.0","code":11,"msg":"boom","details":req.plugin})
                    .to_string()
                    .into_bytes(),
                stderr: vec![],
            });
        }
        let stdout = match command.as_str() {
            "ADD" => {
                // Pass the previous result through, adding one IP per plugin.
                let mut res = stdin
                    .get("prevResult")
                    .cloned()
                    .unwrap_or(json!({"cniVersion":"1.0.0","ips":[]}));
                let n = res["ips"].as_array().unwrap().len();
                res["ips"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"address": format!("10.0.0.{}/24", n + 2)}));
                res.to_string()
            }
            "VERSION" => r#"{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}"#.into(),
            _ => String::new(),
        };
        Ok(ExecOutput {
            code: Some(0),
            stdout: stdout.into_bytes(),
            stderr: vec![],
        })
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    conf_dir: PathBuf,
    cache_dir: PathBuf,
    exec: Arc<Scripted>,
    mgr: CniManager,
}

fn env(conflist: &Value) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("net.d");
    let cache_dir = tmp.path().join("cache");
    std::fs::create_dir(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("10-test.conflist"), conflist.to_string()).unwrap();
    let exec = Arc::new(Scripted::default());
    let mgr = CniManager::with_exec(
        CniOptions {
            conf_dir: conf_dir.clone(),
            bin_dirs: vec![PathBuf::from("/fake")],
            cache_dir: cache_dir.clone(),
            plugin_timeout: Duration::from_secs(5),
        },
        exec.clone(),
    );
    Env {
        _tmp: tmp,
        conf_dir,
        cache_dir,
        exec,
        mgr,
    }
}

fn three() -> Value {
    json!({"cniVersion":"1.0.0","name":"net","plugins":[
        {"type":"a"},
        {"type":"b","capabilities":{"portMappings":true}},
        {"type":"c"}
    ]})
}

fn att(netns: &Path) -> Attachment {
    Attachment {
        container_id: "pod1".into(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        args: PodArgs {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-1".into(),
        },
        capabilities: RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            ..Default::default()
        },
    }
}

fn s(p: &str, c: &str) -> (String, String) {
    (p.into(), c.into())
}

#[test]
fn add_chains_prev_result_and_caches() {
    let e = env(&three());
    let netns = e._tmp.path(); // any existing path
    let res = e.mgr.add(&att(netns)).unwrap();
    assert_eq!(
        e.exec.calls(),
        [s("a", "ADD"), s("b", "ADD"), s("c", "ADD")]
    );
    assert!(e.exec.stdin_of(0).get("prevResult").is_none());
    assert_eq!(
        e.exec.stdin_of(1)["prevResult"]["ips"][0]["address"],
        "10.0.0.2/24"
    );
    assert_eq!(
        e.exec.stdin_of(2)["prevResult"]["ips"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // runtimeConfig only for the plugin that declares portMappings.
    assert!(e.exec.stdin_of(0).get("runtimeConfig").is_none());
    assert_eq!(
        e.exec.stdin_of(1)["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert_eq!(e.exec.stdin_of(1)["name"], "net");
    assert_eq!(res.ips.len(), 3);
    assert_eq!(res.ips().unwrap().0.to_string(), "10.0.0.2");
    let cached = e.mgr.cached_result(&att(netns)).unwrap().unwrap();
    assert_eq!(cached, res);
    assert!(e.cache_dir.join("results/net-pod1-eth0").is_file());
}

#[test]
fn failed_add_rolls_back_the_whole_chain() {
    let e = env(&three());
    e.exec.fail_on("b", "ADD");
    let err = e.mgr.add(&att(e._tmp.path())).unwrap_err();
    assert_eq!(err.to_string(), "plugin b failed (code 11): boom: b");
    assert_eq!(
        e.exec.calls(),
        [
            s("a", "ADD"),
            s("b", "ADD"),
            s("c", "DEL"),
            s("b", "DEL"),
            s("a", "DEL")
        ]
    );
    // The rollback DEL gets the last successful result.
    assert_eq!(
        e.exec.stdin_of(2)["prevResult"]["ips"][0]["address"],
        "10.0.0.2/24"
    );
    assert!(!e.cache_dir.join("results/net-pod1-eth0").exists());

    // A failing rollback reports both errors and keeps the cache for a later DEL.
    e.exec.clear();
    e.exec.fail_on("c", "ADD");
    e.exec.fail_on("b", "DEL");
    let err = e.mgr.add(&att(e._tmp.path())).unwrap_err();
    assert!(matches!(err, CniError::Rollback { .. }));
    assert_eq!(
        err.to_string(),
        "plugin c failed (code 11): boom: c; rollback DEL failed too: plugin b failed (code 11): boom: b"
    );
    // The rollback went on past b to a.
    assert_eq!(e.exec.calls().last().unwrap(), &s("a", "DEL"));
    assert!(e.cache_dir.join("results/net-pod1-eth0").exists());
}

#[test]
fn missing_plugin_during_add_rolls_back() {
    let e = env(
        &json!({"cniVersion":"1.0.0","name":"net","plugins":[{"type":"a"},{"type":"missing"}]}),
    );
    let err = e.mgr.add(&att(e._tmp.path())).unwrap_err();
    assert!(
        err.to_string().contains("\"missing\" not found in [/fake]"),
        "{err}"
    );
    // "missing" never ran, so the rollback only undoes "a".
    assert!(matches!(err, CniError::PluginNotFound { .. }), "{err}");
    assert_eq!(e.exec.calls(), [s("a", "ADD"), s("a", "DEL")]);
    assert!(!e.cache_dir.join("results/net-pod1-eth0").exists());
}

#[test]
fn del_uses_the_cached_config_and_result() {
    let e = env(&three());
    let netns = e._tmp.path().to_path_buf();
    e.mgr.add(&att(&netns)).unwrap();
    // The conf dir changes to a different network after the ADD.
    std::fs::remove_file(e.conf_dir.join("10-test.conflist")).unwrap();
    std::fs::write(
        e.conf_dir.join("05-other.conflist"),
        json!({"cniVersion":"1.0.0","name":"other","plugins":[{"type":"z"}]}).to_string(),
    )
    .unwrap();
    e.exec.clear();
    // A DEL after a restart carries no capabilities; the cached ones are used.
    let mut a = att(&netns);
    a.capabilities = RuntimeConfig::default();
    e.mgr.del(&a).unwrap();
    assert_eq!(
        e.exec.calls(),
        [s("c", "DEL"), s("b", "DEL"), s("a", "DEL")]
    );
    let stdin = e.exec.stdin_of(0);
    assert_eq!(stdin["name"], "net");
    assert_eq!(stdin["prevResult"]["ips"].as_array().unwrap().len(), 3);
    assert_eq!(
        e.exec.stdin_of(1)["runtimeConfig"]["portMappings"][0]["containerPort"],
        80
    );
    assert!(!e.cache_dir.join("results/net-pod1-eth0").exists());

    // A second DEL succeeds, with the current config and no prevResult.
    e.exec.clear();
    e.mgr.del(&a).unwrap();
    assert_eq!(e.exec.calls(), [s("z", "DEL")]);
    assert!(e.exec.stdin_of(0).get("prevResult").is_none());
}

#[test]
fn del_failure_keeps_the_cache_for_a_retry() {
    let e = env(&three());
    let netns = e._tmp.path().to_path_buf();
    e.mgr.add(&att(&netns)).unwrap();
    e.exec.fail_on("b", "DEL");
    assert!(e.mgr.del(&att(&netns)).is_err());
    assert!(e.cache_dir.join("results/net-pod1-eth0").exists());
    e.exec.clear();
    e.mgr.del(&att(&netns)).unwrap();
    assert!(!e.cache_dir.join("results/net-pod1-eth0").exists());
}

#[test]
fn del_with_a_missing_netns_passes_an_empty_one() {
    let e = env(&three());
    let gone = e._tmp.path().join("no-such-netns");
    e.mgr.del(&att(&gone)).unwrap();
    assert_eq!(e.exec.netns_of(0), "");
    let mut a = att(&gone);
    a.netns = PathBuf::new();
    e.mgr.del(&a).unwrap();
}

#[test]
fn del_without_config_or_cache_is_a_no_op() {
    let e = env(&three());
    std::fs::remove_file(e.conf_dir.join("10-test.conflist")).unwrap();
    e.mgr.del(&att(e._tmp.path())).unwrap();
    assert!(e.exec.calls().is_empty());
}

#[test]
fn check_uses_the_cached_result() {
    let e = env(&three());
    let netns = e._tmp.path().to_path_buf();
    let err = e.mgr.check(&att(&netns)).unwrap_err();
    assert!(matches!(err, CniError::NotAttached { .. }), "{err}");
    e.mgr.add(&att(&netns)).unwrap();
    e.exec.clear();
    e.mgr.check(&att(&netns)).unwrap();
    assert_eq!(
        e.exec.calls(),
        [s("a", "CHECK"), s("b", "CHECK"), s("c", "CHECK")]
    );
    assert_eq!(
        e.exec.stdin_of(0)["prevResult"]["ips"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    e.exec.fail_on("c", "CHECK");
    assert!(e.mgr.check(&att(&netns)).is_err());
}

#[test]
fn status_reports_the_bad_file_and_reloads_on_change() {
    let e = env(&json!({"cniVersion":"1.0.0","name":"net","plugins":[{"name":"x"}]}));
    let st = e.mgr.network_status();
    assert!(!st.ready);
    assert_eq!(st.reason, "InvalidCNIConfig");
    assert!(
        st.message
            .contains("10-test.conflist: plugins[0]: missing field \"type\""),
        "{}",
        st.message
    );

    std::fs::write(e.conf_dir.join("10-test.conflist"), three().to_string()).unwrap();
    assert_eq!(
        e.mgr.network_status(),
        NetworkStatus {
            ready: true,
            reason: String::new(),
            message: String::new()
        }
    );

    std::fs::remove_file(e.conf_dir.join("10-test.conflist")).unwrap();
    let err = e.mgr.status().unwrap_err();
    assert!(matches!(err, CniError::NoConfig { .. }));
    assert!(err.to_string().contains(&e.conf_dir.display().to_string()));

    std::fs::write(
        e.conf_dir.join("10-test.conflist"),
        json!({"cniVersion":"1.0.0","name":"net","plugins":[{"type":"missing"}]}).to_string(),
    )
    .unwrap();
    let st = e.mgr.network_status();
    assert_eq!(st.reason, "CNIPluginNotFound");
    assert!(st.message.contains("\"missing\""), "{}", st.message);
}

#[test]
fn cni_1_1_status_and_gc() {
    let e = env(&json!({"cniVersion":"1.1.0","name":"net","plugins":[{"type":"a"},{"type":"b"}]}));
    e.mgr.status().unwrap();
    assert_eq!(e.exec.calls(), [s("a", "STATUS"), s("b", "STATUS")]);
    e.exec.fail_on("b", "STATUS");
    assert_eq!(
        e.mgr.status().unwrap_err().to_string(),
        "plugin b failed (code 11): boom: b"
    );
    e.exec.clear();

    let netns = e._tmp.path().to_path_buf();
    e.mgr.add(&att(&netns)).unwrap();
    let mut other = att(&netns);
    other.container_id = "pod2".into();
    e.mgr.add(&other).unwrap();
    e.exec.clear();
    // pod1 is still valid; pod2 is stale and gets a DEL, then each plugin gets GC.
    e.mgr.gc(&[("pod1".into(), "eth0".into())]).unwrap();
    assert_eq!(
        e.exec.calls(),
        [s("b", "DEL"), s("a", "DEL"), s("a", "GC"), s("b", "GC")]
    );
    assert_eq!(
        e.exec.stdin_of(2)["cni.dev/valid-attachments"],
        json!([{"containerID":"pod1","ifname":"eth0"}])
    );
    assert!(e.cache_dir.join("results/net-pod1-eth0").exists());
    assert!(!e.cache_dir.join("results/net-pod2-eth0").exists());
}

#[test]
fn version_probe() {
    let e = env(&three());
    let v = e.mgr.version("a").unwrap();
    assert_eq!(v.supported_versions, ["1.0.0", "1.1.0"]);
    assert_eq!(e.exec.stdin_of(0), json!({"cniVersion":"1.1.0"}));
    assert!(e.mgr.version("missing").is_err());
}

#[test]
fn check_is_refused_before_0_4_0() {
    let e = env(&json!({"cniVersion":"0.3.1","name":"net","plugins":[{"type":"a"}]}));
    let netns = e._tmp.path().to_path_buf();
    e.mgr.add(&att(&netns)).unwrap();
    assert!(matches!(
        e.mgr.check(&att(&netns)).unwrap_err(),
        CniError::Unsupported { .. }
    ));
    // 0.3.x DEL gets no prevResult.
    e.exec.clear();
    e.mgr.del(&att(&netns)).unwrap();
    assert!(e.exec.stdin_of(0).get("prevResult").is_none());
}
