//! Directory listings in the shape of nginx's `autoindex_format json`:
//!
//! ```json
//! [
//! {"name":"ab","type":"directory","mtime":"Wed, 01 Jan 2025 00:00:00 GMT"},
//! {"name":"x==","type":"file","mtime":"Wed, 01 Jan 2025 00:00:00 GMT","size":5}
//! ]
//! ```
//!
//! Like nginx: hidden entries (names starting with `.`) are left out, directories come
//! first, then names in byte order, and symlinks are described by what they point to.
//! Unlike nginx, symlinks leading outside the root and names that are not UTF-8 are
//! left out too.

use std::fs;
use std::path::{Path, PathBuf};

use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{blocking, VolumeServerError};
use super::path::VolumePath;
use super::root::Root;

/// Response header on a native volume's directory listings announcing `/-/walk/`.
pub const HEADER: &str = "x-hoard-walk";

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The file name.
    pub name: String,
    /// `"directory"`, `"file"`, or `"other"` (sockets, devices…).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Last modification, as an HTTP date.
    pub mtime: String,
    /// Length in bytes, for files only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Directories at most this large (`st_size`, a few hundred entries on ext4 and
/// tmpfs) are listed on the request's task, as nginx does, instead of on the blocking
/// pool: page-cache work, cheaper than the hand-off.
const SMALL_DIR: u64 = 32 << 10;

/// Answers the JSON listing of `dir`, a canonical directory inside `root`.
pub async fn list(root: PathBuf, dir: PathBuf) -> Result<Response, VolumeServerError> {
    let entries = blocking(move || read_entries(&root, &dir)).await?;
    Ok(respond(&entries))
}

/// The fast path for a listing request: a small directory reached without a symlink
/// on the way is listed right here. `None`: take the general path.
pub fn list_small(root: &Root, path: &VolumePath) -> Result<Option<Response>, VolumeServerError> {
    let Some(size) = root.plain_dir_size(path)? else {
        return Ok(None);
    };
    if size > SMALL_DIR {
        return Ok(None);
    }
    let dir = root.path().join(path.relative());
    Ok(Some(respond(&read_entries(root.path(), &dir)?)))
}

/// The listing response; it also announces the walk endpoint ([`super::walk`]).
fn respond(entries: &[Entry]) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (HeaderName::from_static(HEADER), "1"),
        ],
        render(entries),
    )
        .into_response()
}

/// Reads and sorts the visible entries of `dir`. Blocking.
pub fn read_entries(root: &Path, dir: &Path) -> Result<Vec<Entry>, VolumeServerError> {
    let context = || format!("listing {}", dir.display());
    let mut entries = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| VolumeServerError::io(context(), e))? {
        let item = item.map_err(|e| VolumeServerError::io(context(), e))?;
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let is_link = item.file_type().is_ok_and(|t| t.is_symlink());
        // Gone since read_dir, or a dangling symlink: skip it, as nginx does.
        let meta = if is_link {
            let path = item.path();
            if !fs::canonicalize(&path).is_ok_and(|t| t.starts_with(root)) {
                continue;
            }
            fs::metadata(&path)
        } else {
            // statx relative to the open directory: no path walk.
            item.metadata()
        };
        let Ok(meta) = meta else {
            continue;
        };
        let (kind, size) = if meta.is_dir() {
            ("directory", None)
        } else if meta.is_file() {
            ("file", Some(meta.len()))
        } else {
            ("other", None)
        };
        let mtime = meta.modified().map(httpdate::fmt_http_date).map_err(|e| {
            VolumeServerError::io(format!("reading mtime of {}", item.path().display()), e)
        })?;
        entries.push(Entry {
            name,
            kind,
            mtime,
            size,
        });
    }
    entries.sort_unstable_by(|a, b| {
        (a.kind != "directory")
            .cmp(&(b.kind != "directory"))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(entries)
}

/// The JSON text: an array with one entry per line, as nginx writes it.
pub fn render(entries: &[Entry]) -> String {
    let mut out = Vec::with_capacity(16 + entries.len() * 96);
    out.extend_from_slice(b"[\n");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, e);
    }
    out.extend_from_slice(b"\n]\n");
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nginx_shape() {
        let entries = [
            Entry {
                name: "ab".into(),
                kind: "directory",
                mtime: "Wed, 01 Jan 2025 00:00:00 GMT".into(),
                size: None,
            },
            Entry {
                name: "x\"==".into(),
                kind: "file",
                mtime: "Wed, 01 Jan 2025 00:00:00 GMT".into(),
                size: Some(5),
            },
        ];
        assert_eq!(
            render(&entries),
            "[\n{\"name\":\"ab\",\"type\":\"directory\",\"mtime\":\"Wed, 01 Jan 2025 00:00:00 GMT\"},\n\
             {\"name\":\"x\\\"==\",\"type\":\"file\",\"mtime\":\"Wed, 01 Jan 2025 00:00:00 GMT\",\"size\":5}\n]\n"
        );
        assert_eq!(render(&[]), "[\n\n]\n");
    }

    #[test]
    fn reads_sorted_visible_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fs::canonicalize(tmp.path()).unwrap();
        fs::write(dir.join("b"), b"12345").unwrap();
        fs::write(dir.join("A"), b"").unwrap();
        fs::write(dir.join(".hidden"), b"").unwrap();
        fs::create_dir(dir.join("z")).unwrap();
        let entries = read_entries(&dir, &dir).unwrap();
        let names: Vec<_> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(
            names,
            [
                ("z", "directory", None),
                ("A", "file", Some(0)),
                ("b", "file", Some(5))
            ]
        );
        assert!(httpdate::parse_http_date(&entries[0].mtime).is_ok());
    }
}
