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
//! 4. rename into place, unless a DELETE or a newer PUT of the path cancelled this
//!    upload meanwhile ([`super::inflight`]; then 409 and the temp file is removed):
//!    atomic; readers see the old file or the new one, never a torn mix. After the rename but before the directory fsync, a power loss may lose the
//!    new name (the old file, or none, comes back), but the file is never torn because
//!    its data was synced before the rename.
//! 5. fsync of the parent directory (and of the parents of directories this PUT
//!    created): from here the write survives power loss. Only then is 201/204 sent.
//!
//! All file-system work is blocking `std::fs`. A body that ends within its first
//! [`WRITE_CHUNK`] bytes (most values) is stored by one call — directories, temp file,
//! write, fsync, rename, directory fsync: with `fsync` on, on tokio's blocking pool
//! (one trip, two thread hand-offs, small next to the fsyncs); with `--fsync=false`,
//! directly on the request's task, as nginx does in its event loop — without fsync
//! these are page-cache operations of microseconds, cheaper than the hand-offs. Larger
//! bodies take one trip to the pool per 1 MiB written.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

use super::error::{blocking, VolumeError};
use super::inflight::Ticket;
use super::path::VolumePath;
use super::root::Root;

/// Bytes gathered before each write to the file: large writes keep the number of trips
/// to the blocking pool low. A body no longer than this is stored in one trip.
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
    mut body: Body,
) -> Result<PutOutcome, VolumeError> {
    let Some((parents, name)) = path.split_last().filter(|_| !path.names_dir()) else {
        return Err(VolumeError::Conflict("cannot PUT to a directory path"));
    };
    let (first, more) = next_chunk(&mut body).await?;
    let mut bytes = first.len() as u64;
    let rename_delay = root.rename_delay().is_some();
    let (root, parents, name) = (root.clone(), parents.to_vec(), name.to_string());
    if !more {
        let store = move || {
            let mut upload = Upload::start(&root, &parents, &name)?;
            upload.temp.write(&first)?;
            let created = upload.finish(fsync)?;
            Ok(PutOutcome { created, bytes })
        };
        // Without fsync every step is a page-cache operation of microseconds: run
        // them here, as nginx does, instead of paying two thread hand-offs. (Not with
        // the test hook that sleeps before the rename.)
        return match fsync || rename_delay {
            true => blocking(store).await,
            false => store(),
        };
    }
    let mut upload = blocking(move || {
        let mut upload = Upload::start(&root, &parents, &name)?;
        upload.temp.write(&first)?;
        Ok(upload)
    })
    .await?;
    loop {
        let (chunk, more) = next_chunk(&mut body).await?;
        bytes += chunk.len() as u64;
        // If this future is dropped meanwhile, the task still returns `upload`, whose
        // drop removes the temp file.
        upload = blocking(move || {
            upload.temp.write(&chunk)?;
            Ok(upload)
        })
        .await?;
        if !more {
            break;
        }
    }
    let created = blocking(move || upload.finish(fsync)).await?;
    Ok(PutOutcome { created, bytes })
}

/// Reads up to [`WRITE_CHUNK`] bytes of `body` (more if one frame is larger); the flag
/// is false when the body ended.
async fn next_chunk(body: &mut Body) -> Result<(Bytes, bool), VolumeError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(VolumeError::Body)?.into_data() else {
            continue; // trailers
        };
        if buf.is_empty() && data.len() >= WRITE_CHUNK {
            return Ok((data, true));
        }
        buf.extend_from_slice(&data);
        if buf.len() >= WRITE_CHUNK {
            return Ok((buf.freeze(), true));
        }
    }
    Ok((buf.freeze(), false))
}

/// One PUT in progress: the target and its temp file. Blocking methods.
struct Upload {
    temp: TempFile,
    dir: PathBuf,
    target: PathBuf,
    created_dirs: Vec<PathBuf>,
    ticket: Ticket,
    rename_delay: Option<std::time::Duration>,
}

