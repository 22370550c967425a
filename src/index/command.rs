//! Index mutations as commands applied atomically to a state machine.
//!
//! Every change to the index is one [`Command`]; [`apply`] is deterministic given the
//! current contents, so the same sequence of commands can later be replicated through a
//! Raft log and applied on every index server with identical results.

use super::record::{Record, State};

/// One atomic change to the index. Times are supplied by the proposer, never read inside
/// [`apply`], so applying is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Record the intent to write `key` to `volumes`, as a new generation of its files
    /// (`Record::gen`) that no other record of the key names. Rejected with
    /// [`Rejection::Exists`] when the key is live, unless `replace`.
    ///
    /// * With `replace` (S3, minivault), the key's record is not touched: readers keep
    ///   the old value until the write commits. The intent is a record of its own, at
    ///   [`gen_key`]`(key, gen)`; `Commit` makes it the key's record and retires the
    ///   one it replaces, a rollback drops it. Overwrites never touch the files
    ///   readers see, and concurrent overwrites of one key never refuse each other
    ///   (no [`Rejection::Busy`]): each has its own intent, the last to commit wins.
    /// * Otherwise (minikeyvalue: no record, an unlinked value, an abandoned intent, an
    ///   interrupted delete) the intent becomes the key's record, and the record it
    ///   replaces, if it names files, is *retired*: kept at `gen_key(key, its gen)` in
    ///   state `deleting`, owner 0, for the upkeep worker (or repair) to delete its
    ///   files — a different name from the new write's, so no file is shared.
    ///
    /// The generation is 0 (minikeyvalue's file name) for a key's record when the key
    /// has none and no record of generation 0 is retired; else the first number from
    /// `now_ms` on (above the key's record's) that no record of the key uses. Answers
    /// the intent written (not the previous record).
    Begin {
        /// The key.
        key: Vec<u8>,
        /// Target replica locations, in placement order.
        volumes: Vec<String>,
        /// Proposer's clock, unix ms.
        now_ms: u64,
        /// The write taking the intent (`node id << 32 | process incarnation`; 0 for
        /// none). An intent owned by another node's write is refused ([`Rejection::Busy`])
        /// until [`WRITE_LEASE_MS`] after it was taken: two index servers never both
        /// write one key.
        owner: u64,
        /// Overwrite a live value (S3 and minivault semantics; minikeyvalue's PUT
        /// refuses). The old value stays visible until the new one commits.
        #[serde(default)]
        replace: bool,
    },
    /// The write reached its quorum: the key becomes live. `missing` lists the target
    /// locations that do not hold the value (a degraded write, `--write-quorum` below
    /// the replica count); empty when every replica acknowledged. Requires the
    /// intent of generation `gen` — the key's record, or an overwrite's record at
    /// [`gen_key`]`(key, gen)`, which then replaces the key's record (retired, see
    /// [`Command::Begin`]). Answers the key's record as it was before.
    Commit {
        /// The key.
        key: Vec<u8>,
        /// Value size in bytes.
        size: u64,
        /// md5 of the value, when computed.
        md5: Option<[u8; 16]>,
        /// Target locations that do not hold the value.
        missing: Vec<String>,
        /// Proposer's clock, unix ms.
        now_ms: u64,
        /// The write committing: must own the intent.
        owner: u64,
        /// A front-end's metadata of the value (see `Record::meta`); empty for none.
        #[serde(default)]
        meta: Vec<u8>,
        /// The generation of the intent (`Record::gen` of what `Begin` answered).
        #[serde(default)]
        gen: u64,
    },
    /// Store a small value in the key's record itself (`--inline-max`): the key becomes
    /// live at once, with no volumes. Refused like [`Command::Begin`] (a live key
    /// without `replace`, another node's fresh intent); an older record that names
    /// files is retired (see [`Command::Begin`]) for the upkeep worker to delete.
    PutInline {
        /// The key.
        key: Vec<u8>,
        /// The value (at most `MAX_INLINE_LEN` bytes); base64 in JSON (the Raft log).
        #[serde(with = "super::base64_serde::bytes")]
        value: Vec<u8>,
        /// md5 of the value, when computed.
        md5: Option<[u8; 16]>,
        /// Proposer's clock, unix ms.
        now_ms: u64,
        /// The write (as for [`Command::Begin`]).
        owner: u64,
        /// Overwrite a live value.
        replace: bool,
        /// A front-end's metadata of the value; empty for none.
        meta: Vec<u8>,
    },
    /// Repair copied the value of a degraded write to `location`: it is no longer
    /// missing. Requires state `live` or `unlinked`.
    Completed {
        /// The key.
        key: Vec<u8>,
        /// The location that now holds the value.
        location: String,
        /// The generation copied (`Record::gen`): a record of another generation is
        /// left alone ([`Rejection::Changed`]).
        #[serde(default)]
        gen: u64,
    },
    /// The files at `locations` were deleted: they are no longer `stale`. Any state.
    Cleaned {
        /// The key.
        key: Vec<u8>,
        /// The locations cleaned.
        locations: Vec<String>,
    },
    /// Virtual delete. Requires state `live`.
    Unlink {
        /// The key.
        key: Vec<u8>,
        /// Proposer's clock, unix ms.
        now_ms: u64,
    },
    /// Start a hard delete: the key becomes invisible while its files are removed.
    /// Accepts `live` (unless `protect`), `unlinked` and `deleting` (a retry).
    BeginDelete {
        /// The key.
        key: Vec<u8>,
        /// `--protect`: only unlinked keys may be deleted.
        protect: bool,
        /// Proposer's clock, unix ms.
        now_ms: u64,
        /// The delete taking the key, as for [`Command::Begin`]: an interrupted delete is
        /// retried by its own node, another node's fresh one is refused (`Busy`).
        owner: u64,
    },
    /// Move a live or unlinked key to new replica locations (rebalance, repair).
    /// Requires the record to still list `from` and name files of generation `gen`
    /// (the copies were made of those), so a concurrent change wins.
    Relocate {
        /// The key.
        key: Vec<u8>,
        /// The locations the caller read.
        from: Vec<String>,
        /// The new locations.
        to: Vec<String>,
        /// The generation of the files copied (`Record::gen`).
        #[serde(default)]
        gen: u64,
    },
    /// Record the md5 of a live or unlinked key's value, learned by verification.
    /// Requires the record to be the same version of the value the caller hashed:
    /// same `changed_ms` and `size`, and an md5 that is unknown or already equal.
    SetMd5 {
        /// The key.
        key: Vec<u8>,
        /// `changed_ms` of the record the caller read.
        changed_ms: u64,
        /// The size the caller read.
        size: u64,
        /// The md5 of the value.
        md5: [u8; 16],
    },
    /// The volume list in force (replicated with the index in an index cluster, so every
    /// index server places keys the same way). Stored under [`VOLUMES_META`].
    SetVolumes {
        /// The volumes, in the order placement hashes them.
        volumes: Vec<String>,
        /// Only when no list was set yet (a member's configured list at first start).
        if_unset: bool,
    },
    /// Index cluster node `id` left the cluster for good: its id may never be given to
    /// another member (a node that lost its disk must come back under a new id, or it
    /// could vote twice in one term). Stored under [`RETIRED_META`].
    RetireMember {
        /// The node id.
        id: u64,
    },
    /// The cluster's background job (rebalance, verify): its record (JSON, opaque
    /// here) stored under [`JOB_META`], and who runs it under [`JOB_OWNER_META`].
    /// Applied only if the current owner is `expect` (`""`: no job running), else
    /// [`Rejection::Changed`]: starting a job, a leader taking over a dead leader's job
    /// and progress reports can never overwrite each other.
    SetJob {
        /// The job record.
        record: String,
        /// The owner from now on (`"{job id}/{node id}"`; `""` once the job ended).
        owner: String,
        /// The owner this change expects.
        expect: String,
    },
    /// Sets (or with `value: None`, removes) a front-end's index-wide entry `name`, such
    /// as an S3 bucket or multipart upload: stored in `meta` under
    /// [`FRONTEND_META_PREFIX`]` + name`, so it never clashes with the index's own
    /// entries, replicates with the log and travels in snapshots. With `if_absent`, an
    /// existing entry is kept ([`Rejection::Exists`]); removing an absent entry is
    /// [`Rejection::NotFound`]. Answers `Ok(None)`.
    SetFrontend {
        /// The entry's name (namespaced by the front-end, e.g. `s3/bucket/NAME`).
        name: String,
        /// The new value; `None` removes the entry.
        value: Option<Vec<u8>>,
        /// Only create: refuse when the entry exists.
        #[serde(default)]
        if_absent: bool,
    },
    /// The scrubber's state (`ops::scrub::ScrubState`, JSON, opaque here), stored
    /// under [`SCRUB_META`]: replicated, so a new leader resumes the pass.
    SetScrub {
        /// The state.
        record: String,
    },
    /// Replication to other sites: the change feed's own state (cursors, origins of
    /// remote changes), applied by `super::feed`; changes no record.
    Feed(super::feed_command::FeedCommand),
    /// A change another site made (the sites receiver), applied only if its version
    /// `origin` wins by the conflict rule (`super::hlc`: highest version, then larger
    /// site id) against the key's current version — decided by `super::feed::Hook::before`
    /// in the transaction that applies it, so no local change can slip in between —
    /// else [`Rejection::Superseded`]. `cmd` is a `Commit`, `PutInline`, `Unlink` or
    /// `BeginDelete` of `key`, applied as usual; `None` records the delete of a key
    /// this site does not hold (a tombstone; [`Rejection::Changed`] if it holds it).
    /// The version is recorded for the key instead of a feed entry: a remote change is
    /// never shipped on.
    Remote {
        /// The key.
        key: Vec<u8>,
        /// The change's version at its origin (its site never empty).
        origin: super::hlc::Hlc,
        /// The change itself; `None`: a delete of an absent key.
        cmd: Option<Box<Command>>,
    },
    /// Tenancy: access keys, bucket grants and quotas (`super::tenancy`); changes no
    /// record.
    Tenancy(super::tenancy::TenancyCommand),
    /// Drop the record if it is in state `expect` (finish a delete, roll back a write).
    /// `key` may be a [`gen_key`]: an overwrite's intent or a retired record.
    Remove {
        /// The key.
        key: Vec<u8>,
        /// The state the caller believes the record is in.
        expect: State,
        /// The write or delete finishing: must own the record (0: any owner — repair,
        /// which checked the record itself).
        owner: u64,
    },
    /// Replace the front-end metadata (`Record::meta`) of a live value, keeping the
    /// value (an S3 CopyObject onto itself with `REPLACE`). Requires the record to be
    /// the version the caller read: same `changed_ms` and `size`, else
    /// [`Rejection::Changed`]. The value's files, size, md5 and time are unchanged.
    SetMeta {
        /// The key.
        key: Vec<u8>,
        /// `changed_ms` of the record the caller read.
        changed_ms: u64,
        /// The size the caller read.
        size: u64,
        /// The new metadata (empty: none).
        meta: Vec<u8>,
    },
    /// Give up a write intent that repair judged abandoned, before its files are
    /// deleted: the `writing` record (at `key`, which may be a [`gen_key`]) becomes
    /// `deleting`, owned by no one, so its write can no longer `Commit` — a write that
    /// was only slow gets an error instead of a 201 for files about to be deleted.
    /// Requires the intent the caller read: same `owner` and `changed_ms`, else
    /// [`Rejection::Changed`].
    Abandon {
        /// The key (or an overwrite's [`gen_key`]).
        key: Vec<u8>,
        /// The intent's owner, as read.
        owner: u64,
        /// The intent's `changed_ms`, as read.
        changed_ms: u64,
    },
}

