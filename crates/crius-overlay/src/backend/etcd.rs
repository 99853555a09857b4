//! etcd v3 backend. Each node holds `<prefix>/subnets/<a.b.c.d-len>` = its [`Node`] record,
//! attached to a lease with the configured TTL that the agent keeps alive; when the agent
//! stops renewing, etcd deletes the key and every other node drops the peer. A watch on the
//! prefix wakes the agents up on any change.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};

use super::static_file::check_nodes;
use super::{Backend, MAX_NODES, Registration, View};
use crate::error::{OverlayError, Result};
use crate::state::Node;
use crate::subnet::{Ipv4Net, SubnetPool};

/// Attempts to claim a subnet in one sync before giving up (others may race for the same).
const CLAIM_ATTEMPTS: usize = 8;
const MAX_RECORD_BYTES: usize = 4096;

struct Lease {
    id: i64,
    subnet: Ipv4Net,
    /// The keep-alive stream; rebuilt on the next connection after an error.
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

pub struct Etcd {
    endpoints: Vec<String>,
    prefix: String,
    pool: SubnetPool,
    ttl: Duration,
    client: Option<Client>,
    lease: Option<Lease>,
    watch: Option<WatchStream>,
}

/// `10.244.3.0/24` → `10.244.3.0-24` (no `/` inside the key's last segment).
fn key_segment(n: &Ipv4Net) -> String {
    format!("{}-{}", n.network(), n.prefix_len())
}

impl Etcd {
    pub fn new(endpoints: Vec<String>, prefix: &str, pool: SubnetPool, ttl: Duration) -> Self {
        Self {
            endpoints,
            prefix: format!("{}/subnets/", prefix.trim_end_matches('/')),
            pool,
            ttl,
            client: None,
            lease: None,
            watch: None,
        }
    }

    fn key(&self, n: &Ipv4Net) -> String {
        format!("{}{}", self.prefix, key_segment(n))
    }

    async fn client(&mut self) -> Result<Client> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let c = Client::connect(&self.endpoints, Some(opts))
            .await
            .map_err(OverlayError::etcd(format!(
                "connecting to {:?}",
                self.endpoints
            )))?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Drop the connection after an error so the next round reconnects. The lease id is
    /// kept: it stays valid on the server until its TTL runs out.
    fn disconnect(&mut self) {
        self.client = None;
        self.watch = None;
        if let Some(l) = &mut self.lease {
            l.keeper = None;
        }
    }

