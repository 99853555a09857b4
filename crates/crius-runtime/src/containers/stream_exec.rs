//! What a streaming exec needs to run `<runtime> exec` itself: the runtime binary and root,
//! and the OCI process (the container's user, environment, working directory and
//! no-new-privileges, with the requested command and terminal).
//!
//! A streaming exec is run by criusd rather than by the pod's monitor: it lives exactly as
//! long as its client's connection to criusd, so nothing is gained by a process that
//! survives criusd, and its stdio are the connection's pipes.

use std::path::PathBuf;

use super::ContainerManager;
use crate::error::RuntimeError;

#[derive(Debug, Clone)]
pub struct ExecPlan {
    pub container_id: String,
    pub pod_id: String,
    /// The OCI runtime binary and its `--root`.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// The container's bundle: per-exec files go there.
    pub bundle: PathBuf,
    /// The `process` object for `<runtime> exec --process`.
    pub process: serde_json::Value,
}

impl ContainerManager {
    /// The plan to exec `cmd` in running container `id`.
    pub fn exec_plan(&self, id: &str, cmd: &[String], tty: bool) -> Result<ExecPlan, RuntimeError> {
        let (c, spec) = self.exec_target(id, cmd)?;
        let p = &spec["process"];
        let mut user = serde_json::json!({
            "uid": p["user"]["uid"].as_u64().unwrap_or(0),
            "gid": p["user"]["gid"].as_u64().unwrap_or(0),
        });
        if let Some(g) = p["user"]["additionalGids"].as_array() {
            user["additionalGids"] = serde_json::Value::Array(g.clone());
        }
        let mut env: Vec<serde_json::Value> = p["env"].as_array().cloned().unwrap_or_default();
        // A shell in a terminal needs TERM, as the kubelet's other runtimes set it.
        if tty
            && !env
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
        {
            env.push("TERM=xterm".into());
        }
        let mut process = serde_json::json!({
            "terminal": tty,
            "user": user,
            "args": cmd,
            "env": env,
            "cwd": p["cwd"].as_str().filter(|c| !c.is_empty()).unwrap_or("/"),
        });
        if p["noNewPrivileges"].as_bool() == Some(true) {
            process["noNewPrivileges"] = true.into();
        }
        Ok(ExecPlan {
            container_id: c.id.clone(),
            pod_id: c.pod_id.clone(),
            runtime: self.runtime_path(&c.runtime_handler)?,
            runtime_root: self.opts.runtime_root.join(&c.runtime_handler),
            bundle: c.bundle.clone(),
            process,
        })
    }
}
