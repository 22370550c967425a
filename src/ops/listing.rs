//! Walking every value file of a set of volumes through their JSON directory listings
//! (`GET /dir/` → nginx `autoindex_format json`, which native volumes speak too):
//!
//! ```json
//! [{"name":"sv07","type":"directory","mtime":"Wed, 01 Jan 2025 00:00:00 GMT"},
//!  {"name":"L2hlbGxv","type":"file","mtime":"Wed, 01 Jan 2025 00:00:00 GMT","size":5}]
//! ```
//!
//! The tree is `/svXX/aa/bb/<base64 of the key>` (or `/aa/bb/<base64>` without
//! subvolumes; both layouts are recognised at the root). The base64 may contain `/`, so
//! everything below `bb/` is walked recursively and the file's path below `bb/` is the
//! base64; [`key_from_path`] checks it decodes and matches the hash directories.
//! Anything else — nginx's temp directories, hidden names, foreign files — is ignored.
//!
//! Directories are listed concurrently: up to `per_volume` requests in flight per
//! volume, all volumes at once.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use percent_encoding::utf8_percent_encode;
use serde::Deserialize;

use super::OpsError;
use crate::placement::key_from_path;
use crate::replica::{VolumeClient, VolumeError};

/// Longest wait for one directory listing.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts per listing before the volume's walk fails.
const ATTEMPTS: u32 = 3;

/// One entry of a JSON directory listing.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// File or directory name.
    pub name: String,
    /// `"file"`, `"directory"`, or something else (ignored).
    #[serde(rename = "type")]
    pub kind: String,
    /// Modification time as an HTTP date.
    #[serde(default)]
    pub mtime: Option<String>,
    /// File size.
    #[serde(default)]
    pub size: Option<u64>,
}

/// One value file found on a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its location: `host:port` or `host:port/svXX`.
    pub location: String,
    /// The key it holds.
    pub key: Vec<u8>,
    /// Its size.
    pub size: u64,
    /// Its modification time, unix ms (0 if the listing had none).
    pub mtime_ms: u64,
}

/// Where a directory sits in the tree.
#[derive(Debug, Clone)]
enum Level {
    /// The volume root: subvolume or first hash directories.
    Root,
    /// `/svXX/`: first hash directories.
    Sub,
    /// `…/aa/`: second hash directories.
    Hash1,
    /// `…/aa/bb/` or deeper; `prefix` is the base64 so far (empty, or ending in `/`).
    Names { prefix: String },
}

#[derive(Debug, Clone)]
struct Dir {
    server: usize,
    /// `""` or `/svXX`: the location suffix.
    sub: String,
    /// Path below the location, starting and ending with `/`.
    path: String,
    level: Level,
}

/// What a walk saw besides value files.
#[derive(Debug, Default)]
pub struct WalkReport {
    /// Directories listed.
    pub dirs: u64,
    /// Entries that are not hoard value files (ignored).
    pub foreign: u64,
    /// Volumes whose walk stopped on an error, with the error; their files were only
    /// partly reported.
    pub failed: Vec<(String, OpsError)>,
}

/// Lists the directory at `url` (ending in `/`); `None` when it does not exist.
pub async fn list_dir(client: &VolumeClient, url: &str) -> Result<Option<Vec<Entry>>, OpsError> {
    let listing_err = |reason: String| OpsError::Listing {
        url: url.to_string(),
        reason,
    };
    let fetch = async {
        let resp = match client.get(url).await {
            Ok(resp) => resp,
            Err(VolumeError::Status { status, .. }) if status.as_u16() == 404 => return Ok(None),
            Err(e) => return Err(OpsError::Volume(e)),
        };
        let body = resp.bytes().await.map_err(|e| listing_err(e.to_string()))?;
        Ok(Some(body))
    };
    let body = tokio::time::timeout(LIST_TIMEOUT, fetch)
        .await
        .map_err(|_| listing_err(format!("no answer within {LIST_TIMEOUT:?}")))??;
    let Some(body) = body else {
        return Ok(None);
    };
    // Names that are not UTF-8 (nginx passes bytes through) are not ours anyway.
    let text = String::from_utf8_lossy(&body);
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| listing_err(format!("not a JSON listing: {e}")))
}

