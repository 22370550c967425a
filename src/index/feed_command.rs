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
    /// Before issue 27: the next change of `key` is made on behalf of another site.
    /// No longer proposed (`Command::Remote` carries the version); still applied when
    /// an older log replays it.
    Expect {
        /// The key.
        key: Vec<u8>,
        /// Origin of the change.
        version: Version,
    },
    /// Record `version` for `key` as it is. No longer proposed (see `Expect`).
    SetVersion {
        /// The key.
        key: Vec<u8>,
        /// The version.
        version: Version,
    },
    /// The remote change announced by `Expect` failed: forget it. No longer proposed.
    Unexpect {
        /// The key.
        key: Vec<u8>,
    },
}

/// A key's version as stored beside its record (table `site_versions`): the hybrid
/// logical clock version of its current state (`super::hlc::Hlc`), or of its delete (a
/// tombstone). Rows written before issue 27 have no counter (`n` = 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Physical part of the version, unix ms.
    pub ms: u64,
    /// Origin site id (`""`: this site).
    pub site: String,
    /// Logical counter of the version.
    #[serde(default)]
    pub n: u32,
    /// `changed_ms` of the record this version describes (0: the key is deleted).
    pub applied_ms: u64,
    /// Announced by `Expect`, not applied yet.
    #[serde(default)]
    pub pending: bool,
}

impl Version {
    /// The version as the conflict rule compares it (site `""`: this site).
    pub fn hlc(&self) -> super::hlc::Hlc {
        super::hlc::Hlc {
            ms: self.ms,
            n: self.n,
            site: self.site.clone(),
        }
    }

    /// The row for `v`, describing the record changed at `applied_ms` (0: deleted).
    pub fn of(v: &super::hlc::Hlc, applied_ms: u64) -> Version {
        Version {
            ms: v.ms,
            site: v.site.clone(),
            n: v.n,
            applied_ms,
            pending: false,
        }
    }
}
