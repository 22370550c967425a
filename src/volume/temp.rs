//! An upload's temp file, and how it is put in place.
//!
//! Where the file system allows it, the temp file is created with `O_TMPFILE` *in the
//! target's directory*: it has no name until it is complete, so no listing or walk can
//! see it, and a process that dies before the end leaves nothing behind (the kernel frees
//! the inode when the descriptor closes). It is then given its name with one `linkat`,
//! which fails if the name is taken (that tells 201 from 204). Both calls work from the
//! directory's descriptor when the caller has it (no walk of the full path), and the
//! link names the file by its descriptor (`AT_EMPTY_PATH`, allowed to the file's opener
//! since Linux 6.10), else by its `/proc/self/fd` entry. Two things make this
//! cheaper than a named file in one shared temp directory renamed across directories:
//! concurrent uploads do not queue on that one directory's lock while its inode
//! allocation runs, and no cross-directory rename takes the file system's rename mutex.
//! (Measured in docs/BENCHMARKS.md, "one volume direct".)
//!
//! Otherwise (a file system without `O_TMPFILE`, or no `/proc` for `linkat` to name the
//! descriptor — [`probe_unnamed`] decides once at startup) the temp file is a named file
//! in `<root>/.hoard-tmp`, renamed into place; [`super::root::Root::prepare`] empties
//! that directory at startup.
//!
//! Replacing an existing file is atomic either way: the unnamed file is first linked
//! under a random name in `<root>/.hoard-tmp`, then renamed over the target.

use std::ffi::{CStr, CString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use md5::{Digest as _, Md5};

use super::error::VolumeServerError;

/// Whether `linkat(fd, "", …, AT_EMPTY_PATH)` works for this process (decided by
/// [`probe_unnamed`]); otherwise the file is named through `/proc/self/fd`.
static LINK_BY_FD: AtomicBool = AtomicBool::new(false);

/// The directory a file goes into: its path, and its descriptor when the caller has one
/// open (then no call walks the full path).
#[derive(Debug, Clone, Copy)]
pub struct Dir<'a> {
    /// The directory's path.
    pub path: &'a Path,
    /// The directory, open (`O_PATH` is enough).
    pub fd: Option<&'a OwnedFd>,
}

/// An upload's temp file. Dropping it before [`TempFile::place`] succeeded deletes the
/// file, however the request ended. Blocking methods.
pub struct TempFile {
    file: File,
    /// The file's name, if it has one (a named temp file, or an unnamed one linked into
    /// the temp directory for a replacement); removed on drop unless placed.
    name: Option<PathBuf>,
    /// Where unnamed, the directory it was created in (for messages).
    dir: PathBuf,
    placed: bool,
    /// md5 of everything written so far (stored with the file by [`TempFile::seal`]).
    md5: Md5,
}

