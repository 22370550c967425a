//! What a verify run is told ([`Options`]) and how long its repairs wait for a key
//! (`LOCK_PATIENCE`): shared by `super::verify` and the orphan collection it ends with
//! (`super::orphans`).

use std::time::Duration;

/// Options of a verify run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fix what can be fixed.
    pub repair: bool,
    /// Read every replica in full and compare md5s.
    pub deep: bool,
    /// Intents and orphan files younger than this are left alone (in-flight writes).
    pub grace: Duration,
    /// Keys checked concurrently; also listing requests in flight per volume.
    pub concurrency: usize,
    /// Checked before deleting files on the job's own judgement (intents rolled back,
    /// orphans): in an index cluster, this member must still own the job.
    pub fence: super::fence::Fence,
}

/// How long a repair waits for a key's lock while requests hold it.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(2);
