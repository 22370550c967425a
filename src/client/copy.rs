//! `hoard cp -r`: whole directories to a key prefix and back, several files at once,
//! resumable — a file whose copy already exists with the same md5 is skipped, so an
//! interrupted copy run again only copies what is missing or different.
//!
//! Keys map to paths by their part after the prefix, `/` separating directories:
//! `cp -r photos /backup/photos/` stores `photos/2024/a.jpg` as
//! `/backup/photos/2024/a.jpg`, and `cp -r /backup/photos/ restored` writes it back to
//! `restored/2024/a.jpg`. A remote value that differs is replaced (DELETE, then PUT); a
//! local file that differs is overwritten (through a temporary file).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::transfer::{self, Sink, Source};
use super::{Client, ClientError};

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Files copied.
    pub copied: usize,
    /// Files already there with the same md5.
    pub skipped: usize,
    /// Files that failed (each reported on stderr).
    pub failed: usize,
}

/// What happened to one file.
enum Done {
    Copied,
    Skipped,
}

impl Report {
    /// Counts one file; with `verbose`, says what happened to it on stderr.
    fn add(&mut self, key: &str, result: Result<Done, ClientError>, verbose: bool) {
        match result {
            Ok(Done::Copied) => {
                self.copied += 1;
                if verbose {
                    eprintln!("copied {key}");
                }
            }
            Ok(Done::Skipped) => {
                self.skipped += 1;
                if verbose {
                    eprintln!("skipped {key}");
                }
            }
            Err(e) => {
                self.failed += 1;
                let e = e.to_string();
                // Errors name the key already; name it if not.
                if e.starts_with(key) {
                    eprintln!("hoard: {e}");
                } else {
                    eprintln!("hoard: {key}: {e}");
                }
            }
        }
    }
}

/// A bar counting files, on a terminal only.
fn files_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(crate::progress::bar(
        total,
        "cp [{elapsed_precise}] {wide_bar} {pos}/{len} files ({per_sec}, eta {eta}) {msg}",
    ))
}

/// Every regular file under `dir` (symbolic links are not followed), with its key
/// under `prefix`.
fn walk(dir: &Path, prefix: &str) -> Result<Vec<(PathBuf, String)>, ClientError> {
    let base = if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| ClientError::io(d.display(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ClientError::io(d.display(), e))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| ClientError::io(path.display(), e))?;
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let parts: Option<Vec<&str>> =
                    rel.components().map(|c| c.as_os_str().to_str()).collect();
                let parts = parts.ok_or_else(|| {
                    ClientError::Other(format!(
                        "{}: file name is not UTF-8, cannot be a key",
                        path.display()
                    ))
                })?;
                out.push((path.clone(), format!("{base}{}", parts.join("/"))));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// `cp -r DIR PREFIX`: stores every file under `dir` at `prefix` + its relative path,
/// `jobs` files at once; with `verbose`, one line per file on stderr.
pub async fn upload(
    client: &Client,
    dir: &Path,
    prefix: &str,
    jobs: usize,
    verbose: bool,
) -> Result<Report, ClientError> {
    let files = walk(dir, prefix)?;
    let pb = files_bar(files.len() as u64);
    let mut report = Report::default();
    let done = futures_util::stream::iter(files)
        .map(|(path, key)| async move {
            let result = upload_one(client, &path, &key).await;
            (key, result)
        })
        .buffer_unordered(jobs.max(1));
    collect(done, &mut report, pb.as_ref(), verbose).await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(report)
}

/// Adds each file's outcome to `report` as the copies finish, advancing the bar.
async fn collect(
    done: impl futures_util::Stream<Item = (String, Result<Done, ClientError>)>,
    report: &mut Report,
    pb: Option<&indicatif::ProgressBar>,
    verbose: bool,
) {
    let mut done = std::pin::pin!(done);
    while let Some((key, result)) = done.next().await {
        report.add(&key, result, verbose);
        if let Some(pb) = pb {
            pb.inc(1);
        }
    }
}

async fn upload_one(client: &Client, path: &Path, key: &str) -> Result<Done, ClientError> {
    let local = transfer::md5_file(path).await?;
    if let Some(at) = client.locate(key).await? {
        if at.md5.as_deref() == Some(local.as_str()) {
            return Ok(Done::Skipped);
        }
        client.remove(key, false).await?;
    }
    transfer::put(client, key, &Source::File(path.to_path_buf()), false).await?;
    Ok(Done::Copied)
}

/// The local path of `key` listed under `prefix`, inside `dir`; `None` if the key has
/// no usable relative name.
fn local_path(dir: &Path, prefix: &str, key: &str) -> Option<PathBuf> {
    let rel = key.strip_prefix(prefix).unwrap_or(key);
    let rel = if rel.is_empty() {
        key.rsplit('/').next().unwrap_or("")
    } else {
        rel
    };
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return None;
    }
    Some(parts.iter().fold(dir.to_path_buf(), |p, part| p.join(part)))
}

/// `cp -r PREFIX DIR`: fetches every key under `prefix` into `dir` (created if
/// missing), page by page, `jobs` keys at once; with `verbose`, one line per file.
pub async fn download(
    client: &Client,
    prefix: &str,
    dir: &Path,
    jobs: usize,
    verbose: bool,
) -> Result<Report, ClientError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ClientError::io(dir.display(), e))?;
    let pb = files_bar(0);
    let mut report = Report::default();
    let mut start: Option<String> = None;
    loop {
        let (keys, next) = client.list_page(prefix, false, start.as_deref()).await?;
        if let Some(pb) = &pb {
            pb.inc_length(keys.len() as u64);
        }
        let done = futures_util::stream::iter(keys)
            .map(|key| async move {
                let result = download_one(client, prefix, dir, &key).await;
                (key, result)
            })
            .buffer_unordered(jobs.max(1));
        collect(done, &mut report, pb.as_ref(), verbose).await;
        match next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(report)
}

async fn download_one(
    client: &Client,
    prefix: &str,
    dir: &Path,
    key: &str,
) -> Result<Done, ClientError> {
    let path = local_path(dir, prefix, key).ok_or_else(|| {
        ClientError::Other(format!("{key}: no file name under {prefix}: skipped"))
    })?;
    if tokio::fs::metadata(&path).await.is_ok() {
        let local = transfer::md5_file(&path).await?;
        let remote = client.locate(key).await?;
        if remote.and_then(|r| r.md5).as_deref() == Some(local.as_str()) {
            return Ok(Done::Skipped);
        }
    }
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| ClientError::io(parent.display(), e))?;
    }
    transfer::get(client, key, &Sink::File(path), false).await?;
    Ok(Done::Copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_to_paths() {
        let d = Path::new("/tmp/out");
        assert_eq!(
            local_path(d, "/p/", "/p/a/b.txt"),
            Some(d.join("a").join("b.txt"))
        );
        assert_eq!(local_path(d, "/p", "/p/a"), Some(d.join("a")));
        assert_eq!(local_path(d, "/p/a", "/p/a"), Some(d.join("a")));
        assert_eq!(local_path(d, "/p/", "/p//x"), Some(d.join("x")));
        assert_eq!(local_path(d, "/p/", "/p/"), None);
    }

    #[test]
    fn files_to_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/c.txt"), b"1").unwrap();
        std::fs::write(dir.path().join("top"), b"2").unwrap();
        let keys: Vec<String> = walk(dir.path(), "/up")
            .unwrap()
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(keys, ["/up/a/b/c.txt", "/up/top"]);
    }
}
