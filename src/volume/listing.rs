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

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{blocking, VolumeError};

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

/// Answers the JSON listing of `dir`, a canonical directory inside `root`.
pub async fn list(root: PathBuf, dir: PathBuf) -> Result<Response, VolumeError> {
    let entries = blocking(move || read_entries(&root, &dir)).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        render(&entries),
    )
        .into_response())
}

/// Reads and sorts the visible entries of `dir`. Blocking.
pub fn read_entries(root: &Path, dir: &Path) -> Result<Vec<Entry>, VolumeError> {
    let context = || format!("listing {}", dir.display());
    let mut entries = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| VolumeError::io(context(), e))? {
        let item = item.map_err(|e| VolumeError::io(context(), e))?;
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = item.path();
        let is_link = item.file_type().is_ok_and(|t| t.is_symlink());
        if is_link && !fs::canonicalize(&path).is_ok_and(|t| t.starts_with(root)) {
            continue;
        }
        // Gone since read_dir, or a dangling symlink: skip it, as nginx does.
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        let (kind, size) = if meta.is_dir() {
            ("directory", None)
        } else if meta.is_file() {
            ("file", Some(meta.len()))
        } else {
            ("other", None)
        };
        let mtime = meta
            .modified()
            .map(httpdate::fmt_http_date)
            .map_err(|e| VolumeError::io(format!("reading mtime of {}", path.display()), e))?;
        entries.push(Entry {
            name,
            kind,
            mtime,
            size,
        });
    }
    entries.sort_by(|a, b| {
        (a.kind != "directory")
            .cmp(&(b.kind != "directory"))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(entries)
}

/// The JSON text: an array with one entry per line, as nginx writes it.
pub fn render(entries: &[Entry]) -> String {
    let lines: Vec<String> = entries
        .iter()
        .filter_map(|e| serde_json::to_string(e).ok())
        .collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
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
