//! Saving and removing records so that a removed record stays removed.
//!
//! A status refresh may read a record, learn of an exit and save it back while a Remove of the
//! same record runs on another thread. Saves and removals of one id therefore hold that id's
//! record lock, and an update finds the record still in the in-memory map or is dropped: a
//! removed record is never written back to disk or to the map.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use crius_state::write_json;
use serde::Serialize;

use crate::error::{RuntimeError, removed};
use crate::keylocks::KeyLocks;

#[derive(Default)]
pub(crate) struct RecordLocks(KeyLocks);

/// Whether a save may create the record or only update one still present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Save {
    Create,
    Update,
}

impl RecordLocks {
    /// Writes `value` to `path` and `map[id]`, then calls `saved(previous value)` while the
    /// id's lock is still held, so concurrent saves of one id see each transition exactly
    /// once. `Save::Update` of a record no longer in `map` (removed meanwhile) writes nothing
    /// and returns false.
    pub(crate) fn save<T: Serialize + Clone>(
        &self,
        map: &Mutex<BTreeMap<String, T>>,
        path: &Path,
        id: &str,
        value: &T,
        mode: Save,
        saved: impl FnOnce(Option<&T>),
    ) -> Result<bool, RuntimeError> {
        let _guard = self.0.lock(id);
        if mode == Save::Update && !lock(map).contains_key(id) {
            return Ok(false);
        }
        write_json(path, value)?;
        let previous = lock(map).insert(id.to_owned(), value.clone());
        saved(previous.as_ref());
        Ok(true)
    }

    /// Removes the record file and `map[id]`; a missing file is fine.
    pub(crate) fn remove<T>(
        &self,
        map: &Mutex<BTreeMap<String, T>>,
        path: &Path,
        id: &str,
    ) -> Result<(), RuntimeError> {
        let _guard = self.0.lock(id);
        removed(fs::remove_file(path), path)?;
        lock(map).remove(id);
        Ok(())
    }
}

fn lock<T>(map: &Mutex<BTreeMap<String, T>>) -> std::sync::MutexGuard<'_, BTreeMap<String, T>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A refresher saving updates in a loop while the record is removed: afterwards neither
    /// the file nor the map entry exists, whatever the interleaving.
    #[test]
    fn a_removed_record_is_never_resurrected_by_a_concurrent_update() {
        for round in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            let path = Arc::new(dir.path().join("c.json"));
            let map = Arc::new(Mutex::new(BTreeMap::new()));
            let locks = Arc::new(RecordLocks::default());
            locks
                .save(&map, &path, "c", &0u64, Save::Create, |_| {})
                .unwrap();
            let done = Arc::new(AtomicBool::new(false));
            let refreshers: Vec<_> = (0..4)
                .map(|t| {
                    let (map, path, locks, done) =
                        (map.clone(), path.clone(), locks.clone(), done.clone());
                    std::thread::spawn(move || {
                        let mut n = t;
                        while !done.load(Ordering::Relaxed) {
                            // What a status refresh does: read, change, save back.
                            let seen = lock(&map).get("c").copied();
                            if let Some(v) = seen {
                                n += 1;
                                let _ =
                                    locks.save(&map, &path, "c", &(v + n), Save::Update, |_| {});
                            }
                        }
                    })
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_micros(200 * (round % 5)));
            locks.remove(&map, &path, "c").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
            done.store(true, Ordering::Relaxed);
            for r in refreshers {
                r.join().unwrap();
            }
            assert!(!path.exists(), "round {round}: the record file came back");
            assert!(lock(&map).is_empty(), "round {round}: the record came back");
        }
    }

    #[test]
    fn create_writes_and_update_of_an_unknown_record_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let map = Mutex::new(BTreeMap::new());
        let locks = RecordLocks::default();
        assert!(
            !locks
                .save(&map, &path, "c", &1u8, Save::Update, |_| {})
                .unwrap()
        );
        assert!(!path.exists());
        assert!(
            locks
                .save(&map, &path, "c", &1u8, Save::Create, |_| {})
                .unwrap()
        );
        assert!(
            locks
                .save(&map, &path, "c", &2u8, Save::Update, |_| {})
                .unwrap()
        );
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), "2");
    }
}
