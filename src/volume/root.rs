//! The directory a volume owns: preparing it at startup, and resolving request paths
//! inside it without ever leaving it.
//!
//! Symlinks: the root itself is canonicalized once at startup. A symlink *inside* the
//! root is followed only if its canonical target is still inside the root; otherwise the
//! request answers 403, like nginx's `disable_symlinks`. This protects against request
//! paths, not against a local user racing symlink swaps in the directory (the directory
//! belongs to the server).

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::beneath::{self, Resolved, RootFd};
use super::error::VolumeServerError;
use super::inflight::InFlight;
use super::path::VolumePath;
use super::temp;

/// Name of the hidden directory holding uploads in progress. Request paths can never
/// name it: segments starting with `.` are refused.
pub const TEMP_DIR: &str = ".hoard-tmp";

/// The canonical root directory of a volume, and the uploads in flight under it.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    /// The root held open, for the one-syscall path checks ([`beneath`]).
    fd: Arc<RootFd>,
    inflight: Arc<InFlight>,
    rename_delay: Option<Duration>,
    /// Uploads are unnamed (`O_TMPFILE`) files in their target's directory
    /// ([`super::temp`]); false where the file system does not allow it.
    unnamed_temp: bool,
}

impl Root {
    /// Creates `dir` if missing, canonicalizes it, and empties the temp directory of
    /// uploads a previous process left unfinished.
    pub fn prepare(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let fd = RootFd::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut root = Self {
            path,
            fd: Arc::new(fd),
            inflight: Arc::default(),
            rename_delay: None,
            unnamed_temp: false,
        };
        let temp = root.temp_dir();
        match fs::remove_dir_all(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("clearing {}", temp.display())),
        }
        fs::create_dir(&temp).with_context(|| format!("creating {}", temp.display()))?;
        root.unnamed_temp = temp::probe_unnamed(&temp);
        Ok(root)
    }

    /// Makes every upload wait `delay` between syncing its data and renaming it into
    /// place — a test hook (`hoard volume --test-rename-delay`) that widens the window
    /// in which a DELETE races an upload.
    pub fn with_rename_delay(mut self, delay: Option<Duration>) -> Self {
        self.rename_delay = delay;
        self
    }

    /// Whether uploads are unnamed files in their target's directory ([`super::temp`]).
    pub fn unnamed_temp(&self) -> bool {
        self.unnamed_temp
    }

    /// The pause before an upload's rename (a test hook; normally none).
    pub fn rename_delay(&self) -> Option<Duration> {
        self.rename_delay
    }

    /// Uploads in flight, for cancelling them from a DELETE.
    pub fn inflight(&self) -> &Arc<InFlight> {
        &self.inflight
    }

    /// The canonical root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where uploads in progress are written (same file system as the root).
    pub fn temp_dir(&self) -> PathBuf {
        self.path.join(TEMP_DIR)
    }

    /// Resolves an existing file or directory, following symlinks that stay inside the
    /// root. Returns the canonical path. Blocking.
    pub fn existing(&self, path: &VolumePath) -> Result<PathBuf, VolumeServerError> {
        let relative = path.relative();
        match self
            .fd
            .resolve(relative.as_os_str().as_bytes(), libc::O_PATH)
        {
            Resolved::Open(_) if relative.as_os_str().is_empty() => Ok(self.path.clone()),
            Resolved::Open(_) => Ok(self.path.join(relative)),
            Resolved::Missing => Err(VolumeServerError::NotFound),
            Resolved::Slow => self.confine(&self.path.join(relative)),
        }
    }

    /// Opens an existing file for reading when no symlink is on its way (the common
    /// case, one syscall); `Ok(None)` sends the caller to [`Root::existing`]. Blocking.
    pub fn open_plain(&self, path: &VolumePath) -> Result<Option<fs::File>, VolumeServerError> {
        let relative = path.relative();
        let flags = libc::O_RDONLY | libc::O_NONBLOCK;
        match self.fd.resolve(relative.as_os_str().as_bytes(), flags) {
            Resolved::Open(fd) => Ok(Some(fs::File::from(fd))),
            Resolved::Missing => Err(VolumeServerError::NotFound),
            Resolved::Slow => Ok(None),
        }
    }

    /// The size (`st_size`) of the directory `path` when it is reached without a
    /// symlink on the way (one `openat2` and one `fstat`); `Ok(None)` sends the caller
    /// to the general path. Blocking, but page-cache work.
    pub fn plain_dir_size(&self, path: &VolumePath) -> Result<Option<u64>, VolumeServerError> {
        let relative = path.relative();
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        match self.fd.resolve(relative.as_os_str().as_bytes(), flags) {
            Resolved::Open(fd) => Ok(fs::File::from(fd).metadata().ok().map(|m| m.len())),
            Resolved::Missing => Err(VolumeServerError::NotFound),
            Resolved::Slow => Ok(None),
        }
    }

    /// Resolves the directory holding `parents` (which must exist) and joins `name`
    /// without following it: for removing an entry. Blocking.
    pub fn entry(&self, parents: &[String], name: &str) -> Result<PathBuf, VolumeServerError> {
        let dir: PathBuf = parents.iter().collect();
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        match self.fd.resolve(dir.as_os_str().as_bytes(), flags) {
            Resolved::Open(_) => Ok(self.path.join(dir).join(name)),
            Resolved::Missing => Err(VolumeServerError::NotFound),
            Resolved::Slow => Ok(self.confine(&self.path.join(dir))?.join(name)),
        }
    }

    /// Makes sure the directories `parents` exist, creating missing ones one at a time
    /// and refusing to step through a symlink that leaves the root or through a file.
    /// Blocking.
    pub fn make_dirs(&self, parents: &[String]) -> Result<MadeDirs, VolumeServerError> {
        if let Some(done) = self.make_dirs_fast(parents) {
            return Ok(done);
        }
        let mut dir = self.path.clone();
        let mut created = Vec::new();
        for name in parents {
            let next = dir.join(name);
            dir = match self.step(&next)? {
                Step::Dir => next,
                Step::Resolved(target) => target,
                Step::Created => {
                    created.push(next.clone());
                    next
                }
            };
        }
        Ok(MadeDirs {
            path: dir,
            created,
            fd: None,
        })
    }

    /// [`Root::make_dirs`] without a symlink on the way: finds the deepest existing
    /// directory with one `openat2` per level tried (one in all when the directory
    /// exists), then creates the rest with `mkdirat` under it, and keeps the last one
    /// open. `None` when anything is unusual (a symlink, a file in the way, an error):
    /// the general path decides.
    fn make_dirs_fast(&self, parents: &[String]) -> Option<MadeDirs> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let mut existing = parents.len();
        let mut dir = loop {
            let relative: PathBuf = parents[..existing].iter().collect();
            match self.fd.resolve(relative.as_os_str().as_bytes(), flags) {
                Resolved::Open(fd) => break fd,
                Resolved::Missing if existing > 0 => existing -= 1,
                _ => return None,
            }
        };
        let mut path = self.path.clone();
        path.extend(&parents[..existing]);
        let mut created = Vec::new();
        for name in &parents[existing..] {
            let made = beneath::mkdir_in(&dir, name).ok()?;
            // Also checks that one made meanwhile by someone else is a real directory.
            dir = beneath::open_dir_in(&dir, name).ok()?;
            path.push(name);
            if made {
                created.push(path.clone());
            }
        }
        Some(MadeDirs {
            path,
            created,
            fd: Some(dir),
        })
    }

    /// One level of [`Root::make_dirs`]: `next`'s parent is canonical and inside the
    /// root, so creating `next` cannot escape it.
    fn step(&self, next: &Path) -> Result<Step, VolumeServerError> {
        // Two tries: another upload may create the same directory at the same time.
        for _ in 0..2 {
            match fs::symlink_metadata(next) {
                Ok(m) if m.is_dir() => return Ok(Step::Dir),
                Ok(m) if m.file_type().is_symlink() => {
                    let target = self.confine(next)?;
                    return if target.is_dir() {
                        Ok(Step::Resolved(target))
                    } else {
                        Err(VolumeServerError::Conflict(
                            "a parent of the path is not a directory",
                        ))
                    };
                }
                Ok(_) => {
                    return Err(VolumeServerError::Conflict(
                        "a parent of the path is not a directory",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(next) {
                    Ok(()) => return Ok(Step::Created),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(VolumeServerError::io(mkdir_context(next), e)),
                },
                Err(e) => return Err(VolumeServerError::io(mkdir_context(next), e)),
            }
        }
        Err(VolumeServerError::io(
            mkdir_context(next),
            io::Error::other("it keeps changing"),
        ))
    }

    /// Canonicalizes `path` and checks it is still inside the root.
    fn confine(&self, path: &Path) -> Result<PathBuf, VolumeServerError> {
        let canonical = fs::canonicalize(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => VolumeServerError::NotFound,
            io::ErrorKind::PermissionDenied => {
                VolumeServerError::Forbidden("permission denied".into())
            }
            _ => VolumeServerError::io(format!("resolving {}", path.display()), e),
        })?;
        if canonical.starts_with(&self.path) {
            Ok(canonical)
        } else {
            Err(VolumeServerError::Forbidden(format!(
                "{} leads outside the volume",
                self.display_relative(path)
            )))
        }
    }

    /// `path` relative to the root, for messages that must not reveal the file system.
    fn display_relative(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.path).unwrap_or(path);
        format!("/{}", rel.display())
    }
}