    /// Every node record under the prefix, with its key's mod revision. Records that do not
    /// parse or do not match their key are skipped (and logged): one bad writer must not
    /// stop the overlay.
    async fn list(&mut self, c: &mut Client) -> Result<Vec<(Node, i64)>> {
        let resp = c
            .get(
                self.prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_limit(MAX_NODES as i64 + 1),
                ),
            )
            .await
            .map_err(OverlayError::etcd("listing nodes"))?;
        if resp.kvs().len() > MAX_NODES {
            return Err(OverlayError::Backend {
                backend: "etcd",
                msg: format!("more than {MAX_NODES} node records under {}", self.prefix),
            });
        }
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let node: Option<Node> = (kv.value().len() <= MAX_RECORD_BYTES)
                .then(|| serde_json::from_slice(kv.value()).ok())
                .flatten();
            match node {
                Some(n) if self.key(&n.subnet) == key && self.pool.is_member(&n.subnet) => {
                    out.push((n, kv.mod_revision()))
                }
                _ => tracing::warn!(key, "ignoring a malformed node record"),
            }
        }
        Ok(out)
    }

    async fn renew(&mut self, c: &mut Client) -> Result<bool> {
        let Some(l) = &mut self.lease else {
            return Ok(false);
        };
        if l.keeper.is_none() {
            l.keeper = Some(
                c.lease_keep_alive(l.id)
                    .await
                    .map_err(OverlayError::etcd("starting lease keep-alive"))?,
            );
        }
        let (keeper, responses) = l.keeper.as_mut().expect("set above");
        keeper
            .keep_alive()
            .await
            .map_err(OverlayError::etcd("sending lease keep-alive"))?;
        let resp = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .map_err(|_| OverlayError::Backend {
                backend: "etcd",
                msg: "no answer to lease keep-alive".into(),
            })?
            .map_err(OverlayError::etcd("reading lease keep-alive"))?;
        match resp {
            Some(r) if r.ttl() > 0 => Ok(true),
            _ => {
                tracing::warn!(lease = l.id, "lease expired, acquiring a new one");
                self.lease = None;
                Ok(false)
            }
        }
    }

    /// Grant a lease and claim a subnet with it: the one this node already holds (a record
    /// with its name, e.g. from before a restart), else the preferred one, else the first free.
    async fn acquire(
        &mut self,
        c: &mut Client,
        me: &Registration,
        records: &[(Node, i64)],
    ) -> Result<()> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let grant = c
            .lease_grant(ttl, None)
            .await
            .map_err(OverlayError::etcd("granting lease"))?;
        let id = grant.id();
        let mut records = records.to_vec();
        for _ in 0..CLAIM_ATTEMPTS {
            let own = records.iter().find(|(n, _)| n.name == me.name);
            let taken: BTreeSet<Ipv4Net> = records
                .iter()
                .filter(|(n, _)| n.name != me.name)
                .map(|(n, _)| n.subnet)
                .collect();
            let subnet = match own {
                Some((n, _)) => n.subnet,
                None => self.pool.allocate(me.preferred, &taken)?,
            };
            let key = self.key(&subnet);
            let record = Node {
                name: me.name.clone(),
                subnet,
                public_ip: me.public_ip,
                vtep_mac: Some(me.mac),
            };
            let value = serde_json::to_vec(&record).expect("serializable");
            // Claim only a free key, or take over our own record at the revision we read.
            let cmp = match own {
                Some((_, rev)) => Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
                None => Compare::version(key.clone(), CompareOp::Equal, 0),
            };
            let txn = Txn::new().when([cmp]).and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(id)),
            )]);
            let resp = c
                .txn(txn)
                .await
                .map_err(OverlayError::etcd(format!("claiming {key}")))?;
            if resp.succeeded() {
                let (keeper, responses) = c
                    .lease_keep_alive(id)
                    .await
                    .map_err(OverlayError::etcd("starting lease keep-alive"))?;
                tracing::info!(%subnet, lease = id, "subnet leased");
                self.lease = Some(Lease {
                    id,
                    subnet,
                    keeper: Some((keeper, responses)),
                });
                return Ok(());
            }
            // Someone else got there first: look again.
            records = self.list(c).await?;
        }
        let _ = c.lease_revoke(id).await;
        Err(OverlayError::Backend {
            backend: "etcd",
            msg: format!("could not claim a subnet in {CLAIM_ATTEMPTS} attempts"),
        })
    }

    async fn sync_inner(&mut self, me: &Registration) -> Result<View> {
        let mut c = self.client().await?;
        self.renew(&mut c).await?;
        let mut records = self.list(&mut c).await?;
        let held = self.lease.as_ref().map(|l| l.subnet);
        let mine_ok = held.is_some_and(|s| {
            records
                .iter()
                .any(|(n, _)| n.subnet == s && n.name == me.name && n.public_ip == me.public_ip)
        });
        if !mine_ok {
            self.lease = None;
            self.acquire(&mut c, me, &records).await?;
            records = self.list(&mut c).await?;
        }
        let subnet = self.lease.as_ref().expect("acquired").subnet;
        let nodes: Vec<Node> = records.into_iter().map(|(n, _)| n).collect();
        let me_node = nodes
            .iter()
            .find(|n| n.subnet == subnet)
            .cloned()
            .ok_or_else(|| OverlayError::Backend {
                backend: "etcd",
                msg: format!("own record for {subnet} vanished"),
            })?;
        // Records come from other writers: a duplicate name or address is dropped, not
        // programmed (the peer state leaves out clashes with this node as well).
        if let Err(msg) = check_nodes(&self.pool, &nodes) {
            tracing::warn!(msg, "inconsistent node records");
        }
        Ok(View { me: me_node, nodes })
    }
}

impl Backend for Etcd {
    async fn sync(&mut self, me: &Registration) -> Result<View> {
        let r = self.sync_inner(me).await;
        if r.is_err() {
            self.disconnect();
        }
        r
    }

    async fn wait(&mut self, timeout: Duration) {
        if self.watch.is_none()
            && let Ok(mut c) = self.client().await
        {
            match c
                .watch(self.prefix.clone(), Some(WatchOptions::new().with_prefix()))
                .await
            {
                Ok(s) => self.watch = Some(s),
                Err(e) => tracing::debug!(error = %e, "watch failed"),
            }
        }
        let Some(w) = &mut self.watch else {
            tokio::time::sleep(timeout).await;
            return;
        };
        match tokio::time::timeout(timeout, w.message()).await {
            Err(_) => {}
            Ok(Ok(Some(_))) => {}
            // The stream ended or failed: rebuild it next time, and do not spin.
            Ok(_) => {
                self.watch = None;
                tokio::time::sleep(Duration::from_millis(500).min(timeout)).await;
            }
        }
    }

    fn period(&self) -> Duration {
        // Renew three times per TTL.
        self.ttl / 3
    }
}
