//! Network counters of a network namespace: /proc/net/dev as seen from inside it. A thread of
//! its own joins the namespace (setns is per thread) and ends with the read, so no thread of
//! the daemon is left in a pod's namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// One interface's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of the network namespace pinned at `netns` (loopback left out).
pub fn interfaces_in(netns: &Path) -> io::Result<Vec<InterfaceStats>> {
    let ns = File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd affects only this thread, which ends here.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
            Ok(parse_net_dev(&text))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network stats thread panicked")))
    })
}

/// `Inter-|   Receive ... | Transmit ...` then `name: rx_bytes packets errs drop fifo frame
/// compressed multicast tx_bytes packets errs ...`.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            (f.len() >= 12).then(|| InterfaceStats {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0\n  \
eth0:    1296      14    1    5    0     0          0         0      796       9    2    6    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(text),
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 1296,
                rx_packets: 14,
                rx_errors: 1,
                rx_dropped: 5,
                tx_bytes: 796,
                tx_packets: 9,
                tx_errors: 2,
                tx_dropped: 6,
            }]
        );
    }

    #[test]
    fn reads_the_hosts_own_namespace() {
        // This process's own namespace: at least the read path works.
        let all = interfaces_in(Path::new("/proc/self/ns/net")).unwrap();
        assert!(all.iter().all(|i| i.name != "lo"));
    }
}
