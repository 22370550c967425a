//! Moving values between local files (or stdin/stdout) and the store, streamed: memory
//! stays at one chunk whatever the size. Downloads check the md5 the index announced,
//! land in a temporary file renamed into place, and are retried from the start (a new
//! replica) when a volume fails; a progress bar shows on a terminal for large values.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use reqwest::header::CONTENT_LENGTH;
use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{key_path, status_error, Client, ClientError, ATTEMPTS};
use crate::hex::hex;

/// Bytes read from a file per chunk.
const CHUNK: usize = 256 << 10;
/// Values at least this large get a progress bar (on a terminal).
const BAR_FROM: u64 = 8 << 20;

/// Where a value to store comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file (its length is sent, and it can be re-read for a retry).
    File(PathBuf),
    /// Standard input (sent once, chunked).
    Stdin,
}

/// Where a fetched value goes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file, written as `<file>.hoard-part` and renamed into place when complete.
    File(PathBuf),
}

/// A progress bar on stderr when it is a terminal and `len` is large, else `None`.
pub fn bar(len: Option<u64>, label: &str) -> Option<indicatif::ProgressBar> {
    let len = len.filter(|&n| n >= BAR_FROM)?;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = crate::progress::bar(
        len,
        "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    );
    pb.set_prefix(label.to_string());
    Some(pb)
}

/// `reader` as a stream of chunks, counting them on `pb`.
fn chunks<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    pb: Option<indicatif::ProgressBar>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::try_unfold((reader, pb), |(mut reader, pb)| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            if let Some(pb) = &pb {
                pb.finish_and_clear();
            }
            return Ok(None);
        }
        buf.truncate(n);
        if let Some(pb) = &pb {
            pb.inc(n as u64);
        }
        Ok(Some((Bytes::from(buf), (reader, pb))))
    })
}

/// Standard input as a stream, taken from `slot` only when first polled: a request
/// that could not connect never polled its body, so the next try still has stdin.
fn lazy_stdin(
    slot: Arc<Mutex<Option<tokio::io::Stdin>>>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::once(async move {
        slot.lock()
            .ok()
            .and_then(|mut s| s.take())
            .ok_or_else(|| std::io::Error::other("standard input was already sent"))
    })
    .map_ok(|stdin| chunks(stdin, None))
    .try_flatten()
}

/// The md5 (hex) of a local file, read as a stream.
pub async fn md5_file(path: &Path) -> Result<String, ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ClientError::io(path.display(), e))?;
    let mut hasher = Md5::new();
    let mut stream = std::pin::pin!(chunks(file, None));
    while let Some(chunk) = stream.next().await {
        hasher.update(chunk.map_err(|e| ClientError::io(path.display(), e))?);
    }
    Ok(hex(&hasher.finalize()))
}

/// Stores `source` under `key` (`PUT /key`): 201, or the server's refusal. A file is
/// re-sent to the next index URL if a connection could not be made (stdin too: it is
/// read only once a connection is made).
/// With `progress`, large values show a bar on a terminal.
pub async fn put(
    client: &Client,
    key: &str,
    source: &Source,
    progress: bool,
) -> Result<(), ClientError> {
    let len = match source {
        Source::File(path) => Some(
            tokio::fs::metadata(path)
                .await
                .map_err(|e| ClientError::io(path.display(), e))?
                .len(),
        ),
        Source::Stdin => None,
    };
    let pb = if progress { bar(len, key) } else { None };
    let stdin = Arc::new(Mutex::new(Some(tokio::io::stdin())));
    let path = key_path(key);
    let resp = client
        .send(key, false, |c, base| {
            let body = match source {
                Source::File(file) => {
                    let f = std::fs::File::open(file)
                        .map_err(|e| ClientError::io(file.display(), e))?;
                    if let Some(pb) = &pb {
                        pb.reset();
                    }
                    reqwest::Body::wrap_stream(chunks(tokio::fs::File::from_std(f), pb.clone()))
                }
                Source::Stdin => reqwest::Body::wrap_stream(lazy_stdin(Arc::clone(&stdin))),
            };
            let mut req = c.put(format!("{base}{path}")).body(body);
            if let Some(len) = len {
                req = req.header(CONTENT_LENGTH, len);
            }
            Ok(req)
        })
        .await;
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let resp = resp?;
    if resp.status() == StatusCode::CREATED {
        Ok(())
    } else {
        Err(status_error(key, resp).await)
    }
}

