//! The write protocol: [`Store::put`].
//!
//! PUT, and what a crash at each step leaves behind:
//!
//! 1. without `replace`, take the key's lock ([`StoreError::Conflict`] if held) and
//!    check it is not live ([`StoreError::Exists`]); wait for the first body bytes ([`StoreError::Empty`] if
//!    none, unless `PutOptions::allow_empty`); check that enough of its replica
//!    volumes are up for the write quorum ([`StoreError::Unavailable`]) — nothing is
//!    recorded yet;
//! 2. from here the write runs on its own task, so a caller that goes away (an HTTP
//!    client disconnecting) cannot cut it short. `Begin`: an intent record (state
//!    `writing`, target volumes, owner) is committed to the index, for a *generation*
//!    of the key's files that no other record of the key names (`Record::gen`: the
//!    files are `file_path(key, gen)`, see [`crate::placement::file_path`]). Over a
//!    live value (`PutOptions::replace`) the intent is a record of its own
//!    (`index::gen_key(key, gen)`) and the key's record — the value readers see, and
//!    its files — is not touched; otherwise the intent is the key's record and what
//!    it replaces (an unlinked value, an abandoned intent) is retired: kept at its
//!    own `gen_key` in state `deleting` for the upkeep worker. Crash after this: a
//!    `writing` record, invisible to GET and lists (the old value, if any, still
//!    served); repair rolls it back (deletes every file it names, drops the record);
//! 3. stream the body to every replica at once, to the new generation's names —
//!    crash or failure here: volumes hold at most temp files (discarded) or complete
//!    files named by the intent record; the old value's files are untouched;
//! 4. `Commit`: one command makes the intent the key's `live` record with size and
//!    md5 and retires the record it replaces — only now does a reader see the new
//!    value, and only now does `put` return [`Written`]. The retired value's files,
//!    stale files, and replicas a degraded write missed are then the upkeep worker's
//!    (`ops::upkeep`). A crash after `Commit`: the retired record is still there, and
//!    the upkeep worker's walk at start finds it.
//!
//! A failed write is rolled back — its files deleted, then the intent dropped; a value
//! it was to replace is still the key's record, untouched — only once it is *settled*: every replica request has ended, so no volume
//! can still rename the value into place after the cleanup (see `replica::fanout`). A
//! write that cannot be settled (a volume hung holding the whole value), or whose
//! cleanup fails, leaves its intent for repair. A failed or rejected `Commit` is rolled
//! back the same way, unless a re-read shows it committed after all.
//!
//! While streaming, the fan-out fails the write as soon as the prober sees fewer than
//! the write quorum of its volumes up, so a hung volume costs a PUT at most
//! `--voltimeout` + the probe interval. With `--write-quorum` below the replica count,
//! volumes already down are skipped and replicas failing mid-way are dropped; the key
//! is committed with them recorded as missing and queued for the upkeep worker.
//!
//! With `--inline-max`, a body that ends within that many bytes skips all of this: it
//! is stored in the index record by one command (see [`super::inline`]).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::error::refusal;
use super::inline::Head;
use super::put::{PutOptions, Written};
use super::upkeep::release;
use super::{detached, Store, StoreError};
use crate::clock::now_ms;
use crate::index::show;
use crate::index::{gen_key, Command, KeyGuard, Record, State};
use crate::key::check_writable;
use crate::placement::server_of;
use crate::replica::{put_quorum, FanoutError, Uploaded, VolumeClient, WriteFailed};

/// A failed [`Store::put`].
#[derive(Debug)]
pub struct PutError<S> {
    /// What went wrong.
    pub error: StoreError,
    /// The rest of the body, handed back when the write was refused before anything
    /// was recorded and the body had not been read to its end (at most its first chunk
    /// was read): a front-end may drain it so its client sees the answer.
    pub unread: Option<S>,
}

impl<S> PutError<S> {
    fn new(error: impl Into<StoreError>) -> Self {
        PutError {
            error: error.into(),
            unread: None,
        }
    }

