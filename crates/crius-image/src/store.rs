//! The image store: metadata, blobs, layer directories, lookup and removal.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crius_registry::{Digest, Reference, parse_image_id};
use crius_state::{atomic_write, create_dir_all, read_json, write_json};
use tracing::{info, warn};

use crate::db::{Db, ImageRecord, LayerRecord};
use crate::error::ImageError;

/// Holds one empty file per layer directory (`images/complete/<dir>`), written once the
/// layer's content is durable; a layer without it is discarded at start. Kept out of `l/` so
/// that everything there is a layer directory.
const MARKER_DIR: &str = "complete";

#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// References reported as pinned (normalised on open).
    pub pinned: Vec<String>,
}

/// Bytes and inodes used, for `ImageFsInfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub struct ImageStore {
    root: PathBuf,
    images_dir: PathBuf,
    layers_dir: PathBuf,
    tmp_dir: PathBuf,
    db_path: PathBuf,
    db: Mutex<Db>,
    /// Chain ids in use by pulls under way: removal must not delete them.
    leases: Mutex<HashMap<String, usize>>,
    pinned: BTreeSet<String>,
    same_owner: bool,
}

/// Holds layers against garbage collection while a pull uses them.
pub(crate) struct Lease {
    store: Arc<ImageStore>,
    chain_ids: Vec<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self.store.leases.lock().unwrap_or_else(|p| p.into_inner());
        for c in &self.chain_ids {
            if let Some(n) = leases.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    leases.remove(c);
                }
            }
        }
    }
}

/// What a finished pull records.
pub(crate) struct NewImage {
    pub reference: Reference,
    pub top_digest: Digest,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub chain_ids: Vec<String>,
    pub user: String,
    /// (digest, bytes) of manifests, index and config.
    pub blobs: Vec<(Digest, bytes::Bytes)>,
}

impl ImageStore {
    /// Opens (creating) the store under `root` and removes whatever an interrupted run left:
    /// temp data, layers and blobs no image references, images whose layers are missing.
    pub fn open(root: &Path, opts: StoreOptions) -> Result<Arc<ImageStore>, ImageError> {
        let images_dir = root.join("images");
        let store = ImageStore {
            root: root.to_path_buf(),
            db_path: images_dir.join("db.json"),
            tmp_dir: images_dir.join("tmp"),
            layers_dir: root.join("l"),
            images_dir,
            db: Mutex::new(Db::default()),
            leases: Mutex::new(HashMap::new()),
            pinned: opts
                .pinned
                .iter()
                .filter_map(|p| match Reference::parse(p) {
                    Ok(r) => Some(r.to_string()),
                    Err(e) => {
                        warn!(reference = %p, error = %e, "ignoring invalid pinned image");
                        None
                    }
                })
                .collect(),
            same_owner: nix::unistd::geteuid().is_root(),
        };
        let markers = store.images_dir.join(MARKER_DIR);
        for dir in [
            &store.images_dir,
            &store.layers_dir,
            &store.blob_dir(),
            &markers,
        ] {
            create_dir_all(dir, 0o700)?;
        }
        if store.tmp_dir.exists() {
            crius_archive::remove_tree(&store.tmp_dir)
                .map_err(ImageError::io("removing", &store.tmp_dir))?;
        }
        create_dir_all(&store.tmp_dir, 0o700)?;
        let db: Db = read_json(&store.db_path)?.unwrap_or(Db {
            version: Db::VERSION,
            ..Db::default()
        });
        *store.db.lock().unwrap_or_else(|p| p.into_inner()) = db;
        store.recover()?;
        Ok(Arc::new(store))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding unpacked layers; overlay lower dirs are given relative to it.
    pub fn layers_dir(&self) -> &Path {
        &self.layers_dir
    }

    pub(crate) fn same_owner(&self) -> bool {
        self.same_owner
    }

    fn blob_dir(&self) -> PathBuf {
        self.images_dir.join("blobs").join("sha256")
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
        let algo = digest.split_once(':').map(|(a, _)| a).unwrap_or("sha256");
        self.images_dir.join("blobs").join(algo).join(hex)
    }

    fn lock_db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, db: &Db) -> Result<(), ImageError> {
        write_json(&self.db_path, db).map_err(ImageError::from)
    }