impl TempFile {
    /// Creates an unnamed file in `dir` (the target's directory) when `unnamed`, else a
    /// uniquely named file in `temp_dir`.
    pub fn create(unnamed: bool, dir: Dir<'_>, temp_dir: &Path) -> Result<Self, VolumeServerError> {
        if unnamed {
            let opened = match dir.fd {
                Some(fd) => open_unnamed_at(fd),
                None => OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_TMPFILE)
                    .open(dir.path),
            };
            let file = opened.map_err(|e| {
                VolumeServerError::io(format!("creating a file in {}", dir.path.display()), e)
            })?;
            return Ok(Self {
                file,
                name: None,
                dir: dir.path.to_path_buf(),
                placed: false,
                md5: Md5::new(),
            });
        }
        let (file, path) = create_named(temp_dir)?;
        Ok(Self {
            file,
            name: Some(path),
            dir: temp_dir.to_path_buf(),
            placed: false,
            md5: Md5::new(),
        })
    }

    fn describe(&self) -> String {
        match &self.name {
            Some(path) => path.display().to_string(),
            None => format!("a new file in {}", self.dir.display()),
        }
    }

    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), VolumeServerError> {
        self.md5.update(data);
        let written = self.file.write_all(data);
        written.map_err(|e| VolumeServerError::io(format!("writing {}", self.describe()), e))
    }

    /// Stores the md5 of everything written as the file's checksum
    /// ([`super::checksum`]); before [`TempFile::sync`], so one fsync covers both, and
    /// before [`TempFile::place`], so the file never has a name without it.
    pub fn seal(&mut self) {
        let md5: [u8; 16] = self.md5.clone().finalize().into();
        super::checksum::store(&self.file, &md5, &self.describe());
    }

    /// Syncs the data to disk.
    pub fn sync(&mut self) -> Result<(), VolumeServerError> {
        let synced = self.file.sync_all();
        synced.map_err(|e| VolumeServerError::io(format!("syncing {}", self.describe()), e))
    }

    /// Puts the file at `target` (named `name` in `dir`), replacing any file there (not
    /// a directory); true when nothing was there. `temp_dir` holds the name a
    /// replacement goes through.
    pub fn place(
        &mut self,
        target: &Path,
        dir: Dir<'_>,
        name: &str,
        temp_dir: &Path,
    ) -> Result<bool, VolumeServerError> {
        let created = match &self.name {
            Some(from) => place_named(from, target)?,
            None => {
                let linked = match dir.fd {
                    Some(fd) => cstring(Path::new(name))
                        .and_then(|n| link_fd(&self.file, fd.as_raw_fd(), &n)),
                    None => cstring(target).and_then(|t| link_fd(&self.file, libc::AT_FDCWD, &t)),
                };
                match linked {
                    Ok(()) => true,
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // Taken: give the file a name beside the other temp files (removed
                        // on drop if the rename fails), then rename it over the target
                        // (atomic for readers).
                        let from = self.name.insert(link_named(&self.file, temp_dir)?);
                        rename_over(from, target)?;
                        false
                    }
                    Err(e) => {
                        let context =
                            format!("linking {} as {}", self.describe(), target.display());
                        return Err(VolumeServerError::io(context, e));
                    }
                }
            }
        };
        self.placed = true;
        Ok(created)
    }
}

/// Moves the named file `from` to `target`, replacing a file there; true when nothing
/// was there. One `renameat2(RENAME_NOREPLACE)` tells a new name from a replacement.
fn place_named(from: &Path, target: &Path) -> Result<bool, VolumeServerError> {
    match rename_noreplace(from, target) {
        Ok(()) => Ok(true),
        // Taken, or a file system without RENAME_NOREPLACE: replace.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EINVAL)) => {
            let existed = match std::fs::symlink_metadata(target) {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    let context = format!("inspecting {}", target.display());
                    return Err(VolumeServerError::io(context, e));
                }
            };
            rename_over(from, target)?;
            Ok(!existed)
        }
        Err(e) => Err(rename_error(from, target, e)),
    }
}

/// Renames `from` over `target` (a directory there is a conflict).
fn rename_over(from: &Path, target: &Path) -> Result<(), VolumeServerError> {
    std::fs::rename(from, target).map_err(|e| rename_error(from, target, e))
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let (false, Some(name)) = (self.placed, &self.name) {
            // Best effort: a named leftover is cleared at the next startup. An unnamed
            // file vanishes with its descriptor.
            let _ = std::fs::remove_file(name);
        }
    }
}

/// Whether unnamed temp files work in `dir`: creates one, links it under a random name
/// (by descriptor if allowed, else through `/proc/self/fd`) and removes that name.
/// Blocking; run once at startup.
pub fn probe_unnamed(dir: &Path) -> bool {
    let open = || {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
    };
    for by_fd in [true, false] {
        let Ok(file) = open() else {
            return false;
        };
        LINK_BY_FD.store(by_fd, Ordering::Relaxed);
        if let Ok(name) = link_named(&file, dir) {
            return std::fs::remove_file(name).is_ok();
        }
    }
    false
}

/// `openat(dir, ".", O_TMPFILE | O_WRONLY)`: an unnamed file in the open directory.
fn open_unnamed_at(dir: &OwnedFd) -> io::Result<File> {
    // SAFETY: valid descriptor, a static NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Creates a new, uniquely named file in `dir`.
fn create_named(dir: &Path) -> Result<(File, PathBuf), VolumeServerError> {
    loop {
        let path = dir.join(format!("put-{:016x}", fastrand::u64(..)));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(VolumeServerError::io(
                    format!("creating {}", path.display()),
                    e,
                ))
            }
        }
    }
}