impl Command {
    /// The time an intent-taking command (`Begin`, `BeginDelete`) measures write and
    /// delete leases with (see [`LEASE_CLOCK_META`]); `None` for other commands.
    pub fn lease_ms_mut(&mut self) -> Option<&mut u64> {
        match self {
            Command::Begin { now_ms, .. } | Command::BeginDelete { now_ms, .. } => Some(now_ms),
            Command::Remote { cmd: Some(c), .. } => c.lease_ms_mut(),
            _ => None,
        }
    }

    /// The key this command changes.
    pub fn key(&self) -> &[u8] {
        match self {
            Command::Begin { key, .. }
            | Command::PutInline { key, .. }
            | Command::Commit { key, .. }
            | Command::Completed { key, .. }
            | Command::Cleaned { key, .. }
            | Command::Unlink { key, .. }
            | Command::BeginDelete { key, .. }
            | Command::Relocate { key, .. }
            | Command::SetMd5 { key, .. }
            | Command::SetMeta { key, .. }
            | Command::Abandon { key, .. }
            | Command::Remove { key, .. }
            | Command::Remote { key, .. } => key,
            Command::SetVolumes { .. }
            | Command::RetireMember { .. }
            | Command::SetJob { .. }
            | Command::SetFrontend { .. }
            | Command::SetScrub { .. }
            | Command::Tenancy(_)
            | Command::Feed(_) => b"",
        }
    }
}

