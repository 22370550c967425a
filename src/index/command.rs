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
    /// Record the intent to write `key` to `volumes`. Rejected with
    /// [`Rejection::Exists`] when the key is live. Replaces any other record (unlinked,
    /// an abandoned intent, an interrupted delete), keeping every location it named that
    /// is not a target as `stale`, so no file is forgotten.
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
    },
    /// The write reached its quorum: the key becomes live. `missing` lists the target
    /// locations that do not hold the value (a degraded write, `--write-quorum` below
    /// the replica count); empty when every replica acknowledged. Requires state
    /// `writing`.
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
    },
    /// Repair copied the value of a degraded write to `location`: it is no longer
    /// missing. Requires state `live` or `unlinked`.
    Completed {
        /// The key.
        key: Vec<u8>,
        /// The location that now holds the value.
        location: String,
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
    /// Requires the record to still list `from`, so a concurrent change wins.
    Relocate {
        /// The key.
        key: Vec<u8>,
        /// The locations the caller read.
        from: Vec<String>,
        /// The new locations.
        to: Vec<String>,
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
    /// Drop the record if it is in state `expect` (finish a delete, roll back a write).
    Remove {
        /// The key.
        key: Vec<u8>,
        /// The state the caller believes the record is in.
        expect: State,
        /// The write or delete finishing: must own the record (0: any owner — repair,
        /// which checked the record itself).
        owner: u64,
    },
}

impl Command {
    /// The key this command changes.
    pub fn key(&self) -> &[u8] {
        match self {
            Command::Begin { key, .. }
            | Command::Commit { key, .. }
            | Command::Completed { key, .. }
            | Command::Cleaned { key, .. }
            | Command::Unlink { key, .. }
            | Command::BeginDelete { key, .. }
            | Command::Relocate { key, .. }
            | Command::SetMd5 { key, .. }
            | Command::Remove { key, .. } => key,
            Command::SetVolumes { .. } => b"",
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
    fn get_meta(&mut self, name: &'static str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Writes an index-wide value.
    fn put_meta(&mut self, name: &'static str, value: Vec<u8>) -> Result<(), Self::Error>;
}

/// Index-wide value of [`Command::SetVolumes`]: the volume list as JSON.
pub const VOLUMES_META: &str = "volumes";

/// Applies `cmd` to `map`. The outer `Result` is a storage failure; the inner one is the
/// command's own outcome.
pub fn apply<M: RecordMap>(map: &mut M, cmd: &Command) -> Result<Applied, M::Error> {
    if let Command::SetVolumes { volumes, if_unset } = cmd {
        if *if_unset && map.get_meta(VOLUMES_META)?.is_some() {
            return Ok(Err(Rejection::Changed));
        }
        let json = serde_json::to_vec(volumes).unwrap_or_default();
        map.put_meta(VOLUMES_META, json)?;
        return Ok(Ok(None));
    }
    let key = cmd.key();
    let prev = map.get(key)?;
    let state = prev.as_ref().map(|r| r.state);
    let next = match cmd {
        Command::Begin {
            volumes,
            now_ms,
            owner,
            ..
        } => {
            if state == Some(State::Live) {
                return Ok(Err(Rejection::Exists));
            }
            if held_elsewhere(prev.as_ref(), *owner, *now_ms) {
                return Ok(Err(Rejection::Busy));
            }
            let stale = prev
                .as_ref()
                .map(|r| {
                    r.all_locations()
                        .into_iter()
                        .filter(|l| !volumes.contains(l))
                        .collect()
                })
                .unwrap_or_default();
            Record {
                state: State::Writing,
                volumes: volumes.clone(),
                size: 0,
                md5: None,
                changed_ms: *now_ms,
                missing: Vec::new(),
                stale,
                owner: *owner,
            }
        }
        Command::Commit {
            size,
            md5,
            missing,
            now_ms,
            owner,
            ..
        } => match (&prev, state) {
            (Some(r), Some(State::Writing)) if r.owner != *owner => {
                return Ok(Err(Rejection::Changed))
            }
            (Some(r), Some(State::Writing)) => Record {
                state: State::Live,
                size: *size,
                md5: *md5,
                changed_ms: *now_ms,
                missing: missing.clone(),
                owner: 0,
                ..r.clone()
            },
            (_, Some(s)) => return Ok(Err(Rejection::WrongState(s))),
            (_, None) => return Ok(Err(Rejection::NotFound)),
        },
        Command::Completed { location, .. } => match (&prev, state) {
            (Some(r), Some(State::Live | State::Unlinked)) => Record {
                missing: r
                    .missing
                    .iter()
                    .filter(|m| *m != location)
                    .cloned()
                    .collect(),
                ..r.clone()
            },
            (_, Some(s)) => return Ok(Err(Rejection::WrongState(s))),
            (_, None) => return Ok(Err(Rejection::NotFound)),
        },
        Command::Cleaned { locations, .. } => match &prev {
            Some(r) => Record {
                stale: r
                    .stale
                    .iter()
                    .filter(|l| !locations.contains(l))
                    .cloned()
                    .collect(),
                ..r.clone()
            },
            None => return Ok(Err(Rejection::NotFound)),
        },
        Command::Unlink { now_ms, .. } => match (&prev, state) {
            (Some(r), Some(State::Live)) => Record {
                state: State::Unlinked,
                changed_ms: *now_ms,
                ..r.clone()
            },
            _ => return Ok(Err(Rejection::NotFound)),
        },
        Command::BeginDelete {
            protect,
            now_ms,
            owner,
            ..
        } => match (&prev, state) {
            (Some(_), Some(State::Live)) if *protect => return Ok(Err(Rejection::Protected)),
            (Some(_), Some(State::Deleting)) if held_elsewhere(prev.as_ref(), *owner, *now_ms) => {
                return Ok(Err(Rejection::Busy))
            }
            (Some(r), Some(State::Live | State::Unlinked | State::Deleting)) => Record {
                state: State::Deleting,
                changed_ms: *now_ms,
                owner: *owner,
                ..r.clone()
            },
            _ => return Ok(Err(Rejection::NotFound)),
        },
        Command::Relocate { from, to, .. } => match (&prev, state) {
            (Some(r), Some(State::Live | State::Unlinked)) if &r.volumes == from => Record {
                volumes: to.clone(),
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
            },
            (Some(_), Some(State::Live | State::Unlinked)) => return Ok(Err(Rejection::Changed)),
            (_, Some(s)) => return Ok(Err(Rejection::WrongState(s))),
            (_, None) => return Ok(Err(Rejection::NotFound)),
        },
        Command::SetMd5 {
            changed_ms,
            size,
            md5,
            ..
        } => match (&prev, state) {
            (Some(r), Some(State::Live | State::Unlinked))
                if r.changed_ms == *changed_ms
                    && r.size == *size
                    && r.md5.is_none_or(|m| m == *md5) =>
            {
                Record {
                    md5: Some(*md5),
                    ..r.clone()
                }
            }
            (Some(_), Some(State::Live | State::Unlinked)) => return Ok(Err(Rejection::Changed)),
            (_, Some(s)) => return Ok(Err(Rejection::WrongState(s))),
            (_, None) => return Ok(Err(Rejection::NotFound)),
        },
        // Handled above: it changes no record.
        Command::SetVolumes { .. } => return Ok(Ok(None)),
        Command::Remove { expect, owner, .. } => {
            return match (&prev, state) {
                (Some(r), _) if *owner != 0 && r.owner != *owner => Ok(Err(Rejection::Changed)),
                (_, Some(s)) if s == *expect => {
                    map.remove(key)?;
                    Ok(Ok(prev))
                }
                (_, Some(s)) => Ok(Err(Rejection::WrongState(s))),
                (_, None) => Ok(Err(Rejection::NotFound)),
            };
        }
    };
    map.put(key, &next)?;
    Ok(Ok(prev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    impl RecordMap for BTreeMap<Vec<u8>, Record> {
        type Error = Infallible;
        fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Infallible> {
            Ok(BTreeMap::get(self, key).cloned())
        }
        fn put(&mut self, key: &[u8], record: &Record) -> Result<(), Infallible> {
            self.insert(key.to_vec(), record.clone());
            Ok(())
        }
        fn remove(&mut self, key: &[u8]) -> Result<(), Infallible> {
            BTreeMap::remove(self, key);
            Ok(())
        }
        fn get_meta(&mut self, name: &'static str) -> Result<Option<Vec<u8>>, Infallible> {
            let key = [b"\0meta:", name.as_bytes()].concat();
            Ok(BTreeMap::get(self, &key).map(|r| r.volumes.concat().into_bytes()))
        }
        fn put_meta(&mut self, name: &'static str, value: Vec<u8>) -> Result<(), Infallible> {
            let key = [b"\0meta:", name.as_bytes()].concat();
            // Kept as a fake record under a key no request can name.
            let r = Record {
                state: State::Live,
                volumes: vec![String::from_utf8_lossy(&value).into_owned()],
                size: 0,
                md5: None,
                changed_ms: 0,
                missing: Vec::new(),
                stale: Vec::new(),
                owner: 0,
            };
            self.insert(key, r);
            Ok(())
        }
    }

    fn run(m: &mut BTreeMap<Vec<u8>, Record>, cmd: Command) -> Applied {
        apply(m, &cmd).unwrap()
    }

    fn begin() -> Command {
        Command::Begin {
            key: b"/k".to_vec(),
            volumes: vec!["a:1".into()],
            now_ms: 1,
            owner: 0,
        }
    }
    fn commit() -> Command {
        Command::Commit {
            key: b"/k".to_vec(),
            size: 3,
            md5: Some([7; 16]),
            missing: Vec::new(),
            now_ms: 2,
            owner: 0,
        }
    }
    fn state(m: &BTreeMap<Vec<u8>, Record>) -> Option<State> {
        m.get(&b"/k"[..]).map(|r| r.state)
    }

    #[test]
    fn write_life_cycle() {
        let mut m = BTreeMap::new();
        assert_eq!(run(&mut m, begin()), Ok(None));
        assert_eq!(state(&m), Some(State::Writing));
        assert!(run(&mut m, commit()).is_ok());
        let r = m.get(&b"/k"[..]).unwrap();
        assert_eq!(
            (r.state, r.size, r.md5, r.changed_ms),
            (State::Live, 3, Some([7; 16]), 2)
        );
        assert_eq!(run(&mut m, begin()), Err(Rejection::Exists));
        assert_eq!(
            run(&mut m, commit()),
            Err(Rejection::WrongState(State::Live))
        );
    }

    #[test]
    fn unlink_then_overwrite() {
        let mut m = BTreeMap::new();
        let unlink = Command::Unlink {
            key: b"/k".to_vec(),
            now_ms: 3,
        };
        assert_eq!(run(&mut m, unlink.clone()), Err(Rejection::NotFound));
        run(&mut m, begin()).unwrap();
        assert_eq!(run(&mut m, unlink.clone()), Err(Rejection::NotFound));
        run(&mut m, commit()).unwrap();
        run(&mut m, unlink.clone()).unwrap();
        assert_eq!(state(&m), Some(State::Unlinked));
        assert_eq!(run(&mut m, unlink), Err(Rejection::NotFound));
        run(&mut m, begin()).unwrap();
        assert_eq!(state(&m), Some(State::Writing));
    }

    #[test]
    fn delete_and_protect() {
        let mut m = BTreeMap::new();
        let del = |protect| Command::BeginDelete {
            key: b"/k".to_vec(),
            protect,
            now_ms: 4,
            owner: 0,
        };
        assert_eq!(run(&mut m, del(false)), Err(Rejection::NotFound));
        run(&mut m, begin()).unwrap();
        assert_eq!(run(&mut m, del(false)), Err(Rejection::NotFound));
        run(&mut m, commit()).unwrap();
        assert_eq!(run(&mut m, del(true)), Err(Rejection::Protected));
        run(&mut m, del(false)).unwrap();
        assert_eq!(state(&m), Some(State::Deleting));
        run(&mut m, del(true)).unwrap(); // a retry of an interrupted delete
        let rm = |expect| Command::Remove {
            key: b"/k".to_vec(),
            expect,
            owner: 0,
        };
        assert_eq!(
            run(&mut m, rm(State::Writing)),
            Err(Rejection::WrongState(State::Deleting))
        );
        run(&mut m, rm(State::Deleting)).unwrap();
        assert_eq!(state(&m), None);
        assert_eq!(run(&mut m, rm(State::Deleting)), Err(Rejection::NotFound));
    }

    #[test]
    fn set_md5_requires_the_same_value() {
        let mut m = BTreeMap::new();
        let set = |changed_ms, md5| Command::SetMd5 {
            key: b"/k".to_vec(),
            changed_ms,
            size: 3,
            md5,
        };
        assert_eq!(run(&mut m, set(2, [1; 16])), Err(Rejection::NotFound));
        run(&mut m, begin()).unwrap();
        assert_eq!(
            run(&mut m, set(1, [1; 16])),
            Err(Rejection::WrongState(State::Writing))
        );
        run(
            &mut m,
            Command::Commit {
                key: b"/k".to_vec(),
                size: 3,
                md5: None,
                missing: Vec::new(),
                now_ms: 2,
                owner: 0,
            },
        )
        .unwrap();
        assert_eq!(run(&mut m, set(1, [1; 16])), Err(Rejection::Changed));
        run(&mut m, set(2, [1; 16])).unwrap();
        assert_eq!(m[&b"/k"[..]].md5, Some([1; 16]));
        run(&mut m, set(2, [1; 16])).unwrap(); // idempotent
        assert_eq!(run(&mut m, set(2, [2; 16])), Err(Rejection::Changed));
    }

    #[test]
    fn degraded_write_then_completed() {
        let mut m = BTreeMap::new();
        let begin3 = Command::Begin {
            key: b"/k".to_vec(),
            volumes: vec!["a:1".into(), "b:2".into(), "c:3".into()],
            now_ms: 1,
            owner: 0,
        };
        let degraded = Command::Commit {
            key: b"/k".to_vec(),
            size: 3,
            md5: None,
            missing: vec!["b:2".into()],
            now_ms: 2,
            owner: 0,
        };
        let done = |loc: &str| Command::Completed {
            key: b"/k".to_vec(),
            location: loc.into(),
        };
        assert_eq!(run(&mut m, done("b:2")), Err(Rejection::NotFound));
        run(&mut m, begin3).unwrap();
        assert_eq!(
            run(&mut m, done("b:2")),
            Err(Rejection::WrongState(State::Writing))
        );
        run(&mut m, degraded.clone()).unwrap();
        let r = &m[&b"/k"[..]];
        assert_eq!(
            (r.state, r.missing.clone()),
            (State::Live, vec!["b:2".into()])
        );
        assert_eq!(
            run(&mut m, degraded),
            Err(Rejection::WrongState(State::Live))
        );
        run(&mut m, done("b:2")).unwrap();
        assert!(m[&b"/k"[..]].missing.is_empty());
    }

    #[test]
    fn replaced_records_keep_their_locations_as_stale() {
        let mut m = BTreeMap::new();
        let begin_on = |vols: &[&str], now_ms| Command::Begin {
            key: b"/k".to_vec(),
            volumes: vols.iter().map(|v| v.to_string()).collect(),
            now_ms,
            owner: 0,
        };
        // An unlinked value on a:1, b:2; the placement is now b:2, c:3.
        run(&mut m, begin_on(&["a:1", "b:2"], 1)).unwrap();
        run(&mut m, commit()).unwrap();
        let unlink = Command::Unlink {
            key: b"/k".to_vec(),
            now_ms: 3,
        };
        run(&mut m, unlink).unwrap();
        run(&mut m, begin_on(&["b:2", "c:3"], 4)).unwrap();
        let r = &m[&b"/k"[..]];
        assert_eq!(
            (r.state, r.stale.clone()),
            (State::Writing, vec!["a:1".into()])
        );
        // An abandoned intent replaced again on d:4: nothing is forgotten.
        run(&mut m, begin_on(&["d:4"], 5)).unwrap();
        let r = &m[&b"/k"[..]];
        assert_eq!(r.stale, ["b:2", "c:3", "a:1"]);
        assert_eq!(r.all_locations(), ["d:4", "b:2", "c:3", "a:1"]);
        // A commit keeps them; Cleaned drops those deleted.
        run(&mut m, commit()).unwrap();
        assert_eq!(m[&b"/k"[..]].stale.len(), 3);
        let cleaned = Command::Cleaned {
            key: b"/k".to_vec(),
            locations: vec!["a:1".into(), "b:2".into()],
        };
        run(&mut m, cleaned).unwrap();
        assert_eq!(m[&b"/k"[..]].stale, ["c:3"]);
        // An interrupted delete replaced by a write, placement back on c:3.
        let del = Command::BeginDelete {
            key: b"/k".to_vec(),
            protect: false,
            now_ms: 6,
            owner: 0,
        };
        run(&mut m, del).unwrap();
        run(&mut m, begin_on(&["c:3"], 7)).unwrap();
        assert_eq!(m[&b"/k"[..]].stale, ["d:4"]);
    }

    #[test]
    fn an_intent_belongs_to_its_write() {
        let mut m = BTreeMap::new();
        let (node1, node1_later, node2) = (1 << 32 | 7, 1 << 32 | 8, 2 << 32 | 9);
        let begin = |owner, now_ms| Command::Begin {
            key: b"/k".to_vec(),
            volumes: vec!["a:1".into()],
            now_ms,
            owner,
        };
        let commit = |owner| Command::Commit {
            key: b"/k".to_vec(),
            size: 3,
            md5: None,
            missing: Vec::new(),
            now_ms: 20,
            owner,
        };
        run(&mut m, begin(node1, 10)).unwrap();
        assert_eq!(m[&b"/k"[..]].owner, node1);
        // Another node's write is refused while the intent is fresh…
        assert_eq!(run(&mut m, begin(node2, 11)), Err(Rejection::Busy));
        // …but the same node (a restarted process) may take it over.
        run(&mut m, begin(node1_later, 12)).unwrap();
        // Only the owner commits.
        assert_eq!(run(&mut m, commit(node1)), Err(Rejection::Changed));
        // Past the lease, another node takes the abandoned intent over.
        run(&mut m, begin(node2, 12 + WRITE_LEASE_MS)).unwrap();
        assert_eq!(run(&mut m, commit(node1_later)), Err(Rejection::Changed));
        run(&mut m, commit(node2)).unwrap();
        let r = &m[&b"/k"[..]];
        assert_eq!((r.state, r.owner), (State::Live, 0));

        // Deletes are owned the same way, with a shorter lease.
        let now = 20 + WRITE_LEASE_MS;
        let del = |owner, now_ms| Command::BeginDelete {
            key: b"/k".to_vec(),
            protect: false,
            now_ms,
            owner,
        };
        let rm = |owner| Command::Remove {
            key: b"/k".to_vec(),
            expect: State::Deleting,
            owner,
        };
        run(&mut m, del(node1, now)).unwrap();
        assert_eq!(run(&mut m, del(node2, now + 1)), Err(Rejection::Busy));
        assert_eq!(run(&mut m, begin(node2, now + 1)), Err(Rejection::Busy));
        assert_eq!(run(&mut m, rm(node2)), Err(Rejection::Changed));
        run(&mut m, del(node1_later, now + 2)).unwrap(); // its own node retries
        run(&mut m, del(node2, now + 2 + DELETE_LEASE_MS)).unwrap(); // lease over
        assert_eq!(run(&mut m, rm(node1_later)), Err(Rejection::Changed));
        run(&mut m, rm(node2)).unwrap();
        assert_eq!(state(&m), None);
    }

    #[test]
    fn volume_list_set_once_or_replaced() {
        let mut m = BTreeMap::new();
        let set = |v: &str, if_unset| Command::SetVolumes {
            volumes: vec![v.into()],
            if_unset,
        };
        run(&mut m, set("a:1", true)).unwrap();
        assert_eq!(run(&mut m, set("b:2", true)), Err(Rejection::Changed));
        assert_eq!(m.get_meta(VOLUMES_META).unwrap().unwrap(), br#"["a:1"]"#);
        run(&mut m, set("c:3", false)).unwrap();
        assert_eq!(m.get_meta(VOLUMES_META).unwrap().unwrap(), br#"["c:3"]"#);
    }

    #[test]
    fn relocate_requires_unchanged_volumes() {
        let mut m = BTreeMap::new();
        run(&mut m, begin()).unwrap();
        let reloc = |from: &str| Command::Relocate {
            key: b"/k".to_vec(),
            from: vec![from.into()],
            to: vec!["b:2".into()],
        };
        assert_eq!(
            run(&mut m, reloc("a:1")),
            Err(Rejection::WrongState(State::Writing))
        );
        run(&mut m, commit()).unwrap();
        assert_eq!(run(&mut m, reloc("z:9")), Err(Rejection::Changed));
        run(&mut m, reloc("a:1")).unwrap();
        assert_eq!(m[&b"/k"[..]].volumes, ["b:2"]);
    }
}
