//! One-syscall path checks: `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
//! resolves a relative path under the root's directory descriptor and fails if any
//! component is a symlink or would leave the root — what [`super::root::Root`]'s
//! canonicalize-and-compare does with one `readlink` per component.
//!
//! These are fast paths only. Any failure other than "not found" (a symlink on the
//! way, a file where a directory should be, an old kernel without `openat2`) sends the
//! caller to the slow, general path, which follows symlinks that stay inside the root
//! and produces the precise error.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// False once the kernel answered `ENOSYS` (Linux before 5.6, or a seccomp filter).
static SUPPORTED: AtomicBool = AtomicBool::new(true);

/// The root directory, held open as an `O_PATH` descriptor.
#[derive(Debug)]
pub struct RootFd(OwnedFd);

/// How a fast-path resolution ended.
#[derive(Debug)]
pub enum Resolved {
    /// Opened: no symlink on the way, inside the root.
    Open(OwnedFd),
    /// A component does not exist.
    Missing,
    /// Anything else: take the slow path.
    Slow,
}

impl RootFd {
    /// Opens `dir` (canonical) as the anchor of the fast path.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let c = cstring(dir.as_os_str().as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens `relative` (plain names joined with `/`, no `.` or `..`) beneath the root
    /// with `flags` (e.g. `O_RDONLY`, `O_PATH | O_DIRECTORY`).
    pub fn resolve(&self, relative: &[u8], flags: i32) -> Resolved {
        if !SUPPORTED.load(Ordering::Relaxed) {
            return Resolved::Slow;
        }
        let Ok(c) = cstring(if relative.is_empty() { b"." } else { relative }) else {
            return Resolved::Slow;
        };
        // SAFETY: `open_how` is plain integers; all zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid descriptor, NUL-terminated path, `how` lives across the call
        // and its size is passed; the result is checked.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.0.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a new descriptor owned by nobody else.
            return Resolved::Open(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => Resolved::Missing,
            Some(libc::ENOSYS) => {
                SUPPORTED.store(false, Ordering::Relaxed);
                Resolved::Slow
            }
            _ => Resolved::Slow,
        }
    }
}

/// Creates directory `name` in the directory `dir`; `Ok(false)` if it already exists.
pub fn mkdir_in(dir: &OwnedFd, name: &str) -> io::Result<bool> {
    let c = cstring(name.as_bytes())?;
    // SAFETY: valid descriptor and NUL-terminated name; the result is checked.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::AlreadyExists => Ok(false),
        _ => Err(e),
    }
}

/// Opens the directory `name` inside `dir` without following a symlink.
pub fn open_dir_in(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let c = cstring(name.as_bytes())?;
    // SAFETY: valid descriptor and NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_plain_paths_and_refuses_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let fd = RootFd::open(&root).unwrap();
        assert!(matches!(
            fd.resolve(b"a/b/f", libc::O_RDONLY),
            Resolved::Open(_)
        ));
        assert!(matches!(fd.resolve(b"", libc::O_PATH), Resolved::Open(_)));
        assert!(matches!(
            fd.resolve(b"a/x/f", libc::O_RDONLY),
            Resolved::Missing
        ));
        assert!(matches!(
            fd.resolve(b"link/b/f", libc::O_RDONLY),
            Resolved::Slow
        ));
        assert!(matches!(
            fd.resolve(b"../root/a", libc::O_PATH),
            Resolved::Slow
        ));
        assert!(matches!(
            fd.resolve(b"a/b/f", libc::O_PATH | libc::O_DIRECTORY),
            Resolved::Slow
        ));
        let Resolved::Open(a) = fd.resolve(b"a", libc::O_PATH | libc::O_DIRECTORY) else {
            panic!("a not opened");
        };
        assert!(mkdir_in(&a, "c").unwrap());
        assert!(!mkdir_in(&a, "c").unwrap());
        assert!(open_dir_in(&a, "c").is_ok());
        assert!(open_dir_in(&a, "b/f").is_err());
    }
}