/// Why a command was not applied. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Rejection {
    /// No visible record for the key.
    #[error("key not found")]
    NotFound,
    /// The key is live and may not be overwritten.
    #[error("key exists")]
    Exists,
    /// `--protect` is on and the key was not unlinked first.
    #[error("key is protected: unlink it first")]
    Protected,
    /// The record is not in the state the command requires.
    #[error("record is {}", .0.name())]
    WrongState(State),
    /// The record changed since the caller read it.
    #[error("record changed concurrently")]
    Changed,
    /// Another index server's write holds the key's intent.
    #[error("another write of this key is in progress")]
    Busy,
    /// A change from another site ([`Command::Remote`]) whose version does not win
    /// against the key's current one.
    #[error("superseded by a newer version of the key")]
    Superseded,
}

/// How long a `writing` intent belongs to the write that took it, against writes and
/// deletes from other nodes: past this, they may take it over (its owner is presumed
/// dead). A write that streams for longer than this can lose its key to another node.
pub const WRITE_LEASE_MS: u64 = 600_000;

/// The same for a `deleting` record: a delete is short (each volume DELETE is bounded),
/// so another node may retry an interrupted one after a minute.
pub const DELETE_LEASE_MS: u64 = 60_000;

/// The node part of an owner (`node id << 32 | incarnation`).
pub fn owner_node(owner: u64) -> u64 {
    owner >> 32
}

/// True when `prev` is an intent (`writing` or `deleting`) that another node's write
/// or delete took less than [`WRITE_LEASE_MS`] ago.
fn held_elsewhere(prev: Option<&Record>, owner: u64, now_ms: u64) -> bool {
    prev.is_some_and(|r| {
        matches!(r.state, State::Writing | State::Deleting)
            && r.owner != 0
            && owner_node(r.owner) != owner_node(owner)
            && now_ms
                < r.changed_ms.saturating_add(match r.state {
                    State::Deleting => DELETE_LEASE_MS,
                    _ => WRITE_LEASE_MS,
                })
    })
}

