//! Per-key write locks: at most one PUT / DELETE / UNLINK of a key at a time (409
//! otherwise), as in minikeyvalue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The set of keys with a write in flight.
#[derive(Debug, Default, Clone)]
pub struct KeyLocks(Arc<Mutex<HashSet<Vec<u8>>>>);

/// Holds a key's lock; releases it when dropped.
#[derive(Debug)]
pub struct KeyGuard {
    locks: KeyLocks,
    key: Vec<u8>,
}

impl KeyLocks {
    /// Takes the lock of `key`, or `None` if another write holds it.
    pub fn try_lock(&self, key: &[u8]) -> Option<KeyGuard> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.to_vec()).then(|| KeyGuard {
            locks: self.clone(),
            key: key.to_vec(),
        })
    }

    /// Number of keys currently locked.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no key is locked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut set = self.locks.0.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_key() {
        let locks = KeyLocks::default();
        let a = locks.try_lock(b"/a").unwrap();
        assert!(locks.try_lock(b"/a").is_none());
        let _b = locks.try_lock(b"/b").unwrap();
        assert_eq!(locks.len(), 2);
        drop(a);
        assert!(locks.try_lock(b"/a").is_some());
    }
}
