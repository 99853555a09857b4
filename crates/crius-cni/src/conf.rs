//! Loading network configs from the conf dir, the way libcni's `ConfFiles` + `LoadConfList`
//! (and the CRI runtimes on top of them) do: `.conflist`, `.conf` and `.json` files, sorted by
//! file name, the first valid one wins; a single `.conf` is wrapped into a list of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::warn;

use crate::error::CniError;

/// The default conf dir.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// The config versions this client speaks. A config asking for another one is invalid.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The file extensions libcni reads.
const EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

/// A network: a named, ordered chain of plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// The version the client uses for this network (from `cniVersions` when it has one we
    /// support, else `cniVersion`).
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConfig>,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
}

/// One plugin of a chain. `raw` is the plugin's object as written in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The `type`: the plugin binary's name.
    pub plugin_type: String,
    /// The capabilities the plugin declares with `true`.
    pub capabilities: Vec<String>,
    pub raw: Map<String, Value>,
}

impl NetworkConfigList {
    /// Parses a conflist document. `path` is only used in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<NetworkConfigList, CniError> {
        let invalid = |message: String| CniError::InvalidConfig {
            path: path.to_path_buf(),
            message,
        };
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".into()))?;
        let name = network_name(obj).map_err(invalid)?;
        let cni_version = pick_version(obj).map_err(invalid)?;
        let disable_check = opt_bool(obj, "disableCheck").map_err(invalid)?;
        let disable_gc = opt_bool(obj, "disableGC").map_err(invalid)?;
        let plugins = match obj.get("plugins") {
            None => return Err(invalid("missing field \"plugins\"".into())),
            Some(Value::Array(list)) if list.is_empty() => {
                return Err(invalid("field \"plugins\" is empty".into()));
            }
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    PluginConfig::from_value(p).map_err(|m| invalid(format!("plugins[{i}]: {m}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(invalid("field \"plugins\" is not an array".into())),
        };
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            disable_gc,
            plugins,
            source: Some(path.to_path_buf()),
        })
    }

    /// Parses a single-plugin `.conf` document and wraps it into a list of one.
    pub fn from_conf_bytes(path: &Path, bytes: &[u8]) -> Result<NetworkConfigList, CniError> {
        let invalid = |message: String| CniError::InvalidConfig {
            path: path.to_path_buf(),
            message,
        };
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".into()))?;
        if obj.contains_key("plugins") && !obj.contains_key("type") {
            return Err(invalid(
                "has \"plugins\" but no \"type\": a conflist in a single-plugin file".into(),
            ));
        }
        let name = network_name(obj).map_err(invalid)?;
        let cni_version = pick_version(obj).map_err(invalid)?;
        let plugin = PluginConfig::from_value(&value).map_err(invalid)?;
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check: false,
            disable_gc: false,
            plugins: vec![plugin],
            source: Some(path.to_path_buf()),
        })
    }

    /// Reads one file, as a list or a single conf according to its extension.
    pub fn from_file(path: &Path) -> Result<NetworkConfigList, CniError> {
        let bytes = std::fs::read(path).map_err(|e| CniError::io("read", path, e))?;
        if path.extension().is_some_and(|e| e == "conflist") {
            NetworkConfigList::from_bytes(path, &bytes)
        } else {
            NetworkConfigList::from_conf_bytes(path, &bytes)
        }
    }

    /// The list as a conflist document (what the cache stores).
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        obj.insert("name".into(), Value::String(self.name.clone()));
        if self.disable_check {
            obj.insert("disableCheck".into(), Value::Bool(true));
        }
        if self.disable_gc {
            obj.insert("disableGC".into(), Value::Bool(true));
        }
        obj.insert(
            "plugins".into(),
            Value::Array(
                self.plugins
                    .iter()
                    .map(|p| Value::Object(p.raw.clone()))
                    .collect(),
            ),
        );
        Value::Object(obj)
    }
}

impl PluginConfig {
    fn from_value(value: &Value) -> Result<PluginConfig, String> {
        let obj = value.as_object().ok_or("expected a JSON object")?;
        let plugin_type = match obj.get("type") {
            None => return Err("missing field \"type\"".into()),
            Some(Value::String(t)) if t.is_empty() => return Err("field \"type\" is empty".into()),
            Some(Value::String(t)) if t.contains('/') || t == "." || t == ".." => {
                return Err(format!("field \"type\" {t:?} is not a plugin name"));
            }
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err("field \"type\" is not a string".into()),
        };
        let capabilities = match obj.get("capabilities") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(caps)) => {
                let mut out = Vec::new();
                for (k, v) in caps {
                    match v {
                        Value::Bool(true) => out.push(k.clone()),
                        Value::Bool(false) => {}
                        _ => return Err(format!("field \"capabilities.{k}\" is not a boolean")),
                    }
                }
                out
            }
            Some(_) => return Err("field \"capabilities\" is not an object".into()),
        };
        Ok(PluginConfig {
            plugin_type,
            capabilities,
            raw: obj.clone(),
        })
    }

    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }
}

