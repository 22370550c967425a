//! `GET /-/walk/<dir>/`: every file below a directory, in one streamed response — what
//! a rebuild would otherwise learn with one listing request per directory.
//!
//! The body is one JSON object per line (`application/x-ndjson`), the entries of a
//! listing ([`super::listing::Entry`]) whose `name` is the file's path relative to the
//! walked directory, then an end line:
//!
//! ```text
//! {"name":"ab/cd/L2hlbGxv","type":"file","mtime":"Wed, 01 Jan 2025 00:00:00 GMT","size":5}
//! {"type":"end","files":1}
//! ```
//!
//! A walk that fails midway (an unreadable directory) ends with
//! `{"type":"error","error":"…"}` instead; a client that sees neither line (the
//! connection broke) must treat the walk as incomplete too.
//!
//! Same rules as listings: hidden names (starting with `.`, which covers the temp
//! directory) and names that are not UTF-8 are left out, symlinks are described by what
//! they point to and left out when they lead outside the root. A symlinked directory is
//! not entered again when it leads to one the walk is already inside (no cycles). Only
//! files are reported (directories are implied by the paths), in no particular order.
//!
//! Memory is bounded: the directories still to walk are held by name (the walk goes
//! depth first, so that is the subdirectories of one directory per level), files are
//! never collected, and the output goes out in [`CHUNK`]-sized pieces through a channel
//! of [`QUEUED`] pieces that the walker waits on when the client reads slowly. A client
//! that goes away stops the walk.
//!
//! Native volumes advertise the endpoint with [`super::listing::HEADER`] on their directory listings,
//! so a client can use it where it exists and fall back to listings (nginx) elsewhere.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::{blocking, VolumeServerError};
use super::listing::Entry;
use super::path::VolumePath;
use super::root::Root;

/// Bytes of output gathered before they are handed to the connection.
const CHUNK: usize = 32 << 10;

/// Output pieces queued between the walker and the connection.
const QUEUED: usize = 4;

/// Answers `GET /-/walk/<path>`: `path` must name an existing directory (with a trailing
/// `/`; without one the answer is 404).
pub async fn walk(root: &Root, path: &VolumePath) -> Result<Response, VolumeServerError> {
    if !path.names_dir() {
        return Err(VolumeServerError::NotFound);
    }
    let start = {
        let (root, path) = (root.clone(), path.clone());
        blocking(move || {
            let dir = root.existing(&path)?;
            match fs::metadata(&dir) {
                Ok(m) if m.is_dir() => Ok(dir),
                Ok(_) => Err(VolumeServerError::NotFound),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(VolumeServerError::NotFound),
                Err(e) => Err(VolumeServerError::io(
                    format!("inspecting {}", dir.display()),
                    e,
                )),
            }
        })
        .await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUED);
    let root_path = root.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut out = Output {
            buf: Vec::with_capacity(CHUNK + 512),
            tx,
            files: 0,
        };
        let last = match walk_tree(&root_path, start, &mut out) {
            Ok(()) => format!("{{\"type\":\"end\",\"files\":{}}}\n", out.files),
            Err(Stop::ClientGone) => return,
            Err(Stop::Failed(e)) => {
                tracing::error!("volume: walk: {e}");
                let msg = serde_json::to_string(&e.public).unwrap_or_else(|_| "\"\"".into());
                format!("{{\"type\":\"error\",\"error\":{msg}}}\n")
            }
        };
        out.buf.extend_from_slice(last.as_bytes());
        let _ = out.flush();
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, io::Error>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Why a walk stopped early.
enum Stop {
    /// The client stopped reading.
    ClientGone,
    /// A directory could not be read.
    Failed(WalkError),
}

/// A failed walk: the full error for the log, and what the client may see (paths
/// relative to the walked directory).
struct WalkError {
    full: String,
    public: String,
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

/// The response body being written.
struct Output {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    files: u64,
}

impl Output {
    fn file(&mut self, name: String, meta: &fs::Metadata) -> Result<(), Stop> {
        let entry = Entry {
            name,
            kind: "file",
            mtime: meta
                .modified()
                .map(httpdate::fmt_http_date)
                .unwrap_or_default(),
            size: Some(meta.len()),
        };
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, &entry);
        let _ = self.buf.write_all(b"\n");
        self.files += 1;
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK + 512),
        ));
        self.tx.blocking_send(piece).map_err(|_| Stop::ClientGone)
    }
}

