//! Pulling images: resolve, fetch manifest and config, fetch layers in parallel, commit.
//!
//! Concurrent pulls of one reference share a single pull, and concurrent pulls of different
//! images that share a layer share that layer's download. Pulls run as their own tasks so a
//! caller that goes away (a kubelet timeout) does not waste the bytes already fetched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crius_error::ErrorKind;
use crius_registry::{
    Client, Credentials, Descriptor, Digest, Manifest, Reference, Repository, host_platform,
    media_types, parse_manifest, select_platform,
};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, info, info_span};

use crate::db::LayerRecord;
use crate::error::ImageError;
use crate::layer::{LayerJob, chain_ids, fetch_layer};
use crate::progress::{LayerProgress, LayerState, PullProgress};
use crate::store::{ImageStore, NewImage};

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Layers fetched at once within one pull.
    pub max_concurrent_downloads: usize,
    /// A pull fails when no byte arrives for this long.
    pub progress_timeout: Duration,
    /// Ceiling on the file data one layer may unpack.
    pub max_layer_bytes: u64,
    /// Ceiling on the tar entries of one layer.
    pub max_layer_entries: u64,
}

/// Most layers an image may have: overlayfs stacks at most 500 lower directories
/// (OVL_MAX_STACK), so a deeper image could never run; refusing it early also bounds the work a
/// hostile manifest can ask for.
pub const MAX_LAYERS: usize = 500;