/// Result of applying one command: the record as it was before, or why nothing changed.
pub type Applied = Result<Option<Record>, Rejection>;

/// The minimal key → record map a command needs.
pub trait RecordMap {
    /// The error of the underlying store.
    type Error;
    /// Reads one record.
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Self::Error>;
    /// Writes one record.
    fn put(&mut self, key: &[u8], record: &Record) -> Result<(), Self::Error>;
    /// Deletes one record.
    fn remove(&mut self, key: &[u8]) -> Result<(), Self::Error>;
    /// Reads an index-wide value.
    fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Writes (`None`: removes) an index-wide value.
    fn put_meta(&mut self, name: &str, value: Option<Vec<u8>>) -> Result<(), Self::Error>;
    /// The command must be durable when answered, whatever the index would otherwise
    /// decide for it (it retired a visible value, whose files may be deleted next).
    fn must_persist(&mut self) {}
}

/// First byte of a [`gen_key`]. Keys of values start with `/` (see `crate::key`), so
/// these never clash with them and sort before them.
const GEN_KEY_MARK: u8 = 0;

/// The index key of the record of generation `gen` of `key`'s files when it is not
/// the key's record: an overwrite in flight (`writing`) or a retired value whose files
/// are being deleted (`deleting`). `0x00, key, 0x00, gen as 8 big-endian bytes` — keys
/// hold no NUL, so the key's records sort together, by generation.
pub fn gen_key(key: &[u8], gen: u64) -> Vec<u8> {
    let mut out = gen_prefix(key);
    out.extend_from_slice(&gen.to_be_bytes());
    out
}

/// The prefix of every [`gen_key`] of `key`.
pub fn gen_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    out.push(GEN_KEY_MARK);
    out.extend_from_slice(key);
    out.push(GEN_KEY_MARK);
    out
}

/// True for a [`gen_key`].
pub fn is_gen_key(index_key: &[u8]) -> bool {
    index_key.first() == Some(&GEN_KEY_MARK)
}

/// The key whose files an index key's record names: the index key itself, or the key
/// a [`gen_key`] belongs to.
pub fn value_key(index_key: &[u8]) -> &[u8] {
    match index_key {
        [GEN_KEY_MARK, rest @ ..] if rest.len() >= 9 && rest[rest.len() - 9] == GEN_KEY_MARK => {
            &rest[..rest.len() - 9]
        }
        _ => index_key,
    }
}

/// An index key for log messages (a [`gen_key`] shows as `key~gen`).
pub fn show(key: &[u8]) -> String {
    if is_gen_key(key) {
        let value = value_key(key);
        let gen = key[key.len() - 8..]
            .try_into()
            .map_or(0, u64::from_be_bytes);
        return format!("{}~{gen}", String::from_utf8_lossy(value));
    }
    String::from_utf8_lossy(key).into_owned()
}

/// Index-wide value of [`Command::SetVolumes`]: the volume list as JSON.
pub const VOLUMES_META: &str = "volumes";

/// The meta entries that are replicated state (set by commands), carried by Raft
/// snapshots along with the records.
pub const REPLICATED_META: &[&str] = &[
    VOLUMES_META,
    JOB_META,
    JOB_OWNER_META,
    RETIRED_META,
    LEASE_CLOCK_META,
    SCRUB_META,
];

/// Meta entry holding the scrubber's state (see `Command::SetScrub`).
pub const SCRUB_META: &str = "scrub";

/// Meta entry holding the highest lease time an intent was stamped with (decimal ms).
///
/// Write and delete leases ([`WRITE_LEASE_MS`], [`DELETE_LEASE_MS`]) compare the
/// `now_ms` of the command taking an intent with the `changed_ms` of the intent it
/// finds. Stamped by each proposer's own wall clock, two index servers whose clocks
/// differ by more than a lease would each see the other's fresh intent as expired, and
/// a write could take over a delete still removing the files it writes (issue 23's
/// nemesis found exactly that with clocks 150 s apart). In an index cluster the leader
/// therefore restamps `Begin` and `BeginDelete` (`raft::batch`) with one clock: this
/// value, continued by the leader's monotonic clock from when it began to lead. It
/// never jumps with a member's wall clock; it only runs slow while no leader is
/// elected, which makes leases longer, never shorter.
pub const LEASE_CLOCK_META: &str = "lease-clock";

/// Meta entry holding the cluster's background job record (see `Command::SetJob`).
pub const JOB_META: &str = "job";

/// Meta entry naming who runs the cluster's background job (`""`: nobody).
pub const JOB_OWNER_META: &str = "job-owner";

/// Meta entry holding the ids of retired index cluster members, a JSON list.
pub const RETIRED_META: &str = "retired-members";

/// The retired member ids stored under [`RETIRED_META`] (empty when none or unreadable).
pub fn retired_members(json: Option<&[u8]>) -> Vec<u64> {
    json.and_then(|j| serde_json::from_slice(j).ok())
        .unwrap_or_default()
}

