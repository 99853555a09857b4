//! The parts of an OCI image config that shape a container's process.

use serde::Deserialize;

use super::SpecError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// `uid`, `uid:gid`, `name`, `name:group` or empty.
    pub user: String,
    pub working_dir: String,
    pub stop_signal: String,
}

// Docker-style capitalised names, each possibly null.
#[derive(Deserialize, Default)]
struct Inner {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "StopSignal", default)]
    stop_signal: Option<String>,
}

impl ImageConfig {
    /// Parses the whole OCI image config document (`{"architecture":…, "config": {…}}`); a
    /// document without `config` gives the empty config, as for `FROM scratch` images.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, SpecError> {
        if !value.is_object() {
            return Err(SpecError::ImageConfig {
                message: "not a JSON object".to_string(),
            });
        }
        let inner: Inner = match value.get("config") {
            None | Some(serde_json::Value::Null) => Inner::default(),
            Some(v) => Inner::deserialize(v).map_err(|e| SpecError::ImageConfig {
                message: format!("config: {e}"),
            })?,
        };
        Ok(ImageConfig {
            entrypoint: inner.entrypoint.unwrap_or_default(),
            cmd: inner.cmd.unwrap_or_default(),
            env: inner.env.unwrap_or_default(),
            user: inner.user.unwrap_or_default(),
            working_dir: inner.working_dir.unwrap_or_default(),
            stop_signal: inner.stop_signal.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_fields_and_nulls() {
        let v = json!({
            "architecture": "amd64",
            "config": {
                "Entrypoint": ["/bin/ep"], "Cmd": null, "Env": ["A=1"],
                "User": "app:app", "WorkingDir": "/w", "StopSignal": "SIGQUIT",
                "Labels": {"x": "y"}
            }
        });
        let c = ImageConfig::from_json(&v).unwrap();
        assert_eq!(c.entrypoint, ["/bin/ep"]);
        assert!(c.cmd.is_empty());
        assert_eq!(c.env, ["A=1"]);
        assert_eq!(c.user, "app:app");
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.stop_signal, "SIGQUIT");
        assert_eq!(
            ImageConfig::from_json(&json!({})).unwrap(),
            ImageConfig::default()
        );
    }

    #[test]
    fn rejects_bad_types() {
        assert!(ImageConfig::from_json(&json!({"config": {"Cmd": "sh"}})).is_err());
        assert!(ImageConfig::from_json(&json!([])).is_err());
    }
}