impl Upload {
    /// Creates the parent directories and the temp file.
    fn start(root: &Root, parents: &[String], name: &str) -> Result<Self, VolumeError> {
        let (dir, created_dirs) = root.make_dirs(parents)?;
        let target = dir.join(name);
        Ok(Upload {
            temp: TempFile::create(&root.temp_dir())?,
            ticket: root.inflight().start(&target),
            target,
            dir,
            created_dirs,
            rename_delay: root.rename_delay(),
        })
    }

    /// Syncs the data, renames it into place and syncs the directories; true when the
    /// file did not exist before.
    fn finish(mut self, fsync: bool) -> Result<bool, VolumeError> {
        self.temp.finish(fsync)?;
        if let Some(delay) = self.rename_delay {
            std::thread::sleep(delay);
        }
        let (temp, target) = (&mut self.temp, &self.target);
        let created =
            self.ticket
                .finish(|| temp.rename_to(target))
                .ok_or(VolumeError::Conflict(
                    "upload cancelled by a later DELETE or PUT of the path",
                ))??;
        if fsync {
            let mut dirs: Vec<&Path> = self
                .created_dirs
                .iter()
                .filter_map(|d| d.parent())
                .collect();
            dirs.push(&self.dir);
            dirs.dedup();
            dirs.into_iter().try_for_each(sync_dir)?;
        }
        Ok(created)
    }
}

/// fsyncs a directory, making the names it holds durable. Blocking.
pub fn sync_dir(dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VolumeError::io(format!("syncing directory {}", dir.display()), e))
}

/// An upload's temp file. Dropping it before [`TempFile::rename_to`] succeeded deletes
/// the file, however the request ended. Blocking methods.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
    renamed: bool,
}

impl TempFile {
    /// Creates a new, uniquely named file in `dir`.
    fn create(dir: &Path) -> Result<Self, VolumeError> {
        loop {
            let path = dir.join(format!("put-{:016x}", fastrand::u64(..)));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
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

    fn file(&mut self) -> Result<&mut File, VolumeError> {
        let path = &self.path;
        self.file.as_mut().ok_or_else(|| {
            VolumeError::io(
                format!("writing {}", path.display()),
                std::io::Error::other("file already closed"),
            )
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), VolumeError> {
        let written = self.file()?.write_all(data);
        written.map_err(|e| VolumeError::io(format!("writing {}", self.path.display()), e))
    }

    /// Syncs the data to disk when `fsync` is on, and closes the file.
    fn finish(&mut self, fsync: bool) -> Result<(), VolumeError> {
        let file = self.file()?;
        if fsync {
            let synced = file.sync_all();
            synced.map_err(|e| VolumeError::io(format!("syncing {}", self.path.display()), e))?;
        }
        self.file = None;
        Ok(())
    }

    /// Moves the file to `target`, replacing any file there (not a directory); true
    /// when nothing was there. One `renameat2(RENAME_NOREPLACE)` tells a new name from
    /// a replacement; a file already there is then replaced by a plain rename.
    fn rename_to(&mut self, target: &Path) -> Result<bool, VolumeError> {
        match rename_noreplace(&self.path, target) {
            Ok(()) => {
                self.renamed = true;
                return Ok(true);
            }
            // Taken, or a file system without RENAME_NOREPLACE: replace.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EINVAL)) => {}
            Err(e) => return Err(rename_error(&self.path, target, e)),
        }
        let existed = match std::fs::symlink_metadata(target) {
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
        match std::fs::rename(&self.path, target) {
            Ok(()) => {
                self.renamed = true;
                Ok(!existed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
                Err(VolumeError::Conflict("the path is a directory"))
            }
            Err(e) => Err(rename_error(&self.path, target, e)),
        }
    }
}

fn rename_error(from: &Path, to: &Path, e: std::io::Error) -> VolumeError {
    match e.kind() {
        std::io::ErrorKind::IsADirectory => VolumeError::Conflict("the path is a directory"),
        _ => VolumeError::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        ),
    }
}

/// `renameat2(from, to, RENAME_NOREPLACE)`: fails with `EEXIST` if `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths relative to the working directory (both are
    // absolute); the result is checked.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
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