/// Prefix of the `meta` entries of [`Command::SetFrontend`].
pub const FRONTEND_META_PREFIX: &str = "fe/";

/// Keeps [`LEASE_CLOCK_META`] at the highest lease time seen. Written even when it does
/// not change: later commands of the same batch then read it from the batch's pending
/// meta, not from a read transaction of their own.
fn note_lease_time<M: RecordMap>(map: &mut M, ms: u64) -> Result<(), M::Error> {
    let seen = lease_clock(map.get_meta(LEASE_CLOCK_META)?.as_deref());
    let max = seen.map_or(ms, |seen| seen.max(ms));
    map.put_meta(LEASE_CLOCK_META, Some(max.to_string().into_bytes()))
}

/// The value of [`LEASE_CLOCK_META`] (`None`: absent or unreadable).
pub fn lease_clock(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.parse().ok()
}

/// A generation for a new intent of `key` that no record of it uses: the first number
/// from `now_ms` on (and above the key's record's), skipping those taken.
fn fresh_gen<M: RecordMap>(
    map: &mut M,
    key: &[u8],
    prev: Option<&Record>,
    now_ms: u64,
) -> Result<u64, M::Error> {
    let mut gen = now_ms
        .max(prev.map_or(0, |p| p.gen.saturating_add(1)))
        .max(1);
    while map.get(&gen_key(key, gen))?.is_some() {
        gen += 1;
    }
    Ok(gen)
}

/// Keeps the files `old` (a record of `key` being replaced) names for deletion: as a
/// `deleting` record with owner 0 at [`gen_key`]`(key, old.gen)`, merged with one
/// already there. A record naming no file (inline, or nothing written) is dropped.
/// Retiring a visible value makes the command durable: its files may be deleted as
/// soon as it is answered.
fn retire<M: RecordMap>(map: &mut M, key: &[u8], old: &Record) -> Result<(), M::Error> {
    let mut files = old.all_locations();
    if files.is_empty() {
        return Ok(());
    }
    if matches!(old.state, State::Live | State::Unlinked) {
        map.must_persist();
    }
    let at = gen_key(key, old.gen);
    if let Some(there) = map.get(&at)? {
        for l in there.all_locations() {
            if !files.contains(&l) {
                files.push(l);
            }
        }
    }
    let retired = Record {
        state: State::Deleting,
        volumes: files,
        missing: Vec::new(),
        stale: Vec::new(),
        owner: 0,
        inline: None,
        ..old.clone()
    };
    map.put(&at, &retired)
}

/// Applies `cmd` to `map`. The outer `Result` is a storage failure; the inner one is the
/// command's own outcome.
pub fn apply<M: RecordMap>(map: &mut M, cmd: &Command) -> Result<Applied, M::Error> {
    if let Some(applied) = apply_meta(map, cmd)? {
        return Ok(applied);
    }
    if let Command::Remote { cmd, .. } = cmd {
        // The conflict rule was checked by the feed hook; the tombstone is its business.
        return match cmd {
            Some(inner) => apply(map, inner),
            None => Ok(Ok(None)),
        };
    }
    if let Command::Begin { now_ms, .. } | Command::BeginDelete { now_ms, .. } = cmd {
        note_lease_time(map, *now_ms)?;
    }
    let key = cmd.key();
    let prev = map.get(key)?;
    let next = match cmd {
        Command::Begin {
            volumes,
            now_ms,
            owner,
            replace,
            ..
        } => return begin(map, key, prev, volumes, *now_ms, *owner, *replace),
        Command::PutInline {
            value,
            md5,
            now_ms,
            owner,
            replace,
            meta,
            ..
        } => {
            let inline = Inline {
                value,
                md5: *md5,
                now_ms: *now_ms,
                owner: *owner,
                replace: *replace,
                meta,
            };
            put_inline(map, key, prev.as_ref(), &inline)?
        }
        Command::Commit {
            size,
            md5,
            missing,
            now_ms,
            owner,
            meta,
            gen,
            ..
        } => {
            let commit = Commit {
                size: *size,
                md5: *md5,
                missing,
                now_ms: *now_ms,
                owner: *owner,
                meta,
                gen: *gen,
            };
            commit_write(map, key, &prev, &commit)?
        }
        Command::Completed { location, gen, .. } => completed(prev.as_ref(), location, *gen),
        Command::Cleaned { locations, .. } => cleaned(prev.as_ref(), locations),
        Command::Unlink { now_ms, .. } => unlink(prev.as_ref(), *now_ms),
        Command::BeginDelete {
            protect,
            now_ms,
            owner,
            ..
        } => begin_delete(prev.as_ref(), *protect, *now_ms, *owner),
        Command::Relocate { from, to, gen, .. } => relocate(prev.as_ref(), from, to, *gen),
        Command::SetMd5 {
            changed_ms,
            size,
            md5,
            ..
        } => set_md5(prev.as_ref(), *changed_ms, *size, md5),
        Command::SetMeta {
            changed_ms,
            size,
            meta,
            ..
        } => set_meta(prev.as_ref(), *changed_ms, *size, meta),
        // Handled by `apply_meta`, or by the feed hook: they change no record.
        Command::SetVolumes { .. }
        | Command::RetireMember { .. }
        | Command::SetJob { .. }
        | Command::SetFrontend { .. }
        | Command::SetScrub { .. }
        | Command::Tenancy(_)
        | Command::Feed(_)
        | Command::Remote { .. } => return Ok(Ok(None)),
        Command::Abandon {
            owner, changed_ms, ..
        } => abandon(prev.as_ref(), *owner, *changed_ms),
        Command::Remove { expect, owner, .. } => {
            return remove(map, key, prev, *expect, *owner);
        }
    };
    match next {
        Next::Put(next) => {
            map.put(key, &next)?;
            Ok(Ok(prev))
        }
        Next::Done(applied) => Ok(applied),
        Next::DonePrev => Ok(Ok(prev)),
    }
}

