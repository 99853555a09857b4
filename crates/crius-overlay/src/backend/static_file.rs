//! Static backend: a JSON file `{"nodes": [{"name", "subnet", "public_ip", "vtep_mac"?}]}`
//! listing every node, this one included; reloaded when it changes.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Backend, MAX_NODES, Registration, View};
use crate::error::{OverlayError, Result};
use crate::state::Node;
use crate::subnet::SubnetPool;

const MAX_FILE_BYTES: u64 = 4 << 20;
const POLL: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodesFile {
    nodes: Vec<Node>,
}

pub struct StaticFile {
    path: PathBuf,
    pool: SubnetPool,
    seen: Option<(i64, i64, u64, u64)>,
}

impl StaticFile {
    pub fn new(path: PathBuf, pool: SubnetPool) -> Self {
        Self {
            path,
            pool,
            seen: None,
        }
    }

    fn stamp(&self) -> Option<(i64, i64, u64, u64)> {
        std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.ino(), m.len()))
    }

    /// Parse and check the whole file: a bad file is refused as a whole, never half applied.
    pub fn load(&self) -> Result<Vec<Node>> {
        let text = crate::read_bounded(&self.path, MAX_FILE_BYTES)?;
        let f: NodesFile = serde_json::from_str(&text).map_err(|e| OverlayError::Backend {
            backend: "static",
            msg: format!("{}: {e}", self.path.display()),
        })?;
        check_nodes(&self.pool, &f.nodes).map_err(|msg| OverlayError::Backend {
            backend: "static",
            msg: format!("{}: {msg}", self.path.display()),
        })?;
        Ok(f.nodes)
    }
}

/// Node records must be bounded in number, in the pool, and unique by name, subnet and
/// underlay address.
pub fn check_nodes(pool: &SubnetPool, nodes: &[Node]) -> Result<(), String> {
    if nodes.len() > MAX_NODES {
        return Err(format!("{} nodes, at most {MAX_NODES}", nodes.len()));
    }
    let (mut names, mut subnets, mut ips) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (i, n) in nodes.iter().enumerate() {
        if n.name.is_empty() || n.name.len() > 253 {
            return Err(format!("nodes[{i}].name: must be 1..=253 bytes"));
        }
        if !pool.is_member(&n.subnet) {
            return Err(format!(
                "nodes[{i}].subnet: {} is not a /{} of {}",
                n.subnet, pool.len, pool.cluster
            ));
        }
        if !names.insert(&n.name) {
            return Err(format!("nodes[{i}].name: {:?} listed twice", n.name));
        }
        if !subnets.insert(n.subnet) {
            return Err(format!("nodes[{i}].subnet: {} listed twice", n.subnet));
        }
        if !ips.insert(n.public_ip) {
            return Err(format!(
                "nodes[{i}].public_ip: {} listed twice",
                n.public_ip
            ));
        }
    }
    Ok(())
}

impl Backend for StaticFile {
    async fn sync(&mut self, me: &Registration) -> Result<View> {
        self.seen = self.stamp();
        let nodes = self.load()?;
        let mine =
            nodes
                .iter()
                .find(|n| n.name == me.name)
                .ok_or_else(|| OverlayError::Backend {
                    backend: "static",
                    msg: format!("{}: no entry for node {:?}", self.path.display(), me.name),
                })?;
        if mine.public_ip != me.public_ip {
            return Err(OverlayError::Backend {
                backend: "static",
                msg: format!(
                    "node {:?} is listed with public_ip {}, but its underlay address is {}",
                    me.name, mine.public_ip, me.public_ip
                ),
            });
        }
        let mut me_node = mine.clone();
        me_node.vtep_mac = Some(me.mac);
        Ok(View { me: me_node, nodes })
    }

    async fn wait(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
            if self.stamp() != self.seen {
                return;
            }
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(10)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::state::Mac;

    fn reg(name: &str, ip: [u8; 4]) -> Registration {
        Registration {
            name: name.into(),
            public_ip: Ipv4Addr::from(ip),
            mac: Mac::for_vtep(Ipv4Addr::from(ip)),
            preferred: None,
        }
    }

    #[tokio::test]
    async fn reads_reloads_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let pool = SubnetPool::new("10.244.0.0/16".parse().unwrap(), 24).unwrap();
        let mut b = StaticFile::new(path.clone(), pool);
        assert!(
            b.sync(&reg("a", [192, 168, 0, 1])).await.is_err(),
            "missing file"
        );
        std::fs::write(
            &path,
            r#"{"nodes":[{"name":"a","subnet":"10.244.1.0/24","public_ip":"192.168.0.1"},
                {"name":"b","subnet":"10.244.2.0/24","public_ip":"192.168.0.2"}]}"#,
        )
        .unwrap();
        let v = b.sync(&reg("a", [192, 168, 0, 1])).await.unwrap();
        assert_eq!(v.me.subnet.to_string(), "10.244.1.0/24");
        assert_eq!(v.nodes.len(), 2);
        // Unchanged file: wait runs to its timeout.
        let t = std::time::Instant::now();
        b.wait(Duration::from_millis(700)).await;
        assert!(t.elapsed() >= Duration::from_millis(650));
        // A change wakes it up early.
        let waker = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                std::fs::write(
                    &path,
                    r#"{"nodes":[{"name":"a","subnet":"10.244.1.0/24","public_ip":"192.168.0.1"}]}"#,
                )
                .unwrap();
            })
        };
        let t = std::time::Instant::now();
        b.wait(Duration::from_secs(10)).await;
        assert!(t.elapsed() < Duration::from_secs(5));
        waker.await.unwrap();
        assert_eq!(
            b.sync(&reg("a", [192, 168, 0, 1]))
                .await
                .unwrap()
                .nodes
                .len(),
            1
        );

        for (bad, want) in [
            (
                r#"{"nodes":[{"name":"a","subnet":"10.9.1.0/24","public_ip":"192.168.0.1"}]}"#,
                "nodes[0].subnet",
            ),
            (
                r#"{"nodes":[{"name":"a","subnet":"10.244.1.0/24","public_ip":"192.168.0.1"},{"name":"b","subnet":"10.244.1.0/24","public_ip":"192.168.0.2"}]}"#,
                "listed twice",
            ),
            (
                r#"{"nodes":[{"name":"a","subnet":"10.244.1.0/24","public_ip":"192.168.0.7"}]}"#,
                "underlay address",
            ),
            (r#"{"nodes":[], "extra": 1}"#, "extra"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = b
                .sync(&reg("a", [192, 168, 0, 1]))
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
