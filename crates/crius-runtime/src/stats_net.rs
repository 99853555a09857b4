//! Network counters of pods' network namespaces, read by one long-lived thread.
//!
//! `/proc/<tid>/net/dev` shows the network namespace of the thread reading it, and a pod has
//! no process of its own in its namespace (no pause container; containers come and go), so a
//! thread has to join each namespace (setns is per thread). Spawning one per pod and call cost
//! more than the read itself; this thread joins each pod's namespace in turn for a batch of
//! pods and goes back to the daemon's own namespace after every batch, so it never keeps a
//! removed pod's namespace alive. It runs nothing else.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use crius_cgroups::net::{InterfaceStats, parse_net_dev};

/// How long a caller waits for a batch (procfs reads do not block; this bounds the surprise).
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A batch: the pinned namespace files, and where the counters of each (in order) go.
type Job = (Vec<PathBuf>, Sender<Vec<Option<Vec<InterfaceStats>>>>);

/// The results of a submitted batch, to collect once the caller's other reads are done.
pub(crate) struct Pending {
    rx: Option<Receiver<Vec<Option<Vec<InterfaceStats>>>>>,
    len: usize,
}

impl Pending {
    /// The interfaces of each namespace submitted (loopback left out), `None` where it could
    /// not be read.
    pub(crate) fn wait(self) -> Vec<Option<Vec<InterfaceStats>>> {
        let got = self.rx.and_then(|rx| rx.recv_timeout(BATCH_TIMEOUT).ok());
        match got {
            Some(v) if v.len() == self.len => v,
            _ => {
                tracing::warn!(pods = self.len, "pod network counters not read in time");
                vec![None; self.len]
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct NetReader {
    worker: Mutex<Option<Sender<Job>>>,
}

impl NetReader {
    /// Starts reading the namespaces pinned at `netns` while the caller does other work.
    pub(crate) fn submit(&self, netns: Vec<PathBuf>) -> Pending {
        let len = netns.len();
        if len == 0 {
            return Pending { rx: None, len };
        }
        let (tx, rx) = mpsc::channel();
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let mut job = (netns, tx);
        // A worker that ended (it could not get back to the daemon's namespace) is replaced.
        for _ in 0..2 {
            if worker.is_none() {
                *worker = spawn();
            }
            let Some(w) = worker.as_ref() else { break };
            match w.send(job) {
                Ok(()) => return Pending { rx: Some(rx), len },
                Err(mpsc::SendError(j)) => {
                    job = j;
                    *worker = None;
                }
            }
        }
        Pending { rx: None, len }
    }
}

fn spawn() -> Option<Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    match std::thread::Builder::new()
        .name("crius-netstats".into())
        .spawn(move || serve(rx))
    {
        Ok(_) => Some(tx),
        Err(err) => {
            tracing::warn!(%err, "cannot start the pod network counters thread");
            None
        }
    }
}

fn serve(jobs: Receiver<Job>) {
    // The namespace this thread started in: the daemon's.
    let home = match File::open("/proc/thread-self/ns/net") {
        Ok(f) => f,
        Err(err) => {
            tracing::warn!(%err, "cannot open the daemon's network namespace");
            return;
        }
    };
    let mut buf = Vec::with_capacity(4096);
    while let Ok((paths, reply)) = jobs.recv() {
        let mut moved = false;
        let out: Vec<_> = paths
            .iter()
            .map(|p| {
                read_in(p, &mut moved, &mut buf)
                    .inspect_err(
                        |err| tracing::debug!(%err, netns = %p.display(), "pod network counters"),
                    )
                    .ok()
            })
            .collect();
        let home_again = !moved || setns(&home).is_ok();
        let _ = reply.send(out);
        if !home_again {
            // Ending the thread is the only sure way not to hold a pod's namespace.
            tracing::error!("cannot return to the daemon's network namespace; thread ends");
            return;
        }
    }
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a valid namespace fd changes only this thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_in(
    netns: &std::path::Path,
    moved: &mut bool,
    buf: &mut Vec<u8>,
) -> io::Result<Vec<InterfaceStats>> {
    let ns = File::open(netns)?;
    *moved = true;
    setns(&ns)?;
    buf.clear();
    File::open("/proc/thread-self/net/dev")?.read_to_end(buf)?;
    Ok(parse_net_dev(&String::from_utf8_lossy(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_namespaces_in_order_and_comes_back_home() {
        let reader = NetReader::default();
        let host = PathBuf::from("/proc/self/ns/net");
        let got = reader
            .submit(vec![host.clone(), PathBuf::from("/nonexistent/ns"), host])
            .wait();
        assert_eq!(got.len(), 3);
        let own = parse_net_dev(&std::fs::read_to_string("/proc/self/net/dev").unwrap());
        let names = |v: &Option<Vec<InterfaceStats>>| {
            v.as_ref()
                .map(|v| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>())
        };
        let own: Vec<String> = own.into_iter().map(|i| i.name).collect();
        assert_eq!(names(&got[0]), Some(own.clone()));
        assert_eq!(got[1], None, "a missing namespace is no counters");
        assert_eq!(names(&got[2]), Some(own));
        // The same worker serves the next batch.
        let again = reader
            .submit(vec![PathBuf::from("/proc/self/ns/net")])
            .wait();
        assert!(again[0].is_some());
        assert!(reader.submit(Vec::new()).wait().is_empty());
    }

    /// The network namespace of this process's thread named `comm`.
    fn netns_of_thread(comm: &str) -> Option<PathBuf> {
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find_map(|t| {
                let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
                (name.trim() == comm).then(|| std::fs::read_link(t.path().join("ns/net")).ok())?
            })
    }

    #[test]
    fn joins_another_namespace_and_leaves_it() {
        // A namespace of our own, held by a thread (needs root, as setns does).
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            // SAFETY: unshare affects only this thread, which does nothing else.
            let ok = unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0;
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            tx.send(ok.then(|| PathBuf::from(format!("/proc/self/task/{tid}/ns/net"))))
                .unwrap();
            let _ = done_rx.recv();
        });
        let ns = rx
            .recv()
            .unwrap()
            .expect("unshare(CLONE_NEWNET) (run as root)");
        let theirs = std::fs::read_link(&ns).unwrap();
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(theirs, ours);

        let reader = NetReader::default();
        let got = reader.submit(vec![ns]).wait();
        // Only loopback lives there, and loopback is left out.
        assert_eq!(got, vec![Some(Vec::new())]);
        assert_eq!(netns_of_thread("crius-netstats"), Some(ours));
        done_tx.send(()).unwrap();
        holder.join().unwrap();
    }
}