/// A directory still to walk.
struct Pending {
    /// Where it is (canonical: the walk starts canonical and only adds real names or
    /// canonical symlink targets).
    dir: PathBuf,
    /// Its path relative to the walked directory: empty or ending in `/`.
    rel: String,
    /// The directories in which a symlinked directory was entered on the way here.
    hops: Arc<Vec<PathBuf>>,
}

/// Walks `start` depth first, writing every file to `out`. Blocking.
fn walk_tree(root: &Path, start: PathBuf, out: &mut Output) -> Result<(), Stop> {
    let mut stack = vec![Pending {
        dir: start,
        rel: String::new(),
        hops: Arc::default(),
    }];
    while let Some(p) = stack.pop() {
        let failed = |e: io::Error| {
            Stop::Failed(WalkError {
                full: format!("reading directory {}: {e}", p.dir.display()),
                public: format!("reading directory ./{}: {}", p.rel, e.kind()),
            })
        };
        let items = match fs::read_dir(&p.dir) {
            Ok(items) => items,
            // Removed since its parent was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(e)),
        };
        for item in items {
            let item = item.map_err(failed)?;
            let Ok(name) = item.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            // From the directory entry itself (d_type): no system call.
            let Ok(kind) = item.file_type() else { continue };
            if kind.is_dir() {
                stack.push(Pending {
                    dir: p.dir.join(&name),
                    rel: format!("{}{name}/", p.rel),
                    hops: Arc::clone(&p.hops),
                });
            } else if kind.is_file() {
                // fstatat relative to the open directory; gone meanwhile: skip it.
                if let Ok(meta) = item.metadata() {
                    out.file(format!("{}{name}", p.rel), &meta)?;
                }
            } else if kind.is_symlink() {
                let Ok(target) = fs::canonicalize(p.dir.join(&name)) else {
                    continue; // dangling
                };
                if !target.starts_with(root) {
                    continue;
                }
                let Ok(meta) = fs::metadata(&target) else {
                    continue;
                };
                if meta.is_file() {
                    out.file(format!("{}{name}", p.rel), &meta)?;
                } else if meta.is_dir() && !p.dir.starts_with(&target) {
                    // A directory already being walked around us would be a cycle.
                    if p.hops.iter().any(|h| h.starts_with(&target)) {
                        continue;
                    }
                    let mut hops = (*p.hops).clone();
                    hops.push(p.dir.clone());
                    stack.push(Pending {
                        dir: target,
                        rel: format!("{}{name}/", p.rel),
                        hops: Arc::new(hops),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a walk of `dir` and returns its output lines.
    fn lines(root: &Path, dir: &Path) -> Vec<String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut out = Output {
            buf: Vec::new(),
            tx,
            files: 0,
        };
        assert!(walk_tree(root, dir.to_path_buf(), &mut out).is_ok());
        let _ = out.flush();
        drop(out);
        let mut text = Vec::new();
        while let Ok(piece) = rx.try_recv() {
            text.extend_from_slice(&piece);
        }
        let mut lines: Vec<String> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {}", v["name"].as_str().unwrap(), v["size"])
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn walks_files_skips_hidden_and_cycles() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("root");
        fs::create_dir_all(root.join("sv00/ab/cd/x")).unwrap();
        fs::write(root.join("sv00/ab/cd/f"), b"12345").unwrap();
        fs::write(root.join("sv00/ab/cd/x/g"), b"1").unwrap();
        fs::write(root.join("sv00/.hidden"), b"").unwrap();
        fs::create_dir(root.join(".hoard-tmp")).unwrap();
        fs::write(root.join(".hoard-tmp/part"), b"").unwrap();
        fs::write(base.join("secret"), b"s").unwrap();
        // Inside: followed; outside, dangling, or back up the tree: left out.
        symlink(root.join("sv00/ab/cd/f"), root.join("sv00/link")).unwrap();
        symlink(base.join("secret"), root.join("sv00/out")).unwrap();
        symlink(root.join("nothing"), root.join("sv00/dangling")).unwrap();
        symlink(root.join("sv00"), root.join("sv00/ab/up")).unwrap();
        fs::create_dir(root.join("other")).unwrap();
        fs::write(root.join("other/h"), b"12").unwrap();
        symlink(root.join("other"), root.join("sv00/side")).unwrap();
        symlink(root.join("sv00"), root.join("other/back")).unwrap();
        assert_eq!(
            lines(&root, &root.join("sv00")),
            ["ab/cd/f 5", "ab/cd/x/g 1", "link 5", "side/h 2",]
        );
    }
}