fn network_name(obj: &Map<String, Value>) -> Result<String, String> {
    let name = match obj.get("name") {
        None => return Err("missing field \"name\"".into()),
        Some(Value::String(n)) => n.clone(),
        Some(_) => return Err("field \"name\" is not a string".into()),
    };
    // Same rule as libcni's network name validation; the name also becomes part of cache
    // file names, so nothing path-like may get through.
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-') {
        return Err(format!(
            "field \"name\" {name:?} is invalid (want [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
        ));
    }
    Ok(name)
}

fn pick_version(obj: &Map<String, Value>) -> Result<String, String> {
    if let Some(v) = obj.get("cniVersions") {
        let list = v
            .as_array()
            .ok_or("field \"cniVersions\" is not an array")?;
        let mut best: Option<&str> = None;
        for item in list {
            let s = item
                .as_str()
                .ok_or("field \"cniVersions\" holds a non-string")?;
            if SUPPORTED_VERSIONS.contains(&s)
                && best.is_none_or(|b| compare_versions(s, b).is_gt())
            {
                best = Some(s);
            }
        }
        if let Some(b) = best {
            return Ok(b.to_string());
        }
    }
    match obj.get("cniVersion") {
        None => Err("missing field \"cniVersion\"".into()),
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => Ok(v.clone()),
        Some(Value::String(v)) => Err(format!(
            "field \"cniVersion\" {v:?} is not supported (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        )),
        Some(_) => Err("field \"cniVersion\" is not a string".into()),
    }
}

fn opt_bool(obj: &Map<String, Value>, field: &str) -> Result<bool, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("field {field:?} is not a boolean")),
    }
}

/// Orders `a.b.c` version strings numerically; unparsable parts count as 0.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a).cmp(&parse(b))
}

/// The config files of `dir` that libcni would read, sorted by file name. A missing dir is
/// an empty list.
pub fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CniError::io("read dir", dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CniError::io("read dir", dir, e))?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        // Follows symlinks, like libcni: a link to a file is a file.
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The network config crius uses: the first valid file of `dir` in name order. Invalid files
/// before it are logged and skipped; if none is valid every file's problem is in the error.
pub fn load_default_network(dir: &Path) -> Result<NetworkConfigList, CniError> {
    let files = conf_files(dir)?;
    if files.is_empty() {
        return Err(CniError::NoConfig {
            dir: dir.to_path_buf(),
        });
    }
    let mut errors = Vec::new();
    for path in files {
        match NetworkConfigList::from_file(&path) {
            Ok(list) => return Ok(list),
            Err(err) => {
                warn!(path = %path.display(), %err, "skipping invalid CNI config");
                let message = match err {
                    CniError::InvalidConfig { message, .. } => message,
                    other => other.to_string(),
                };
                errors.push((path, message));
            }
        }
    }
    Err(CniError::NoValidConfig {
        dir: dir.to_path_buf(),
        errors,
    })
}

/// A cheap stamp of the conf dir: its mtime plus name, mtime and size of each config file. It
/// changes when a file is added, removed, renamed or rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirStamp {
    dir_mtime: Option<SystemTime>,
    files: BTreeMap<PathBuf, (Option<SystemTime>, u64)>,
}