/// The directory a PUT writes into, from [`Root::make_dirs`].
#[derive(Debug)]
pub struct MadeDirs {
    /// Its canonical path.
    pub path: PathBuf,
    /// The directories created on the way (outermost first).
    pub created: Vec<PathBuf>,
    /// The directory, open (`O_PATH`), when it was reached without a symlink.
    pub fd: Option<std::os::fd::OwnedFd>,
}

/// What [`Root::step`] found or did.
enum Step {
    Dir,
    Resolved(PathBuf),
    Created,
}

fn mkdir_context(dir: &Path) -> String {
    format!("creating directory {}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(s: &str) -> VolumePath {
        VolumePath::parse(s).unwrap()
    }

    #[test]
    fn prepare_clears_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let root = Root::prepare(&dir).unwrap();
        fs::write(root.temp_dir().join("half-upload"), b"x").unwrap();
        let root = Root::prepare(&dir).unwrap();
        assert_eq!(fs::read_dir(root.temp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn make_dirs_creates_and_refuses_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::prepare(tmp.path()).unwrap();
        let made = root.make_dirs(&["a".into(), "b".into()]).unwrap();
        assert_eq!(made.path, root.path().join("a/b"));
        assert_eq!(
            made.created,
            [root.path().join("a"), root.path().join("a/b")]
        );
        assert!(made.fd.is_some(), "no symlink on the way: the fast path");
        let made = root.make_dirs(&["a".into(), "b".into()]).unwrap();
        assert!(made.created.is_empty());
        fs::write(root.path().join("f"), b"x").unwrap();
        assert!(matches!(
            root.make_dirs(&["f".into(), "g".into()]),
            Err(VolumeServerError::Conflict(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_only_inside() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        let root = Root::prepare(&tmp.path().join("vol")).unwrap();
        fs::create_dir(root.path().join("real")).unwrap();
        fs::write(root.path().join("real/f"), b"f").unwrap();
        symlink(root.path().join("real"), root.path().join("inside")).unwrap();
        symlink(&outside, root.path().join("out")).unwrap();

        assert_eq!(
            root.existing(&vp("/inside/f")).unwrap(),
            root.path().join("real/f")
        );
        assert!(matches!(
            root.existing(&vp("/out/secret")),
            Err(VolumeServerError::Forbidden(_))
        ));
        assert!(matches!(
            root.make_dirs(&["out".into(), "new".into()]),
            Err(VolumeServerError::Forbidden(_))
        ));
        assert!(!outside.join("new").exists());
        assert!(matches!(
            root.entry(&["out".into()], "secret"),
            Err(VolumeServerError::Forbidden(_))
        ));
        let made = root.make_dirs(&["inside".into(), "n".into()]).unwrap();
        assert_eq!(made.path, root.path().join("real/n"));
    }
}