/// Fetches `key` into `sink`: locate it (302), read the replica, check the md5.
/// Returns the md5 of what was written. A failed read is retried as long as nothing
/// reached stdout (a file is rewritten from the start), on another replica: the index
/// is asked to avoid the volumes already read (`Hoard-Avoid-Volumes`), so with one good
/// replica among `n` it is found within `n` tries. With `progress`, large values show a
/// bar on a terminal.
pub async fn get(
    client: &Client,
    key: &str,
    sink: &Sink,
    progress: bool,
) -> Result<String, ClientError> {
    let mut last = None;
    let mut tried: Vec<String> = Vec::new();
    let mut attempts = ATTEMPTS;
    let mut attempt = 0;
    while attempt < attempts {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200 << attempt.min(4))).await;
        }
        attempt += 1;
        let Some(at) = client.locate_avoiding(key, &tried).await? else {
            return Err(ClientError::NotFound(key.to_string()));
        };
        // One try per replica at least.
        attempts = attempts.max(at.volumes.len());
        let mut written = 0u64;
        match fetch(client, key, &at, sink, progress, &mut written).await {
            Ok(md5) => return Ok(md5),
            Err(e) => {
                let retry = matches!(sink, Sink::File(_)) || written == 0;
                if !retry || matches!(e, ClientError::Io { .. }) {
                    return Err(e);
                }
                if let Some(server) = server_of_url(&at.url) {
                    if !tried.contains(&server) {
                        tried.push(server);
                    }
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Other(format!("{key}: could not be read"))))
}

/// The `host:port` of a URL (`http://host:port/path?query`).
fn server_of_url(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// One try of [`get`]: reads the replica at `at` into `sink`.
async fn fetch(
    client: &Client,
    key: &str,
    at: &super::Located,
    sink: &Sink,
    progress: bool,
    written: &mut u64,
) -> Result<String, ClientError> {
    let http_err = |source| ClientError::Http {
        what: key.to_string(),
        source,
    };
    let mut req = client.http().get(&at.url);
    // A value stored in the index is read from the index server itself: it takes the
    // token (volumes never do; their URLs are signed when needed).
    if let (true, Some(token)) = (at.balance == "inline", client.token()) {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(http_err)?;
    if !resp.status().is_success() {
        return Err(status_error(key, resp).await);
    }
    let pb = if progress {
        bar(resp.content_length(), key)
    } else {
        None
    };
    let mut out = Out::open(sink).await?;
    let mut hasher = Md5::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(http_err)?;
        hasher.update(&chunk);
        out.write(&chunk).await?;
        *written += chunk.len() as u64;
        if let Some(pb) = &pb {
            pb.inc(chunk.len() as u64);
        }
    }
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let md5 = hex(&hasher.finalize());
    if let Some(want) = &at.md5 {
        if !want.eq_ignore_ascii_case(&md5) {
            return Err(ClientError::Other(format!(
                "{key}: md5 mismatch: the index says {want}, the replica gave {md5}"
            )));
        }
    }
    out.finish().await?;
    Ok(md5)
}

/// An open output: stdout, or a temporary file renamed into place by `finish`.
enum Out {
    Stdout(tokio::io::Stdout),
    File {
        file: tokio::fs::File,
        part: PathBuf,
        path: PathBuf,
    },
}

impl Out {
    async fn open(sink: &Sink) -> Result<Out, ClientError> {
        match sink {
            Sink::Stdout => Ok(Out::Stdout(tokio::io::stdout())),
            Sink::File(path) => {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".hoard-part");
                let part = path.with_file_name(name);
                let file = tokio::fs::File::create(&part)
                    .await
                    .map_err(|e| ClientError::io(part.display(), e))?;
                Ok(Out::File {
                    file,
                    part,
                    path: path.clone(),
                })
            }
        }
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        match self {
            Out::Stdout(out) => out
                .write_all(data)
                .await
                .map_err(|e| ClientError::io("standard output", e)),
            Out::File { file, part, .. } => file
                .write_all(data)
                .await
                .map_err(|e| ClientError::io(part.display(), e)),
        }
    }

    async fn finish(mut self) -> Result<(), ClientError> {
        match &mut self {
            Out::Stdout(out) => out
                .flush()
                .await
                .map_err(|e| ClientError::io("standard output", e)),
            Out::File { file, part, path } => {
                file.flush()
                    .await
                    .map_err(|e| ClientError::io(part.display(), e))?;
                // Renamed while open; `drop` then finds no partial file to remove.
                tokio::fs::rename(&*part, &*path)
                    .await
                    .map_err(|e| ClientError::io(path.display(), e))
            }
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        // Not finished: leave no partial file behind (after `finish` it is gone).
        if let Out::File { part, .. } = self {
            let _ = std::fs::remove_file(part);
        }
    }
}
