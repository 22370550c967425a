//! Per-key write locks: at most one PUT / DELETE / UNLINK of a key at a time (409
//! otherwise), as in minikeyvalue. Background work (rebalance, repair, the upkeep
//! worker) takes the same lock, waiting for it a little with [`KeyLocks::lock_within`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

    /// Takes the lock of `key`, retrying with growing pauses (25 ms, 50 ms, …) for up
    /// to about `patience` while requests hold it; `None` if it stayed busy. The one
    /// waiting policy of background work: a request is never made to wait.
    pub async fn lock_within(&self, key: &[u8], patience: Duration) -> Option<KeyGuard> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(25);
        loop {
            if let Some(guard) = self.try_lock(key) {
                return Some(guard);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(400));
        }
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

    #[tokio::test(start_paused = true)]
    async fn waits_for_a_busy_key_within_its_patience() {
        let locks = KeyLocks::default();
        let held = locks.try_lock(b"/a").unwrap();
        assert!(locks
            .lock_within(b"/a", Duration::from_millis(300))
            .await
            .is_none());
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock_within(b"/a", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(held);
        assert!(waiter.await.unwrap().is_some());
    }
}