async fn list_with_retries(
    client: &VolumeClient,
    url: &str,
) -> Result<Option<Vec<Entry>>, OpsError> {
    let mut attempt = 1;
    loop {
        match list_dir(client, url).await {
            Ok(entries) => return Ok(entries),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::debug!("{e}; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
        }
    }
}

fn is_hex2(name: &str, upper: bool) -> bool {
    name.len() == 2
        && name.bytes().all(|b| {
            b.is_ascii_digit() || (if upper { b'A'..=b'F' } else { b'a'..=b'f' }).contains(&b)
        })
}

/// Parses an HTTP date into unix ms (0 if absent or malformed).
fn mtime_ms(entry: &Entry) -> u64 {
    entry
        .mtime
        .as_deref()
        .and_then(|m| httpdate::parse_http_date(m).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Walks every value file on `servers`, calling `on_file` for each. A volume whose
/// listing keeps failing is reported in [`WalkReport::failed`]; the others are walked
/// to the end.
pub async fn walk(
    client: &VolumeClient,
    servers: &[String],
    per_volume: usize,
    mut on_file: impl FnMut(Found),
) -> WalkReport {
    let per_volume = per_volume.max(1);
    let mut report = WalkReport::default();
    // One stack per volume (depth first keeps it small), drained round-robin.
    let mut stacks: Vec<Vec<Dir>> = (0..servers.len())
        .map(|server| {
            vec![Dir {
                server,
                sub: String::new(),
                path: "/".into(),
                level: Level::Root,
            }]
        })
        .collect();
    let mut in_flight = vec![0usize; servers.len()];
    let mut dead: HashSet<usize> = HashSet::new();
    let mut pending = FuturesUnordered::new();
    loop {
        for (server, stack) in stacks.iter_mut().enumerate() {
            while in_flight[server] < per_volume {
                let Some(dir) = stack.pop() else { break };
                in_flight[server] += 1;
                let url = format!("http://{}{}{}", servers[server], dir.sub, dir.path);
                pending.push(async move {
                    let result = list_with_retries(client, &url).await;
                    (dir, result)
                });
            }
        }
        let Some((dir, result)) = pending.next().await else {
            break;
        };
        in_flight[dir.server] -= 1;
        if dead.contains(&dir.server) {
            continue;
        }
        report.dirs += 1;
        let entries = match result {
            Ok(Some(entries)) => entries,
            Ok(None) => continue, // removed since its parent was listed
            Err(e) => {
                dead.insert(dir.server);
                stacks[dir.server].clear();
                report.failed.push((servers[dir.server].clone(), e));
                continue;
            }
        };
        for entry in entries {
            if entry.name.starts_with('.') || entry.name.contains('/') {
                report.foreign += 1;
                continue;
            }
            let is_dir = entry.kind == "directory";
            let child = |level: Level, sub: &str| Dir {
                server: dir.server,
                sub: sub.to_string(),
                path: format!(
                    "{}{}/",
                    dir.path,
                    utf8_percent_encode(&entry.name, crate::key::URL_PATH)
                ),
                level,
            };
            let next = match &dir.level {
                Level::Root if is_dir && entry.name.starts_with("sv") => {
                    let digits = &entry.name[2..];
                    is_hex2(digits, true).then(|| Dir {
                        path: "/".into(),
                        ..child(Level::Sub, &format!("/{}", entry.name))
                    })
                }
                Level::Root | Level::Sub if is_dir && is_hex2(&entry.name, false) => {
                    Some(child(Level::Hash1, &dir.sub))
                }
                Level::Hash1 if is_dir && is_hex2(&entry.name, false) => Some(child(
                    Level::Names {
                        prefix: String::new(),
                    },
                    &dir.sub,
                )),
                Level::Names { prefix } if is_dir => Some(child(
                    Level::Names {
                        prefix: format!("{prefix}{}/", entry.name),
                    },
                    &dir.sub,
                )),
                Level::Names { prefix } if entry.kind == "file" => {
                    // dir.path is /aa/bb/<prefix> with the prefix percent-encoded; the
                    // hash part is plain hex, so rebuild the raw path from the parts.
                    let hash = &dir.path[..7];
                    let raw = format!("{hash}{prefix}{}", entry.name);
                    match key_from_path(&raw) {
                        Some(key) => on_file(Found {
                            location: format!("{}{}", servers[dir.server], dir.sub),
                            key,
                            size: entry.size.unwrap_or(0),
                            mtime_ms: mtime_ms(&entry),
                        }),
                        None => report.foreign += 1,
                    }
                    None
                }
                _ => {
                    report.foreign += 1;
                    None
                }
            };
            if let Some(next) = next {
                stacks[dir.server].push(next);
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nginx_listing() {
        let text = r#"[
{ "name":"sv07", "type":"directory", "mtime":"Wed, 01 Jan 2025 00:00:00 GMT" },
{ "name":"L2hlbGxv", "type":"file", "mtime":"Wed, 01 Jan 2025 00:00:01 GMT", "size":5 }
]"#;
        let entries: Vec<Entry> = serde_json::from_str(text).unwrap();
        assert_eq!(entries[0].kind, "directory");
        assert_eq!(entries[1].size, Some(5));
        assert_eq!(mtime_ms(&entries[1]), 1_735_689_601_000);
    }

    #[test]
    fn hex_names() {
        assert!(is_hex2("0a", false));
        assert!(!is_hex2("0A", false));
        assert!(is_hex2("0A", true));
        assert!(!is_hex2("0a", true));
        assert!(!is_hex2("abc", false));
        assert!(!is_hex2("zz", false));
    }
}
