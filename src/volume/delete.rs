//! DELETE: removing one file.

use std::fs;
use std::io;

use super::error::{blocking, VolumeError};
use super::path::VolumePath;
use super::root::Root;
use super::write::sync_dir;

/// Removes the file at `path` (a symlink is removed itself, never its target). Missing
/// → [`VolumeError::NotFound`]; a directory → [`VolumeError::Conflict`]. With `fsync`
/// on, the removal is made durable before returning.
pub async fn delete(root: &Root, fsync: bool, path: &VolumePath) -> Result<(), VolumeError> {
    let Some((parents, name)) = path.split_last().filter(|_| !path.names_dir()) else {
        return Err(VolumeError::Conflict("cannot DELETE a directory"));
    };
    let (root, parents, name) = (root.clone(), parents.to_vec(), name.to_owned());
    blocking(move || {
        let target = root.entry(&parents, &name)?;
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(VolumeError::Conflict("cannot DELETE a directory")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(VolumeError::NotFound),
            Err(e) => {
                return Err(VolumeError::io(
                    format!("inspecting {}", target.display()),
                    e,
                ))
            }
        }
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(VolumeError::NotFound),
            Err(e) => return Err(VolumeError::io(format!("removing {}", target.display()), e)),
        }
        match target.parent() {
            Some(dir) if fsync => sync_dir(dir),
            _ => Ok(()),
        }
    })
    .await
}
