//! The etcd backend against a real etcd (Debian's etcd-server) on loopback ports picked for
//! this run. Skipped when the etcd binary is missing.

use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crius_overlay::backend::etcd::Etcd;
use crius_overlay::backend::{Backend, Registration};
use crius_overlay::state::Mac;
use crius_overlay::subnet::SubnetPool;

struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

fn rand_port() -> u16 {
    let mut b = [0u8; 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .unwrap();
    20000 + u16::from_le_bytes(b) % 20000
}

impl EtcdServer {
    fn start() -> Option<Self> {
        if Command::new("etcd").arg("--version").output().is_err() {
            eprintln!("skipping: etcd not installed (apt-get install etcd-server)");
            return None;
        }
        let client_port = rand_port();
        let mut s = Self {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            client_port,
            peer_port: client_port + 1,
        };
        s.spawn();
        Some(s)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn reg(name: &str, last: u8) -> Registration {
    let ip = Ipv4Addr::new(192, 168, 9, last);
    Registration {
        name: name.into(),
        public_ip: ip,
        mac: Mac::for_vtep(ip),
        preferred: None,
    }
}

fn backend(e: &EtcdServer, ttl: u64) -> Etcd {
    let pool = SubnetPool::new("10.244.0.0/16".parse().unwrap(), 24).unwrap();
    Etcd::new(
        vec![e.endpoint()],
        "/crius-test",
        pool,
        Duration::from_secs(ttl),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_watch_expiry_restart_and_outage() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let (ra, rb) = (reg("a", 1), reg("b", 2));
    let mut a = backend(&etcd, 3);
    let mut b = backend(&etcd, 3);
    let va = a.sync(&ra).await.unwrap();
    let vb = b.sync(&rb).await.unwrap();
    assert_ne!(va.me.subnet, vb.me.subnet, "two nodes, one subnet");
    assert_eq!(vb.nodes.len(), 2);
    assert_eq!(vb.me.vtep_mac, Some(rb.mac));

    // A change wakes a waiting node up through the watch.
    let t = Instant::now();
    let (_, vc) = tokio::join!(a.wait(Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = backend(&etcd, 3);
        let v = c.sync(&reg("c", 3)).await.unwrap();
        drop(c); // stops renewing: c's lease runs out
        v
    });
    assert!(t.elapsed() < Duration::from_secs(5), "watch did not fire");
    assert_eq!(a.sync(&ra).await.unwrap().nodes.len(), 3);

    // A node that stops renewing disappears within the TTL (while a and b keep theirs).
    let t = Instant::now();
    loop {
        let nodes = a.sync(&ra).await.unwrap().nodes;
        b.sync(&rb).await.unwrap();
        if !nodes.iter().any(|n| n.subnet == vc.me.subnet) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3 + 2),
            "c still there: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An agent restart (a new backend, same node) keeps its subnet.
    let mut b2 = backend(&etcd, 3);
    assert_eq!(b2.sync(&rb).await.unwrap().me.subnet, vb.me.subnet);
    drop(b);

    // etcd down: sync fails (the agent then leaves the data path alone); back up: same lease.
    etcd.stop();
    assert!(a.sync(&ra).await.is_err());
    etcd.spawn();
    assert_eq!(sync_retrying(&mut a, &ra).await.me.subnet, va.me.subnet);
    assert_eq!(sync_retrying(&mut b2, &rb).await.me.subnet, vb.me.subnet);
}

/// Sync until it works: the first round after an outage finds its old connection dead,
/// drops it, and the next one reconnects (the agent retries every second).
async fn sync_retrying(b: &mut Etcd, r: &Registration) -> crius_overlay::backend::View {
    let t = Instant::now();
    loop {
        match b.sync(r).await {
            Ok(v) => return v,
            Err(e) => assert!(t.elapsed() < Duration::from_secs(15), "no reconnect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
