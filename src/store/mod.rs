//! The store core: every operation on keys, independent of any protocol.
//!
//! Placement, the replica fan-out, the write protocol (intent → settled fan-out →
//! commit, rollback only when settled, the upkeep queue), reads, deletes and listings
//! live here and nowhere else. Front-ends — the minikeyvalue HTTP API
//! ([`crate::server`]), its batch endpoint, and through them the CLI client — only
//! translate their protocol into calls on [`Store`] and [`StoreError`] back into their
//! own answers; none of them re-implements a write.
//!
//! * [`write`] — [`Store::put`] (the write protocol, with what a crash at each step
//!   leaves behind).
//! * [`delete`] — [`Store::delete`], [`Store::unlink`].
//! * [`get`] — [`Store::open`]: a value's bytes streamed through the index server, for
//!   front-ends whose clients do not follow redirects.
//! * [`meta`] — [`ObjectMeta`] stored with a value, front-ends' index-wide entries
//!   ([`Store::set_frontend`]).
//! * [`inline`] — small values stored in the index record (`--inline-max`).
//! * [`cache`] — [`ValueCache`]: small values [`Store::open`] serves, kept in memory.
//! * [`crash`] — `HOARD_CRASH_AT`: crash points at each step of a write or delete, for
//!   tests.
//! * [`read`] — [`Store::find`] (what a GET needs), [`Store::list`] (bounded scans of
//!   a key range); every read call waits for the read barrier itself
//!   ([`Store::read_barrier`]), so no front-end can forget it.
//! * [`tenancy`] — who may read or write which keys ([`Store::authorize`]: the one
//!   rule of every front-end), access keys, bucket grants and quotas.
//! * [`upkeep`] — the queue of work for the upkeep worker (which sits above, in
//!   `crate::ops::upkeep`, on a [`Ctx`]), and [`release`] of a record with its files.
//!
//! The index is used only through `Index::apply(Command)`, `Index::get` and the
//! read-only scans, so it can be replicated underneath without changing this layer.

mod cache;
mod crash;
mod delete;
mod error;
mod get;
mod inline;
mod meta;
mod put;
mod read;
pub mod tenancy;
pub mod upkeep;
mod write;

pub use cache::{CacheArgs, CacheStats, ValueCache};
pub use error::StoreError;
pub use get::Opened;
pub use inline::{InlineArgs, MAX_INLINE};
pub use meta::ObjectMeta;
pub use put::{PutOptions, Written};
pub use read::{list, Found, ListRange, Location};
pub use upkeep::{release, ReleaseError};
pub use write::PutError;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::index::{Index, KeyLocks};
use crate::placement::SharedPlacement;
use crate::replica::{Health, VolumeClient};

/// The settings the store core's operations depend on.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// DELETE only after UNLINK (`--protect`).
    pub protect: bool,
    /// Hash values on PUT (`--md5sum`).
    pub md5sum: bool,
    /// Replicas that must hold a value for a PUT to succeed; `None` = all of them.
    pub write_quorum: Option<usize>,
    /// How long a replica may accept no data during a PUT before the write fails.
    pub stall_limit: Duration,
    /// The index server's zone: [`Store::find`] prefers replicas there.
    pub zone: Option<String>,
    /// Values of at most this many bytes are stored in the index record
    /// (`--inline-max`, see [`inline`]); 0 = off.
    pub inline_max: u64,
}

/// The store core: the index, the volumes and what coordinates writes to them. Shared
/// as `Arc<Store>`; operations that must finish even if their caller goes away (PUT,
/// DELETE) run on their own task holding a clone of that `Arc`, so the holder can
/// wait for them (see [`crate::server::Started::shutdown`]).
pub struct Store {
    /// Settings.
    pub cfg: StoreConfig,
    /// The index.
    pub index: Index,
    /// Client for volume servers.
    pub client: VolumeClient,
    /// Which volume servers are up.
    pub health: Arc<Health>,
    /// Keys with a write in flight.
    pub locks: KeyLocks,
    /// The placement in force (volumes can join or leave at runtime).
    pub placement: Arc<SharedPlacement>,
    /// Keys with replicas to complete or stale files to delete, for the upkeep worker.
    pub upkeep: upkeep::Queue,
    /// Owner of this process's write intents: `node id << 32 | incarnation` (a random
    /// number drawn at start), see `Command::Begin`.
    pub owner: u64,
    /// Small values served through the index server (`--cache-size`; off until
    /// enabled), invalidated by writes and deletes.
    pub cache: ValueCache,
}

impl Store {
    /// The store's health in brief — status, version, key counts, volumes up, replicas,
    /// cache — as the minivault front-ends answer it (binary `HEALTH`, JSON `/health`;
    /// the index's `/-/health` adds the rest of the server).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "keys": self.index.counts(),
            "volumes_up": self.health.up_count(),
            "replicas": self.placement.current().replicas(),
            "cache": self.cache.stats(),
        })
    }

    /// What a background operation needs, sharing this store's index, locks and health.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            index: self.index.clone(),
            client: self.client.clone(),
            placement: Arc::clone(&self.placement),
            locks: self.locks.clone(),
            health: Some(Arc::clone(&self.health)),
        }
    }
}

/// What an operation on keys needs besides a request: the index, volumes, placement
/// and per-key locks. A [`Store`] hands out one ([`Store::ctx`]); offline jobs build
/// one without a server.
#[derive(Clone)]
pub struct Ctx {
    /// The index.
    pub index: Index,
    /// Client for volume servers.
    pub client: VolumeClient,
    /// The placement in force (may change while a job runs; each key uses the current).
    pub placement: Arc<SharedPlacement>,
    /// Per-key locks shared with the request paths (a fresh set offline).
    pub locks: KeyLocks,
    /// Which volume servers are up (online only; offline every server is tried).
    pub health: Option<Arc<Health>>,
}

impl Ctx {
    /// Whether `server` is believed up (always true offline).
    pub fn is_up(&self, server: &str) -> bool {
        self.health.as_ref().is_none_or(|h| h.is_up(server))
    }
}

/// Runs the rest of a write (or delete) on its own task, so that a caller going away
/// mid-request cannot cancel the cleanup half-way.
pub(super) async fn detached<F, T>(work: F) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(work))
        .await
        .unwrap_or_else(|e| Err(StoreError::Volume(format!("write task failed: {e}"))))
}