/// What a command does to its key's record, for [`apply`].
enum Next {
    /// Store this record at the key; the answer is the previous record.
    Put(Record),
    /// Nothing more to store: this is the answer (mostly a rejection).
    Done(Applied),
    /// Nothing more to store; the answer is the previous record.
    DonePrev,
}

/// The rejection `r` as a [`Next`].
fn reject(r: Rejection) -> Next {
    Next::Done(Err(r))
}

/// The index-wide commands (no key's record): `SetVolumes`, `SetFrontend`, `SetJob`,
/// `SetScrub`, `RetireMember`, `Tenancy`; `None` for every other command.
fn apply_meta<M: RecordMap>(map: &mut M, cmd: &Command) -> Result<Option<Applied>, M::Error> {
    let applied = match cmd {
        Command::SetVolumes { volumes, if_unset } => {
            if *if_unset && map.get_meta(VOLUMES_META)?.is_some() {
                return Ok(Some(Err(Rejection::Changed)));
            }
            let json = serde_json::to_vec(volumes).unwrap_or_default();
            map.put_meta(VOLUMES_META, Some(json))?;
            Ok(None)
        }
        Command::SetFrontend {
            name,
            value,
            if_absent,
        } => {
            let name = format!("{FRONTEND_META_PREFIX}{name}");
            let exists = map.get_meta(&name)?.is_some();
            if *if_absent && exists {
                return Ok(Some(Err(Rejection::Exists)));
            }
            if value.is_none() && !exists {
                return Ok(Some(Err(Rejection::NotFound)));
            }
            map.put_meta(&name, value.clone())?;
            Ok(None)
        }
        Command::SetJob {
            record,
            owner,
            expect,
        } => {
            let current = map.get_meta(JOB_OWNER_META)?.unwrap_or_default();
            if current != expect.as_bytes() {
                return Ok(Some(Err(Rejection::Changed)));
            }
            map.put_meta(JOB_OWNER_META, Some(owner.clone().into_bytes()))?;
            map.put_meta(JOB_META, Some(record.clone().into_bytes()))?;
            Ok(None)
        }
        Command::SetScrub { record } => {
            map.put_meta(SCRUB_META, Some(record.clone().into_bytes()))?;
            Ok(None)
        }
        Command::Tenancy(t) => {
            let refused = match super::tenancy::apply(&mut Frontend(map), t)? {
                Ok(()) => return Ok(Some(Ok(None))),
                Err(super::tenancy::Refused::Exists) => Rejection::Exists,
                Err(super::tenancy::Refused::NotFound) => Rejection::NotFound,
            };
            Err(refused)
        }
        Command::RetireMember { id } => {
            let mut retired = retired_members(map.get_meta(RETIRED_META)?.as_deref());
            if !retired.contains(id) {
                retired.push(*id);
                retired.sort_unstable();
            }
            let json = serde_json::to_vec(&retired).unwrap_or_default();
            map.put_meta(RETIRED_META, Some(json))?;
            Ok(None)
        }
        _ => return Ok(None),
    };
    Ok(Some(applied))
}

/// The front-end entries of a [`RecordMap`] (its `meta` names under
/// [`FRONTEND_META_PREFIX`]), for `super::tenancy`.
struct Frontend<'a, M>(&'a mut M);

impl<M: RecordMap> super::tenancy::Entries for Frontend<'_, M> {
    type Error = M::Error;
    fn get(&mut self, name: &str) -> Result<Option<Vec<u8>>, M::Error> {
        self.0.get_meta(&format!("{FRONTEND_META_PREFIX}{name}"))
    }
    fn put(&mut self, name: &str, value: Vec<u8>) -> Result<(), M::Error> {
        self.0
            .put_meta(&format!("{FRONTEND_META_PREFIX}{name}"), Some(value))
    }
}