    fn refused(error: StoreError, body: S) -> Self {
        PutError {
            error,
            unread: Some(body),
        }
    }
}

impl Store {
    /// Stores `body` under `key` with minikeyvalue's semantics (a live key is refused);
    /// see [`Store::put_with`].
    pub async fn put<S, E>(
        self: &Arc<Self>,
        key: Vec<u8>,
        body: S,
        len: Option<u64>,
    ) -> Result<Written, PutError<S>>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.put_with(key, body, len, PutOptions::default()).await
    }

    /// Stores `body` (a stream of chunks; `len` its length if known in advance, which
    /// volumes are then told) under `key`, following the write protocol described at
    /// the top of this module: the value is visible only once every replica (or the
    /// write quorum) holds it. Memory is bounded by replicas × the fan-out's channel
    /// depth × chunk size, whatever the value's size.
    pub async fn put_with<S, E>(
        self: &Arc<Self>,
        key: Vec<u8>,
        mut body: S,
        len: Option<u64>,
        opts: PutOptions,
    ) -> Result<Written, PutError<S>>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let guard = match self.admit(&key, len, &opts) {
            Ok(guard) => guard,
            Err(e) => return Err(PutError::refused(e, body)),
        };

        // Wait for the first bytes before recording anything, so bodiless requests
        // (an empty chunked upload) leave no trace.
        let first = loop {
            match body.next().await {
                None if opts.allow_empty => break None,
                None => return Err(PutError::new(StoreError::Empty)),
                Some(Err(e)) => {
                    return Err(PutError::new(StoreError::Invalid(format!(
                        "reading body: {e}"
                    ))))
                }
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => break Some(chunk),
            }
        };
        // An empty body (allowed): a fixed-length upload of zero bytes — unless it was
        // announced longer (the client went away).
        let len = match (&first, len) {
            (None, Some(want)) if want > 0 => {
                let short = FanoutError::Length { got: 0, want };
                return Err(PutError::new(StoreError::ClientBody(short)));
            }
            (None, _) => Some(0),
            (Some(_), len) => len,
        };

        // Small enough to go inline (`--inline-max`)? Read on to find out.
        let max = self.cfg.inline_max;
        let head = if max > 0 && len.is_none_or(|l| l <= max) {
            match super::inline::read_head(first, &mut body, max).await {
                Ok(Head::Whole(value)) => {
                    return self
                        .put_inline(key, value, len, guard, opts)
                        .await
                        .map_err(PutError::new)
                }
                Ok(Head::Longer(read)) => read,
                Err(e) => return Err(PutError::new(e)),
            }
        } else {
            first.into_iter().collect()
        };

        let volumes = self.placement.current().locate(&key);
        let quorum = self.cfg.write_quorum.unwrap_or(volumes.len());
        let down: Vec<&str> = volumes
            .iter()
            .map(|v| server_of(v))
            .filter(|s| !self.health.is_up(s))
            .collect();
        if volumes.len() - down.len() < quorum {
            let e = StoreError::Unavailable(format!("replica volume {} is down", down.join(",")));
            return Err(PutError::refused(e, body));
        }
        let stream = futures_util::stream::iter(head.into_iter().map(Ok)).chain(body);
        // From the intent on, the write runs on its own task: a caller that goes away
        // cannot cut it (or its cleanup) short.
        let store = Arc::clone(self);
        detached(async move {
            let _guard = guard;
            let begin = Command::Begin {
                key: key.clone(),
                volumes: volumes.clone(),
                now_ms: now_ms(),
                owner: store.owner,
                replace: opts.replace,
            };
            let intent = store.index.apply(begin).await?.map_err(refusal)?;
            super::crash::point("write-begun");
            // The intent's generation names the files written.
            let gen = intent.map_or(0, |i| i.gen);
            match store
                .write_replicas(&key, gen, &volumes, quorum, stream, len, opts.md5)
                .await
            {
                Ok((uploaded, missing)) => {
                    super::crash::point("write-uploaded");
                    let origin = opts.origin;
                    store
                        .commit(&key, gen, uploaded, missing, opts.meta, origin)
                        .await
                }
                Err(WriteFailed { error, settled }) => {
                    if settled {
                        store.roll_back(&key, gen).await;
                    } else {
                        tracing::warn!(
                            "write of {} failed and a volume may still store it: intent left for repair",
                            show(&key)
                        );
                    }
                    Err(error.into())
                }
            }
        })
        .await
        .map_err(PutError::new)
    }

    /// The checks made before any byte of the body is read: key, length, lock,
    /// existence. The guard holds the key's lock for the rest of the write — only for
    /// minikeyvalue's semantics (a second PUT of a key being written is refused):
    /// overwrites (`replace`) each write their own generation, so concurrent ones all
    /// succeed and the last to commit wins, as in S3.
    fn admit(
        &self,
        key: &[u8],
        len: Option<u64>,
        opts: &PutOptions,
    ) -> Result<Option<KeyGuard>, StoreError> {
        check_writable(key)?;
        if opts.meta.len() > crate::index::MAX_META_LEN {
            return Err(StoreError::Invalid("metadata too large".into()));
        }
        if len == Some(0) && !opts.allow_empty {
            return Err(StoreError::Empty);
        }
        // The bucket's quota, whatever the front-end (a value of unknown length counts
        // as empty here: see docs/OPERATIONS.md, Tenancy).
        if let Some(bucket) = crate::index::bucket_of(key) {
            self.check_quota(bucket, key, len.unwrap_or(0))?;
        }
        if opts.replace {
            return Ok(None);
        }
        let guard = self.locks.try_lock(key).ok_or(StoreError::Conflict)?;
        // An early 403, before the body is read. In an index cluster this node's copy
        // may be stale, and confirming it would cost a read barrier per PUT: there
        // `Begin` alone decides, through the log (403 after the first body chunk).
        if !opts.replace
            && !self.index.is_replicated()
            && self.index.get(key)?.is_some_and(|r| r.state == State::Live)
        {
            return Err(StoreError::Exists);
        }
        Ok(Some(guard))
    }

    /// Streams the value to the replica volumes that are up (those already down are
    /// missing from the start); the value and the locations that do not hold it.
    #[allow(clippy::too_many_arguments)]
    async fn write_replicas<S, E>(
        &self,
        key: &[u8],
        gen: u64,
        volumes: &[String],
        quorum: usize,
        stream: S,
        len: Option<u64>,
        md5: bool,
    ) -> Result<(Uploaded, Vec<String>), WriteFailed>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (live, skipped): (Vec<usize>, Vec<usize>) =
            (0..volumes.len()).partition(|&i| self.health.is_up(server_of(&volumes[i])));
        if live.len() < quorum {
            return Err(WriteFailed {
                error: FanoutError::Down {
                    url: "too few replica volumes are up for the write quorum".into(),
                },
                settled: true,
            });
        }
        let targets: Vec<String> = live
            .iter()
            .map(|&i| VolumeClient::url(&volumes[i], key, gen))
            .collect();
        let down = |j: usize| !self.health.is_up(server_of(&volumes[live[j]]));
        let written = put_quorum(
            &self.client,
            &targets,
            stream,
            len,
            self.cfg.md5sum || md5,
            self.cfg.stall_limit,
            quorum,
            &down,
        )
        .await?;
        let missing: Vec<String> = skipped
            .iter()
            .copied()
            .chain(written.missing.iter().map(|&j| live[j]))
            .map(|i| volumes[i].clone())
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                "degraded write of {}: missing on {}",
                show(key),
                missing.join(",")
            );
        }
        Ok((written.uploaded, missing))
    }

    /// Makes a written value (of generation `gen`) live. If the commit fails, the
    /// write is rolled back — unless it did commit after all (a storage error after the
    /// fact), which a re-read tells. Replicas to complete, stale files and retired
    /// values to delete go to the upkeep worker.
    async fn commit(
        &self,
        key: &[u8],
        gen: u64,
        uploaded: Uploaded,
        missing: Vec<String>,
        meta: Vec<u8>,
        origin: Option<crate::index::hlc::Hlc>,
    ) -> Result<Written, StoreError> {
        let now = now_ms();
        let commit = Command::Commit {
            key: key.to_vec(),
            size: uploaded.size,
            md5: uploaded.md5,
            missing: missing.clone(),
            now_ms: now,
            owner: self.owner,
            meta,
            gen,
        };
        let commit = super::put::as_remote(origin.as_ref(), commit);
        // The previous record says whether files are left to delete: stale ones, or
        // those of a record `Commit` (an overwrite's) or `Begin` (a new generation of
        // the key's record: there was a record before) retired.
        let ours = |p: &Record| p.state == State::Writing && p.gen == gen && p.owner == self.owner;
        let (committed, failure) = match self.index.apply(commit).await {
            Ok(Ok(prev)) => (
                Some(prev.is_some_and(|p| match ours(&p) {
                    true => !p.stale.is_empty() || gen != 0,
                    false => !p.all_locations().is_empty(),
                })),
                None,
            ),
            // Another site's change that lost to the key's version: rolled back.
            Ok(Err(crate::index::Rejection::Superseded)) => (None, Some(StoreError::Superseded)),
            Ok(Err(r)) => (
                None,
                Some(StoreError::Volume(format!("commit rejected: {r}"))),
            ),
            // Unknown outcome (storage error, lost leader): look, linearizably.
            Err(e) => match self.index.get_linearizable(key).await {
                // Whatever it retired, the upkeep worker's walk finds too.
                Ok(Some(r)) if r.state == State::Live && r.changed_ms == now && r.gen == gen => {
                    (Some(true), None)
                }
                _ => (None, Some(StoreError::Index(e))),
            },
        };
        match (committed, failure) {
            (Some(leftovers), _) => {
                super::crash::point("write-committed");
                self.cache.invalidate(key);
                if leftovers || !missing.is_empty() {
                    let _ = self.upkeep.send(super::upkeep::Task::Key(key.to_vec()));
                }
                Ok(Written {
                    size: uploaded.size,
                    md5: uploaded.md5,
                    missing,
                })
            }
            (None, failure) => {
                self.roll_back(key, gen).await;
                Err(failure.unwrap_or_else(|| StoreError::Volume("commit not recorded".into())))
            }
        }
    }

    /// Removes the files of a failed write (of generation `gen`) and then its intent —
    /// the key's record, or an overwrite's record beside it. If a volume cannot be
    /// cleaned now, the intent stays for repair. A value the write was to replace is
    /// not touched. The caller holds the key's lock, and the write is settled (no
    /// replica can still store the value).
    async fn roll_back(&self, key: &[u8], gen: u64) {
        // Linearizable: in an index cluster, this node's copy may lag the leader's.
        // Only our own intent: another write may have taken the key over.
        let ours = |r: &Record| r.state == State::Writing && r.owner == self.owner && r.gen == gen;
        let mut at = key.to_vec();
        let mut found = self.index.get_linearizable(key).await;
        if matches!(&found, Ok(r) if !r.as_ref().is_some_and(ours)) {
            at = gen_key(key, gen);
            found = self.index.get_linearizable(&at).await;
        }
        let intent = match found {
            Ok(Some(r)) if ours(&r) => r,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!("rolling back {}: {e}; left for repair", show(key));
                return;
            }
        };
        if gen != 0 {
            // `Begin` may have retired an older record of the key.
            let _ = self.upkeep.send(super::upkeep::Task::Key(key.to_vec()));
        }
        if let Err(e) = release(&self.ctx(), &at, &intent, self.owner).await {
            tracing::warn!(
                "could not clean up failed write of {} ({e}); left for repair",
                show(key)
            );
        }
    }
}