/// Layer media types an image may use. Anything else (an artifact, an encrypted layer, a
/// config posing as a layer) is refused rather than fed to the unpacker.
const LAYER_MEDIA_TYPES: &[&str] = &[
    media_types::OCI_LAYER,
    media_types::OCI_LAYER_GZIP,
    media_types::OCI_LAYER_ZSTD,
    media_types::OCI_LAYER_NONDIST,
    media_types::OCI_LAYER_NONDIST_GZIP,
    media_types::OCI_LAYER_NONDIST_ZSTD,
    media_types::DOCKER_LAYER_GZIP,
    media_types::DOCKER_FOREIGN_LAYER_GZIP,
    // Uncompressed and zstd Docker layers: not in the spec, written by some tools.
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

type SharedResult<T> = Shared<BoxFuture<'static, Result<T, Arc<ImageError>>>>;

type InFlightPull = (SharedResult<String>, watch::Receiver<PullProgress>);

struct InFlightLayer {
    done: SharedResult<LayerRecord>,
    progress: watch::Receiver<u64>,
}

pub struct Puller {
    store: Arc<ImageStore>,
    client: Client,
    opts: PullOptions,
    pulls: Mutex<HashMap<String, InFlightPull>>,
    layers: Mutex<HashMap<String, InFlightLayer>>,
}

/// A pull under way, possibly shared with other callers.
pub struct PullHandle {
    pub reference: String,
    pub progress: watch::Receiver<PullProgress>,
    done: SharedResult<String>,
}

impl PullHandle {
    /// Waits for the image id.
    pub async fn wait(self) -> Result<String, ImageError> {
        self.done.await.map_err(ImageError::Shared)
    }
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    config: Option<ContainerConfigJson>,
    rootfs: RootFsJson,
}

#[derive(Deserialize)]
struct ContainerConfigJson {
    #[serde(rename = "User", default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RootFsJson {
    diff_ids: Vec<String>,
}

impl Puller {
    pub fn new(store: Arc<ImageStore>, client: Client, opts: PullOptions) -> Arc<Puller> {
        Arc::new(Puller {
            store,
            client,
            opts,
            pulls: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Starts pulling `image`, or joins a pull of the same reference already under way.
    pub fn start(
        self: &Arc<Self>,
        image: &str,
        creds: Option<Credentials>,
    ) -> Result<PullHandle, ImageError> {
        let reference = Reference::parse(image)?;
        let key = reference.to_string();
        // Only pulls with the same credentials are joined: a pull without (or with wrong)
        // credentials must not succeed by riding on one whose credentials the registry took.
        let pull_key = format!("{key}\n{}", credentials_fingerprint(creds.as_ref()));
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((done, progress)) = pulls.get(&pull_key) {
            return Ok(PullHandle {
                reference: key,
                progress: progress.clone(),
                done: done.clone(),
            });
        }
        let (tx, rx) = watch::channel(PullProgress {
            reference: key.clone(),
            layers: Vec::new(),
        });
        let this = self.clone();
        let span = info_span!("pull", image = %key);
        let task_key = pull_key.clone();
        let task = tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let result = this.pull(reference, creds, tx).await;
                crius_metrics::global().pull_done(result.is_ok(), started.elapsed());
                match &result {
                    Ok(id) => info!(image_id = %id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled"),
                    Err(e) => info!(error = %e, "pull failed"),
                }
                this.pulls.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_key);
                result.map_err(Arc::new)
            }
            .instrument(span),
        );
        let reference_for_err = key.clone();
        let done = async move {
            task.await.unwrap_or_else(|e| {
                Err(Arc::new(ImageError::BadImage {
                    reference: reference_for_err,
                    kind: ErrorKind::Internal,
                    message: format!("pull task failed: {e}"),
                }))
            })
        }
        .boxed()
        .shared();
        pulls.insert(pull_key, (done.clone(), rx.clone()));
        Ok(PullHandle {
            reference: key,
            progress: rx,
            done,
        })
    }

    async fn pull(
        self: &Arc<Self>,
        reference: Reference,
        creds: Option<Credentials>,
        progress: watch::Sender<PullProgress>,
    ) -> Result<String, ImageError> {
        let name = reference.to_string();
        let repo = self.client.repository(&reference, creds);
        let bad = |kind, message: String| ImageError::BadImage {
            reference: name.clone(),
            kind,
            message,
        };

        let wanted = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let top = self
            .timed(&name, "fetching the manifest", repo.get_manifest(&wanted))
            .await??;
        let mut blobs = vec![(top.digest.clone(), top.bytes.clone())];
        let (manifest_digest, config, layers) = match parse_manifest(&top.media_type, &top.bytes)? {
            Manifest::Image { config, layers } => (top.digest.clone(), config, layers),
            Manifest::Index(entries) => {
                let platform = host_platform();
                let chosen = select_platform(&entries, &platform).ok_or_else(|| {
                    bad(
                        ErrorKind::NotFound,
                        format!(
                            "no image for platform {platform} in the index {}",
                            top.digest
                        ),
                    )
                })?;
                let m = self
                    .timed(
                        &name,
                        "fetching the platform manifest",
                        repo.get_manifest(&chosen.digest.to_string()),
                    )
                    .await??;
                blobs.push((m.digest.clone(), m.bytes.clone()));
                match parse_manifest(&m.media_type, &m.bytes)? {
                    Manifest::Image { config, layers } => (m.digest, config, layers),
                    Manifest::Index(_) => {
                        return Err(bad(
                            ErrorKind::InvalidArgument,
                            format!("index {} points at another index", m.digest),
                        ));
                    }
                }
            }
        };
        if layers.len() > MAX_LAYERS {
            return Err(bad(
                ErrorKind::InvalidArgument,
                format!(
                    "manifest {manifest_digest} has {} layers, more than the {MAX_LAYERS} \
                     overlayfs can stack",
                    layers.len()
                ),
            ));
        }
        if ![media_types::OCI_CONFIG, media_types::DOCKER_CONFIG]
            .contains(&config.media_type.as_str())
        {
            return Err(bad(
                ErrorKind::InvalidArgument,
                format!(
                    "manifest {manifest_digest}: config has media type {:?}, not an image config",
                    config.media_type
                ),
            ));
        }
        if let Some((i, l)) = layers
            .iter()
            .enumerate()
            .find(|(_, l)| !LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()))
        {
            return Err(bad(
                ErrorKind::InvalidArgument,
                format!(
                    "manifest {manifest_digest}: layers[{i}] has media type {:?}, not an image layer",
                    l.media_type
                ),
            ));
        }
        let config_bytes = self
            .timed(
                &name,
                "fetching the image config",
                repo.get_blob_bytes(&config),
            )
            .await??;
        blobs.push((config.digest.clone(), config_bytes.clone()));
        let parsed: ConfigJson = serde_json::from_slice(&config_bytes).map_err(|e| {
            bad(
                ErrorKind::InvalidArgument,
                format!("image config {}: {e}", config.digest),
            )
        })?;
        if parsed.rootfs.diff_ids.len() != layers.len() {
            return Err(bad(
                ErrorKind::InvalidArgument,
                format!(
                    "manifest {manifest_digest} has {} layers but its config lists {} diff ids",
                    layers.len(),
                    parsed.rootfs.diff_ids.len()
                ),
            ));
        }
        let diff_ids = parsed
            .rootfs
            .diff_ids
            .iter()
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|e| bad(ErrorKind::InvalidArgument, format!("config diff id: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let chains = chain_ids(&diff_ids);
        let _lease = self.store.lease(&chains);

        progress.send_modify(|p| {
            p.layers = layers
                .iter()
                .map(|l| LayerProgress {
                    digest: l.digest.to_string(),
                    downloaded: 0,
                    total: l.size,
                    state: LayerState::Waiting,
                })
                .collect();
        });
        let permits = Arc::new(Semaphore::new(self.opts.max_concurrent_downloads));
        let jobs = layers.iter().enumerate().map(|(i, desc)| {
            self.ensure_layer(
                &name,
                &repo,
                desc,
                &diff_ids[i],
                &chains[i],
                i,
                &progress,
                permits.clone(),
            )
        });
        // Every layer is waited for, even after one failed, so that when the pull reports its
        // failure nothing of it is still being written.
        for result in futures_util::future::join_all(jobs).await {
            result?;
        }

        let new = NewImage {
            top_digest: top.digest,
            manifest_digest,
            config_digest: config.digest,
            chain_ids: chains,
            user: parsed.config.and_then(|c| c.user).unwrap_or_default(),
            blobs,
            reference,
        };
        let store = self.store.clone();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let record = tokio::task::spawn_blocking(move || store.commit_image(new, now))
            .await
            .map_err(|e| bad(ErrorKind::Internal, format!("commit task failed: {e}")))??;
        Ok(record.id)
    }

    async fn timed<T>(
        &self,
        reference: &str,
        activity: &str,
        fut: impl Future<Output = T>,
    ) -> Result<T, ImageError> {
        tokio::time::timeout(self.opts.progress_timeout, fut)
            .await
            .map_err(|_| ImageError::Stalled {
                reference: reference.into(),
                timeout: self.opts.progress_timeout,
                activity: activity.into(),
            })
    }

    /// Makes sure one layer is unpacked: present already, joined from another pull, or fetched.
    #[allow(clippy::too_many_arguments)]
    async fn ensure_layer(
        self: &Arc<Self>,
        reference: &str,
        repo: &Repository,
        desc: &Descriptor,
        diff_id: &Digest,
        chain_id: &str,
        index: usize,
        progress: &watch::Sender<PullProgress>,
        permits: Arc<Semaphore>,
    ) -> Result<(), ImageError> {
        let set_state = |state: LayerState, downloaded: Option<u64>| {
            progress.send_modify(|p| {
                if let Some(l) = p.layers.get_mut(index) {
                    l.state = state;
                    if let Some(d) = downloaded {
                        l.downloaded = d;
                    }
                }
            })
        };
        if self.store.has_layer(chain_id) {
            set_state(LayerState::Exists, Some(desc.size));
            return Ok(());
        }
        let _permit = permits
            .acquire_owned()
            .await
            .map_err(|_| ImageError::BadImage {
                reference: reference.into(),
                kind: ErrorKind::Aborted,
                message: "pull cancelled".into(),
            })?;
        let (done, mut bytes) = {
            let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
            // Checked again under the lock: another pull may have just finished it.
            if self.store.has_layer(chain_id) {
                drop(layers);
                set_state(LayerState::Exists, Some(desc.size));
                return Ok(());
            }
            match layers.get(chain_id) {
                Some(l) => (l.done.clone(), l.progress.clone()),
                None => {
                    let (tx, rx) = watch::channel(0u64);
                    let job = LayerJob {
                        store: self.store.clone(),
                        repo: repo.clone(),
                        reference: reference.into(),
                        desc: desc.clone(),
                        diff_id: diff_id.clone(),
                        chain_id: chain_id.into(),
                        idle_timeout: self.opts.progress_timeout,
                        max_bytes: self.opts.max_layer_bytes,
                        max_entries: self.opts.max_layer_entries,
                        progress: tx,
                    };
                    let this = self.clone();
                    let key = chain_id.to_string();
                    let task = tokio::spawn(
                        async move {
                            let r = fetch_layer(job).await;
                            this.layers
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&key);
                            r.map_err(Arc::new)
                        }
                        .in_current_span(),
                    );
                    let reference = reference.to_string();
                    let done = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(Arc::new(ImageError::BadImage {
                                reference,
                                kind: ErrorKind::Internal,
                                message: format!("layer task failed: {e}"),
                            }))
                        })
                    }
                    .boxed()
                    .shared();
                    layers.insert(
                        chain_id.to_string(),
                        InFlightLayer {
                            done: done.clone(),
                            progress: rx.clone(),
                        },
                    );
                    (done, rx)
                }
            }
        };
        set_state(LayerState::Downloading, None);
        let mut done = std::pin::pin!(done);
        let result = loop {
            tokio::select! {
                r = &mut done => break r,
                changed = bytes.changed() => {
                    if changed.is_err() {
                        break done.await;
                    }
                    let n = *bytes.borrow_and_update();
                    set_state(LayerState::Downloading, Some(n));
                }
            }
        };
        result.map_err(ImageError::Shared)?;
        set_state(LayerState::Done, Some(desc.size));
        Ok(())
    }
}

/// A digest standing for the credentials of a pull (never the secrets themselves in a key).
fn credentials_fingerprint(creds: Option<&Credentials>) -> String {
    use sha2::{Digest, Sha256};
    let Some(creds) = creds else {
        return "anonymous".into();
    };
    let mut h = Sha256::new();
    match creds {
        Credentials::Basic { username, password } => {
            h.update(b"basic\0");
            h.update(username.as_bytes());
            h.update(b"\0");
            h.update(password.as_bytes());
        }
        Credentials::IdentityToken(t) => {
            h.update(b"identity\0");
            h.update(t.as_bytes());
        }
        Credentials::RegistryToken(t) => {
            h.update(b"registry\0");
            h.update(t.as_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
