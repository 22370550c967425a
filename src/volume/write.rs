//! Atomic PUT: the body is streamed into a temp file, which is renamed into place only
//! once it is complete.
//!
//! What survives if the process dies at each step:
//!
//! 1. Creating parent directories: empty directories may remain; harmless (nginx's
//!    `create_full_put_path` leaves them too).
//! 2. Streaming into `<root>/.hoard-tmp/<random>`: only the temp file exists; it is
//!    never visible under a request path and is deleted at the next startup. A failed
//!    or abandoned upload (client gone, body shorter than its Content-Length, handler
//!    dropped) deletes it at once through [`TempFile`]'s `Drop`.
//! 3. fsync of the temp file (with `fsync` on): as in 2.
//! 4. rename into place: atomic; readers see the old file or the new one, never a torn
//!    mix. After the rename but before the directory fsync, a power loss may lose the
//!    new name (the old file, or none, comes back), but the file is never torn because
//!    its data was synced before the rename.
//! 5. fsync of the parent directory (and of the parents of directories this PUT
//!    created): from here the write survives power loss. Only then is 201/204 sent.

use std::fs::File;
use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;

use super::error::{blocking, VolumeError};
use super::path::VolumePath;
use super::root::Root;

/// Bytes gathered before each write to the file: large writes keep the number of trips
/// to the blocking pool low.
const WRITE_CHUNK: usize = 1 << 20;

/// What a successful PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// True if the file did not exist before (201), false if it was replaced (204).
    pub created: bool,
    /// Bytes written.
    pub bytes: u64,
}

/// Stores `body` at `path` atomically; see the module docs for the steps.
pub async fn put(
    root: &Root,
    fsync: bool,
    path: &VolumePath,
    body: Body,
) -> Result<PutOutcome, VolumeError> {
    let Some((parents, name)) = path.split_last().filter(|_| !path.names_dir()) else {
        return Err(VolumeError::Conflict("cannot PUT to a directory path"));
    };
    let (dir, created_dirs) = {
        let (root, parents) = (root.clone(), parents.to_vec());
        blocking(move || root.make_dirs(&parents)).await?
    };
    let target = dir.join(name);

    let mut temp = TempFile::create(&root.temp_dir()).await?;
    let bytes = temp.write_body(body).await?;
    temp.finish(fsync).await?;

    let existed = match tokio::fs::symlink_metadata(&target).await {
        Ok(m) if m.is_dir() => return Err(VolumeError::Conflict("the path is a directory")),
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(VolumeError::io(
                format!("inspecting {}", target.display()),
                e,
            ))
        }
    };
    temp.rename_to(&target).await?;

    if fsync {
        let mut dirs: Vec<PathBuf> = created_dirs
            .iter()
            .filter_map(|d| d.parent().map(Path::to_path_buf))
            .collect();
        dirs.push(dir);
        dirs.dedup();
        blocking(move || dirs.iter().try_for_each(|d| sync_dir(d))).await?;
    }
    Ok(PutOutcome {
        created: !existed,
        bytes,
    })
}

/// fsyncs a directory, making the names it holds durable. Blocking.
pub fn sync_dir(dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VolumeError::io(format!("syncing directory {}", dir.display()), e))
}

/// An upload in progress. Dropping it before [`TempFile::rename_to`] succeeded deletes
/// the file, however the request ended.
struct TempFile {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    renamed: bool,
}

impl TempFile {
    /// Creates a new, uniquely named file in `dir`.
    async fn create(dir: &Path) -> Result<Self, VolumeError> {
        loop {
            let path = dir.join(format!("put-{:016x}", fastrand::u64(..)));
            let opened = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await;
            match opened {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file: Some(file),
                        renamed: false,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(VolumeError::io(format!("creating {}", path.display()), e)),
            }
        }
    }

    fn file(&mut self) -> Result<&mut tokio::fs::File, VolumeError> {
        let path = &self.path;
        self.file.as_mut().ok_or_else(|| {
            VolumeError::io(
                format!("writing {}", path.display()),
                std::io::Error::other("file already closed"),
            )
        })
    }

    /// Streams `body` into the file, returning its length.
    async fn write_body(&mut self, mut body: Body) -> Result<u64, VolumeError> {
        let mut buf = BytesMut::new();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(VolumeError::Body)?.into_data() else {
                continue; // trailers
            };
            bytes += data.len() as u64;
            if buf.is_empty() && data.len() >= WRITE_CHUNK {
                self.write(&data).await?;
            } else {
                buf.extend_from_slice(&data);
                if buf.len() >= WRITE_CHUNK {
                    self.write(&buf).await?;
                    buf.clear();
                }
            }
        }
        if !buf.is_empty() {
            self.write(&buf).await?;
        }
        Ok(bytes)
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), VolumeError> {
        let context = format!("writing {}", self.path.display());
        self.file()?
            .write_all(data)
            .await
            .map_err(|e| VolumeError::io(context, e))
    }

    /// Flushes the data, syncs it to disk when `fsync` is on, and closes the file.
    async fn finish(&mut self, fsync: bool) -> Result<(), VolumeError> {
        let context = format!("flushing {}", self.path.display());
        let file = self.file()?;
        // flush() reports a failure of the last write in flight; sync_all() would not.
        file.flush()
            .await
            .map_err(|e| VolumeError::io(&context, e))?;
        if fsync {
            file.sync_all()
                .await
                .map_err(|e| VolumeError::io(&context, e))?;
        }
        self.file = None;
        Ok(())
    }

    /// Moves the file to `target`, replacing any file there.
    async fn rename_to(&mut self, target: &Path) -> Result<(), VolumeError> {
        match tokio::fs::rename(&self.path, target).await {
            Ok(()) => {
                self.renamed = true;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
                Err(VolumeError::Conflict("the path is a directory"))
            }
            Err(e) => Err(VolumeError::io(
                format!("renaming {} to {}", self.path.display(), target.display()),
                e,
            )),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            // Best effort: whatever is left is cleared at the next startup.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
