//! What a write takes and gives back: [`PutOptions`], [`Written`] (the write paths
//! themselves are `super::write` and, for small values, `super::inline`).

/// How [`super::Store::put_with`] treats an existing value, and what it records with the new
/// one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Overwrite a live value instead of refusing with [`super::StoreError::Exists`] (S3 and
    /// minivault semantics). Readers see the old value until the new one is committed,
    /// then the new one; if the new write fails or is abandoned at any step, the old
    /// value stays, intact (the new one is written under new file names).
    pub replace: bool,
    /// Hash the value even when `--md5sum` is off (S3 ETags need it).
    pub md5: bool,
    /// A front-end's metadata stored in the record with the value (see
    /// [`super::ObjectMeta`]); empty for none. At most [`crate::index::MAX_META_LEN`]
    /// bytes.
    pub meta: Vec<u8>,
    /// Store an empty body as a zero-byte value (a zero-length file on every replica)
    /// instead of refusing it with [`super::StoreError::Empty`] (S3 stores empty objects;
    /// minikeyvalue's API refuses them).
    pub allow_empty: bool,
    /// The write is another site's change of this version (the sites receiver): it
    /// commits only if the version wins by the conflict rule against the key's current
    /// one (`index::hlc`), else the write is rolled back and fails with
    /// [`super::StoreError::Superseded`]. `None`: a local write, stamped by this site.
    pub origin: Option<crate::index::hlc::Hlc>,
}

/// `cmd` as the change of version `origin` made on another site, or as it is (a local
/// change) when `origin` is `None`.
pub(super) fn as_remote(
    origin: Option<&crate::index::hlc::Hlc>,
    cmd: crate::index::Command,
) -> crate::index::Command {
    match origin {
        Some(v) => crate::index::Command::Remote {
            key: cmd.key().to_vec(),
            origin: v.clone(),
            cmd: Some(Box::new(cmd)),
        },
        None => cmd,
    }
}

/// A value stored by [`super::Store::put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes stored.
    pub size: u64,
    /// The value's md5, when `--md5sum` is on.
    pub md5: Option<[u8; 16]>,
    /// Replica locations that do not hold the value yet (a degraded write); the upkeep
    /// worker completes them.
    pub missing: Vec<String>,
}
