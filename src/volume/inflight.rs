//! Uploads in flight, per file path: a DELETE of a path — or a newer PUT of it —
//! cancels an older upload that has not been renamed into place yet, so the older one
//! can never land after it.
//!
//! Why: an index server that gave up on a write (its client vanished, another replica
//! failed) deletes the replicas it wrote. A volume that had already received the whole
//! body would otherwise finish its fsync and rename *after* that DELETE, leaving an
//! orphan file — or, if the key was written again meanwhile, the old bytes under the
//! new record. Checking for cancellation and renaming happen under one lock, and so do
//! cancelling and removing the file in a DELETE, so the two cannot interleave.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The newest upload of each path being written.
#[derive(Debug, Default)]
pub struct InFlight {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    newest: HashMap<PathBuf, u64>,
}

/// One registered upload; dropping it unregisters it.
#[derive(Debug)]
pub struct Ticket {
    owner: Arc<InFlight>,
    target: PathBuf,
    id: u64,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an upload to `target`; an older upload of it in flight is cancelled.
    pub fn start(self: &Arc<Self>, target: &Path) -> Ticket {
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.newest.insert(target.to_path_buf(), id);
        Ticket {
            owner: Arc::clone(self),
            target: target.to_path_buf(),
            id,
        }
    }

    /// Cancels any upload in flight to `target` and runs `remove` (the deletion of the
    /// file) while no upload can rename into place.
    pub fn cancel_and<T>(&self, target: &Path, remove: impl FnOnce() -> T) -> T {
        let mut state = self.lock();
        state.newest.remove(target);
        remove()
    }
}

impl Ticket {
    /// Runs `rename` if this upload was not cancelled meanwhile, atomically with that
    /// check; `None` when it was cancelled (the caller discards its temp file).
    pub fn finish<T>(&self, rename: impl FnOnce() -> T) -> Option<T> {
        let mut state = self.owner.lock();
        if state.newest.get(&self.target) != Some(&self.id) {
            return None;
        }
        state.newest.remove(&self.target);
        Some(rename())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.owner.lock();
        if state.newest.get(&self.target) == Some(&self.id) {
            state.newest.remove(&self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_and_newer_uploads_cancel_older_ones() {
        let inflight = Arc::new(InFlight::default());
        let (a, b) = (Path::new("/v/a"), Path::new("/v/b"));
        // Not cancelled: the rename runs.
        let t = inflight.start(a);
        assert_eq!(t.finish(|| 1), Some(1));
        // A delete between start and finish cancels.
        let t = inflight.start(a);
        inflight.cancel_and(a, || ());
        assert_eq!(t.finish(|| 1), None);
        // A newer upload of the same path cancels the older; other paths are untouched.
        let old = inflight.start(a);
        let other = inflight.start(b);
        let new = inflight.start(a);
        assert_eq!(old.finish(|| 1), None);
        assert_eq!(new.finish(|| 2), Some(2));
        assert_eq!(other.finish(|| 3), Some(3));
        // A dropped ticket leaves nothing behind; an older one dropped late does not
        // unregister a newer one.
        let older = inflight.start(a);
        let newer = inflight.start(a);
        drop(older);
        assert_eq!(newer.finish(|| 4), Some(4));
        assert!(inflight.lock().newest.is_empty());
    }
}
