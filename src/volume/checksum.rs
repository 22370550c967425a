//! The checksum a native volume keeps beside each file it writes, and the check of
//! whole-file reads against it (issue 25).
//!
//! An upload is hashed (md5 of the whole file) while it streams in, and the digest is
//! stored as the extended attribute [`XATTR`] (16 raw bytes; `getfattr -n
//! user.hoard.md5 -e hex FILE` shows it) on the temp file before it is linked into
//! place, so a file is never visible without it and the file layout stays
//! minikeyvalue's. The attribute is set before the data is synced, so the same fsync
//! makes both durable.
//!
//! A whole-file GET of a file with the attribute is hashed while it is sent, and the
//! last chunk is held back until the hash is complete: on a mismatch it is never sent
//! and the body ends in an error, so the connection is cut short of its
//! `Content-Length` — a client never sees a clean 200 with wrong bytes. (A file small
//! enough to be read in one go is checked before the answer: 500.) Each mismatch is
//! logged and counted (`hoard_volume_corrupt_reads_total`).
//!
//! Not checked: Range requests (a part of the file cannot be checked against the
//! whole file's digest; partial reads are the reader's to verify), files without the
//! attribute (written before this, or by nginx, or on a file system without user
//! extended attributes: then uploads store no attribute and a warning is logged once),
//! and reads with the [`UNVERIFIED`] header, which a reader that checks the bytes
//! itself against the index's md5 sends (the index's proxied reads, verify's hashing),
//! so that it sees the corrupt bytes and can report and repair the replica.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use md5::{Digest, Md5};

/// The extended attribute holding a file's md5.
pub const XATTR: &str = "user.hoard.md5";

pub use super::verified::UNVERIFIED;
use crate::hex::hex;

const XATTR_C: &std::ffi::CStr = c"user.hoard.md5";

/// Whether a warning about a file system without user extended attributes was logged.
static UNSUPPORTED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Stores `md5` as `file`'s [`XATTR`]. A file system without user extended attributes
/// is not an error (the file is then served unchecked; warned about once); another
/// failure is logged, and the file is stored anyway, unchecked.
pub fn store(file: &File, md5: &[u8; 16], what: &dyn std::fmt::Display) {
    // SAFETY: a valid descriptor, a NUL-terminated name and a 16-byte buffer.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            XATTR_C.as_ptr(),
            md5.as_ptr().cast(),
            md5.len(),
            0,
        )
    };
    if rc == 0 {
        return;
    }
    let e = io::Error::last_os_error();
    if unsupported(&e) {
        if !UNSUPPORTED_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the volume's file system does not store user extended attributes ({e}): \
                 files are stored without a checksum, and reads are not checked"
            );
        }
    } else {
        tracing::warn!("storing the checksum of {what}: {e}; the file is served unchecked");
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM))
}

/// The md5 stored with the open `file`, if any (absent, unsupported, or not 16 bytes:
/// `None`).
pub fn of_file(file: &File) -> Option<[u8; 16]> {
    let mut buf = [0u8; 16];
    // SAFETY: a valid descriptor, a NUL-terminated name and a 16-byte buffer.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            XATTR_C.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n == 16).then_some(buf)
}

/// The md5 stored with the file at `path` (following no symlink in its last
/// component), if any.
pub fn of_path(path: &Path) -> Option<[u8; 16]> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: NUL-terminated strings and a 16-byte buffer.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            XATTR_C.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n == 16).then_some(buf)
}

/// Logs and counts a whole-file read whose bytes differ from the stored checksum.
pub fn report_corrupt(what: &str, want: &[u8; 16], got: &[u8; 16]) {
    metrics::counter!("hoard_volume_corrupt_reads_total").increment(1);
    tracing::error!(
        "corrupt file {what}: its bytes have md5 {}, stored with it is {}; read aborted",
        hex(got),
        hex(want)
    );
}

/// The md5 of `data`.
pub fn md5_of(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attribute_round_trips_on_this_file_system() {
        let dir = std::env::temp_dir().join(format!("hoard-xattr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = File::create(&path).unwrap();
        let sum = md5_of(b"x");
        store(&file, &sum, &"f");
        let stored = of_file(&file);
        // Where user xattrs are not supported, nothing is stored and nothing read.
        if stored.is_some() {
            assert_eq!(stored, Some(sum));
            assert_eq!(of_path(&path), Some(sum));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