impl DirStamp {
    pub(crate) fn read(dir: &Path) -> DirStamp {
        let dir_mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        let files = conf_files(dir)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let meta = std::fs::metadata(&p).ok();
                let mtime = meta.as_ref().and_then(|m| m.modified().ok());
                let size = meta.map(|m| m.len()).unwrap_or(0);
                (p, (mtime, size))
            })
            .collect();
        DirStamp { dir_mtime, files }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).unwrap();
    }

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"netA","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true,"dns":false}}]}"#;

    #[test]
    fn missing_dir_is_no_config_naming_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("net.d");
        let err = load_default_network(&dir).unwrap_err();
        assert!(matches!(err, CniError::NoConfig { .. }));
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        std::fs::create_dir(&dir).unwrap();
        write(&dir, "README", "not a config");
        assert!(matches!(
            load_default_network(&dir).unwrap_err(),
            CniError::NoConfig { .. }
        ));
    }

    #[test]
    fn files_are_sorted_by_name_and_the_first_wins() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "20-b.conflist", &LIST.replace("netA", "netB"));
        write(tmp.path(), "10-a.conflist", LIST);
        write(
            tmp.path(),
            "30-c.json",
            r#"{"cniVersion":"1.0.0","name":"netC","type":"ptp"}"#,
        );
        write(tmp.path(), "05-ignored.txt", "{}");
        let files: Vec<String> = conf_files(tmp.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["10-a.conflist", "20-b.conflist", "30-c.json"]);
        let list = load_default_network(tmp.path()).unwrap();
        assert_eq!(list.name, "netA");
        assert_eq!(list.plugins.len(), 2);
        assert_eq!(list.plugins[1].capabilities, ["portMappings"]);
        assert!(list.plugins[1].has_capability("portMappings"));
        assert!(!list.plugins[1].has_capability("dns"));
        assert_eq!(
            list.source.as_deref(),
            Some(tmp.path().join("10-a.conflist").as_path())
        );
    }

    #[test]
    fn single_conf_is_wrapped_into_a_list() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "10-one.conf",
            r#"{"cniVersion":"0.4.0","name":"one","type":"bridge","bridge":"cni0"}"#,
        );
        let list = load_default_network(tmp.path()).unwrap();
        assert_eq!(list.name, "one");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type, "bridge");
        assert_eq!(list.plugins[0].raw["bridge"], "cni0");
        let v = list.to_value();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["name"], "one");
    }

    #[test]
    fn invalid_files_are_named_and_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "01-garbage.conflist", "{not json");
        write(
            tmp.path(),
            "02-notype.conflist",
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"},{"bridge":"b"}]}"#,
        );
        write(
            tmp.path(),
            "03-noname.conf",
            r#"{"cniVersion":"1.0.0","type":"bridge"}"#,
        );
        write(
            tmp.path(),
            "04-version.conflist",
            r#"{"cniVersion":"9.9.9","name":"x","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            tmp.path(),
            "05-empty.conflist",
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#,
        );
        write(
            tmp.path(),
            "06-badname.conflist",
            r#"{"cniVersion":"1.0.0","name":"../x","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            tmp.path(),
            "07-badtype.conflist",
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"../../bin/sh"}]}"#,
        );
        let err = load_default_network(tmp.path()).unwrap_err();
        let msg = err.to_string();
        for (file, field) in [
            ("01-garbage.conflist", "not JSON"),
            ("02-notype.conflist", "plugins[1]: missing field \"type\""),
            ("03-noname.conf", "missing field \"name\""),
            (
                "04-version.conflist",
                "field \"cniVersion\" \"9.9.9\" is not supported",
            ),
            ("05-empty.conflist", "field \"plugins\" is empty"),
            ("06-badname.conflist", "field \"name\""),
            ("07-badtype.conflist", "plugins[0]: field \"type\""),
        ] {
            assert!(msg.contains(&format!("{file}: {field}")), "{file}: {msg}");
        }
        assert!(matches!(err, CniError::NoValidConfig { ref errors, .. } if errors.len() == 7));

        // A valid file after the invalid ones wins.
        write(tmp.path(), "50-good.conflist", LIST);
        assert_eq!(load_default_network(tmp.path()).unwrap().name, "netA");
    }

    #[test]
    fn single_file_errors_name_the_file() {
        let path = Path::new("/etc/cni/net.d/10-x.conflist");
        let err = NetworkConfigList::from_bytes(
            path,
            br#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"p","capabilities":{"dns":1}}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid CNI config /etc/cni/net.d/10-x.conflist: plugins[0]: field \"capabilities.dns\" is not a boolean"
        );
    }

    #[test]
    fn cni_versions_picks_the_highest_supported() {
        let list = NetworkConfigList::from_bytes(
            Path::new("x"),
            br#"{"cniVersion":"1.0.0","cniVersions":["0.4.0","1.1.0","7.0.0"],"name":"x","plugins":[{"type":"p"}]}"#,
        )
        .unwrap();
        assert_eq!(list.cni_version, "1.1.0");
        assert!(compare_versions("1.0.0", "0.4.0").is_gt());
        assert!(compare_versions("0.3.1", "0.4.0").is_lt());
    }

    #[test]
    fn dir_stamp_changes_on_rewrite() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DirStamp::read(tmp.path());
        assert_eq!(a, DirStamp::read(tmp.path()));
        write(tmp.path(), "10-a.conflist", LIST);
        let b = DirStamp::read(tmp.path());
        assert_ne!(a, b);
        write(tmp.path(), "10-a.conflist", &format!("{LIST}  "));
        assert_ne!(b, DirStamp::read(tmp.path()));
    }
}
