//! What the store core hands to the upkeep worker, and the release of a record with
//! all its files.
//!
//! * [`Task`], [`Queue`]: the write and read paths queue keys whose record names
//!   replicas to complete or stale files to delete, and replicas a read found corrupt.
//!   The worker that takes them off the queue sits above the store
//!   (`crate::ops::upkeep`), on a [`Ctx`].
//! * [`release`] deletes every file a record names (`volumes` and `stale`), then drops
//!   the record: the rollback of a failed write, the end of a DELETE, repair of an
//!   abandoned intent or an interrupted delete.

use tokio::sync::mpsc;

use super::Ctx;
use crate::index::{value_key, Command, IndexError, Record};
use crate::replica::{delete_files, DeleteError};

/// Work for the upkeep worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// A key whose record may need upkeep (`crate::ops::upkeep::needs_upkeep`).
    Key(Vec<u8>),
    /// A replica whose bytes a read found different from the record's md5.
    Corrupt {
        /// The key.
        key: Vec<u8>,
        /// The generation read.
        gen: u64,
        /// The replica's location (`host:port[/svXX]`).
        volume: String,
        /// Tries so far.
        attempts: u32,
    },
}

/// Where the write and read paths queue work for the upkeep worker.
pub type Queue = mpsc::UnboundedSender<Task>;

/// A new queue and its receiving end (for the upkeep worker).
pub fn queue() -> (Queue, mpsc::UnboundedReceiver<Task>) {
    mpsc::unbounded_channel()
}

/// Why [`release`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The index store failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Not every file of the record could be deleted.
    #[error(transparent)]
    Delete(#[from] DeleteError),
}

/// Deletes every file the record at index key `key` names (its replicas and stale
/// locations, of its generation, for the key it belongs to: see
/// [`crate::index::value_key`]), then drops the record if it is still in
/// `record.state` and still owned by `owner` (0: whoever owns it). The caller holds the
/// key's lock. If a file cannot be deleted the record stays, still naming it, for a retry or
/// repair; `Ok(false)` when the record had changed state meanwhile.
pub async fn release(
    ctx: &Ctx,
    key: &[u8],
    record: &Record,
    owner: u64,
) -> Result<bool, ReleaseError> {
    delete_files(
        &ctx.client,
        ctx.health.as_deref(),
        value_key(key),
        record.gen,
        &record.all_locations(),
    )
    .await?;
    let remove = Command::Remove {
        key: key.to_vec(),
        expect: record.state,
        owner,
    };
    Ok(ctx.index.apply(remove).await?.is_ok())
}
