//! Reading front-ends' index-wide entries (`Command::SetFrontend`): S3 buckets and
//! multipart uploads, for instance. Writes go through [`Index::apply`] like every
//! other change, so they replicate with the index.

use std::ops::Bound;

use super::command::FRONTEND_META_PREFIX;
use super::{store_err, Index, IndexError, META};

impl Index {
    /// The front-end entry `name`, if set.
    pub fn frontend(&self, name: &str) -> Result<Option<Vec<u8>>, IndexError> {
        self.meta(&format!("{FRONTEND_META_PREFIX}{name}"))
    }

    /// Up to `limit` front-end entries whose name starts with `prefix`, in name order,
    /// after `after` (exclusive) when given; names as given to `SetFrontend`. Blocking
    /// (a bounded read).
    pub fn frontend_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        let full = format!("{FRONTEND_META_PREFIX}{prefix}");
        let start = after.map(|a| format!("{FRONTEND_META_PREFIX}{a}"));
        let lower = match &start {
            Some(s) if s.as_str() >= full.as_str() => Bound::Excluded(s.as_str()),
            _ => Bound::Included(full.as_str()),
        };
        let txn = self.db.begin_read().map_err(store_err)?;
        let meta = txn.open_table(META).map_err(store_err)?;
        let mut out = Vec::new();
        for item in meta
            .range::<&str>((lower, Bound::Unbounded))
            .map_err(store_err)?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(store_err)?;
            let Some(name) = k.value().strip_prefix(FRONTEND_META_PREFIX) else {
                break;
            };
            if !name.starts_with(prefix) {
                break;
            }
            out.push((name.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::index::{Command, Index, Rejection};

    fn set(name: &str, value: Option<&str>, if_absent: bool) -> Command {
        Command::SetFrontend {
            name: name.into(),
            value: value.map(|v| v.as_bytes().to_vec()),
            if_absent,
        }
    }

    #[tokio::test]
    async fn set_read_range_remove() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        for n in ["s3/bucket/a", "s3/bucket/b", "s3/bucket/c", "s3/upload/x"] {
            assert_eq!(index.apply(set(n, Some(n), true)).await.unwrap(), Ok(None));
        }
        assert_eq!(
            index
                .apply(set("s3/bucket/a", Some("again"), true))
                .await
                .unwrap(),
            Err(Rejection::Exists)
        );
        assert_eq!(
            index.frontend("s3/bucket/a").unwrap().unwrap(),
            b"s3/bucket/a"
        );
        let names = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(index.frontend_range("s3/bucket/", None, 10).unwrap()),
            ["s3/bucket/a", "s3/bucket/b", "s3/bucket/c"]
        );
        assert_eq!(
            names(
                index
                    .frontend_range("s3/bucket/", Some("s3/bucket/a"), 1)
                    .unwrap()
            ),
            ["s3/bucket/b"]
        );
        assert_eq!(
            index.apply(set("s3/bucket/b", None, false)).await.unwrap(),
            Ok(None)
        );
        assert_eq!(
            index.apply(set("s3/bucket/b", None, false)).await.unwrap(),
            Err(Rejection::NotFound)
        );
        assert_eq!(index.frontend("s3/bucket/b").unwrap(), None);
        // The index's own entries are not reachable through this namespace.
        assert_eq!(index.frontend("counts").unwrap(), None);
        index.close();
    }
}
