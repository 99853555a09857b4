//! Per-key locks: operations on one pod or container (or one pod name) run one at a time,
//! operations on different keys in parallel.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The set of keys held right now; nothing is kept for keys nobody holds.
#[derive(Default)]
pub(crate) struct KeyLocks {
    held: Mutex<HashSet<String>>,
    released: Condvar,
}

/// Holds a key until dropped.
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
}

impl KeyLocks {
    /// Blocks until no one else holds `key`, then holds it.
    pub(crate) fn lock(&self, key: &str) -> KeyGuard<'_> {
        let mut held = self.held_set();
        while held.contains(key) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(key.to_owned());
        KeyGuard {
            locks: self,
            key: key.to_owned(),
        }
    }

    fn held_set(&self) -> MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.locks.held_set().remove(&self.key);
        self.locks.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_holder_per_key_and_nothing_kept_after() {
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside) = (locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    let _g = locks.lock("pod");
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    std::thread::sleep(Duration::from_millis(2));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(locks.held_set().is_empty());
    }

    #[test]
    fn different_keys_do_not_wait_for_each_other() {
        let locks = KeyLocks::default();
        let _a = locks.lock("a");
        let _b = locks.lock("b"); // would deadlock if keys shared one lock
    }
}
