//! The commands of replication to other sites ([`FeedCommand`], carried by
//! `Command::Feed`) and the version they record for a key; applied by `super::feed`.

use serde::{Deserialize, Serialize};

/// Replication state changes, carried by `Command::Feed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedCommand {
    /// Ship to `target` from the next change on (nothing if it already has a cursor).
    AddTarget {
        /// The target's URL.
        target: String,
    },
    /// Stop shipping to `target`: its cursor is dropped.
    DropTarget {
        /// The target's URL.
        target: String,
    },
    /// `target` acknowledged every entry up to `seq`.
    Advance {
        /// The target's URL.
        target: String,
        /// The last entry acknowledged.
        seq: u64,
    },
    /// This site's id, unless one is set.
    SetSiteId {
        /// The id.
        id: String,
    },
    /// The next change of `key` is made on behalf of another site: record `version`
    /// (its `applied_ms` filled in then) instead of a feed entry.
    Expect {
        /// The key.
        key: Vec<u8>,
        /// Origin of the change.
        version: Version,
    },
    /// Record `version` for `key` as it is (a remote change that needed no write).
    SetVersion {
        /// The key.
        key: Vec<u8>,
        /// The version.
        version: Version,
    },
    /// The remote change announced by `Expect` failed: forget it.
    Unexpect {
        /// The key.
        key: Vec<u8>,
    },
}

/// Where a key's current state came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Origin commit time, unix ms.
    pub ms: u64,
    /// Origin site id (`""`: this site).
    pub site: String,
    /// `changed_ms` of the record this version describes (0: the key is deleted).
    pub applied_ms: u64,
    /// Announced by `Expect`, not applied yet.
    #[serde(default)]
    pub pending: bool,
}
