//! Cluster operations: rebuild the index from the volumes, rebalance keys to their
//! placement, verify and repair replicas, intents and orphan files.
//!
//! * [`listing`] — walking a volume's files through its JSON directory listings.
//! * [`copy`] — streaming a value from one volume to another, checksummed on the way.
//! * [`rebuild`] — a new index from the volumes' listings (offline).
//! * [`rebalance`] — every key to its placement (offline, online, or one key).
//! * [`verify`] — replicas, intents; [`orphans`] — unreferenced files (offline, online).
//! * [`worker`] — the background-job mechanism: progress, throttle, cancel.
//! * [`fence`] — what an online job checks before deleting files in an index cluster.
//! * [`upkeep`] — completing missing replicas, deleting stale files; releasing a record
//!   with its files.
//! * [`membership`] — volumes joining or leaving a running index server.
//! * [`offline`] — the CLI side: open the index, run a job, show progress.
//!
//! Online jobs share the server's per-key locks, so they never race a PUT or DELETE of
//! the key they are working on; offline jobs need the server stopped (the index file is
//! locked while a server has it open).

pub mod args;
pub mod copy;
pub mod fence;
pub mod listing;
pub mod membership;
pub mod offline;
pub mod orphans;
pub mod rebalance;
pub mod rebuild;
pub mod rebuild_stage;
pub mod scrub;
pub mod upkeep;
pub mod verify;
pub mod verify_options;
pub mod worker;

pub use crate::index::show;
pub use crate::store::Ctx;

use crate::index::{Index, IndexError};
use crate::placement::PlacementError;
use crate::replica::{DeleteError, VolumeError};
use crate::store::ReleaseError;

/// Why an operation (or one step of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The index store failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A volume request failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// Not every file of a key could be deleted.
    #[error(transparent)]
    Delete(#[from] DeleteError),
    /// A directory listing could not be read or parsed.
    #[error("listing {url}: {reason}")]
    Listing {
        /// The listing URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Reading a value from a volume failed midway.
    #[error("reading {url}: {reason}")]
    Read {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A copy between volumes failed or did not match the expected checksum.
    #[error("copying {from} to {to}: {reason}")]
    Copy {
        /// Source URL.
        from: String,
        /// Destination URL.
        to: String,
        /// What went wrong.
        reason: String,
    },
    /// Invalid volume list or placement settings.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// Bad options or state (e.g. rebuilding into an existing index).
    #[error("{0}")]
    Invalid(String),
    /// Another job is running on this server.
    #[error("a {0} job is already running")]
    Busy(&'static str),
    /// A file of the server's own (membership) could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A background task panicked or was stopped.
    #[error("background task: {0}")]
    Task(String),
    /// This member no longer owns the cluster's job: it stops (`fence`).
    #[error("job stopped: {0}")]
    Fenced(String),
}

impl From<ReleaseError> for OpsError {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::Index(e) => OpsError::Index(e),
            ReleaseError::Delete(e) => OpsError::Delete(e),
        }
    }
}

/// Runs a blocking closure (index walks) on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OpsError> + Send + 'static,
) -> Result<T, OpsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpsError::Task(e.to_string()))?
}

/// The number of records in the index (for progress ETAs), from its running totals.
pub fn count_keys(index: &Index) -> u64 {
    let c = index.counts();
    c.writing + c.live + c.unlinked + c.deleting
}

/// Reads the next chunk of at most `max` records after `after`. Blocking.
pub fn next_chunk(
    index: &Index,
    after: Option<&[u8]>,
    max: usize,
) -> Result<Vec<(Vec<u8>, crate::index::Record)>, OpsError> {
    let mut out = Vec::with_capacity(max);
    index.walk(after, |k, r| {
        out.push((k.to_vec(), r));
        out.len() < max
    })?;
    Ok(out)
}

/// Every location where the index names a file of generation `gen` of `key`'s value:
/// the key's record's (when it is of that generation) and those of the key's record of
/// that generation ([`crate::index::gen_key`]: an overwrite in flight, a retired value).
/// A file outside these is an orphan.
pub fn named_locations(index: &Index, key: &[u8], gen: u64) -> Result<Vec<String>, OpsError> {
    let mut named = match index.get(key)? {
        Some(r) if r.gen == gen => r.all_locations(),
        _ => Vec::new(),
    };
    if let Some(r) = index.get(&crate::index::gen_key(key, gen))? {
        named.extend(r.all_locations());
    }
    Ok(named)
}
