//! Tenancy state: S3 access keys (the users), each bucket's owner, its grants per key
//! and its quota. All of it is front-end entries of the index (`meta` names under
//! [`super::FRONTEND_META_PREFIX`]), so it replicates through the Raft log with the
//! records and travels in snapshots. Buckets are created and removed by
//! `Command::SetFrontend` (the S3 front-end's CreateBucket/DeleteBucket); every change
//! of a key, a grant or a quota is a [`TenancyCommand`] (in `Command::Tenancy`), applied
//! as one read-modify-write inside the state machine, so concurrent admin changes never
//! overwrite each other.

use std::collections::{BTreeMap, BTreeSet};

/// Front-end entry name prefix of access keys: `tenancy/key/<ID>`.
pub const KEY_ENTRY: &str = "tenancy/key/";
/// Front-end entry name prefix of buckets: `s3/bucket/<NAME>`.
pub const BUCKET_ENTRY: &str = "s3/bucket/";

/// An S3 access key (a user). The secret is stored in the index in clear: SigV4 needs
/// it to recompute signatures (a hash would not do); see docs/OPERATIONS.md.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessKey {
    /// A name for people (`hoard key create NAME`).
    pub name: String,
    /// The secret key (empty once deleted).
    pub secret: String,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// Created from `--s3-keys-file` / `--s3-access-key` at start.
    #[serde(default)]
    pub seeded: bool,
    /// Deleted: the id is never valid again, nor reused (its grants stay inert).
    #[serde(default)]
    pub deleted: bool,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("created_ms", &self.created_ms)
            .field("seeded", &self.seeded)
            .field("deleted", &self.deleted)
            .finish()
    }
}

/// A permission on a bucket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// Read objects, list them, head the bucket.
    Read,
    /// Write and delete objects, multipart uploads.
    Write,
    /// Everything, including deleting the bucket.
    Owner,
}

/// What a request wants to do with a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read (needs `read` or `owner`).
    Read,
    /// Write (needs `write` or `owner`).
    Write,
    /// Manage: delete the bucket (needs `owner`).
    Own,
}

/// A bucket's limits; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quota {
    /// Most bytes of live objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Most live objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_objects: Option<u64>,
}

impl Quota {
    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        self.max_bytes.is_none() && self.max_objects.is_none()
    }
}

/// A bucket's record (entry `s3/bucket/<NAME>`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// Access key of the creator.
    pub owner: String,
    /// Grants per access key id. `None` (a bucket created before grants existed): its
    /// creator owns it, nobody else has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<BTreeMap<String, BTreeSet<Grant>>>,
    /// Limits.
    #[serde(default, skip_serializing_if = "Quota::is_unlimited")]
    pub quota: Quota,
}

impl Bucket {
    /// A new bucket created by `owner`, who owns it.
    pub fn new(owner: &str, created_ms: u64) -> Bucket {
        let grants = BTreeMap::from([(owner.to_string(), BTreeSet::from([Grant::Owner]))]);
        Bucket {
            created_ms,
            owner: owner.to_string(),
            grants: Some(grants),
            quota: Quota::default(),
        }
    }

    /// The grants, with a pre-grants bucket's implied one.
    pub fn grants(&self) -> BTreeMap<String, BTreeSet<Grant>> {
        match &self.grants {
            Some(g) => g.clone(),
            None => BTreeMap::from([(self.owner.clone(), BTreeSet::from([Grant::Owner]))]),
        }
    }

    /// Whether access key `id` may do `access`.
    pub fn allows(&self, id: &str, access: Access) -> bool {
        let grants = self.grants();
        let Some(held) = grants.get(id) else {
            return false;
        };
        held.contains(&Grant::Owner)
            || match access {
                Access::Read => held.contains(&Grant::Read),
                Access::Write => held.contains(&Grant::Write),
                Access::Own => false,
            }
    }

