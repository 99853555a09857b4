//! The data path programmed for real, inside a network namespace each test creates for its
//! own thread (gone when the thread ends: nothing to clean up on the host). Needs root.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crius_overlay::agent::{Agent, read_subnet_file};
use crius_overlay::backend::static_file::StaticFile;
use crius_overlay::config::Config;
use crius_overlay::netlink::{Netlink, VxlanSpec};
use crius_overlay::state::{Mac, Node, PeerState, Plan};
use crius_overlay::subnet::SubnetPool;
use rtnetlink::{LinkBridge, LinkUnspec};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Run `f` on a fresh thread inside a new, private network namespace.
fn in_new_netns<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f());
    })
    .join()
    .expect("test thread panicked");
}

/// A bridge as the "underlay" (this kernel may lack the dummy driver) with `ip`/24 and MTU 1500, up; returns its index.
async fn underlay(ip: Ipv4Addr) -> u32 {
    let (conn, h, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(conn);
    h.link()
        .add(LinkBridge::new("ul0").mtu(1500).up().build())
        .execute()
        .await
        .unwrap();
    let nl = Netlink::connect().unwrap();
    let idx = nl.link_by_name("ul0").await.unwrap().unwrap().index;
    h.address()
        .add(idx, IpAddr::V4(ip), 24)
        .execute()
        .await
        .unwrap();
    let lo = nl.link_by_name("lo").await.unwrap().unwrap().index;
    h.link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .unwrap();
    idx
}

fn node(name: &str, subnet: &str, ip: [u8; 4]) -> Node {
    Node {
        name: name.into(),
        subnet: subnet.parse().unwrap(),
        public_ip: Ipv4Addr::from(ip),
        vtep_mac: None,
    }
}

#[test]
fn programs_peers_and_converges_without_flapping() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    in_new_netns(|| async {
        let ul = underlay(Ipv4Addr::new(192, 168, 77, 1)).await;
        let nl = Netlink::connect().unwrap();
        let spec = VxlanSpec {
            name: "vx-test".into(),
            vni: 42,
            port: 8472,
            local: Ipv4Addr::new(192, 168, 77, 1),
            underlay_index: ul,
            mac: Mac::for_vtep(Ipv4Addr::new(192, 168, 77, 1)),
            mtu: 1450,
        };
        let link = nl.ensure_vxlan(&spec).await.unwrap();
        assert_eq!(link.mtu, 1450);
        assert_eq!(link.mac, Some(spec.mac));
        nl.ensure_only_addr(link.index, Ipv4Addr::new(10, 244, 1, 0))
            .await
            .unwrap();

        let me = node("a", "10.244.1.0/24", [192, 168, 77, 1]);
        let peers = vec![
            me.clone(),
            node("b", "10.244.2.0/24", [192, 168, 77, 2]),
            node("c", "10.244.3.0/24", [192, 168, 77, 3]),
        ];
        let want = PeerState::desired(&me, &peers);
        assert_eq!(nl.read(link.index).await.unwrap(), PeerState::default());
        nl.apply(link.index, &Plan::new(&want, &PeerState::default()))
            .await
            .unwrap();
        // What was programmed reads back exactly: a second round has nothing to do.
        assert_eq!(nl.read(link.index).await.unwrap(), want);

        // A restarted agent (new socket, same spec) keeps the device: same index, no flap.
        let nl2 = Netlink::connect().unwrap();
        let again = nl2.ensure_vxlan(&spec).await.unwrap();
        assert_eq!(again.index, link.index);
        assert!(Plan::new(&want, &nl2.read(link.index).await.unwrap()).is_empty());

        // c leaves, b moves to another underlay address: c's entries go, b's are replaced.
        let peers2 = vec![me.clone(), node("b", "10.244.2.0/24", [192, 168, 77, 9])];
        let want2 = PeerState::desired(&me, &peers2);
        let have = nl2.read(link.index).await.unwrap();
        nl2.apply(link.index, &Plan::new(&want2, &have))
            .await
            .unwrap();
        assert_eq!(nl2.read(link.index).await.unwrap(), want2);

        // A device with other parameters (VNI changed in the config) is recreated.
        let mut spec3 = spec.clone();
        spec3.vni = 43;
        let l3 = nl2.ensure_vxlan(&spec3).await.unwrap();
        assert_ne!(l3.index, link.index);
    });
}

