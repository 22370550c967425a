//! Tenancy, the one rule every front-end path to the data goes through: who may read
//! or write which keys.
//!
//! * Keys under [`INTERNAL_PREFIX`] (multipart parts) belong to the S3 front-end
//!   itself: no principal reaches them through a key-addressed API ([`Store::authorize`]
//!   refuses them to everyone).
//! * A key `/<bucket>/…` of an existing S3 bucket is the bucket's: the operator (the
//!   admin token, or a native API the operator declared open) may do anything; an
//!   access key what the bucket grants it (`index::tenancy::Bucket::allows`); anyone
//!   else nothing.
//! * Any other key is not a tenant's: the native auth mode alone decides.
//!
//! The state (access keys, buckets, grants, quotas) lives in the index
//! (`index::tenancy`), changed through its log like every record.

use crate::index::tenancy::{BUCKET_ENTRY, KEY_ENTRY};
use crate::index::{Command, Rejection};

pub use crate::index::tenancy::{Access, AccessKey, Bucket, Grant, Quota, TenancyCommand};

use super::{Store, StoreError};

/// Key prefix of the S3 front-end's own values (multipart parts).
pub const INTERNAL_PREFIX: &[u8] = b"/.s3-multipart/";

/// Whether `key` is one of the S3 front-end's own values, which no key-addressed API
/// shows.
pub fn is_internal(key: &[u8]) -> bool {
    key.starts_with(INTERNAL_PREFIX)
}

/// Most access keys [`Store::access_keys`] lists.
pub const MAX_KEYS: usize = 100_000;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: the admin token, or an open native API (`--native-open`).
    Operator,
    /// An S3 access key (authenticated by its front-end).
    Key(String),
    /// Nobody in particular.
    Anonymous,
}

/// A bucket's usage: live objects and their bytes.
pub type Usage = crate::index::VolumeCounts;

impl Store {
    /// Access key `id`, unless absent or deleted, as this member's index has it.
    pub fn access_key(&self, id: &str) -> Result<Option<AccessKey>, StoreError> {
        let raw = self.frontend(&format!("{KEY_ENTRY}{id}"))?;
        Ok(raw
            .and_then(|r| serde_json::from_slice::<AccessKey>(&r).ok())
            .filter(|k| !k.deleted))
    }

    /// Access key `id`; when this member does not have it, after catching up with the
    /// index cluster (a key created through another member a moment ago).
    pub async fn access_key_fresh(&self, id: &str) -> Result<Option<AccessKey>, StoreError> {
        if let Some(key) = self.access_key(id)? {
            return Ok(Some(key));
        }
        self.read_barrier().await?;
        self.access_key(id)
    }

