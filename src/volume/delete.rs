//! DELETE: removing one file.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::error::{blocking, VolumeServerError};
use super::path::VolumePath;
use super::root::Root;
use super::write::sync_dir;

/// Files up to this size are unlinked under the in-flight lock, in place. Larger ones
/// are first renamed into the temp directory and unlinked outside the lock (freeing a
/// large file's blocks can take long).
const UNLINK_IN_PLACE: u64 = 1 << 20;

/// Removes the file at `path` (a symlink is removed itself, never its target). Missing
/// → [`VolumeServerError::NotFound`]; a directory → [`VolumeServerError::Conflict`]. Uploads of the
/// path still in flight are cancelled ([`super::inflight`]) under the same lock as the
/// removal. With `fsync` on, the work runs on the blocking pool and the removal is made
/// durable before returning; with `--fsync=false` it runs on the request's task (a few
/// page-cache operations), and a large file's blocks are freed on the blocking pool
/// after the answer.
pub async fn delete(root: &Root, fsync: bool, path: &VolumePath) -> Result<(), VolumeServerError> {
    let Some((parents, name)) = path.split_last().filter(|_| !path.names_dir()) else {
        return Err(VolumeServerError::Conflict("cannot DELETE a directory"));
    };
    if !fsync {
        if let (_, Some(doomed)) = remove(root, parents, name)? {
            tokio::task::spawn_blocking(move || unlink_doomed(&doomed));
        }
        return Ok(());
    }
    let (root, parents, name) = (root.clone(), parents.to_vec(), name.to_owned());
    blocking(move || {
        let (target, doomed) = remove(&root, &parents, &name)?;
        if let Some(doomed) = doomed {
            unlink_doomed(&doomed);
        }
        match target.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    })
    .await
}

/// Takes the file out of its place: unlinks it, or (a large file) moves it into the
/// temp directory and returns where, for the caller to unlink. Returns the file's path
/// too. Blocking.
fn remove(
    root: &Root,
    parents: &[String],
    name: &str,
) -> Result<(PathBuf, Option<PathBuf>), VolumeServerError> {
    let target = root.entry(parents, name)?;
    let doomed = root.inflight().cancel_and(&target, || {
        let size = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {
                return Err(VolumeServerError::Conflict("cannot DELETE a directory"))
            }
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeServerError::NotFound)
            }
            Err(e) => {
                return Err(VolumeServerError::io(
                    format!("inspecting {}", target.display()),
                    e,
                ))
            }
        };
        let removing = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => VolumeServerError::NotFound,
            _ => VolumeServerError::io(format!("removing {}", target.display()), e),
        };
        if size <= UNLINK_IN_PLACE {
            return fs::remove_file(&target).map(|()| None).map_err(removing);
        }
        let doomed = root
            .temp_dir()
            .join(format!("delete-{:016x}", fastrand::u64(..)));
        fs::rename(&target, &doomed).map_err(removing)?;
        Ok(Some(doomed))
    })?;
    Ok((target, doomed))
}

/// Unlinks a file moved out of the way. A crash before it leaves the file in the temp
/// directory, which is cleared at start. Blocking.
fn unlink_doomed(doomed: &std::path::Path) {
    if let Err(e) = fs::remove_file(doomed) {
        tracing::warn!("removing {}: {e}", doomed.display());
    }
}
