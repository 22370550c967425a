//! Atomic PUT: the body is streamed into a temp file ([`super::temp`]), which is put in
//! place only once it is complete.
//!
//! What survives if the process dies at each step:
//!
//! 1. Creating parent directories: empty directories may remain; harmless (nginx's
//!    `create_full_put_path` leaves them too).
//! 2. Streaming into the temp file — an unnamed (`O_TMPFILE`) file in the target's
//!    directory, or where the file system lacks that, `<root>/.hoard-tmp/<random>`:
//!    nothing visible under a request path. An unnamed file vanishes with the process;
//!    a named one is deleted at the next startup. A failed or abandoned upload (client
//!    gone, body shorter than its Content-Length, handler dropped) deletes it at once
//!    through [`TempFile`]'s `Drop`.
//! 3. Storing the md5 of the body, hashed while it streamed in, as the file's
//!    extended attribute (`user.hoard.md5`, [`super::checksum`]), then fsync of the
//!    temp file (with `fsync` on): as in 2.
//! 4. Putting it in place (`linkat` of the unnamed file, or a rename; a replacement is
//!    always a rename), unless a DELETE or a newer PUT of the path cancelled this upload
//!    meanwhile ([`super::inflight`]; then 409 and the temp file is removed): atomic;
//!    readers see the old file or the new one, never a torn mix. After this step but
//!    before the directory fsync, a power loss may lose the new name (the old file, or
//!    none, comes back), but the file is never torn because its data was synced first.
//! 5. fsync of the parent directory (and of the parents of directories this PUT
//!    created): from here the write survives power loss. Only then is 201/204 sent.
//!
//! All file-system work is blocking `std::fs`. A body that ends within its first
//! [`WRITE_CHUNK`] bytes (most values) is stored by one call — directories, temp file,
//! write, fsync, link, directory fsync: with `fsync` on, on tokio's blocking pool
//! (one trip, two thread hand-offs, small next to the fsyncs); with `--fsync=false`,
//! directly on the request's task, as nginx does in its event loop — without fsync
//! these are page-cache operations of microseconds, cheaper than the hand-offs. Larger
//! bodies take one trip to the pool per 1 MiB written.

use std::fs::File;
use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

use super::error::{blocking, VolumeServerError};
use super::inflight::Ticket;
use super::path::VolumePath;
use super::root::{MadeDirs, Root};
use super::temp::{Dir, TempFile};

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
) -> Result<PutOutcome, VolumeServerError> {
    let Some((parents, name)) = path.split_last().filter(|_| !path.names_dir()) else {
        return Err(VolumeServerError::Conflict(
            "cannot PUT to a directory path",
        ));
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
async fn next_chunk(body: &mut Body) -> Result<(Bytes, bool), VolumeServerError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(VolumeServerError::Body)?.into_data() else {
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
    temp_dir: PathBuf,
    dir: MadeDirs,
    name: String,
    target: PathBuf,
    ticket: Ticket,
    rename_delay: Option<std::time::Duration>,
}

impl Upload {
    /// Creates the parent directories and the temp file.
    fn start(root: &Root, parents: &[String], name: &str) -> Result<Self, VolumeServerError> {
        let dir = root.make_dirs(parents)?;
        let target = dir.path.join(name);
        let temp_dir = root.temp_dir();
        Ok(Upload {
            temp: TempFile::create(root.unnamed_temp(), dir_of(&dir), &temp_dir)?,
            temp_dir,
            ticket: root.inflight().start(&target),
            target,
            dir,
            name: name.to_string(),
            rename_delay: root.rename_delay(),
        })
    }

    /// Syncs the data, renames it into place and syncs the directories; true when the
    /// file did not exist before.
    fn finish(mut self, fsync: bool) -> Result<bool, VolumeServerError> {
        self.temp.seal();
        if fsync {
            self.temp.sync()?;
        }
        if let Some(delay) = self.rename_delay {
            std::thread::sleep(delay);
        }
        let (temp, target, temp_dir) = (&mut self.temp, &self.target, &self.temp_dir);
        let (dir, name) = (dir_of(&self.dir), &self.name);
        let created = self
            .ticket
            .finish(|| temp.place(target, dir, name, temp_dir))
            .ok_or(VolumeServerError::Conflict(
                "upload cancelled by a later DELETE or PUT of the path",
            ))??;
        if fsync {
            let mut dirs: Vec<&Path> = self.dir.created.iter().filter_map(|d| d.parent()).collect();
            dirs.push(&self.dir.path);
            dirs.dedup();
            dirs.into_iter().try_for_each(sync_dir)?;
        }
        Ok(created)
    }
}

fn dir_of(made: &MadeDirs) -> Dir<'_> {
    Dir {
        path: &made.path,
        fd: made.fd.as_ref(),
    }
}

/// fsyncs a directory, making the names it holds durable. Blocking.
pub fn sync_dir(dir: &Path) -> Result<(), VolumeServerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VolumeServerError::io(format!("syncing directory {}", dir.display()), e))
}