/// `Begin`: a write intent, at the key (a new key) or beside it (`replace`).
fn begin<M: RecordMap>(
    map: &mut M,
    key: &[u8],
    prev: Option<Record>,
    volumes: &[String],
    now_ms: u64,
    owner: u64,
    replace: bool,
) -> Result<Applied, M::Error> {
    let state = prev.as_ref().map(|r| r.state);
    if state == Some(State::Live) && !replace {
        return Ok(Err(Rejection::Exists));
    }
    if !replace && held_elsewhere(prev.as_ref(), owner, now_ms) {
        return Ok(Err(Rejection::Busy));
    }
    let gen = match &prev {
        None if !replace && map.get(&gen_key(key, 0))?.is_none() => 0,
        _ => fresh_gen(map, key, prev.as_ref(), now_ms)?,
    };
    let intent = Record {
        state: State::Writing,
        volumes: volumes.to_vec(),
        size: 0,
        md5: None,
        changed_ms: now_ms,
        missing: Vec::new(),
        stale: Vec::new(),
        owner,
        meta: Vec::new(),
        inline: None,
        gen,
    };
    if replace {
        // The key's record stays as it is until `Commit`.
        map.put(&gen_key(key, gen), &intent)?;
    } else {
        if let Some(p) = &prev {
            retire(map, key, p)?;
        }
        map.put(key, &intent)?;
    }
    Ok(Ok(Some(intent)))
}

/// The fields of a `PutInline`.
struct Inline<'a> {
    value: &'a [u8],
    md5: Option<[u8; 16]>,
    now_ms: u64,
    owner: u64,
    replace: bool,
    meta: &'a [u8],
}

/// `PutInline`: a live record holding its value.
fn put_inline<M: RecordMap>(
    map: &mut M,
    key: &[u8],
    prev: Option<&Record>,
    c: &Inline<'_>,
) -> Result<Next, M::Error> {
    if prev.map(|r| r.state) == Some(State::Live) && !c.replace {
        return Ok(reject(Rejection::Exists));
    }
    if held_elsewhere(prev, c.owner, c.now_ms) {
        return Ok(reject(Rejection::Busy));
    }
    if let Some(p) = prev {
        retire(map, key, p)?;
    }
    Ok(Next::Put(Record {
        state: State::Live,
        volumes: Vec::new(),
        size: c.value.len() as u64,
        md5: c.md5,
        changed_ms: c.now_ms,
        missing: Vec::new(),
        stale: Vec::new(),
        owner: 0,
        meta: c.meta.to_vec(),
        inline: Some(c.value.to_vec()),
        gen: 0,
    }))
}

/// The fields of a `Commit`.
struct Commit<'a> {
    size: u64,
    md5: Option<[u8; 16]>,
    missing: &'a [String],
    now_ms: u64,
    owner: u64,
    meta: &'a [u8],
    gen: u64,
}

/// `Commit`: the intent of generation `c.gen` becomes the key's live record.
fn commit_write<M: RecordMap>(
    map: &mut M,
    key: &[u8],
    prev: &Option<Record>,
    c: &Commit<'_>,
) -> Result<Next, M::Error> {
    let committed = |intent: &Record| Record {
        state: State::Live,
        size: c.size,
        md5: c.md5,
        changed_ms: c.now_ms,
        missing: c.missing.to_vec(),
        owner: 0,
        meta: c.meta.to_vec(),
        ..intent.clone()
    };
    let state = prev.as_ref().map(|r| r.state);
    if let (Some(r), Some(State::Writing)) = (prev, state) {
        if r.gen == c.gen {
            if r.owner != c.owner {
                return Ok(reject(Rejection::Changed));
            }
            return Ok(Next::Put(committed(r)));
        }
    }
    // An overwrite's intent, kept beside the key's record.
    let at = gen_key(key, c.gen);
    Ok(match map.get(&at)? {
        Some(i) if i.state == State::Writing && i.owner == c.owner => {
            map.remove(&at)?;
            if let Some(p) = prev {
                retire(map, key, p)?;
            }
            map.put(key, &committed(&i))?;
            Next::DonePrev
        }
        // Another write's intent, or ours retired by a write that took the key over.
        Some(_) => reject(Rejection::Changed),
        None => match state {
            Some(State::Writing) => reject(Rejection::Changed),
            Some(s) => reject(Rejection::WrongState(s)),
            None => reject(Rejection::NotFound),
        },
    })
}

/// `Completed`: `location` now holds generation `gen`.
fn completed(prev: Option<&Record>, location: &String, gen: u64) -> Next {
    match (prev, prev.map(|r| r.state)) {
        (Some(r), Some(State::Live | State::Unlinked)) if r.gen != gen => {
            reject(Rejection::Changed)
        }
        (Some(r), Some(State::Live | State::Unlinked)) => Next::Put(Record {
            missing: r
                .missing
                .iter()
                .filter(|m| *m != location)
                .cloned()
                .collect(),
            ..r.clone()
        }),
        (_, Some(s)) => reject(Rejection::WrongState(s)),
        (_, None) => reject(Rejection::NotFound),
    }
}

/// `Cleaned`: the stale files at `locations` are gone.
fn cleaned(prev: Option<&Record>, locations: &[String]) -> Next {
    match prev {
        Some(r) => Next::Put(Record {
            stale: r
                .stale
                .iter()
                .filter(|l| !locations.contains(l))
                .cloned()
                .collect(),
            ..r.clone()
        }),
        None => reject(Rejection::NotFound),
    }
}