#[test]
fn agent_with_static_file_writes_the_lease_and_is_idempotent() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_owned();
    in_new_netns(move || async move {
        underlay(Ipv4Addr::new(192, 168, 78, 1)).await;
        let nodes = dir_path.join("nodes.json");
        std::fs::write(
            &nodes,
            r#"{"nodes":[{"name":"a","subnet":"10.245.1.0/24","public_ip":"192.168.78.1"},
                {"name":"b","subnet":"10.245.2.0/24","public_ip":"192.168.78.2"}]}"#,
        )
        .unwrap();
        let subnet_file = dir_path.join("run/subnet.json");
        let cfg: Config = toml::from_str(&format!(
            r#"node_name = "a"
cluster_cidr = "10.245.0.0/16"
underlay_interface = "ul0"
vni = 7
device = "vx-agent"
subnet_file = "{}"
backend = {{ type = "static", path = "{}" }}"#,
            subnet_file.display(),
            nodes.display()
        ))
        .unwrap();
        cfg.validate().unwrap();
        let pool = SubnetPool::new(cfg.cluster_cidr, cfg.subnet_len).unwrap();
        let mut agent = Agent::new(cfg.clone(), StaticFile::new(nodes.clone(), pool))
            .await
            .unwrap();
        let me = agent.round().await.unwrap();
        assert_eq!(me.subnet.to_string(), "10.245.1.0/24");
        let lease = read_subnet_file(&subnet_file).unwrap();
        assert_eq!(lease.subnet.to_string(), "10.245.1.0/24");
        assert_eq!(lease.mtu, 1450);

        let nl = Netlink::connect().unwrap();
        let vx = nl.link_by_name("vx-agent").await.unwrap().unwrap();
        let state = nl.read(vx.index).await.unwrap();
        assert_eq!(
            (state.fdb.len(), state.neigh.len(), state.routes.len()),
            (1, 1, 1),
            "{state:?}"
        );
        let stamp = std::fs::metadata(&subnet_file).unwrap().modified().unwrap();

        // A second agent (a restart) finds nothing to change, not even the subnet file.
        std::thread::sleep(Duration::from_millis(20));
        let mut agent2 = Agent::new(cfg, StaticFile::new(nodes.clone(), pool))
            .await
            .unwrap();
        agent2.round().await.unwrap();
        assert_eq!(
            nl.link_by_name("vx-agent").await.unwrap().unwrap().index,
            vx.index
        );
        assert_eq!(nl.read(vx.index).await.unwrap(), state);
        assert_eq!(
            std::fs::metadata(&subnet_file).unwrap().modified().unwrap(),
            stamp
        );

        // b removed from the file: its route, neighbour and FDB entry go.
        std::fs::write(
            &nodes,
            r#"{"nodes":[{"name":"a","subnet":"10.245.1.0/24","public_ip":"192.168.78.1"}]}"#,
        )
        .unwrap();
        agent2.round().await.unwrap();
        assert_eq!(nl.read(vx.index).await.unwrap(), PeerState::default());

        // A broken file changes nothing on the data path.
        std::fs::write(
            &nodes,
            r#"{"nodes":[{"name":"a","subnet":"10.245.1.0/24","public_ip":"192.168.78.1"},
                {"name":"b","subnet":"10.245.2.0/24","public_ip":"192.168.78.2"}]}"#,
        )
        .unwrap();
        agent2.round().await.unwrap();
        std::fs::write(&nodes, "{ broken").unwrap();
        assert!(agent2.round().await.is_err());
        assert_eq!(nl.read(vx.index).await.unwrap(), state);
    });
}
