//! The store core's error type: why an operation on a key failed, in terms any
//! front-end can translate (the HTTP API maps each variant to one status).

use crate::index::{IndexError, Rejection};
use crate::key::KeyError;
use crate::replica::{DeleteError, FanoutError};
use crate::store::ReleaseError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not an acceptable (or not a writable) key.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// Malformed input: an invalid length, an unreadable body, a rejected command.
    #[error("{0}")]
    Invalid(String),
    /// No such (visible) key.
    #[error("not found")]
    NotFound,
    /// PUT of a key that exists.
    #[error("key exists: DELETE it first")]
    Exists,
    /// DELETE of a key that was not unlinked first while `--protect` is on.
    #[error("--protect is on: UNLINK the key first")]
    Protected,
    /// Another write of the same key is in flight.
    #[error("another write of this key is in progress")]
    Conflict,
    /// A change from another site lost to the key's newer version (conflict rule,
    /// `index::hlc`); nothing changed.
    #[error("superseded by a newer version of the key")]
    Superseded,
    /// PUT of an empty value.
    #[error("a PUT needs a non-empty body")]
    Empty,
    /// The index store failed.
    #[error("index: {0}")]
    Index(#[from] IndexError),
    /// Writing replicas failed because of the client (disconnect, short body).
    #[error("{0}")]
    ClientBody(FanoutError),
    /// Writing or deleting on a volume failed.
    #[error("{0}")]
    Volume(String),
    /// No replica volume of the key is reachable, or a target volume is down.
    #[error("{0}")]
    Unavailable(String),
    /// The caller may not do this (tenancy: a bucket's grants, internal keys).
    #[error("access denied: {0}")]
    Forbidden(String),
    /// The write would exceed its bucket's quota.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
}

impl From<FanoutError> for StoreError {
    fn from(e: FanoutError) -> Self {
        match e {
            FanoutError::Client(_) | FanoutError::Length { .. } => StoreError::ClientBody(e),
            FanoutError::Replica(_) | FanoutError::Stalled { .. } => {
                StoreError::Volume(e.to_string())
            }
            FanoutError::Down { .. } => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<ReleaseError> for StoreError {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::Index(e) => StoreError::Index(e),
            ReleaseError::Delete(DeleteError::Down { .. }) => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Volume(other.to_string()),
        }
    }
}

/// The error of a refused `Begin` (or `PutInline`).
pub(super) fn refusal(r: Rejection) -> StoreError {
    match r {
        Rejection::Exists => StoreError::Exists,
        // Another index server's write holds the key.
        Rejection::Busy => StoreError::Conflict,
        Rejection::Superseded => StoreError::Superseded,
        other => StoreError::Invalid(other.to_string()),
    }
}
