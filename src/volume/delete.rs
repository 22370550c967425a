//! DELETE: removing one file.

use std::fs;
use std::io;

use super::error::{blocking, VolumeError};
use super::path::VolumePath;
use super::root::Root;
use super::write::sync_dir;

/// Removes the file at `path` (a symlink is removed itself, never its target). Missing
/// → [`VolumeError::NotFound`]; a directory → [`VolumeError::Conflict`]. Uploads of the
/// path still in flight are cancelled ([`super::inflight`]): the file is moved out of
/// its place under the same lock, then unlinked. With `fsync` on, the removal is made
/// durable before returning.
pub async fn delete(root: &Root, fsync: bool, path: &VolumePath) -> Result<(), VolumeError> {
    let Some((parents, name)) = path.split_last().filter(|_| !path.names_dir()) else {
        return Err(VolumeError::Conflict("cannot DELETE a directory"));
    };
    let (root, parents, name) = (root.clone(), parents.to_vec(), name.to_owned());
    blocking(move || {
        let target = root.entry(&parents, &name)?;
        let doomed = root
            .temp_dir()
            .join(format!("delete-{:016x}", fastrand::u64(..)));
        root.inflight().cancel_and(&target, || {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {
                    return Err(VolumeError::Conflict("cannot DELETE a directory"))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(VolumeError::NotFound),
                Err(e) => {
                    return Err(VolumeError::io(
                        format!("inspecting {}", target.display()),
                        e,
                    ))
                }
            }
            match fs::rename(&target, &doomed) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(VolumeError::NotFound),
                Err(e) => Err(VolumeError::io(format!("removing {}", target.display()), e)),
            }
        })?;
        // Unlinking a large file is slow: done outside the lock. A crash before it
        // leaves the file in the temp directory, which is cleared at start.
        if let Err(e) = fs::remove_file(&doomed) {
            tracing::warn!("removing {}: {e}", doomed.display());
        }
        match target.parent() {
            Some(dir) if fsync => sync_dir(dir),
            _ => Ok(()),
        }
    })
    .await
}