    /// Reads a stored record.
    pub fn decode(raw: &[u8]) -> Option<Bucket> {
        serde_json::from_slice(raw).ok()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A change of tenancy state (`Command::Tenancy`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TenancyCommand {
    /// Create access key `id`; [`Rejection::Exists`] when the id exists or existed.
    CreateKey {
        /// The access key id.
        id: String,
        /// Its record.
        key: AccessKey,
    },
    /// Delete access key `id` (kept as a tombstone without its secret);
    /// [`Rejection::NotFound`] when absent or already deleted.
    DeleteKey {
        /// The access key id.
        id: String,
    },
    /// Add (`allow`) or remove a grant of `key` on `bucket`; [`Rejection::NotFound`]
    /// when the bucket or (adding) the key does not exist.
    Grant {
        /// The bucket.
        bucket: String,
        /// The access key id.
        key: String,
        /// The permission.
        grant: Grant,
        /// Add (true) or remove it.
        allow: bool,
    },
    /// Set a bucket's quota; [`Rejection::NotFound`] without the bucket.
    SetQuota {
        /// The bucket.
        bucket: String,
        /// The new limits.
        quota: Quota,
    },
}

/// Why a [`TenancyCommand`] was refused (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The key exists or existed.
    Exists,
    /// No such bucket or key.
    NotFound,
}

/// The front-end entries a [`TenancyCommand`] reads and writes, by their front-end
/// name (`command.rs` maps them onto the `meta` table of the state machine).
pub(super) trait Entries {
    /// The error of the underlying store.
    type Error;
    /// Reads entry `name`.
    fn get(&mut self, name: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Writes entry `name`.
    fn put(&mut self, name: &str, value: Vec<u8>) -> Result<(), Self::Error>;
}

fn entry(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

fn live_key<M: Entries>(map: &mut M, id: &str) -> Result<Option<AccessKey>, M::Error> {
    Ok(map
        .get(&entry(KEY_ENTRY, id))?
        .and_then(|raw| serde_json::from_slice::<AccessKey>(&raw).ok())
        .filter(|k| !k.deleted))
}

/// Applies `cmd` (deterministic: reads and writes only front-end entries).
pub(super) fn apply<M: Entries>(
    map: &mut M,
    cmd: &TenancyCommand,
) -> Result<Result<(), Refused>, M::Error> {
    match cmd {
        TenancyCommand::CreateKey { id, key } => {
            let name = entry(KEY_ENTRY, id);
            if map.get(&name)?.is_some() {
                return Ok(Err(Refused::Exists));
            }
            map.put(&name, serde_json::to_vec(key).unwrap_or_default())?;
        }
        TenancyCommand::DeleteKey { id } => {
            let Some(mut key) = live_key(map, id)? else {
                return Ok(Err(Refused::NotFound));
            };
            key.deleted = true;
            key.secret.clear();
            map.put(
                &entry(KEY_ENTRY, id),
                serde_json::to_vec(&key).unwrap_or_default(),
            )?;
        }
        TenancyCommand::Grant {
            bucket,
            key,
            grant,
            allow,
        } => {
            if *allow && live_key(map, key)?.is_none() {
                return Ok(Err(Refused::NotFound));
            }
            return change_bucket(map, bucket, |b| {
                let mut grants = b.grants();
                let held = grants.entry(key.clone()).or_default();
                if *allow {
                    held.insert(*grant);
                } else {
                    held.remove(grant);
                }
                grants.retain(|_, g| !g.is_empty());
                b.grants = Some(grants);
            });
        }
        TenancyCommand::SetQuota { bucket, quota } => {
            return change_bucket(map, bucket, |b| b.quota = *quota);
        }
    }
    Ok(Ok(()))
}

fn change_bucket<M: Entries>(
    map: &mut M,
    bucket: &str,
    change: impl FnOnce(&mut Bucket),
) -> Result<Result<(), Refused>, M::Error> {
    let name = entry(BUCKET_ENTRY, bucket);
    let Some(mut record) = map.get(&name)?.and_then(|raw| Bucket::decode(&raw)) else {
        return Ok(Err(Refused::NotFound));
    };
    change(&mut record);
    map.put(&name, record.encode())?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Applied, Command, Index, Rejection};

    fn key(name: &str) -> AccessKey {
        AccessKey {
            name: name.into(),
            secret: "s".into(),
            created_ms: 1,
            seeded: false,
            deleted: false,
        }
    }

    async fn run(index: &Index, cmd: TenancyCommand) -> Applied {
        index.apply(Command::Tenancy(cmd)).await.unwrap()
    }

    #[tokio::test]
    async fn keys_grants_quotas() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let create = |id: &str| TenancyCommand::CreateKey {
            id: id.into(),
            key: key(id),
        };
        assert_eq!(run(&index, create("a")).await, Ok(None));
        assert_eq!(run(&index, create("a")).await, Err(Rejection::Exists));
        let grant = |bucket: &str, key: &str, allow| TenancyCommand::Grant {
            bucket: bucket.into(),
            key: key.into(),
            grant: Grant::Read,
            allow,
        };
        // No bucket yet.
        assert_eq!(
            run(&index, grant("b", "a", true)).await,
            Err(Rejection::NotFound)
        );
        let bucket = Bucket::new("owner", 5);
        let set = Command::SetFrontend {
            name: format!("{BUCKET_ENTRY}b"),
            value: Some(bucket.encode()),
            if_absent: true,
        };
        index.apply(set).await.unwrap().unwrap();
        assert_eq!(run(&index, grant("b", "a", true)).await, Ok(None));
        assert_eq!(
            run(&index, grant("b", "nobody", true)).await,
            Err(Rejection::NotFound)
        );
        let read = |index: &Index| {
            Bucket::decode(
                &index
                    .frontend(&format!("{BUCKET_ENTRY}b"))
                    .unwrap()
                    .unwrap(),
            )
            .unwrap()
        };
        let b = read(&index);
        assert!(b.allows("a", Access::Read));
        assert!(!b.allows("a", Access::Write));
        assert!(b.allows("owner", Access::Own));
        let quota = Quota {
            max_bytes: Some(10),
            max_objects: None,
        };
        let q = TenancyCommand::SetQuota {
            bucket: "b".into(),
            quota,
        };
        assert_eq!(run(&index, q).await, Ok(None));
        assert_eq!(read(&index).quota, quota);
        assert_eq!(run(&index, grant("b", "a", false)).await, Ok(None));
        assert!(!read(&index).allows("a", Access::Read));
        // A deleted key stays deleted: its id cannot be created again.
        let delete = TenancyCommand::DeleteKey { id: "a".into() };
        assert_eq!(run(&index, delete.clone()).await, Ok(None));
        assert_eq!(run(&index, delete).await, Err(Rejection::NotFound));
        assert_eq!(run(&index, create("a")).await, Err(Rejection::Exists));
        index.close();
    }

    #[test]
    fn old_buckets_belong_to_their_creator() {
        let old: Bucket = serde_json::from_str(r#"{"created_ms":1,"owner":"alice"}"#).unwrap();
        assert!(old.allows("alice", Access::Own));
        assert!(!old.allows("bob", Access::Read));
    }
}