    /// Every access key (deleted ones too), in id order.
    pub async fn access_keys(&self) -> Result<Vec<(String, AccessKey)>, StoreError> {
        let entries = self
            .frontend_range(KEY_ENTRY.to_string(), None, MAX_KEYS)
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(name, raw)| {
                let id = name.strip_prefix(KEY_ENTRY)?.to_string();
                Some((id, serde_json::from_slice(&raw).ok()?))
            })
            .collect())
    }

    /// Whether the index holds any access key: then the data has tenants.
    pub fn has_tenants(&self) -> Result<bool, StoreError> {
        Ok(!self
            .index
            .frontend_range(KEY_ENTRY, None, 1)
            .map_err(StoreError::from)?
            .is_empty())
    }

    /// Bucket `name`'s record, if it exists.
    pub fn bucket(&self, name: &str) -> Result<Option<Bucket>, StoreError> {
        Ok(self
            .frontend(&format!("{BUCKET_ENTRY}{name}"))?
            .and_then(|raw| Bucket::decode(&raw)))
    }

    /// Bucket `name`'s live objects and bytes (exact, kept by the index).
    pub fn bucket_usage(&self, name: &str) -> Result<Usage, StoreError> {
        Ok(self.index.bucket_usage(name)?)
    }

    /// Applies a tenancy change through the index's log. [`StoreError::Exists`] or
    /// [`StoreError::NotFound`] as the command was rejected.
    pub async fn tenancy(&self, cmd: TenancyCommand) -> Result<(), StoreError> {
        match self.index.apply(Command::Tenancy(cmd)).await? {
            Ok(_) => Ok(()),
            Err(Rejection::Exists) => Err(StoreError::Exists),
            Err(Rejection::NotFound) => Err(StoreError::NotFound),
            Err(other) => Err(StoreError::Invalid(other.to_string())),
        }
    }

    /// The one access rule (see the module docs) for `access` to `key` by `who`:
    /// [`StoreError::Forbidden`] when refused.
    pub fn authorize(&self, who: &Principal, key: &[u8], access: Access) -> Result<(), StoreError> {
        if key.starts_with(INTERNAL_PREFIX) {
            return Err(StoreError::Forbidden(
                "multipart parts are the S3 API's own".into(),
            ));
        }
        match crate::index::bucket_of(key) {
            Some(bucket) => self.authorize_bucket(who, bucket, access).map(drop),
            None => Ok(()),
        }
    }

    /// [`Store::authorize`] for a range of keys starting with `prefix` (a listing):
    /// the bucket's rule when the range lies inside one bucket; a wider range (it may
    /// span buckets) only for the operator or where no bucket exists at all. A
    /// listing that may reach [`INTERNAL_PREFIX`] must leave those keys out itself
    /// ([`is_internal`]).
    pub async fn authorize_prefix(&self, who: &Principal, prefix: &[u8]) -> Result<(), StoreError> {
        if prefix.starts_with(INTERNAL_PREFIX) {
            return self.authorize(who, prefix, Access::Read);
        }
        let inside = prefix
            .strip_prefix(b"/")
            .and_then(|rest| rest.iter().position(|&b| b == b'/'))
            .filter(|&slash| slash > 0);
        if let Some(slash) = inside {
            let bucket = std::str::from_utf8(&prefix[1..=slash])
                .map_err(|_| StoreError::Invalid("key prefix is not UTF-8".into()))?;
            return self.authorize_bucket(who, bucket, Access::Read).map(drop);
        }
        if *who == Principal::Operator {
            return Ok(());
        }
        let any = self
            .frontend_range(BUCKET_ENTRY.to_string(), None, 1)
            .await?;
        if any.is_empty() {
            return Ok(());
        }
        Err(StoreError::Forbidden(
            "a listing across buckets needs the admin token".into(),
        ))
    }

    /// The rule for `access` to bucket `name`: its record when allowed (`None` when
    /// the bucket does not exist — nothing to protect), [`StoreError::Forbidden`]
    /// when refused.
    pub fn authorize_bucket(
        &self,
        who: &Principal,
        name: &str,
        access: Access,
    ) -> Result<Option<Bucket>, StoreError> {
        let Some(bucket) = self.bucket(name)? else {
            return Ok(None);
        };
        let allowed = match who {
            Principal::Operator => true,
            Principal::Key(id) => bucket.allows(id, access),
            Principal::Anonymous => false,
        };
        if allowed {
            Ok(Some(bucket))
        } else {
            Err(StoreError::Forbidden(format!(
                "access to bucket {name} denied"
            )))
        }
    }

    /// Whether writing `size` bytes at `key` of bucket `name` stays within its quota
    /// (an overwrite counts the old value out): [`StoreError::QuotaExceeded`] when not.
    /// Checked before the write; concurrent writes to one bucket may together exceed
    /// the quota by what they add (see docs/OPERATIONS.md).
    pub fn check_quota(&self, name: &str, key: &[u8], size: u64) -> Result<(), StoreError> {
        let Some(bucket) = self.bucket(name)? else {
            return Ok(());
        };
        if bucket.quota.is_unlimited() {
            return Ok(());
        }
        let usage = self.bucket_usage(name)?;
        let old = self
            .record(key)?
            .filter(|r| r.state == crate::index::State::Live);
        let objects = usage.keys + u64::from(old.is_none());
        let bytes = (usage.bytes - old.map_or(0, |r| r.size).min(usage.bytes)).saturating_add(size);
        if bucket.quota.max_objects.is_some_and(|max| objects > max) {
            return Err(StoreError::QuotaExceeded(format!(
                "bucket {name} holds at most {} objects",
                bucket.quota.max_objects.unwrap_or_default()
            )));
        }
        if bucket.quota.max_bytes.is_some_and(|max| bytes > max) {
            return Err(StoreError::QuotaExceeded(format!(
                "bucket {name} holds at most {} bytes",
                bucket.quota.max_bytes.unwrap_or_default()
            )));
        }
        Ok(())
    }
}

/// `len` random bytes from the operating system's generator (`/dev/urandom`): key ids
/// and secrets.
pub fn random_bytes(len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = vec![0u8; len];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

/// A new access key id (`HK` and 18 upper-case letters and digits) and secret (40
/// characters of base64url), from the operating system's generator.
pub fn new_credentials() -> std::io::Result<(String, String)> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = random_bytes(18)?
        .into_iter()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect();
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(30)?);
    Ok((format!("HK{id}"), secret))
}