/// Links the unnamed `file` under a new random name in `dir`.
fn link_named(file: &File, dir: &Path) -> Result<PathBuf, VolumeServerError> {
    loop {
        let path = dir.join(format!("put-{:016x}", fastrand::u64(..)));
        match cstring(&path).and_then(|p| link_fd(file, libc::AT_FDCWD, &p)) {
            Ok(()) => return Ok(path),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => {
                return Err(VolumeServerError::io(
                    format!("linking {}", path.display()),
                    e,
                ))
            }
        }
    }
}

/// `linkat` of an open (unnamed) file to `to` (relative to the directory `dir`, or
/// absolute with `AT_FDCWD`): by its descriptor (`AT_EMPTY_PATH`) when [`LINK_BY_FD`],
/// else through its `/proc/self/fd` entry (which needs no privilege). Fails with
/// `EEXIST` if `to` exists.
fn link_fd(file: &File, dir: RawFd, to: &CStr) -> io::Result<()> {
    let rc = if LINK_BY_FD.load(Ordering::Relaxed) {
        // SAFETY: valid descriptors, NUL-terminated paths; the result is checked.
        unsafe {
            libc::linkat(
                file.as_raw_fd(),
                c"".as_ptr(),
                dir,
                to.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        }
    } else {
        let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: as above.
        unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                dir,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        }
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `renameat2(from, to, RENAME_NOREPLACE)`: fails with `EEXIST` if `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (cstring(from)?, cstring(to)?);
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
        _ => Err(io::Error::last_os_error()),
    }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn rename_error(from: &Path, to: &Path, e: io::Error) -> VolumeServerError {
    match e.kind() {
        io::ErrorKind::IsADirectory => VolumeServerError::Conflict("the path is a directory"),
        _ => VolumeServerError::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, temp) = (tmp.path().join("d"), tmp.path().join("t"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(&temp).unwrap();
        (tmp, dir, temp)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// `dir` opened as `O_PATH`, as the volume's fast path holds it.
    fn open_dir(dir: &Path) -> OwnedFd {
        let c = cstring(dir).unwrap();
        // SAFETY: NUL-terminated path; checked below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: a new descriptor.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn every_way_creates_replaces_and_leaves_nothing() {
        let (_tmp, dir, temp) = setup();
        let unnamed = probe_unnamed(&temp);
        let fd = open_dir(&dir);
        let mut expected = Vec::new();
        for kind in [true, false].into_iter().filter(|k| !k || unnamed) {
            for by_fd in [true, false] {
                let name = format!("f-{kind}-{by_fd}");
                let d = Dir {
                    path: &dir,
                    fd: by_fd.then_some(&fd),
                };
                let target = dir.join(&name);
                let mut t = TempFile::create(kind, d, &temp).unwrap();
                t.write(b"one").unwrap();
                t.sync().unwrap();
                // Invisible until placed, wherever it lives.
                assert!(!names(&dir).contains(&name));
                assert!(t.place(&target, d, &name, &temp).unwrap(), "new: created");
                drop(t);
                assert_eq!(std::fs::read(&target).unwrap(), b"one");
                let mut t = TempFile::create(kind, d, &temp).unwrap();
                t.write(b"two").unwrap();
                assert!(
                    !t.place(&target, d, &name, &temp).unwrap(),
                    "taken: replaced"
                );
                drop(t);
                assert_eq!(std::fs::read(&target).unwrap(), b"two");
                // An abandoned upload leaves nothing.
                let mut t = TempFile::create(kind, d, &temp).unwrap();
                t.write(b"lost").unwrap();
                drop(t);
                assert!(names(&temp).is_empty(), "{:?}", names(&temp));
                expected.push(name);
            }
        }
        expected.sort();
        assert_eq!(names(&dir), expected);
    }

    #[test]
    fn a_directory_in_the_way_is_a_conflict() {
        let (_tmp, dir, temp) = setup();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let fd = open_dir(&dir);
        for kind in [true, false] {
            if kind && !probe_unnamed(&temp) {
                continue;
            }
            let d = Dir {
                path: &dir,
                fd: Some(&fd),
            };
            let mut t = TempFile::create(kind, d, &temp).unwrap();
            t.write(b"x").unwrap();
            let err = t.place(&dir.join("sub"), d, "sub", &temp).unwrap_err();
            assert!(matches!(err, VolumeServerError::Conflict(_)), "{err:?}");
            drop(t);
            assert!(names(&temp).is_empty());
        }
    }
}