/// `Unlink`: a live record becomes unlinked.
fn unlink(prev: Option<&Record>, now_ms: u64) -> Next {
    match (prev, prev.map(|r| r.state)) {
        (Some(r), Some(State::Live)) => Next::Put(Record {
            state: State::Unlinked,
            changed_ms: now_ms,
            ..r.clone()
        }),
        _ => reject(Rejection::NotFound),
    }
}

/// `BeginDelete`: the record becomes `deleting`, owned by `owner`.
fn begin_delete(prev: Option<&Record>, protect: bool, now_ms: u64, owner: u64) -> Next {
    match (prev, prev.map(|r| r.state)) {
        (Some(_), Some(State::Live)) if protect => reject(Rejection::Protected),
        (Some(_), Some(State::Deleting)) if held_elsewhere(prev, owner, now_ms) => {
            reject(Rejection::Busy)
        }
        (Some(r), Some(State::Live | State::Unlinked | State::Deleting)) => Next::Put(Record {
            state: State::Deleting,
            changed_ms: now_ms,
            owner,
            ..r.clone()
        }),
        _ => reject(Rejection::NotFound),
    }
}

/// `Relocate`: the replica set `from` becomes `to`.
fn relocate(prev: Option<&Record>, from: &[String], to: &[String], gen: u64) -> Next {
    match (prev, prev.map(|r| r.state)) {
        (Some(r), Some(State::Live | State::Unlinked)) if r.volumes == from && r.gen == gen => {
            Next::Put(Record {
                volumes: to.to_vec(),
                missing: r
                    .missing
                    .iter()
                    .filter(|m| to.contains(m))
                    .cloned()
                    .collect(),
                // A stale location that is a replica again now holds the checked copy.
                stale: r
                    .stale
                    .iter()
                    .filter(|l| !to.contains(l))
                    .cloned()
                    .collect(),
                ..r.clone()
            })
        }
        (Some(_), Some(State::Live | State::Unlinked)) => reject(Rejection::Changed),
        (_, Some(s)) => reject(Rejection::WrongState(s)),
        (_, None) => reject(Rejection::NotFound),
    }
}

/// `SetMd5`: the md5 of an unchanged value.
fn set_md5(prev: Option<&Record>, changed_ms: u64, size: u64, md5: &[u8; 16]) -> Next {
    match (prev, prev.map(|r| r.state)) {
        (Some(r), Some(State::Live | State::Unlinked))
            if r.changed_ms == changed_ms && r.size == size && r.md5.is_none_or(|m| m == *md5) =>
        {
            Next::Put(Record {
                md5: Some(*md5),
                ..r.clone()
            })
        }
        (Some(_), Some(State::Live | State::Unlinked)) => reject(Rejection::Changed),
        (_, Some(s)) => reject(Rejection::WrongState(s)),
        (_, None) => reject(Rejection::NotFound),
    }
}

/// `SetMeta`: front-end metadata of an unchanged live value.
fn set_meta(prev: Option<&Record>, changed_ms: u64, size: u64, meta: &[u8]) -> Next {
    match (prev, prev.map(|r| r.state)) {
        (Some(r), Some(State::Live)) if r.changed_ms == changed_ms && r.size == size => {
            Next::Put(Record {
                meta: meta.to_vec(),
                ..r.clone()
            })
        }
        (Some(_), Some(State::Live)) => reject(Rejection::Changed),
        (_, Some(s)) => reject(Rejection::WrongState(s)),
        (_, None) => reject(Rejection::NotFound),
    }
}

/// `Abandon`: a write intent repair gave up becomes `deleting`, owned by no one, if it
/// is still the one the caller read (same `owner` and `changed_ms`).
fn abandon(prev: Option<&Record>, owner: u64, changed_ms: u64) -> Next {
    match (prev, prev.map(|r| r.state)) {
        (Some(r), Some(State::Writing)) if r.owner == owner && r.changed_ms == changed_ms => {
            Next::Put(Record {
                state: State::Deleting,
                owner: 0,
                ..r.clone()
            })
        }
        (Some(_), Some(State::Writing)) => reject(Rejection::Changed),
        (_, Some(s)) => reject(Rejection::WrongState(s)),
        (_, None) => reject(Rejection::NotFound),
    }
}

/// `Remove`: drop the record if it is in state `expect` (and owned by `owner`, unless 0).
fn remove<M: RecordMap>(
    map: &mut M,
    key: &[u8],
    prev: Option<Record>,
    expect: State,
    owner: u64,
) -> Result<Applied, M::Error> {
    let state = prev.as_ref().map(|r| r.state);
    match (&prev, state) {
        (Some(r), _) if owner != 0 && r.owner != owner => Ok(Err(Rejection::Changed)),
        (_, Some(s)) if s == expect => {
            map.remove(key)?;
            Ok(Ok(prev))
        }
        (_, Some(s)) => Ok(Err(Rejection::WrongState(s))),
        (_, None) => Ok(Err(Rejection::NotFound)),
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
