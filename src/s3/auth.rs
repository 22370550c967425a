//! S3 users: access keys kept in the index (`hoard key create`, replicated with it),
//! seeded at start from `--s3-access-key` / `--s3-secret-key` and `--s3-keys-file`
//! ([`Users::seed`]: a key already in the index keeps its stored secret). Every
//! request must be signed (SigV4 headers, presigned URLs or
//! aws-chunked streaming signatures, all checked by s3s; POST forms by
//! [`super::post`]); anonymous requests are refused with `AccessDenied`. Signature
//! Version 2 only with `--s3-allow-sigv2` ([`super::sigv2`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

use crate::index::tenancy::{AccessKey, TenancyCommand};
use crate::store::{Store, StoreError};

/// `hoard dev`'s access key when none is given.
pub const DEV_ACCESS_KEY: &str = "hoard";
/// `hoard dev`'s secret key when none is given.
pub const DEV_SECRET_KEY: &str = "hoardhoard";

/// The S3 users: pairs of (access key, secret key).
#[derive(Clone, Default)]
pub struct Users(Vec<(String, String)>);

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        let keys: Vec<&str> = self.0.iter().map(|(a, _)| a.as_str()).collect();
        f.debug_tuple("Users").field(&keys).finish()
    }
}

impl Users {
    /// The users of the flags: one pair and/or a keys file. `dev`: hoard / hoardhoard
    /// when none is given.
    pub fn from_args(
        access: Option<&str>,
        secret: Option<&str>,
        keys_file: Option<&Path>,
        dev: bool,
    ) -> anyhow::Result<Users> {
        let mut users = Vec::new();
        match (access, secret) {
            (Some(a), Some(s)) => users.push(check(a, s)?),
            (None, None) => {}
            _ => bail!("--s3-access-key and --s3-secret-key go together"),
        }
        if let Some(path) = keys_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read S3 keys file {}", path.display()))?;
            users.extend(
                parse_keys(&text).with_context(|| format!("S3 keys file {}", path.display()))?,
            );
        }
        // A server may have none: its users are then the index's access keys
        // (`hoard key create`).
        if users.is_empty() && dev {
            users.push((DEV_ACCESS_KEY.into(), DEV_SECRET_KEY.into()));
        }
        Ok(Users(users))
    }

    /// The access keys (for messages).
    pub fn access_keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(a, _)| a.as_str())
    }

    /// The secret key of `access`, if it is a user.
    pub fn secret(&self, access: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(a, _)| a == access)
            .map(|(_, s)| s.as_str())
    }

    /// The first user (what `hoard dev` prints).
    pub fn first(&self) -> Option<(&str, &str)> {
        self.0.first().map(|(a, s)| (a.as_str(), s.as_str()))
    }

    /// Creates these users in the index unless their access key is there already
    /// (created before, or deleted: a deleted seeded key stays deleted). A stored key
    /// keeps its secret; a different one in the flags is reported, never printed.
    pub async fn seed(&self, store: &Store) -> anyhow::Result<()> {
        for (access, secret) in &self.0 {
            let cmd = TenancyCommand::CreateKey {
                id: access.clone(),
                key: AccessKey {
                    name: access.clone(),
                    secret: secret.clone(),
                    created_ms: crate::clock::now_ms(),
                    seeded: true,
                    deleted: false,
                },
            };
            match store.tenancy(cmd).await {
                Ok(()) => tracing::info!("S3 access key {access} created from the flags"),
                Err(StoreError::Exists) => match store.access_key(access)? {
                    Some(stored) if stored.secret != *secret => tracing::warn!(
                        "S3 access key {access}: the index holds another secret than the flags; \
                         the index's is in force (rotate keys with `hoard key`)"
                    ),
                    Some(_) => {}
                    None => tracing::warn!(
                        "S3 access key {access} was deleted (`hoard key delete`); not created again"
                    ),
                },
                Err(e) => return Err(anyhow::anyhow!("creating S3 access key {access}: {e}")),
            }
        }
        Ok(())
    }
}

/// The secret of access key `access`, from the index (after catching up with the
/// cluster when this member does not have it); `InvalidAccessKeyId` when it is no
/// user.
pub async fn secret(store: &Store, access: &str) -> S3Result<String> {
    match store.access_key_fresh(access).await {
        Ok(Some(key)) => Ok(key.secret),
        Ok(None) => Err(s3_error!(InvalidAccessKeyId)),
        Err(e) => Err(super::errors::store_error(e)),
    }
}

/// The s3s authenticator: secrets from the index.
pub struct IndexAuth {
    /// The store whose index holds the keys.
    pub store: Arc<Store>,
}

#[async_trait::async_trait]
impl S3Auth for IndexAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        secret(&self.store, access_key).await.map(SecretKey::from)
    }
}

fn check(access: &str, secret: &str) -> anyhow::Result<(String, String)> {
    if access.is_empty() || secret.is_empty() {
        bail!("S3 access and secret keys must not be empty");
    }
    if access
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        bail!("S3 access key {access:?} contains a space, '/' or a control character");
    }
    Ok((access.to_string(), secret.to_string()))
}

/// Parses a keys file: one `ACCESS_KEY SECRET_KEY` pair a line; blank lines and lines
/// starting with `#` are ignored.
pub fn parse_keys(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(a), Some(s), None) => out.push(check(a, s)?),
            _ => bail!("line {}: expected `ACCESS_KEY SECRET_KEY`", i + 1),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file() {
        let users = parse_keys("# users\n\nalice s3cret\n  bob  other \n").unwrap();
        assert_eq!(
            users,
            [
                ("alice".into(), "s3cret".into()),
                ("bob".into(), "other".into())
            ]
        );
        assert!(parse_keys("alice\n").is_err());
        assert!(parse_keys("a b c\n").is_err());
    }

    #[test]
    fn flags() {
        let dev = Users::from_args(None, None, None, true).unwrap();
        assert_eq!(dev.first(), Some((DEV_ACCESS_KEY, DEV_SECRET_KEY)));
        assert_eq!(
            Users::from_args(None, None, None, false)
                .unwrap()
                .access_keys()
                .count(),
            0
        );
        assert!(Users::from_args(Some("a"), None, None, false).is_err());
        let one = Users::from_args(Some("a"), Some("b"), None, false).unwrap();
        assert_eq!(one.access_keys().collect::<Vec<_>>(), ["a"]);
        assert!(!format!("{one:?}").contains('b'));
    }
}
