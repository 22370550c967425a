//! Front-ends' metadata stored with a value ([`ObjectMeta`], in `Record::meta`;
//! replaced in place by [`Store::set_meta`]), and their index-wide entries ([`Store::set_frontend`]: S3 buckets, multipart uploads).
//!
//! Both go through the index's commands like every other change, so they replicate
//! with an index cluster and survive restarts. `hoard rebuild` recovers values from the
//! volumes' files, which carry no metadata: a rebuilt index has none of this.

use std::collections::BTreeMap;

use super::{Store, StoreError};
use crate::index::{Command, Rejection};

/// Metadata of a value, as S3 clients set and expect it back. Stored as JSON in the
/// record; a value written without any has an empty `Record::meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// `Content-Disposition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// `Content-Language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// `Cache-Control`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// User metadata (`x-amz-meta-NAME`, names in lower case).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// The ETag when it is not the md5 of the value: a multipart object's
    /// `md5(part md5s)-N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Expires`, as the client sent it (an HTTP date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The multipart upload this value was completed from: a repeated
    /// CompleteMultipartUpload of it succeeds again, as on S3, while the value stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
}

impl ObjectMeta {
    /// The bytes to store: empty when there is nothing to store.
    pub fn encode(&self) -> Vec<u8> {
        if *self == ObjectMeta::default() {
            return Vec::new();
        }
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads what [`ObjectMeta::encode`] wrote; empty or unreadable bytes are no
    /// metadata (a record is never unreadable because of its metadata).
    pub fn decode(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            return ObjectMeta::default();
        }
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

impl Store {
    /// Sets (`value: None`: removes) the front-end entry `name` through the index's
    /// log. With `if_absent`, [`StoreError::Exists`] when it exists; removing an absent
    /// entry is [`StoreError::NotFound`].
    pub async fn set_frontend(
        &self,
        name: String,
        value: Option<Vec<u8>>,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        let cmd = Command::SetFrontend {
            name,
            value,
            if_absent,
        };
        match self.index.apply(cmd).await? {
            Ok(_) => Ok(()),
            Err(Rejection::Exists) => Err(StoreError::Exists),
            Err(Rejection::NotFound) => Err(StoreError::NotFound),
            Err(other) => Err(StoreError::Invalid(other.to_string())),
        }
    }

    /// Replaces the metadata stored with `key`'s value, keeping the value, if the key
    /// is still the version `seen` (same time and size): [`StoreError::Conflict`] when
    /// it changed or is being written meanwhile, [`StoreError::NotFound`] when it is not
    /// live.
    pub async fn set_meta(
        &self,
        key: &[u8],
        seen: &crate::index::Record,
        meta: Vec<u8>,
    ) -> Result<(), StoreError> {
        if meta.len() > crate::index::MAX_META_LEN {
            return Err(StoreError::Invalid("metadata too large".into()));
        }
        let cmd = Command::SetMeta {
            key: key.to_vec(),
            changed_ms: seen.changed_ms,
            size: seen.size,
            meta,
        };
        match self.index.apply(cmd).await? {
            Ok(_) => Ok(()),
            // Replaced, or being replaced, since `seen` was read.
            Err(Rejection::Changed | Rejection::WrongState(crate::index::State::Writing)) => {
                Err(StoreError::Conflict)
            }
            Err(Rejection::NotFound | Rejection::WrongState(_)) => Err(StoreError::NotFound),
            Err(other) => Err(StoreError::Invalid(other.to_string())),
        }
    }

    /// The front-end entry `name`, if set.
    pub fn frontend(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.index.frontend(name)?)
    }

    /// Up to `limit` front-end entries named `prefix…`, in order, after `after`
    /// (exclusive). Runs on the blocking pool.
    pub async fn frontend_range(
        &self,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.frontend_range(&prefix, after.as_deref(), limit))
            .await
            .map_err(|e| StoreError::Unavailable(format!("listing aborted: {e}")))?
            .map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::ObjectMeta;

    #[test]
    fn empty_metadata_is_no_bytes() {
        assert!(ObjectMeta::default().encode().is_empty());
        assert_eq!(ObjectMeta::decode(b""), ObjectMeta::default());
        assert_eq!(ObjectMeta::decode(b"not json"), ObjectMeta::default());
        let mut m = ObjectMeta {
            content_type: Some("text/plain".into()),
            etag: Some("abc-2".into()),
            ..ObjectMeta::default()
        };
        m.user.insert("color".into(), "blue".into());
        assert_eq!(
            m.encode(),
            br#"{"content_type":"text/plain","user":{"color":"blue"},"etag":"abc-2"}"#
        );
        assert_eq!(ObjectMeta::decode(&m.encode()), m);
    }
}