    fn marker_path(&self, dir: &str) -> PathBuf {
        self.images_dir.join(MARKER_DIR).join(dir)
    }

    /// Brings disk and metadata into agreement after a crash.
    fn recover(&self) -> Result<(), ImageError> {
        let mut db = self.lock_db();
        let mut changed = false;
        if db.version < 2 {
            // Layers of a store from before completion markers were committed the old way:
            // trust them once rather than make every node pull its images again.
            for l in db.layers.values() {
                if self.layers_dir.join(&l.dir).is_dir() {
                    atomic_write(&self.marker_path(&l.dir), b"")?;
                }
            }
            db.version = Db::VERSION;
            changed = true;
        }
        // Layers whose directory vanished, or whose content was never made durable, cannot be
        // used; nor can images built on them.
        let missing: Vec<String> = db
            .layers
            .values()
            .filter(|l| {
                !self.layers_dir.join(&l.dir).is_dir() || !self.marker_path(&l.dir).is_file()
            })
            .map(|l| l.chain_id.clone())
            .collect();
        for chain in &missing {
            warn!(chain_id = %chain, "layer directory missing or incomplete; dropping the layer");
            db.layers.remove(chain);
            changed = true;
        }
        let broken: Vec<String> = db
            .images
            .values()
            .filter(|i| i.layers.iter().any(|l| !db.layers.contains_key(l)))
            .map(|i| i.id.clone())
            .collect();
        for id in &broken {
            warn!(image_id = %id, "image has missing layers; dropping it so it can be pulled again");
            db.images.remove(id);
            changed = true;
        }
        let referenced = db.referenced_layers();
        let unreferenced: Vec<String> = db
            .layers
            .keys()
            .filter(|c| !referenced.contains(*c))
            .cloned()
            .collect();
        for chain in &unreferenced {
            db.layers.remove(chain);
            changed = true;
        }
        if changed {
            self.save(&db)?;
        }
        // Directories and blobs nothing points at: leftovers of interrupted pulls.
        let dirs: BTreeSet<String> = db.layers.values().map(|l| l.dir.clone()).collect();
        let blobs = db.referenced_blobs();
        drop(db);
        let mut removed = 0usize;
        for entry in read_dir_names(&self.layers_dir)? {
            if !dirs.contains(&entry) {
                let path = self.layers_dir.join(&entry);
                crius_archive::remove_tree(&path).map_err(ImageError::io("removing", &path))?;
                removed += 1;
            }
        }
        for entry in read_dir_names(&self.images_dir.join(MARKER_DIR))? {
            if !dirs.contains(&entry) {
                let path = self.marker_path(&entry);
                fs::remove_file(&path).map_err(ImageError::io("removing", &path))?;
            }
        }
        for entry in read_dir_names(&self.blob_dir())? {
            if !blobs.contains(&format!("sha256:{entry}")) {
                let path = self.blob_dir().join(&entry);
                fs::remove_file(&path).map_err(ImageError::io("removing", &path))?;
                removed += 1;
            }
        }
        if removed > 0 {
            info!(removed, "removed unreferenced layers and blobs");
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.lock_db().images.values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<ImageRecord> {
        self.lock_db().images.get(id).cloned()
    }

    /// Finds an image by reference (tag or digest), by id, or by a unique id prefix, as
    /// containerd does. `Ok(None)` when nothing matches.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ImageError::InvalidName {
                name: name.into(),
                message: "empty image name".into(),
            });
        }
        let db = self.lock_db();
        if let Some(img) = parse_image_id(name).and_then(|id| db.images.get(&id.to_string())) {
            return Ok(Some(img.clone()));
        }
        let parsed = Reference::parse(name);
        if let Ok(r) = &parsed {
            let full = r.to_string();
            if let Some(img) = db
                .images
                .values()
                .find(|i| i.repo_tags.contains(&full) || i.repo_digests.contains(&full))
            {
                return Ok(Some(img.clone()));
            }
        }
        // A short id as printed by `crictl images`.
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4
            && hex.len() < 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            let mut matches = db.images.keys().filter(|id| {
                id.strip_prefix("sha256:")
                    .is_some_and(|h| h.starts_with(hex))
            });
            if let (Some(id), None) = (matches.next(), matches.next()) {
                return Ok(db.images.get(id).cloned());
            }
            return Ok(None);
        }
        match parsed {
            Ok(_) => Ok(None),
            Err(e) => Err(ImageError::Registry(e)),
        }
    }

    pub fn is_pinned(&self, img: &ImageRecord) -> bool {
        img.repo_tags
            .iter()
            .chain(&img.repo_digests)
            .any(|r| self.pinned.contains(r))
    }

    /// The image config JSON as pulled.
    pub fn config(&self, img: &ImageRecord) -> Result<serde_json::Value, ImageError> {
        let path = self.blob_path(&img.id);
        let data = fs::read(&path).map_err(ImageError::io("reading", &path))?;
        serde_json::from_slice(&data).map_err(|e| ImageError::Io {
            op: "decoding",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    /// Lower directories of an image for overlayfs, top layer first (overlay's order), as
    /// names relative to [`ImageStore::layers_dir`].
    pub fn lower_dirs(&self, img: &ImageRecord) -> Vec<String> {
        let db = self.lock_db();
        img.layers
            .iter()
            .rev()
            .filter_map(|c| db.layers.get(c).map(|l| l.dir.clone()))
            .collect()
    }

    pub fn has_layer(&self, chain_id: &str) -> bool {
        self.lock_db().layers.contains_key(chain_id)
    }

    pub(crate) fn lease(self: &Arc<Self>, chain_ids: &[String]) -> Lease {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for c in chain_ids {
            *leases.entry(c.clone()).or_default() += 1;
        }
        Lease {
            store: self.clone(),
            chain_ids: chain_ids.to_vec(),
        }
    }

    /// A fresh directory for a layer being unpacked.
    pub(crate) fn tmp_layer_dir(&self, chain_id: &str) -> Result<PathBuf, ImageError> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .tmp_dir
            .join(format!("{}-{n}", layer_dir_name(chain_id)));
        fs::create_dir(&path).map_err(ImageError::io("creating", &path))?;
        Ok(path)
    }

    /// Moves a verified, unpacked layer into place and records it.
    pub(crate) fn commit_layer(&self, tmp: &Path, record: LayerRecord) -> Result<(), ImageError> {
        // The content must be on disk before anything points at it: one syncfs (as containerd
        // does after applying a layer) instead of an fsync per file.
        syncfs(tmp).map_err(ImageError::io("syncing", tmp))?;
        let dest = self.layers_dir.join(&record.dir);
        let marker = self.marker_path(&record.dir);
        let mut db = self.lock_db();
        if db.layers.contains_key(&record.chain_id) {
            drop(db);
            return crius_archive::remove_tree(tmp).map_err(ImageError::io("removing", tmp));
        }
        if dest.exists() {
            // Left by a crash between rename and metadata update: the content is unverified.
            crius_archive::remove_tree(&dest).map_err(ImageError::io("removing", &dest))?;
        }
        fs::rename(tmp, &dest).map_err(ImageError::io("renaming into place", &dest))?;
        // atomic_write makes the rename durable too (it syncs the directory).
        atomic_write(&marker, b"")?;
        db.layers.insert(record.chain_id.clone(), record);
        self.save(&db)
    }

    pub(crate) fn discard_tmp(&self, tmp: &Path) {
        if let Err(e) = crius_archive::remove_tree(tmp) {
            warn!(path = %tmp.display(), error = %e, "failed to remove a discarded layer");
        }
    }

    /// Records a pulled image: blobs first, then the metadata that makes it visible.
    pub(crate) fn commit_image(
        &self,
        new: NewImage,
        pulled_at: i64,
    ) -> Result<ImageRecord, ImageError> {
        for (digest, data) in &new.blobs {
            let path = self.blob_path(&digest.to_string());
            if !path.exists() {
                atomic_write(&path, data)?;
            }
        }
        let mut db = self.lock_db();
        let id = new.config_digest.to_string();
        let size = new
            .blobs
            .iter()
            .find(|(d, _)| *d == new.config_digest)
            .map(|(_, b)| b.len() as u64)
            .unwrap_or(0)
            + new
                .chain_ids
                .iter()
                .filter_map(|c| db.layers.get(c))
                .map(|l| l.size)
                .sum::<u64>();
        let tag = new.reference.tagged();
        if let Some(tag) = &tag {
            // A tag names one image: moving it leaves the old image untagged.
            for other in db.images.values_mut().filter(|i| i.id != id) {
                other.repo_tags.retain(|t| t != tag);
            }
        }
        let repo_digest = new.reference.with_digest(&new.top_digest);
        let record = db.images.entry(id.clone()).or_insert_with(|| ImageRecord {
            id: id.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest_digest: new.manifest_digest.to_string(),
            layers: new.chain_ids.clone(),
            size,
            user: new.user.clone(),
            blobs: Vec::new(),
            pulled_at,
        });
        if let Some(tag) = tag.filter(|t| !record.repo_tags.contains(t)) {
            record.repo_tags.push(tag);
        }
        if !record.repo_digests.contains(&repo_digest) {
            record.repo_digests.push(repo_digest);
        }
        for (digest, _) in &new.blobs {
            let d = digest.to_string();
            if !record.blobs.contains(&d) {
                record.blobs.push(d);
            }
        }
        let record = record.clone();
        self.save(&db)?;
        Ok(record)
    }

    /// Removes an image by any name `resolve` accepts, then every layer and blob nothing else
    /// references. Returns the removed id; `None` when there was no such image.
    pub fn remove(&self, name: &str) -> Result<Option<String>, ImageError> {
        let Some(img) = self.resolve(name)? else {
            return Ok(None);
        };
        let (dirs, blobs) = {
            let mut db = self.lock_db();
            if db.images.remove(&img.id).is_none() {
                return Ok(None);
            }
            let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            let keep_layers = db.referenced_layers();
            let keep_blobs = db.referenced_blobs();
            let dead: Vec<LayerRecord> = img
                .layers
                .iter()
                .filter(|c| !keep_layers.contains(*c) && !leases.contains_key(*c))
                .filter_map(|c| db.layers.get(c).cloned())
                .collect();
            drop(leases);
            for l in &dead {
                db.layers.remove(&l.chain_id);
            }
            self.save(&db)?;
            let blobs: Vec<String> = img
                .blobs
                .iter()
                .filter(|b| !keep_blobs.contains(*b))
                .cloned()
                .collect();
            (dead.into_iter().map(|l| l.dir).collect::<Vec<_>>(), blobs)
        };
        // Deleting outside the lock: the metadata no longer points at these.
        for dir in dirs {
            let _ = fs::remove_file(self.marker_path(&dir));
            let path = self.layers_dir.join(dir);
            if let Err(e) = crius_archive::remove_tree(&path) {
                warn!(path = %path.display(), error = %e, "failed to remove layer; removed at next start");
            }
        }
        for b in blobs {
            let _ = fs::remove_file(self.blob_path(&b));
        }
        info!(image_id = %img.id, "image removed");
        Ok(Some(img.id))
    }

    /// Space used by images: unpacked layers and kept blobs.
    pub fn usage(&self) -> FsUsage {
        let db = self.lock_db();
        let mut u = FsUsage::default();
        for l in db.layers.values() {
            u.bytes += l.size;
            u.inodes += l.inodes;
        }
        for b in db.referenced_blobs() {
            if let Ok(m) = fs::metadata(self.blob_path(&b)) {
                u.bytes += m.len();
                u.inodes += 1;
            }
        }
        u
    }
}

/// Flushes the filesystem holding `path`.
fn syncfs(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(path)?;
    // SAFETY: a valid open fd.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Short, stable directory name for a chain id.
pub(crate) fn layer_dir_name(chain_id: &str) -> String {
    let hex = chain_id.split_once(':').map(|(_, h)| h).unwrap_or(chain_id);
    hex.chars().take(16).collect()
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(ImageError::io("reading", dir))?;
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImageError::io("reading", dir)(e)),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const IMG: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    /// A store holding one image on layers A and B, committed the way a pull commits them.
    fn store_with_two_layers(root: &Path) -> Arc<ImageStore> {
        let store = ImageStore::open(root, StoreOptions::default()).unwrap();
        for chain in [A, B] {
            let tmp = store.tmp_layer_dir(chain).unwrap();
            fs::write(tmp.join("file"), chain).unwrap();
            let record = LayerRecord {
                chain_id: chain.into(),
                diff_id: chain.into(),
                blob_digest: chain.into(),
                dir: layer_dir_name(chain),
                size: 71,
                inodes: 1,
            };
            store.commit_layer(&tmp, record).unwrap();
        }
        let mut db = store.lock_db();
        db.images.insert(
            IMG.into(),
            ImageRecord {
                id: IMG.into(),
                repo_tags: vec!["docker.io/library/x:1".into()],
                repo_digests: Vec::new(),
                manifest_digest: IMG.into(),
                layers: vec![A.into(), B.into()],
                size: 142,
                user: String::new(),
                blobs: Vec::new(),
                pulled_at: 0,
            },
        );
        store.save(&db).unwrap();
        drop(db);
        store
    }

    #[test]
    fn a_layer_without_its_completion_marker_is_discarded_at_open() {
        let root = tempfile::tempdir().unwrap();
        let store = store_with_two_layers(root.path());
        let layers = store.layers_dir().to_path_buf();
        assert!(store.marker_path(&layer_dir_name(A)).is_file());
        // As if the daemon died after the rename, before the content was known durable.
        fs::remove_file(store.marker_path(&layer_dir_name(B))).unwrap();
        drop(store);

        let store = ImageStore::open(root.path(), StoreOptions::default()).unwrap();
        assert!(!store.has_layer(B));
        assert!(
            !layers.join(layer_dir_name(B)).exists(),
            "unmarked layer kept"
        );
        // The image built on it must be pulled again.
        assert!(store.get(IMG).is_none());
        let names = read_dir_names(&layers).unwrap();
        assert!(
            !names.iter().any(|n| n.starts_with(&layer_dir_name(B))),
            "{names:?}"
        );
    }

    #[test]
    fn complete_layers_survive_a_restart_and_old_stores_are_trusted_once() {
        let root = tempfile::tempdir().unwrap();
        let store = store_with_two_layers(root.path());
        drop(store);
        let store = ImageStore::open(root.path(), StoreOptions::default()).unwrap();
        assert!(store.has_layer(A) && store.has_layer(B));
        assert!(store.get(IMG).is_some());

        // A version 1 store had no markers: its layers are kept and marked.
        for chain in [A, B] {
            fs::remove_file(store.marker_path(&layer_dir_name(chain))).unwrap();
        }
        let mut db = store.lock_db();
        db.version = 1;
        store.save(&db).unwrap();
        drop(db);
        drop(store);
        let store = ImageStore::open(root.path(), StoreOptions::default()).unwrap();
        assert!(store.get(IMG).is_some());
        assert!(store.marker_path(&layer_dir_name(B)).is_file());
    }
}
