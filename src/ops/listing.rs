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
//! base64 (and a generation, see [`file_path`](crate::placement::file_path)); [`file_from_path`] checks it decodes and matches the hash directories.
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
use crate::placement::file_from_path;
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
    /// The generation of the key's value it holds (`Record::gen`, see
    /// [`crate::placement::file_path`]).
    pub gen: u64,
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
    /// `…/aa/bb/` or deeper: the base64 of keys, which may contain `/`.
    Names,
}

impl Level {
    /// The level of the subdirectory `name` of a directory at this level, `None` when
    /// hoard never makes such a directory. A subvolume directory is `Level::Sub`.
    fn child(&self, name: &str) -> Option<Level> {
        match self {
            Level::Root if name.starts_with("sv") && is_hex2(&name[2..], true) => Some(Level::Sub),
            Level::Root | Level::Sub if is_hex2(name, false) => Some(Level::Hash1),
            Level::Hash1 if is_hex2(name, false) => Some(Level::Names),
            Level::Names => Some(Level::Names),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Dir {
    server: usize,
    /// `""` or `/svXX`: the location suffix.
    sub: String,
    /// Path below the location, percent-encoded, starting and ending with `/`.
    path: String,
    /// The same path as it is on disk (not encoded).
    raw: String,
    level: Level,
    /// Read it with one streamed walk ([`crate::volume::walk`]) instead of listings.
    walk: bool,
}

impl Dir {
    /// The subdirectory `name` at `level`.
    fn child(&self, name: &str, level: Level) -> Dir {
        if let Level::Sub = level {
            return Dir {
                sub: format!("/{name}"),
                path: "/".into(),
                raw: "/".into(),
                level,
                ..self.clone()
            };
        }
        Dir {
            path: format!(
                "{}{}/",
                self.path,
                utf8_percent_encode(name, crate::key::URL_PATH)
            ),
            raw: format!("{}{name}/", self.raw),
            level,
            ..self.clone()
        }
    }

    /// The file `name` in this directory, if it is a hoard value file.
    fn file(&self, servers: &[String], name: &str, size: Option<u64>, mtime: u64) -> Option<Found> {
        self.file_at(servers, (&self.level, &self.raw), name, size, mtime)
    }

    /// The file `name` in the directory at `level` and `raw` path below this one's
    /// location, if it is a hoard value file.
    fn file_at(
        &self,
        servers: &[String],
        (level, raw): (&Level, &str),
        name: &str,
        size: Option<u64>,
        mtime: u64,
    ) -> Option<Found> {
        if !matches!(level, Level::Names) {
            return None;
        }
        let (key, gen) = file_from_path(&format!("{raw}{name}"))?;
        Some(Found {
            location: format!("{}{}", servers[self.server], self.sub),
            key,
            gen,
            size: size.unwrap_or(0),
            mtime_ms: mtime,
        })
    }
}

impl Dir {
    /// The file at `rel` (a path below this directory, as a streamed walk reports it),
    /// if it is a hoard value file.
    fn walked_file(
        &self,
        servers: &[String],
        rel: &str,
        size: Option<u64>,
        mtime: u64,
    ) -> Option<Found> {
        let (dirs, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let mut raw = self.raw.clone();
        let mut level = self.level.clone();
        for part in dirs.split('/').filter(|_| !dirs.is_empty()) {
            if part.is_empty() || part.starts_with('.') {
                return None;
            }
            level = match level.child(part)? {
                // A subvolume changes the location: only the root has them, and the
                // root is listed, never walked.
                Level::Sub => return None,
                next => next,
            };
            raw.push_str(part);
            raw.push('/');
        }
        if name.is_empty() || name.starts_with('.') {
            return None;
        }
        self.file_at(servers, (&level, &raw), name, size, mtime)
    }
}

/// What a walk saw besides value files.
#[derive(Debug, Default)]
pub struct WalkReport {
    /// Directories listed.
    pub dirs: u64,
    /// Directories read with one streamed walk each (native volumes).
    pub walks: u64,
    /// Entries that are not hoard value files (ignored).
    pub foreign: u64,
    /// Volumes whose walk stopped on an error, with the error; their files were only
    /// partly reported.
    pub failed: Vec<(String, OpsError)>,
}

/// A listing: its entries, and whether the volume offers streamed walks.
#[derive(Debug)]
pub struct Listing {
    /// The directory's entries.
    pub entries: Vec<Entry>,
    /// The response carried [`crate::volume::listing::HEADER`].
    pub walkable: bool,
}

/// Lists the directory at `url` (ending in `/`); `None` when it does not exist.
pub async fn list_dir(client: &VolumeClient, url: &str) -> Result<Option<Listing>, OpsError> {
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
        let walkable = resp.headers().contains_key(crate::volume::listing::HEADER);
        let body = resp.bytes().await.map_err(|e| listing_err(e.to_string()))?;
        Ok(Some((body, walkable)))
    };
    let body = tokio::time::timeout(LIST_TIMEOUT, fetch)
        .await
        .map_err(|_| listing_err(format!("no answer within {LIST_TIMEOUT:?}")))??;
    let Some((body, walkable)) = body else {
        return Ok(None);
    };
    // Names that are not UTF-8 (nginx passes bytes through) are not ours anyway.
    let text = String::from_utf8_lossy(&body);
    serde_json::from_str(&text)
        .map(|entries| Some(Listing { entries, walkable }))
        .map_err(|e| listing_err(format!("not a JSON listing: {e}")))
}

async fn list_with_retries(client: &VolumeClient, url: &str) -> Result<Option<Listing>, OpsError> {
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
fn mtime_ms(mtime: Option<&str>) -> u64 {
    mtime
        .and_then(|m| httpdate::parse_http_date(m).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// One line of a streamed walk ([`crate::volume::walk`]).
#[derive(Debug, Deserialize)]
struct WalkLine {
    #[serde(default)]
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    mtime: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    /// On the end line: files reported.
    #[serde(default)]
    files: Option<u64>,
    /// On an error line: what failed.
    #[serde(default)]
    error: Option<String>,
}

/// Longest line accepted in a streamed walk.
const MAX_WALK_LINE: usize = 1 << 20;

/// Streamed walks in flight per volume, whatever the listing concurrency. A walk is a
/// long stream the volume serves as fast as its disk allows, so two keep it busy; each
/// also holds an HTTP read buffer that grows with the stream (hyper's, up to ~400 KB),
/// and this keeps those buffers a small constant.
const WALKS_PER_VOLUME: usize = 2;

/// Starts the streamed walk of `url`, retrying like listings; `None` when the
/// directory is gone.
async fn start_walk(
    client: &VolumeClient,
    url: &str,
) -> Result<Option<reqwest::Response>, OpsError> {
    let mut attempt = 1;
    loop {
        let e = match tokio::time::timeout(LIST_TIMEOUT, client.get(url)).await {
            Ok(Ok(resp)) => return Ok(Some(resp)),
            Ok(Err(VolumeError::Status { status, .. })) if status.as_u16() == 404 => {
                return Ok(None)
            }
            Ok(Err(e)) => OpsError::Volume(e),
            Err(_) => OpsError::Listing {
                url: url.to_string(),
                reason: format!("no answer within {LIST_TIMEOUT:?}"),
            },
        };
        if attempt >= ATTEMPTS {
            return Err(e);
        }
        tracing::debug!("{e}; retrying");
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        attempt += 1;
    }
}

/// Reads the streamed walk of `dir`, sending its value files to `found`; returns the
/// number of foreign files. Fails unless the walk ends with its end line, and the
/// file count there matches.
async fn walk_dir(
    client: &VolumeClient,
    servers: &[String],
    dir: &Dir,
    found: &tokio::sync::mpsc::Sender<Found>,
) -> Result<u64, OpsError> {
    let url = format!(
        "http://{}/-/walk{}{}",
        servers[dir.server], dir.sub, dir.path
    );
    let err = |reason: String| OpsError::Listing {
        url: url.clone(),
        reason,
    };
    let Some(resp) = start_walk(client, &url).await? else {
        return Ok(0);
    };
    let mut stream = resp.bytes_stream();
    let (mut buf, mut files, mut foreign) = (Vec::new(), 0u64, 0u64);
    loop {
        let chunk = match tokio::time::timeout(LIST_TIMEOUT, stream.next()).await {
            Err(_) => return Err(err(format!("no data for {LIST_TIMEOUT:?}"))),
            Ok(None) => return Err(err("the walk broke off before its end".into())),
            Ok(Some(Err(e))) => return Err(err(format!("the walk broke off: {e}"))),
            Ok(Some(Ok(chunk))) => chunk,
        };
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(n) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + n];
            start += n + 1;
            let line: WalkLine =
                serde_json::from_slice(line).map_err(|e| err(format!("not a walk line: {e}")))?;
            match line.kind.as_str() {
                "file" => {
                    files += 1;
                    let mtime = mtime_ms(line.mtime.as_deref());
                    match dir.walked_file(servers, &line.name, line.size, mtime) {
                        Some(f) => found
                            .send(f)
                            .await
                            .map_err(|_| err("the walk was abandoned".into()))?,
                        None => foreign += 1,
                    }
                }
                "end" if line.files == Some(files) => return Ok(foreign),
                "end" => {
                    return Err(err(format!(
                        "the walk reported {:?} files but sent {files}",
                        line.files
                    )))
                }
                "error" => {
                    let why = line.error.unwrap_or_default();
                    return Err(err(format!("the volume failed the walk: {why}")));
                }
                _ => foreign += 1,
            }
        }
        buf.drain(..start);
        if buf.len() > MAX_WALK_LINE {
            return Err(err(format!("a line longer than {MAX_WALK_LINE} bytes")));
        }
    }
}

/// What one directory's request produced.
enum Done {
    /// A listing (or `None`: the directory went away).
    Listed(Result<Option<Listing>, OpsError>),
    /// A streamed walk, its files already sent; the number of foreign entries.
    Walked(Result<u64, OpsError>),
}

/// Walks every value file on `servers`, calling `on_file` for each. A volume whose
/// listing keeps failing is reported in [`WalkReport::failed`]; the others are walked
/// to the end. Native volumes, which announce it on their root listing, are read with
/// one streamed walk per top-level directory (a subvolume) instead of one listing per
/// directory. At most `per_volume` requests are in flight per volume, and of them at
/// most [`WALKS_PER_VOLUME`] streamed walks.
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
                raw: "/".into(),
                level: Level::Root,
                walk: false,
            }]
        })
        .collect();
    let mut in_flight = vec![0usize; servers.len()];
    let mut walks = vec![0usize; servers.len()];
    let mut dead: HashSet<usize> = HashSet::new();
    let mut pending = FuturesUnordered::new();
    // Files found by streamed walks, handed to `on_file` here.
    let (found_tx, mut found_rx) = tokio::sync::mpsc::channel::<Found>(1024);
    loop {
        for (server, stack) in stacks.iter_mut().enumerate() {
            while in_flight[server] < per_volume {
                if stack.last().is_some_and(|d| d.walk) && walks[server] >= WALKS_PER_VOLUME {
                    break;
                }
                let Some(dir) = stack.pop() else { break };
                in_flight[server] += 1;
                walks[server] += usize::from(dir.walk);
                let found_tx = found_tx.clone();
                pending.push(async move {
                    let done = if dir.walk {
                        Done::Walked(walk_dir(client, servers, &dir, &found_tx).await)
                    } else {
                        let url = format!("http://{}{}{}", servers[server], dir.sub, dir.path);
                        Done::Listed(list_with_retries(client, &url).await)
                    };
                    (dir, done)
                });
            }
        }
        let (dir, done) = tokio::select! {
            biased;
            Some(found) = found_rx.recv() => {
                on_file(found);
                continue;
            }
            next = pending.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        in_flight[dir.server] -= 1;
        walks[dir.server] -= usize::from(dir.walk);
        if dead.contains(&dir.server) {
            continue;
        }
        let listing = match done {
            Done::Walked(Ok(foreign)) => {
                report.walks += 1;
                report.foreign += foreign;
                continue;
            }
            Done::Walked(Err(e)) | Done::Listed(Err(e)) => {
                dead.insert(dir.server);
                stacks[dir.server].clear();
                report.failed.push((servers[dir.server].clone(), e));
                continue;
            }
            Done::Listed(Ok(Some(listing))) => listing,
            Done::Listed(Ok(None)) => continue, // removed since its parent was listed
        };
        report.dirs += 1;
        // Below the root of a volume that offers it, walk instead of listing.
        let walk_below = listing.walkable && matches!(dir.level, Level::Root);
        for entry in listing.entries {
            if entry.name.starts_with('.') || entry.name.contains('/') {
                report.foreign += 1;
                continue;
            }
            let next = match entry.kind.as_str() {
                "directory" => dir.level.child(&entry.name).map(|level| Dir {
                    walk: walk_below,
                    ..dir.child(&entry.name, level)
                }),
                "file" => {
                    let mtime = mtime_ms(entry.mtime.as_deref());
                    match dir.file(servers, &entry.name, entry.size, mtime) {
                        Some(found) => on_file(found),
                        None => report.foreign += 1,
                    }
                    continue;
                }
                _ => None,
            };
            match next {
                Some(next) => stacks[dir.server].push(next),
                None => report.foreign += 1,
            }
        }
    }
    // Files the last walks sent after the loop's last look.
    while let Ok(found) = found_rx.try_recv() {
        on_file(found);
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
        assert_eq!(mtime_ms(entries[1].mtime.as_deref()), 1_735_689_601_000);
    }

    #[test]
    fn walked_files_follow_the_levels() {
        use crate::placement::key_path;
        let servers = vec!["h:1".to_string()];
        let sub = Dir {
            server: 0,
            sub: String::new(),
            path: "/".into(),
            raw: "/".into(),
            level: Level::Root,
            walk: true,
        }
        .child("sv0A", Level::Sub);
        assert_eq!((sub.sub.as_str(), sub.raw.as_str()), ("/sv0A", "/"));
        // A key whose base64 holds '/': its file sits below extra directories.
        let key = b"/k/???>>>";
        let path = key_path(key);
        assert!(path.matches('/').count() > 3, "{path}");
        let found = sub.walked_file(&servers, &path[1..], Some(7), 9).unwrap();
        assert_eq!(found.key, key);
        assert_eq!(
            (found.location.as_str(), found.size, found.mtime_ms),
            ("h:1/sv0A", 7, 9)
        );
        // Walked from the first hash directory: the rest of the path.
        let hash1 = sub.child(&path[1..3], Level::Hash1);
        assert_eq!(hash1.path, format!("{}/", &path[..3]));
        assert_eq!(
            hash1
                .walked_file(&servers, &path[4..], None, 0)
                .unwrap()
                .key,
            key
        );
        // Not hoard's: wrong hash directories, hidden names, too shallow, a subvolume.
        for rel in [
            "00/00/L2s=",
            "ab/.x/L2s=",
            "L2s=",
            "sv01/ab/cd/L2s=",
            "ab/cd/",
        ] {
            assert!(sub.walked_file(&servers, rel, None, 0).is_none(), "{rel}");
        }
        let wrong = format!("{}/.{}", &path[1..6], &path[7..]);
        assert!(sub.walked_file(&servers, &wrong, None, 0).is_none());
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
