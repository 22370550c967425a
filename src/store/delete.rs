//! Deletes: [`Store::delete`] and the virtual delete [`Store::unlink`].
//!
//! DELETE marks the record `deleting` (invisible) before removing files, then drops the
//! record; an interrupted delete is finished by a retry or by repair. UNLINK is one
//! index command.

use std::sync::Arc;

use super::detached;
use super::upkeep::release;
use super::{Store, StoreError};
use crate::clock::now_ms;
use crate::index::hlc::Hlc;
use crate::index::show;
use crate::index::{Command, Record, Rejection, State};
use crate::key::check_writable;

impl Store {
    /// Removes `key`'s value everywhere, then its record. [`StoreError::NotFound`] if
    /// absent, [`StoreError::Protected`] with `--protect` unless unlinked first. Once
    /// the record is marked `deleting`, the rest runs on its own task.
    pub async fn delete(self: &Arc<Self>, key: Vec<u8>) -> Result<(), StoreError> {
        self.delete_as(key, None).await
    }

    /// [`Store::delete`], as another site's delete of version `origin` when given (the
    /// sites receiver): it happens only if the version wins by the conflict rule
    /// (else [`StoreError::Superseded`]), and `--protect` does not apply — the delete
    /// was already allowed where it was made.
    pub async fn delete_as(
        self: &Arc<Self>,
        key: Vec<u8>,
        origin: Option<Hlc>,
    ) -> Result<(), StoreError> {
        check_writable(&key)?;
        let guard = self.locks.try_lock(&key).ok_or(StoreError::Conflict)?;
        let begin = Command::BeginDelete {
            key: key.clone(),
            protect: self.cfg.protect && origin.is_none(),
            now_ms: now_ms(),
            owner: self.owner,
        };
        let begin = super::put::as_remote(origin.as_ref(), begin);
        let record = match self.index.apply(begin).await? {
            Ok(Some(record)) => record,
            Ok(None) | Err(Rejection::NotFound) => return Err(StoreError::NotFound),
            Err(Rejection::Protected) => return Err(StoreError::Protected),
            Err(Rejection::Superseded) => return Err(StoreError::Superseded),
            // Another index server's delete or write holds the key.
            Err(Rejection::Busy) => return Err(StoreError::Conflict),
            Err(other) => return Err(StoreError::Invalid(other.to_string())),
        };
        self.cache.invalidate(&key);
        super::crash::point("delete-begun");
        // The key was already deleted by a request that could not finish the cleanup:
        // this one finishes it, and answers 404 like any DELETE of an absent key.
        let already_deleted = record.state == State::Deleting;
        let deleting = Record {
            state: State::Deleting,
            owner: self.owner,
            ..record
        };
        let store = Arc::clone(self);
        detached(async move {
            let _guard = guard;
            // `false`: the record changed meanwhile — a replacing write (S3, another
            // site's change) committed over the `deleting` record and retired it for the
            // upkeep worker. The delete took effect (the key was absent from
            // `BeginDelete` on) and a later write replaced it: a success, not a 502.
            let released = release(&store.ctx(), &key, &deleting, store.owner).await?;
            if !released {
                tracing::debug!("delete of {}: overwritten meanwhile", show(&key));
            }
            if already_deleted {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    /// Virtual delete: the key becomes invisible to reads and `?list` (it shows in
    /// `?unlinked`), its files stay. [`StoreError::NotFound`] if absent or already
    /// unlinked.
    pub async fn unlink(&self, key: Vec<u8>) -> Result<(), StoreError> {
        self.unlink_as(key, None).await
    }

    /// [`Store::unlink`], as another site's unlink of version `origin` when given: it
    /// happens only if the version wins by the conflict rule (or is the version of the
    /// live value, which it unlinks), else [`StoreError::Superseded`].
    pub async fn unlink_as(&self, key: Vec<u8>, origin: Option<Hlc>) -> Result<(), StoreError> {
        check_writable(&key)?;
        let _guard = self.locks.try_lock(&key).ok_or(StoreError::Conflict)?;
        let cmd = Command::Unlink {
            key,
            now_ms: now_ms(),
        };
        match self
            .index
            .apply(super::put::as_remote(origin.as_ref(), cmd))
            .await?
        {
            Ok(_) => Ok(()),
            Err(Rejection::Superseded) => Err(StoreError::Superseded),
            Err(_) => Err(StoreError::NotFound),
        }
    }
}
