//! The attachment cache, laid out like libcni's: one JSON file per attachment at
//! `<cache_dir>/results/<network name>-<container id>-<ifname>`, holding the config list the
//! ADD used and its final result, so DEL and CHECK see exactly what ADD saw even after a
//! restart or a change of the conf dir.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use crate::error::CniError;
use crate::types::{PodArgs, RuntimeConfig};

const KIND: &str = "cniCacheV1";

/// Makes temp file names unique within the process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    pub if_name: String,
    pub network_name: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub pod_args: PodArgs,
    #[serde(default)]
    pub capability_args: RuntimeConfig,
    /// The conflist document used for ADD.
    pub config: Value,
    /// The final result of the ADD; `None` while the ADD is in progress (or if it died).
    #[serde(default)]
    pub result: Option<Value>,
}

impl CacheEntry {
    pub fn new(
        network_name: &str,
        container_id: &str,
        if_name: &str,
        netns: &str,
        pod_args: PodArgs,
        capability_args: RuntimeConfig,
        config: Value,
    ) -> CacheEntry {
        CacheEntry {
            kind: KIND.to_string(),
            container_id: container_id.to_string(),
            if_name: if_name.to_string(),
            network_name: network_name.to_string(),
            netns: netns.to_string(),
            pod_args,
            capability_args,
            config,
            result: None,
        }
    }
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    /// The file of one attachment.
    pub fn path(&self, network_name: &str, container_id: &str, if_name: &str) -> PathBuf {
        self.results_dir()
            .join(format!("{network_name}-{container_id}-{if_name}"))
    }

    /// Writes the entry atomically (temp file, fsync, rename, fsync of the dir).
    pub fn save(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let dir = self.results_dir();
        std::fs::create_dir_all(&dir).map_err(|e| CniError::io("create dir", &dir, e))?;
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = serde_json::to_vec(entry).map_err(|e| {
            CniError::io(
                "encode",
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CniError::io("write", &path, e)
        })
    }

    /// The entry of one attachment; `None` if there is none. An unreadable entry is an error
    /// (DEL must not silently forget an attachment).
    pub fn load(
        &self,
        network_name: &str,
        container_id: &str,
        if_name: &str,
    ) -> Result<Option<CacheEntry>, CniError> {
        read_entry(&self.path(network_name, container_id, if_name))
    }

    /// The entry of an attachment whatever its network name (the conf dir may have changed
    /// since the ADD), preferring `network_name`.
    pub fn find(
        &self,
        network_name: Option<&str>,
        container_id: &str,
        if_name: &str,
    ) -> Result<Option<CacheEntry>, CniError> {
        if let Some(name) = network_name
            && let Some(entry) = self.load(name, container_id, if_name)?
        {
            return Ok(Some(entry));
        }
        let suffix = format!("-{container_id}-{if_name}");
        for path in self.files()? {
            let matches = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix));
            if !matches {
                continue;
            }
            if let Some(entry) = read_entry(&path)?
                && entry.container_id == container_id
                && entry.if_name == if_name
            {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Every entry that can be read; unreadable ones are logged and skipped.
    pub fn list(&self) -> Result<Vec<CacheEntry>, CniError> {
        let mut out = Vec::new();
        for path in self.files()? {
            match read_entry(&path) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                Err(err) => warn!(%err, "skipping unreadable CNI cache entry"),
            }
        }
        Ok(out)
    }

    /// Removes an entry; a missing one is fine.
    pub fn remove(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io("remove", &path, e)),
        }
    }

    fn files(&self) -> Result<Vec<PathBuf>, CniError> {
        let dir = self.results_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::io("read dir", &dir, e)),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }
}

fn read_entry(path: &Path) -> Result<Option<CacheEntry>, CniError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CniError::io("read", path, e)),
    };
    let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| {
        CniError::io(
            "parse",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(net: &str, cid: &str) -> CacheEntry {
        CacheEntry::new(
            net,
            cid,
            "eth0",
            "/run/netns/x",
            PodArgs {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            RuntimeConfig::default(),
            json!({"cniVersion":"1.0.0","name":net,"plugins":[{"type":"bridge"}]}),
        )
    }

    #[test]
    fn round_trip_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        assert_eq!(cache.load("net", "c1", "eth0").unwrap(), None);
        let mut e = entry("net", "c1");
        cache.save(&e).unwrap();
        assert!(tmp.path().join("results/net-c1-eth0").is_file());
        assert_eq!(cache.load("net", "c1", "eth0").unwrap(), Some(e.clone()));
        e.result = Some(json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}));
        cache.save(&e).unwrap();
        assert_eq!(cache.load("net", "c1", "eth0").unwrap(), Some(e.clone()));
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("results"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["net-c1-eth0"]);
        assert_eq!(cache.list().unwrap(), vec![e.clone()]);
        cache.remove(&e).unwrap();
        cache.remove(&e).unwrap();
        assert_eq!(cache.load("net", "c1", "eth0").unwrap(), None);
    }

    #[test]
    fn find_ignores_the_network_name() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let e = entry("old-net", "c-1");
        cache.save(&e).unwrap();
        cache.save(&entry("old-net", "x-c-1")).unwrap();
        assert_eq!(
            cache.find(Some("new"), "c-1", "eth0").unwrap(),
            Some(e.clone())
        );
        assert_eq!(cache.find(None, "c-1", "eth0").unwrap(), Some(e));
        assert_eq!(cache.find(None, "c-2", "eth0").unwrap(), None);
        assert_eq!(cache.find(None, "c-1", "eth1").unwrap(), None);
    }

    #[test]
    fn corrupt_entry_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        std::fs::create_dir_all(tmp.path().join("results")).unwrap();
        std::fs::write(tmp.path().join("results/net-c1-eth0"), "{").unwrap();
        let err = cache.load("net", "c1", "eth0").unwrap_err();
        assert!(err.to_string().contains("net-c1-eth0"), "{err}");
        assert!(cache.list().unwrap().is_empty());
    }
}
