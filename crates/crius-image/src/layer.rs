//! One layer: download, verify, decompress and unpack, all streaming.
//!
//! Bytes flow from the HTTP body through a bounded channel into a blocking thread that
//! decompresses and unpacks them, so unpacking overlaps the download and memory stays flat.
//! Nothing is visible until the compressed digest, the size and the diff id all check out.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crius_archive::UnpackOptions;
use crius_registry::{Descriptor, Digest, DigestVerifier, Repository};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::db::LayerRecord;
use crate::error::ImageError;
use crate::store::{ImageStore, layer_dir_name};

/// Chunks in flight between the network and the unpacker (about 16 HTTP frames).
const CHANNEL_DEPTH: usize = 16;

pub(crate) struct LayerJob {
    pub store: Arc<ImageStore>,
    pub repo: Repository,
    pub reference: String,
    pub desc: Descriptor,
    pub diff_id: Digest,
    pub chain_id: String,
    pub idle_timeout: Duration,
    pub max_bytes: u64,
    pub max_entries: u64,
    /// Bytes received so far.
    pub progress: watch::Sender<u64>,
}

pub(crate) async fn fetch_layer(job: LayerJob) -> Result<LayerRecord, ImageError> {
    let tmp = job.store.tmp_layer_dir(&job.chain_id)?;
    let result = fetch_into(&job, tmp.clone()).await;
    match result {
        Ok(record) => {
            let store = job.store.clone();
            let rec = record.clone();
            tokio::task::spawn_blocking(move || store.commit_layer(&tmp, rec))
                .await
                .map_err(|e| join_error(&job.reference, e))??;
            Ok(record)
        }
        Err(e) => {
            let store = job.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.discard_tmp(&tmp)).await;
            Err(e)
        }
    }
}

async fn fetch_into(job: &LayerJob, tmp: PathBuf) -> Result<LayerRecord, ImageError> {
    let digest = job.desc.digest.to_string();
    let (tx, rx) = mpsc::channel::<Result<Bytes, ()>>(CHANNEL_DEPTH);
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let opts = UnpackOptions {
        max_bytes: job.max_bytes,
        max_entries: job.max_entries,
        cancel: Some(cancel.0.clone()),
        ..UnpackOptions::new(job.store.same_owner())
    };
    let unpack_dir = tmp.clone();
    let unpacker = tokio::task::spawn_blocking(move || {
        let (_, decompressed) =
            crius_archive::decompress(ChannelReader::new(rx)).map_err(|source| {
                crius_archive::ArchiveError::Read {
                    entry: None,
                    source,
                }
            })?;
        let mut hashing = HashingReader {
            inner: decompressed,
            hasher: Sha256::new(),
        };
        let stats = crius_archive::unpack(&mut hashing, &unpack_dir, &opts)?;
        Ok::<_, crius_archive::ArchiveError>((
            format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
            stats,
        ))
    });

    let download = download(job, &tx).await;
    if download.is_err() {
        // Tell the unpacker to stop: the stream is incomplete. Never wait for room in the
        // channel: an unpacker that stopped reading would hold the pull for ever.
        cancel.0.store(true, Ordering::Relaxed);
        let _ = tx.try_send(Err(()));
    }
    drop(tx);
    let unpacked = unpacker.await.map_err(|e| join_error(&job.reference, e))?;
    let unpack_err = |source| ImageError::Unpack {
        reference: job.reference.clone(),
        digest: digest.clone(),
        source,
    };
    let verified_len = match download {
        Ok(Downloaded::Complete(n)) => n,
        // The unpacker stopped reading: its error is the real cause.
        Ok(Downloaded::UnpackerGone) => {
            return Err(match unpacked {
                Err(e) => unpack_err(e),
                Ok(_) => ImageError::Verify {
                    reference: job.reference.clone(),
                    what: "layer",
                    digest,
                    message: "tar stream ended before the blob did".into(),
                },
            });
        }
        Err(e) => return Err(e),
    };
    let (diff_id, stats) = unpacked.map_err(unpack_err)?;
    if diff_id != job.diff_id.to_string() {
        return Err(ImageError::Verify {
            reference: job.reference.clone(),
            what: "layer",
            digest,
            message: format!(
                "uncompressed content has digest {diff_id}, the image config says {}",
                job.diff_id
            ),
        });
    }
    debug!(digest = %job.desc.digest, bytes = verified_len, files = stats.inodes, "layer unpacked");
    Ok(LayerRecord {
        chain_id: job.chain_id.clone(),
        diff_id,
        blob_digest: digest,
        dir: layer_dir_name(&job.chain_id),
        size: stats.bytes,
        inodes: stats.inodes,
    })
}

enum Downloaded {
    Complete(u64),
    UnpackerGone,
}

/// Streams the blob into the unpacker, verifying size and digest, failing when no byte
/// arrives for the idle timeout (never on total time: a slow but moving pull goes on).
async fn download(
    job: &LayerJob,
    tx: &mpsc::Sender<Result<Bytes, ()>>,
) -> Result<Downloaded, ImageError> {
    let digest = job.desc.digest.to_string();
    let stalled = |activity: String| ImageError::Stalled {
        reference: job.reference.clone(),
        timeout: job.idle_timeout,
        activity,
    };
    let mut stream = tokio::time::timeout(job.idle_timeout, job.repo.get_blob(&job.desc))
        .await
        .map_err(|_| stalled(format!("requesting layer {digest}")))??;
    let mut verifier = DigestVerifier::for_digest(&job.desc.digest);
    let mut received = 0u64;
    loop {
        let chunk = match tokio::time::timeout(job.idle_timeout, stream.next()).await {
            Err(_) => {
                return Err(stalled(format!(
                    "downloading layer {digest} ({received} of {} bytes)",
                    job.desc.size
                )));
            }
            Ok(None) => break,
            Ok(Some(chunk)) => chunk?,
        };
        received += chunk.len() as u64;
        crius_metrics::global().pull_bytes(chunk.len() as u64);
        if received > job.desc.size {
            return Err(ImageError::Verify {
                reference: job.reference.clone(),
                what: "layer",
                digest,
                message: format!(
                    "registry sent more than the {} bytes the manifest declares",
                    job.desc.size
                ),
            });
        }
        verifier.update(&chunk);
        job.progress.send_replace(received);
        // An unpacker that takes no data for the idle timeout stalls the pull like a silent
        // registry does.
        match tokio::time::timeout(job.idle_timeout, tx.send(Ok(chunk))).await {
            Err(_) => {
                return Err(stalled(format!(
                    "unpacking layer {digest} ({received} of {} bytes received)",
                    job.desc.size
                )));
            }
            Ok(Err(_)) => return Ok(Downloaded::UnpackerGone),
            Ok(Ok(())) => {}
        }
    }
    if received != job.desc.size {
        return Err(ImageError::Verify {
            reference: job.reference.clone(),
            what: "layer",
            digest,
            message: format!(
                "received {received} bytes, the manifest declares {}",
                job.desc.size
            ),
        });
    }
    let got = verifier.finish();
    if got != job.desc.digest {
        return Err(ImageError::Verify {
            reference: job.reference.clone(),
            what: "layer",
            digest,
            message: format!("content has digest {got}"),
        });
    }
    Ok(Downloaded::Complete(received))
}

fn join_error(reference: &str, e: tokio::task::JoinError) -> ImageError {
    ImageError::BadImage {
        reference: reference.into(),
        kind: crius_error::ErrorKind::Internal,
        message: format!("unpack task failed: {e}"),
    }
}

/// Stops the unpacker when the pull is dropped or fails (it checks between chunks).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The blocking side of the channel as a `Read`.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, ()>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Result<Bytes, ()>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(())) => return Err(io::Error::other("download aborted")),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// chain_id(0) = diff_id(0); chain_id(n) = sha256(chain_id(n-1) + " " + diff_id(n)).
pub(crate) fn chain_ids(diff_ids: &[Digest]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.to_string(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a: Digest = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
            .parse()
            .unwrap();
        let b: Digest = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
            .parse()
            .unwrap();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a.to_string());
        let expect = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[1], format!("sha256:{expect}"));
    }

    #[test]
    fn channel_reader_reassembles_and_reports_abort() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"hel"))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"lo"))).unwrap();
        drop(tx);
        let mut s = String::new();
        ChannelReader::new(rx).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"x"))).unwrap();
        tx.try_send(Err(())).unwrap();
        let mut v = Vec::new();
        assert!(ChannelReader::new(rx).read_to_end(&mut v).is_err());
    }
}
